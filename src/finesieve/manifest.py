"""The run manifest, typed: what a run directory's `manifest.json` holds, read and written in one place.

    manifest = read_manifest("runs/ft/manifest.json")     # any version: older manifests are migrated on read
    manifest.task.positive, manifest.preprocessing.redaction, manifest.reference.length_quantiles
    write_manifest(manifest, "runs/ft/manifest.json")

Schema versions:
  1  (finesieve 0.1 until this module) an untyped dict: `task` held classes/multilabel/positive/threshold, the
     text preprocessing was not recorded (it was always `clean` then the default redaction), no reference
     statistics, the base model by name only.
  2  typed: `task` is a `data.task.Task`; `preprocessing` records what was applied to every text before the
     scorer saw it (so scoring and serving apply the same); `base_model` names the weights and their content
     hash; `reference` keeps the statistics drift monitoring compares new traffic against; sections a recipe
     adds (training, replay, tracking, cascade) are kept as they are.
Reading a version-1 manifest migrates it (`migrate`): the task is typed, the preprocessing is the one version 1
always applied, and what version 1 never recorded (base weights hash, reference statistics) is None.

The reference's input statistics (`InputReference`, `reference.inputs`; None in runs written before them) are
computed here from the texts as the scorer saw them (cleaned and redacted, as the service stores them), with the
text statistics `finesieve.monitor.inputs` measures production windows with (`finesieve.data.text_stats`), so the
reference and a window are counted the same way.

    inputs = input_reference(train.texts, val.texts)       # vocabulary from train; shares and rates from val
    inputs.oov_rate, inputs.entity_share["PHONE"], inputs.ngram_shares["call <PHONE>"]
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from finesieve.data.errors import ConfigError, config_error
from finesieve.data.preprocess import Preprocessing
from finesieve.data.task import ClassificationTask, GenerationTask, RankingTask, task_from_manifest
from finesieve.data.text_stats import (
    LENGTH_BINS,
    SCRIPTS,
    entity_shares,
    length_histogram,
    ngram_document_counts,
    oov_rate,
    script_counts,
    tokens,
    words,
)
from finesieve.outputs import atomic_file, write_text

SCHEMA_VERSION = 2
LENGTH_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
SCORE_BINS = 20  # equal-width bins of [0, 1] for the validation score histograms
# Text length bins in characters: fine where short messages (SMS, tweets) differ, coarse for documents; a longer
# text counts in the last bin.
VOCABULARY_SIZE = 5000  # most frequent training words: the vocabulary the out-of-vocabulary rate is measured against
REFERENCE_NGRAMS = 1000  # validation n-grams whose document share is kept
REFERENCE_EMBEDDINGS = "model/reference_embeddings.npy"  # under model/, so the run's `files` hashes it


class BaseWeights(BaseModel):
    """The pretrained weights a fine-tune started from: a name anyone can load, and the hash of what was loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="A Hugging Face id, a local path or packaged:NAME.")
    content_hash: str | None = Field(
        None,
        description="sha256 over the weight files' bytes (sorted by name); "
        "None for runs written before it was recorded.",
    )


class InputReference(BaseModel):
    """The validation texts as the scorer saw them (cleaned, redacted): what input drift is measured against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(description="Validation texts the statistics are computed on.")
    length_bins: tuple[float, ...] = Field(description="Edges of the text length histogram, in characters.")
    length_histogram: tuple[int, ...] = Field(description="Validation texts per length bin.")
    entity_share: dict[str, float] = Field(
        description="Per redacted entity (EMAIL, PHONE, ...): share of validation texts holding its placeholder."
    )
    vocabulary: tuple[str, ...] = Field(
        description=f"The most frequent lowercased word tokens of the training split (up to {VOCABULARY_SIZE})."
    )
    oov_rate: float | None = Field(
        description="Share of the validation split's word tokens outside `vocabulary` (None: no words)."
    )
    script_mix: dict[str, float] = Field(
        description=f"Share of the validation letters per Unicode script ({', '.join(SCRIPTS)})."
    )
    ngram_shares: dict[str, float] = Field(
        description=f"Document share of the validation split's {REFERENCE_NGRAMS} most common word uni- and "
        "bigrams (share of texts holding each at least once)."
    )
    embeddings: str | None = Field(
        None,
        description="Sentence embeddings (float16, all-MiniLM-L6-v2) of up to 256 validation "
        "texts, as a .npy path relative to the run directory; None when they were not computed.",
    )


class ReferenceStats(BaseModel):
    """The validation split as the model saw it: what drift monitoring compares new traffic against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(description="Validation messages the statistics are computed on.")
    score_bins: tuple[float, ...] = Field(description="Edges of the score histograms (equal width on [0, 1]).")
    score_histograms: dict[str, tuple[int, ...]] = Field(
        description="Per class: counts of validation messages per score bin of that class's probability."
    )
    length_quantiles: dict[str, float] = Field(description="Quantiles of text length in characters ('q50': ...).")
    flag_rate: float | None = Field(
        None,
        description="Share of validation messages at or above the operating threshold (None when the task has none).",
    )
    inputs: InputReference | None = Field(
        None, description="Input statistics of the validation texts (None in runs written before they were kept)."
    )


