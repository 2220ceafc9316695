"""Several LoRA runs on one base model in memory: the adapters stay unmerged and named, each run a scorer of its own.

    spam, abuse = load_shared(["runs/spam/model", "runs/abuse/model"])   # one base, two adapters
    spam.predict_proba(texts)        # the base runs with spam's adapter, then spam's own head and calibrator
    abuse.save("copy/abuse/model")   # abuse's adapter files, byte for byte as loaded
    load_shared(dirs, base_hashes=[run.manifest.base_model.content_hash for run in runs])   # hashes checked too

A LoRA run on disk is its adapter only (about 1 MB on MiniLM). `FineTunedScorer.load` merges it into a copy of the
base of its own: the fast path for one model, but N runs loaded that way hold N bases. Here they hold one: an
`AdapterSet` (the base wrapped by PEFT, one named adapter per run, never merged), and each scorer's body is an
`AdapterBody`, a view that switches the set to its adapter for one forward pass, under a lock. Scoring A, B, A, in
any order or from several threads, scores each run with its adapter alone. Heads, calibrators and tokenizers stay
per run; each scorer is a plain `FineTunedScorer` (kind "finetuned") and saves like one.

Refused, naming the directories: a full fine-tune (it has no adapter to share a base with), runs whose base
models differ (by name or architecture), and runs whose recorded base weights differ (`base_hashes`, read from
the run manifests by the caller: this layer does not read run directories).

`load_sharing_bases` is what the cascade loads its stages with: the LoRA stages that share a base get one base,
and a lone LoRA stage is left to `FineTunedScorer.load`, merged.

Mixed batches. `predict_proba_mixed([(spam, texts_1), (abuse, texts_2)])` scores requests for different runs of
one set together: each chunk of rows (any mix of runs) goes through the base in one forward pass, every row with
its own run's adapter (PEFT's `adapter_names`), then each row through its own run's head and calibrator. Each
run's probabilities equal what its own `predict_proba` gives (float32 sums aside), at the cost of one pass for
all instead of one per run.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from finesieve.data.errors import ConfigError
from finesieve.models.base import check_is_fitted, prepare_inputs
from finesieve.models.finetuned import FineTunedScorer
from finesieve.models.text_classifier import ADAPTER_DIR, ADAPTER_METHODS, load_body, resolve_model


@dataclass(frozen=True)
class SavedRun:
    """What a saved fine-tuned scorer's `scorer.json` says about its body."""

    directory: Path
    method: str  # lora | qlora | full
    base: str  # the base model reference it was trained from (packaged:NAME, a path or a hub id)
    architecture: str  # encoder | decoder

    @classmethod
    def read(cls, directory: str | Path) -> SavedRun:
        directory = Path(directory)
        path = directory / "scorer.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{directory} holds no scorer.json: point at the model/ folder of a fine-tuned "
                "run (a directory written by FineTunedScorer.save)"
            )
        meta = json.loads(path.read_text())
        config = meta.get("config") or {}
        return cls(directory, config.get("method", "lora"), config.get("model", ""), meta["architecture"])

    @property
    def is_adapter(self) -> bool:
        return self.method in ADAPTER_METHODS

    @property
    def base_key(self) -> tuple[str, str]:
        """Two runs share a base when these are equal: the weights' location (`packaged:` resolved) and architecture."""
        return resolve_model(self.base), self.architecture


class AdapterSet(nn.Module):
    """One base model wrapped by PEFT, holding one named, unmerged adapter per run."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        super().__init__()
        self.model = model  # a PeftModel
        self.names = tuple(names)
        self._lock = threading.Lock()

    def forward(self, adapter: str, **inputs):
        """The base's output with `adapter` active. The switch and the pass hold the lock together, so no other
        caller's adapter can be active in between."""
        with self._lock:
            if self.model.active_adapter != adapter:
                self.model.set_adapter(adapter, inference_mode=True)
            return self.model(**inputs)

    def forward_mixed(self, adapters: Sequence[str], **inputs):
        """The base's output with row i run through adapter `adapters[i]`, all rows in one pass. Under the same
        lock: PEFT routes the rows with hooks for this call only, and a switch in between would corrupt them."""
        unknown = sorted(set(adapters) - set(self.names))
        if unknown:
            raise ValueError(f"no adapter {unknown} in this set: it holds {list(self.names)}")
        with self._lock:
            return self.model(**inputs, adapter_names=list(adapters))


