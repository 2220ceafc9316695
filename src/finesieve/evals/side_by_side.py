"""Evaluate several scorers on the same messages and compare them: the recipe behind `finesieve eval`.

Each reference is a run directory (a trained scorer, used as saved, with its validation threshold) or a
reference scorer name (`tfidf`, `rules:builtin:hate_speech`) that is fitted first: on `train` when given,
else on the training part of a reproducible split of the evaluation file, whose held-out test part is then
what every scorer is evaluated on. A run evaluated on the very data it was trained on is evaluated on its
own saved test split, so no figure comes from messages a model saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from finesieve.data.dataset import Dataset
from finesieve.data.split import SplitConfig, load_splits, make_splits
from finesieve.evals.compare import compare
from finesieve.evals.harness import CostModel, EvalResult, evaluate
from finesieve.runs import load_scorer
from finesieve.train.recipe import choose_threshold


@dataclass
class SideBySide:
    results: list[EvalResult]
    comparison: dict
    evaluated_on: str
    notes: list[str]


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
        results.append(evaluate(scorer, eval_set, positive=positive, threshold=t, threshold_source=source,
                                target_precision=target_precision, target_recall=target_recall, cost=cost,
                                slice_cols=slice_cols, n_boot=n_boot, seed=seed, name=_name(ref, taken)))
    comparison = compare(results, baseline=baseline, n_boot=n_boot if len(results) > 1 else 0, seed=seed)
    comparison["evaluated_on"] = evaluated_on
    comparison["notes"] = notes
    return SideBySide(results, comparison, evaluated_on, notes)


def _own_test_split(loaded, data: Dataset, notes: list[str]) -> tuple[Dataset, str] | None:
    """When every run was trained on exactly this data, evaluate on their (shared) saved test split."""
    runs = [run for _, _, run in loaded]
    hashes = {(run.manifest.get("data") or {}).get("content_hash") for run in runs}
    if hashes != {data.content_hash}:
        return None
    split_files = [run.path / "splits.json" for run in runs]
    if not all(p.exists() for p in split_files):
        raise ValueError("the data is the runs' own training data but a run has no splits.json: "
                         "evaluate on a file the runs never saw")
    assignments = [load_splits(p, data).assignment for p in split_files]
    if any(not np.array_equal(a, assignments[0]) for a in assignments[1:]):
        raise ValueError("the runs were trained on this data with different splits, so no test set is unseen by all: "
                         "evaluate them one at a time, or on a file none of them saw")
    test = data.subset(assignments[0] == "test")
    notes.append("the data is the runs' own training data: evaluated on their saved test split only")
    return test, f"the runs' saved test split of {data.source} (n={len(test):,})"