class RunManifest(BaseModel):
    """Everything about a run directory except the model files themselves."""

    # Recipes add sections of their own (training history, replay, tracking, the cascade's fit): kept as given.
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    schema_version: int = Field(SCHEMA_VERSION, description="Version of this layout; older ones are migrated.")
    finesieve_version: str = Field(description="The finesieve that wrote the run.")
    created_utc: str = Field(description="When the run was written (ISO 8601, UTC).")
    kind: str = Field(description="The scorer kind (tfidf, rules, char_cnn, finetuned, cascade, ...).")
    scorer_config: dict = Field(default_factory=dict, description="The scorer's resolved configuration.")
    task: ClassificationTask | RankingTask | GenerationTask = Field(
        discriminator="kind", description="What the model is asked to do."
    )
    preprocessing: Preprocessing = Field(default_factory=Preprocessing, description="Applied to every text.")
    base_model: BaseWeights | None = Field(None, description="Pretrained weights a fine-tune started from.")
    data: dict = Field(default_factory=dict, description="Source, content hash, rows, rejections, column mapping.")
    splits: dict | None = Field(None, description="Split hashes, sizes and class counts (ids in splits.json).")
    metrics: dict = Field(default_factory=dict, description="Held-out test and corner-case figures.")
    reference: ReferenceStats | None = Field(None, description="Validation statistics for drift monitoring.")
    environment: dict = Field(default_factory=dict, description="Python, platform and package versions.")
    parent_run: str | None = Field(None, description="The run this one continues (replay, cascade).")
    files: dict[str, str] | None = Field(
        None,
        description="sha256 of every file under model/ at save time (path relative to the run directory -> hex "
        "digest), so a server can refuse changed weights (`runs.verify_run_files`); None for runs written before "
        "it was recorded.",
    )


def migrate(raw: dict, where: str = "manifest.json") -> dict:
    """A manifest of any known version as a version-2 dict; newer versions are refused by `read_manifest`."""
    raw = dict(raw)
    version = raw.get("schema_version", 1)
    if version == 1:
        task = raw.get("task") or {}
        raw["task"] = task_from_manifest(task, f"{where}: task").model_dump(mode="json")
        raw.setdefault("preprocessing", Preprocessing().model_dump(mode="json"))  # what version 1 always did
        model = (raw.get("scorer_config") or {}).get("model") if raw.get("kind") == "finetuned" else None
        raw["base_model"] = {"name": model, "content_hash": None} if model else None
        raw["schema_version"] = SCHEMA_VERSION
    return raw