class AdapterBody(nn.Module):
    """The body of one run's classifier: the shared `AdapterSet`, run with this run's adapter. Not a PeftModel, so
    its scorer saves the adapter files it was loaded from rather than every adapter of the set."""

    def __init__(self, adapters: AdapterSet, name: str):
        super().__init__()
        if name not in adapters.names:
            raise ValueError(f"no adapter '{name}' in this set: it holds {list(adapters.names)}")
        self.adapters = adapters  # a submodule of every run's body: the same parameters, held once
        self.name = name

    @property
    def config(self):
        return self.adapters.model.config

    def forward(self, **inputs):
        return self.adapters(self.name, **inputs)


def load_shared(
    directories: Sequence[str | Path],
    base_hashes: Sequence[str | None] | None = None,
    names: Sequence[str] | None = None,
) -> list[FineTunedScorer]:
    """One `FineTunedScorer` per LoRA/QLoRA run directory (a run's `model/` folder), all on one base in memory.

    `base_hashes` (optional, one per directory, None where unknown) are the base weights' content hashes recorded
    when each run was trained; runs whose known hashes differ are refused. `names` (default adapter_0, adapter_1,
    ...) name the adapters inside the shared base.
    """
    runs = [SavedRun.read(d) for d in directories]
    if not runs:
        raise ValueError("load_shared needs at least one run directory")
    names = list(names) if names is not None else [f"adapter_{i}" for i in range(len(runs))]
    _check_names(names, runs)
    _check_shareable(runs, base_hashes)

    from peft import PeftModel

    first = runs[0]
    base = load_body(first.base_key[0], first.architecture)  # the weights, once
    model = PeftModel.from_pretrained(base, first.directory / ADAPTER_DIR, adapter_name=names[0])
    for run, name in zip(runs[1:], names[1:]):
        model.load_adapter(run.directory / ADAPTER_DIR, adapter_name=name)
    model.eval()
    adapters = AdapterSet(model, names)
    hidden_size = base.config.hidden_size
    return [
        FineTunedScorer.load_with_body(run.directory, AdapterBody(adapters, name), hidden_size)
        for run, name in zip(runs, names)
    ]


