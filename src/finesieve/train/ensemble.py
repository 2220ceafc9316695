"""`finesieve ensemble fit`: a stacked ensemble of trained runs, fitted on their validation split, saved as a run.

    fitted = fit_ensemble(["runs/tfidf", "runs/cnn"], "runs/ensemble")
    fitted.scorer.weights_                          # {"tfidf": 0.6, "cnn": 0.4}: which member the stacker leans on
    fitted.test_result.to_dict()["roc_auc"]         # on the members' own test split
    load_run("runs/ensemble").scorer                # a StackedEnsemble, members included

Reads top to bottom:
  1. load every member run and refuse runs that were not trained on the same data and split (the data content
     hash and the split hash in their manifests), on other classes, or with other preprocessing: the error names
     the two runs that differ;
  2. reload that data and split (the data file the first run recorded, or the `dataset` given, checked against
     the split's hash);
  3. fit the stacker (`models.ensemble.StackedEnsemble`) on the validation split, the rows no member trained on,
     then choose the threshold there and measure on the test split through the recipe every run follows
     (`train.recipe.fit_and_save`, with the validation split as what is "trained" on: only the stacker learns);
  4. save a run directory of kind "ensemble" that `runs.load_run` loads; its manifest's `ensemble` section names
     each member run (path, kind, sha256 of its manifest.json, its own test figures) and the stacker's weights.
     The monitor's reference vocabulary comes from the training split, what the members read.

The threshold is chosen on the rows the stacker was fitted on. The stacker has few parameters (m x k x k + k, for
m members and k classes) and is regularised, so the optimism is small; the test split stays untouched and is the
figure to trust (and the one every member reports, so they compare directly).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from finesieve.data.dataset import Dataset
from finesieve.data.errors import ConfigError
from finesieve.data.split import Splits, load_splits
from finesieve.data.task import ClassificationTask
from finesieve.models.base import set_preprocessing
from finesieve.models.ensemble import MEMBER_NAME, EnsembleConfig, StackedEnsemble
from finesieve.outputs import check_run_dir
from finesieve.runs import MANIFEST, SPLITS, Run, load_run
from finesieve.train.recipe import FittedRun, fit_and_save
from finesieve.train.replay import run_data_splits

KIND = StackedEnsemble.kind


def fit_ensemble(
    run_dirs: Sequence[str | Path],
    out: str | Path | None,
    *,
    dataset: Dataset | None = None,
    names: Sequence[str] | None = None,
    positive: Sequence[str] | None = None,
    config: EnsembleConfig | None = None,
    corner_sets: dict[str, Dataset] | None = None,
    n_boot: int = 1000,
    overwrite: bool = False,
) -> FittedRun:
    """Stack the scorers of `run_dirs` (two or more runs of one data file and split) and save the run at `out`
    (None: measure only). `dataset`: the data the runs were trained on (default: reloaded from the file the
    first run recorded); `names`: the members' names (default: the run folders' names); `positive`: default the
    runs' own (they must agree). An existing run directory at `out` is refused before any work unless `overwrite`.
    """
    config = config or EnsembleConfig()
    if out is not None:
        check_run_dir(out, overwrite=overwrite)
    if len(run_dirs) < 2:
        raise ConfigError(f"an ensemble needs two or more runs, got {len(run_dirs)}: pass each run directory")
    runs = [load_run(d) for d in run_dirs]
    check_same_data(runs)
    names = member_names(runs, names)
    positive = list(positive) if positive is not None else runs_positive(runs)
    splits = _splits(runs[0], dataset)

    members = {}
    for name, run in zip(names, runs):
        set_preprocessing(run.scorer, None)  # the ensemble prepares raw text once, as its members were trained
        members[name] = run.scorer
    ensemble = StackedEnsemble.from_config(config, members)
    set_preprocessing(ensemble, runs[0].preprocessing)

    def section() -> dict:
        return {
            "ensemble": {
                "members": [{"name": n, **run_reference(r)} for n, r in zip(names, runs)],
                "weights": ensemble.weights_,
                "stacker": {
                    "fitted_on": f"validation split ({splits.sizes()['val']} rows); members trained on the training "
                    "split",
                    "C": ensemble.C_.tolist(),
                    "report": ensemble.report_,
                },
            }
        }

    return fit_and_save(
        ensemble,
        KIND,
        splits,
        positive=positive,
        out=out,
        train=_split(splits, "val"),  # only the stacker learns, and only from rows no member trained on
        vocabulary=_split(splits, "train"),  # what the members read: the monitor's reference vocabulary
        corner_sets=corner_sets,
        n_boot=n_boot,
        name=KIND,
        extra=lambda _: section(),
        overwrite=overwrite,
    )


def check_same_data(runs: Sequence[Run]) -> None:
    """Refuse runs that differ from the first in data, split, classes or preprocessing, naming both runs."""
    tasks = []
    for run in runs:
        if not isinstance(run.task, ClassificationTask):
            raise ConfigError(f"{run.path}: a {run.manifest.kind} run of a {run.task.kind} task; stack classifiers")
        if run.splits_path is None or not (run.manifest.splits or {}).get("split_hash"):
            raise ConfigError(
                f"{run.path}: no {SPLITS}, so its validation split is unknown; train it with finesieve train (or "
                "prefilter train) on the data file, which records the split"
            )
        tasks.append(run.task)
    first, first_task = runs[0], tasks[0]
    for run, task in zip(runs[1:], tasks[1:]):
        differences = []
        data_a, data_b = (str(r.manifest.data.get("content_hash")) for r in (first, run))
        split_a, split_b = (str((r.manifest.splits or {}).get("split_hash")) for r in (first, run))
        if data_a != data_b:
            differences.append(
                f"data content hash {data_a[:12]}… vs {data_b[:12]}… (another data file, or the file changed)"
            )
        if split_a != split_b:
            differences.append(f"split hash {split_a[:12]}… vs {split_b[:12]}… (another --seed or split settings)")
        if sorted(first_task.classes) != sorted(task.classes) or first_task.multilabel != task.multilabel:
            differences.append(f"classes {list(first_task.classes)} vs {list(task.classes)}")
        if first.preprocessing != run.preprocessing:
            differences.append("text preprocessing (cleaning or redaction settings)")
        if differences:
            raise ConfigError(
                f"runs {first.path} and {run.path} were not trained on the same data and split: "
                + "; ".join(differences)
                + ". Fix: stack runs trained on one data file with the same --seed (each member's validation split "
                "must be rows no member trained on)"
            )


def member_names(runs: Sequence[Run], names: Sequence[str] | None) -> list[str]:
    """The given names (checked), or each run folder's name, numbered where two folders share one."""
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(runs) or len(set(names)) != len(names):
            raise ConfigError(f"names {names}: give one distinct name per run ({len(runs)} runs)")
    else:
        base = [run.path.name if MEMBER_NAME.match(run.path.name) else run.manifest.kind for run in runs]
        names = [b if base.count(b) == 1 else f"{b}-{i + 1}" for i, b in enumerate(base)]
    bad = [n for n in names if not MEMBER_NAME.match(n)]
    if bad:
        raise ConfigError(f"member name(s) {bad}: use letters, digits, '_', '.' or '-' (each names a folder)")
    return names