def read_manifest(path: str | Path) -> RunManifest:
    """Read, migrate and validate a manifest; every problem names the file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise ConfigError(
            f"{path}: not valid JSON ({err}); the run directory is damaged. Fix: restore it from a "
            "copy, or write the run again"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a JSON object, found {type(raw).__name__}; the run directory is "
            "damaged. Fix: restore it from a copy, or write the run again"
        )
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ConfigError(
            f"{path}: manifest schema version {version!r} is newer than this finesieve reads "
            f"({SCHEMA_VERSION}). Fix: upgrade finesieve"
        )
    try:
        return RunManifest.model_validate(migrate(raw, str(path)))
    except ValidationError as err:
        raise config_error(err, f"{path}: invalid run manifest", RunManifest) from None


def write_manifest(manifest: RunManifest, path: str | Path) -> Path:
    return write_text(path, json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True, default=str))


def reference_stats(
    proba: np.ndarray,
    classes: Sequence[str],
    texts: Sequence[str],
    flagged: np.ndarray | None = None,
    *,
    train_texts: Sequence[str] | None = None,
    embeddings_file: str | None = None,
) -> ReferenceStats:
    """Reference statistics from a scorer's validation probabilities (n, n_classes) and the validation texts.

    With `train_texts` (the training split, for the vocabulary) the input statistics are kept too
    (`input_reference`); `embeddings_file` names the reference embeddings the caller saved in the run directory."""
    proba = np.asarray(proba, dtype=float)
    edges = np.linspace(0.0, 1.0, SCORE_BINS + 1)
    histograms = {
        str(c): tuple(int(v) for v in np.histogram(np.clip(proba[:, j], 0, 1), bins=edges)[0])
        for j, c in enumerate(classes)
    }
    lengths = np.array([len(t) for t in texts], dtype=float)
    quantiles = (
        {f"q{int(q * 100):02d}": float(np.quantile(lengths, q)) for q in LENGTH_QUANTILES} if len(lengths) else {}
    )
    return ReferenceStats(
        n=len(texts),
        score_bins=tuple(float(e) for e in edges),
        score_histograms=histograms,
        length_quantiles=quantiles,
        flag_rate=float(np.mean(flagged)) if flagged is not None and len(flagged) else None,
        inputs=input_reference(train_texts, texts, embeddings_file) if train_texts is not None else None,
    )


def as_dict(manifest: RunManifest) -> dict[str, Any]:
    return manifest.model_dump(mode="json")


def input_reference(
    train_texts: Sequence[str], val_texts: Sequence[str], embeddings_file: str | None = None
) -> InputReference:
    """The input statistics of the validation texts; the vocabulary is the training split's commonest words."""
    frequency = Counter(w for t in train_texts for w in words(tokens(t)))
    # Sorted by count, then alphabetically: the same data gives the same vocabulary, whatever the row order.
    vocabulary = tuple(w for w, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))[:VOCABULARY_SIZE])
    scripts = script_counts(val_texts)
    letters = sum(scripts.values())
    shares = ngram_document_counts(val_texts)
    kept = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))[:REFERENCE_NGRAMS]
    n = len(val_texts)
    return InputReference(
        n=n,
        length_bins=tuple(float(e) for e in LENGTH_BINS),
        length_histogram=tuple(int(c) for c in length_histogram(val_texts)),
        entity_share=entity_shares(val_texts),
        vocabulary=vocabulary,
        oov_rate=oov_rate(val_texts, vocabulary),
        script_mix={s: c / letters if letters else 0.0 for s, c in scripts.items()},
        ngram_shares={g: c / n for g, c in kept},
        embeddings=embeddings_file,
    )


def write_reference_embeddings(run_dir: str | Path, texts: Sequence[str]) -> str:
    """Embed a sample of the validation `texts` and save it (float16) at `REFERENCE_EMBEDDINGS` under `run_dir`
    (a run's staging folder, before the run is saved, so `files` records its hash); returns that relative path."""
    from finesieve.models.sentence_embeddings import embed_texts, embedding_sample  # torch only when asked

    buffer = io.BytesIO()
    np.save(buffer, embed_texts(embedding_sample(texts)).astype(np.float16), allow_pickle=False)
    with atomic_file(Path(run_dir) / REFERENCE_EMBEDDINGS, "wb") as fh:
        fh.write(buffer.getvalue())
    return REFERENCE_EMBEDDINGS


def read_reference_embeddings(run_dir: str | Path, inputs: InputReference) -> np.ndarray | None:
    """The reference embeddings (n, dim) float32 a run saved, or None when it saved none."""
    if inputs.embeddings is None:
        return None
    path = Path(run_dir) / inputs.embeddings
    try:
        return np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{path}: cannot read the reference embeddings the manifest names ({err}); the run directory is "
            "incomplete or damaged. Fix: restore it from a copy, or write the run again"
        ) from err