def predict_proba_mixed(
    requests: Sequence[tuple[FineTunedScorer, Sequence[str]]], batch_size: int = 64
) -> list[np.ndarray]:
    """Each request's probabilities (n_i, n_classes of its run), as `scorer.predict_proba(texts)` gives them, from
    forward passes of the shared base over rows of every request together (`batch_size` rows a pass).

    Every scorer must come from one `load_shared` call (an `AdapterBody` on the same `AdapterSet`); each request's
    texts are prepared and tokenized by its own run (preprocessing, tokenizer, max_length)."""
    if not requests:
        return []
    bodies = []
    for scorer, _ in requests:
        check_is_fitted(scorer, "model_")
        bodies.append(scorer.model_.body)
    if not all(isinstance(b, AdapterBody) for b in bodies) or len({id(b.adapters) for b in bodies}) > 1:
        raise ValueError(
            "predict_proba_mixed needs scorers loaded together by load_shared (one AdapterSet); got bodies "
            f"{[type(b).__name__ for b in bodies]}: score the others with their own predict_proba"
        )
    long_docs = [scorer.get_config().max_chunks for scorer, _ in requests if scorer.get_config().max_chunks > 1]
    if long_docs:
        raise ValueError(
            "predict_proba_mixed reads each text as one window; a run that reads long documents in windows "
            f"(max_chunks={long_docs[0]}) is scored with its own predict_proba"
        )
    adapters: AdapterSet = bodies[0].adapters
    # rows: (request index, row within the request, token ids), tokenized without padding, then sorted by length
    # so a pass pads little.
    rows: list[tuple[int, int, list[int]]] = []
    for r, (scorer, texts) in enumerate(requests):
        encoded = scorer.tokenizer_(
            scorer.model_texts(prepare_inputs(scorer, texts)),
            truncation=True,
            max_length=scorer.get_config().max_length,
        )["input_ids"]
        rows.extend((r, i, ids) for i, ids in enumerate(encoded))
    rows.sort(key=lambda row: len(row[2]))
    logits = [np.zeros((len(texts), len(scorer.classes_)), dtype=np.float32) for scorer, texts in requests]
    pad_id = requests[0][0].tokenizer_.pad_token_id or 0  # masked out: its value changes nothing
    device = next(adapters.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            width = max(len(ids) for _, _, ids in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, (_, _, ids) in enumerate(chunk):  # right padding, as the tokenizers' own
                input_ids[j, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                mask[j, : len(ids)] = 1
            names = [bodies[r].name for r, _, _ in chunk]
            input_ids, mask = input_ids.to(device), mask.to(device)
            hidden = adapters.forward_mixed(names, input_ids=input_ids, attention_mask=mask).last_hidden_state
            for r in sorted({r for r, _, _ in chunk}):  # each run's rows through its own pooling and head
                picked = [j for j, row in enumerate(chunk) if row[0] == r]
                classifier = requests[r][0].model_
                pooled = classifier.pool(hidden[picked], mask[picked])
                out = classifier.score(classifier.dropout(pooled.to(classifier.score.weight.dtype)))
                logits[r][[chunk[j][1] for j in picked]] = out.float().cpu().numpy()
    return [scorer.calibrator_.transform(z) for (scorer, _), z in zip(requests, logits)]


def load_sharing_bases(directories: Mapping[str, str | Path]) -> dict[str, FineTunedScorer]:
    """key -> scorer for the LoRA/QLoRA runs among `directories` (key -> a fine-tuned scorer's folder) that share
    their base with another of them, one base per group. The rest (full fine-tunes, and a LoRA run alone on its
    base) are left out: `FineTunedScorer.load` loads them, merged, the faster path for a single model."""
    groups: dict[tuple[str, str], list[str]] = {}
    for key, directory in directories.items():
        run = SavedRun.read(directory)
        if run.is_adapter:
            groups.setdefault(run.base_key, []).append(key)
    out = {}
    for keys in groups.values():
        if len(keys) > 1:
            scorers = load_shared([directories[k] for k in keys], names=[f"adapter_{k}" for k in keys])
            out.update(zip(keys, scorers))
    return out


def _check_names(names: list[str], runs: list[SavedRun]) -> None:
    if len(names) != len(runs):
        raise ValueError(f"{len(names)} adapter names for {len(runs)} run directories: give one name per directory")
    if len(set(names)) != len(names) or any(not n or "." in n for n in names):
        raise ValueError(
            f"adapter names {names} must be distinct, non-empty and free of '.' (PEFT uses them as module names)"
        )


def _check_shareable(runs: list[SavedRun], base_hashes: Sequence[str | None] | None) -> None:
    """Every run an adapter, on one base (name and architecture), with one recorded base hash; all problems at once."""
    problems = [
        f"{r.directory} is a {r.method} fine-tune, not an adapter: it carries its own body; load it with "
        "FineTunedScorer.load"
        for r in runs
        if not r.is_adapter
    ]
    adapters = [r for r in runs if r.is_adapter]
    if len({r.base_key for r in adapters}) > 1:
        listed = "; ".join(f"{r.directory}: {r.base} ({r.architecture})" for r in adapters)
        problems.append(
            f"the runs were trained on different base models ({listed}): only adapters of one base "
            "can share it; load the others with FineTunedScorer.load"
        )
    if base_hashes is not None:
        if len(base_hashes) != len(runs):
            raise ValueError(
                f"{len(base_hashes)} base hashes for {len(runs)} run directories: give one per directory "
                "(None where unknown)"
            )
        known = [(r, h) for r, h in zip(runs, base_hashes) if h]
        if len({h for _, h in known}) > 1:
            listed = "; ".join(f"{r.directory}: {h[:12]}" for r, h in known)
            problems.append(
                f"the runs' base weights differ by content hash ({listed}) although named alike: the "
                "weights under that name changed between trainings; load them apart with "
                "FineTunedScorer.load"
            )
    if problems:
        raise ConfigError("cannot load these runs on one shared base:\n  " + "\n  ".join(problems))
