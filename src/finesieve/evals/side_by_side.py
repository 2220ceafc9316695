"""Evaluate several scorers on the same messages and compare them: the recipe behind `finesieve eval`.

Each reference is a run directory (a trained scorer, used as saved, with its validation threshold) or a
reference scorer name (`tfidf`, `rules:builtin:hate_speech`) that is fitted first: on `train` when given,
else on the training part of a reproducible split of the evaluation file, whose held-out test part is then
what every scorer is evaluated on. A run evaluated on the very data it was trained on is evaluated on its
own saved test split, so no figure comes from messages a model saw.

Any other evaluated rows that a run trained on or chose its threshold on are found and named in a note: by
id when the file is the run's own data or both files have an id column, and by the hash of the cleaned text
(whatever the ids) when the run's splits.json records text hashes (`split_overlap`).

    result = run_side_by_side(["runs/tfidf"], load_dataset("held_out.csv", spec), positive=["hate_speech"])
    print(result.notes)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finesieve.data.dataset import Dataset
from finesieve.data.evasion import EvasionConfig
from finesieve.data.split import SplitConfig, load_splits, make_splits, read_split_members, text_hash
from finesieve.evals.bias import BiasConfig
from finesieve.evals.compare import compare
from finesieve.evals.harness import CostModel, EvalResult, evaluate
from finesieve.evals.threshold import choose_threshold
from finesieve.runs import Run, load_scorer


@dataclass
class SplitOverlap:
    """How many evaluated rows a run saw while training (its train split) or choosing its threshold (val)."""

    run: str
    n_evaluated: int
    n_train: int
    n_val: int
    n_seen: int  # rows in train or val
    compared_by: list[str]  # "id", "text": what rows were compared on with the run's splits
    example: dict | None = None  # one seen row: row, id, split, text (cleaned and redacted, cut short)

    @property
    def share(self) -> float:
        return self.n_seen / self.n_evaluated if self.n_evaluated else 0.0

    def note(self) -> str:
        ex = self.example or {}
        return (
            f"{self.run}: {self.n_train:,} of the {self.n_evaluated:,} evaluated rows are in the run's training "
            f"split and {self.n_val:,} in its validation split ({self.share:.1%} of the evaluated rows, compared by "
            f"{' and '.join(self.compared_by)}; e.g. row {ex.get('row')}, id {ex.get('id')!r}, in {ex.get('split')}: "
            f"{ex.get('text')!r}): figures on these rows are optimistic; evaluate on held-out data"
        )

    def to_dict(self) -> dict:
        return {
            "run": self.run,
            "n_evaluated": self.n_evaluated,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_seen": self.n_seen,
            "share": round(self.share, 4),
            "compared_by": self.compared_by,
            "example": self.example,
        }


@dataclass
class SideBySide:
    results: list[EvalResult]
    comparison: dict
    evaluated_on: str
    notes: list[str]
    overlaps: list[SplitOverlap] = field(default_factory=list)  # one per run directory that could be checked


def _name(ref: str, taken: set[str]) -> str:
    path = Path(ref)
    base = path.name if path.is_dir() else ref
    name, k = base, 2
    while name in taken:
        name, k = f"{base}#{k}", k + 1
    taken.add(name)
    return name


def run_side_by_side(
    refs: Sequence[str],
    data: Dataset,
    *,
    positive: Sequence[str],
    train: Dataset | None = None,
    split_config: SplitConfig | None = None,
    threshold: float | None = None,
    target_precision: float = 0.9,
    target_recall: float = 0.9,
    cost: CostModel | None = None,
    slice_cols: Sequence[str] = (),
    baseline: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    bias: BiasConfig | None = None,
    evasion: EvasionConfig | None = None,
) -> SideBySide:
    if not refs:
        raise ValueError("name at least one run directory or scorer to evaluate")
    loaded = [(ref, *load_scorer(ref)) for ref in refs]
    notes: list[str] = []
    eval_set, evaluated_on = data, f"all of {data.source} (n={len(data):,})"
    fit_train = fit_val = None
    if any(run is None for _, _, run in loaded):
        if train is not None:
            holdout = make_splits(train, SplitConfig(test_frac=0.1, val_frac=0.0, seed=seed))
            fit_train, fit_val = holdout.dataset("train"), holdout.dataset("test")
            notes.append(f"reference scorers fitted on {train.source}; thresholds chosen on a 10% hold-out of it")
        else:
            splits = make_splits(data, split_config or SplitConfig(seed=seed))
            fit_train, fit_val, eval_set = splits.dataset("train"), splits.dataset("val"), splits.dataset("test")
            evaluated_on = f"held-out test split of {data.source} (n={len(eval_set):,}, split {splits.split_hash[:12]})"
            notes.append("reference scorers fitted on the training split; thresholds chosen on the validation split")
    else:
        eval_set, evaluated_on = _own_test_split(loaded, data, notes) or (eval_set, evaluated_on)
    eval_hashes = [text_hash(t) for t in eval_set.texts]
    overlaps = [
        o
        for ref, _, run in loaded
        if run is not None
        for o in [split_overlap(ref, run, data, eval_set, eval_hashes)]
        if o is not None
    ]
    notes.extend(o.note() for o in overlaps if o.n_seen)

    results, taken = [], set()
    for ref, scorer, run in loaded:
        if run is None:
            scorer.fit(fit_train.texts, fit_train.labels, multilabel=fit_train.multilabel)
            t, source = choose_threshold(scorer, fit_val, positive)
        else:
            t, source = run.threshold, "the run's validation threshold"
            if t is None:
                t, source = 0.5, "default 0.5"
        if threshold is not None:
            t, source = threshold, "given on the command line"
        results.append(
            evaluate(
                scorer,
                eval_set,
                positive=positive,
                threshold=t,
                threshold_source=source,
                target_precision=target_precision,
                target_recall=target_recall,
                cost=cost,
                slice_cols=slice_cols,
                n_boot=n_boot,
                seed=seed,
                name=_name(ref, taken),
                bias=bias,
                evasion=evasion,
            )
        )
    comparison = compare(results, baseline=baseline, n_boot=n_boot if len(results) > 1 else 0, seed=seed)
    comparison["evaluated_on"] = evaluated_on
    comparison["notes"] = notes
    comparison["split_overlap"] = {o.run: o.to_dict() for o in overlaps}
    return SideBySide(results, comparison, evaluated_on, notes, overlaps)


def split_overlap(
    ref: str, run: Run, data: Dataset, eval_set: Dataset, eval_hashes: Sequence[str] | None = None
) -> SplitOverlap | None:
    """Which rows of `eval_set` (drawn from `data`) are in the run's saved train or val split; None when the run
    has no splits.json or nothing can be matched.

    Ids are compared only when they name the same messages: `data` is the data the split was made from (same
    content hash), or both the run's data and `data` map an explicit id column. Texts are compared by
    `text_hash` whenever splits.json records the hashes (files written before them do not).
    """
    path = run.splits_path
    if path is None:
        return None
    members = read_split_members(path)
    run_spec = run.manifest.data.get("column_spec") or {}
    by_id = members.data_hash == data.content_hash or (bool(run_spec.get("id_col")) and data.spec.id_col is not None)
    by_text = members.text_hashes is not None
    if not (by_id or by_text):
        return None
    ids = [str(i) for i in eval_set.ids]
    hashes = list(eval_hashes) if eval_hashes is not None else [text_hash(t) for t in eval_set.texts]

    def seen_in(name: str) -> np.ndarray:  # (n_evaluated,) bool
        seen = np.zeros(len(ids), dtype=bool)
        if by_id:
            seen |= np.fromiter((i in members.ids[name] for i in ids), dtype=bool, count=len(ids))
        if by_text:
            seen |= np.fromiter((h in members.text_hashes[name] for h in hashes), dtype=bool, count=len(ids))
        return seen

    in_train, in_val = seen_in("train"), seen_in("val")
    seen = in_train | in_val
    example = None
    if seen.any():
        i = int(np.flatnonzero(seen)[0])
        text = str(eval_set.frame["text"].iloc[i])
        example = {
            "row": int(eval_set.frame["row"].iloc[i]),
            "id": ids[i],
            "split": "train" if in_train[i] else "val",
            "text": text if len(text) <= 80 else text[:77] + "...",
        }
    return SplitOverlap(
        run=str(ref),
        n_evaluated=len(ids),
        n_train=int(in_train.sum()),
        n_val=int(in_val.sum()),
        n_seen=int(seen.sum()),
        compared_by=[k for k, on in (("id", by_id), ("text", by_text)) if on],
        example=example,
    )


def _own_test_split(loaded, data: Dataset, notes: list[str]) -> tuple[Dataset, str] | None:
    """When every run was trained on exactly this data, evaluate on their (shared) saved test split."""
    runs = [run for _, _, run in loaded]
    hashes = {run.manifest.data.get("content_hash") for run in runs}
    if hashes != {data.content_hash}:
        return None
    split_files = [run.splits_path for run in runs]
    if not all(p is not None for p in split_files):
        raise ValueError(
            "the data is the runs' own training data but a run has no splits.json: "
            "evaluate on a file the runs never saw"
        )
    assignments = [load_splits(p, data).assignment for p in split_files]
    if any(not np.array_equal(a, assignments[0]) for a in assignments[1:]):
        raise ValueError(
            "the runs were trained on this data with different splits, so no test set is unseen by all: "
            "evaluate them one at a time, or on a file none of them saw"
        )
    test = data.subset(assignments[0] == "test")
    notes.append("the data is the runs' own training data: evaluated on their saved test split only")
    return test, f"the runs' saved test split of {data.source} (n={len(test):,})"