def runs_positive(runs: Sequence[Run]) -> list[str]:
    """The positive classes every run was thresholded for; refused when they disagree."""
    found = {tuple(run.positive or ()) for run in runs}
    if len(found) != 1 or not next(iter(found)):
        raise ConfigError(
            f"the runs disagree on (or lack) the positive class: {sorted(found)}; pass positive=[...] (--positive)"
        )
    return list(next(iter(found)))


def run_reference(run: Run) -> dict:
    """What a run built on another records of it: path, kind, sha256 of its manifest.json (which pins every
    model file's hash too), data and split hashes, and its own test figures."""
    test = run.manifest.metrics.get("test") or {}
    return {
        "run": str(run.path),
        "kind": run.manifest.kind,
        "manifest_sha256": hashlib.sha256((Path(run.path) / MANIFEST).read_bytes()).hexdigest(),
        "data_hash": run.manifest.data.get("content_hash"),
        "split_hash": (run.manifest.splits or {}).get("split_hash"),
        "threshold": run.threshold,
        "test": {k: test.get(k) for k in ("roc_auc", "pr_auc", "precision", "recall", "f1") if k in test},
    }


def _split(splits: Splits, name: str) -> Dataset:
    """One split of the members' data, which is classification data (the runs' tasks were checked)."""
    data = splits.dataset(name)
    if not isinstance(data, Dataset):
        raise ConfigError(f"{splits.source.source}: {type(data).__name__}; an ensemble stacks classifiers only")
    return data


def _splits(run: Run, dataset: Dataset | None) -> Splits:
    """The members' data and split: `dataset` re-split as the first run recorded, or its own data file reloaded."""
    if dataset is None:
        return run_data_splits(run.path, flag="ensemble member")
    if dataset.preprocessing is not None and dataset.preprocessing != run.preprocessing:
        raise ConfigError(
            f"the dataset was prepared with other cleaning or redaction settings than run {run.path}: load it as "
            "the runs were trained (or leave dataset out to reload their own data file)"
        )
    if run.splits_path is None:  # check_same_data refused such runs already
        raise ConfigError(f"{run.path}: no {SPLITS}")
    return load_splits(run.splits_path, dataset)
