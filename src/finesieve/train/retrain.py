"""Retrain a run on fresh reviewer-labelled data, then let the regression gate say whether it may replace it.

    from finesieve.train.retrain import load_fresh, retrain
    fresh = load_fresh("reviews.csv", "runs/spam")          # the parent's column names and preprocessing
    fitted, verdict = retrain("runs/spam", fresh, "runs/spam-2", replay_from="runs/spam-0")
    verdict.promote, verdict.reasons

    finesieve retrain runs/spam --fresh reviews.csv --out runs/spam-2      (exit 0: promote; 4: refused)

The next training set, step by step; every row left out is counted in the new manifest's `retrain` section:
  1. The parent's data and split are reloaded as the parent read them and hash-checked
     (`train.replay.run_data_splits`); its corner-case sets are reloaded from the files its manifest records
     (skipped, with a note in the verdict, when a file is missing or its content changed).
  2. Fresh rows that near-duplicate (or copy) a FIXED evaluation message, i.e. the parent's validation or test
     split or a corner-case set, are dropped; so are exact copies of a training row or of an earlier fresh row.
  3. Fresh rows that near-duplicate a parent training row are not new: they go to training. The others get a
     group-aware, stratified split (`data.split.make_splits`) into train, val and test slices.
  4. Optionally a replay buffer of earlier data (`train.replay.replay_rows`), never near an evaluation message.
  5. Any training row that near-duplicates an evaluation message (the fresh slices included) is dropped.
The new run's splits: train = parent train + fresh train (+ replay); val = parent val + fresh val, so the threshold
is chosen on validation data only; test = the parent's test split, unchanged, so test figures compare across
generations. The fresh test slice becomes a corner-case set of the new run ("fresh", or "fresh-2"... when that
name is taken), so the next retrain holds it fixed in turn. Both files are written into the run directory
(`training_data.csv`, `fresh_test.csv`; the redacted texts only, never raw ones), so the new run is itself a
parent that `retrain` and `--replay-from` can reload.

The candidate is the parent's kind fitted with the parent's recorded settings: tfidf and char_cnn are refitted
(seconds: what the tests run), a fine-tune is trained again with `train_finetune`. Once it is fitted, and before
the run is saved, the gate (`evals.gate`) compares it with the parent on the parent's test split, each corner-case
set and the fresh test slice; gate.json and gate.html go into the run directory and the verdict into its manifest.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from finesieve.data.dataset import Dataset
from finesieve.data.dedupe import exact_duplicate_groups
from finesieve.data.errors import ConfigError, DataError
from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import SplitConfig, Splits, exclude_near_duplicates, make_splits
from finesieve.data.task import ClassificationTask
from finesieve.evals.functional import is_functional_suite, load_functional_suite
from finesieve.evals.gate import GateConfig, GateVerdict, run_gate, score_gate_sets, write_gate_report
from finesieve.evals.threshold import choose_threshold
from finesieve.manifest import RunManifest
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.outputs import check_run_dir, partial_path, start_run_dir
from finesieve.runs import Run, load_run
from finesieve.train.finetune import train_finetune
from finesieve.train.prefilter import PREFILTER_KINDS
from finesieve.train.recipe import FittedRun, fit_and_save
from finesieve.train.replay import replay_rows, run_data_splits

TRAINING_DATA = "training_data.csv"
FRESH_TEST = "fresh_test.csv"
RETRAIN_KINDS = (*PREFILTER_KINDS, "finetuned")
FRESH_SPLIT = SplitConfig(test_frac=0.25, val_frac=0.15)  # the gate needs a held-out fresh slice of some size
COLUMNS = ["id", "text_raw", "text", "labels"]  # what a retrained data set keeps of each row


def load_fresh(path: str | Path, parent_run: str | Path) -> Dataset:
    """A labelled file of fresh rows, read with the parent run's text and label columns and preprocessing (the
    layout `finesieve data export-reviews` writes); labels spelled another way ('Spam') are folded to one."""
    manifest = _classification_run(parent_run).manifest
    spec = ColumnSpec.model_validate(manifest.data.get("column_spec") or {})
    fresh_spec = ColumnSpec(
        text_col=spec.text_col, label_cols=spec.label_cols, label_sep=spec.label_sep, encoding=spec.encoding
    )
    return load_dataset(path, fresh_spec, redaction=manifest.preprocessing.redaction, normalise_labels=True)


def retrain(
    parent_run: str | Path,
    fresh: Dataset,
    out: str | Path,
    *,
    replay_from: str | Path | None = None,
    replay_fraction: float = 0.2,
    drifted: dict[str, Dataset] | None = None,
    gate: GateConfig | None = None,
    fresh_split: SplitConfig = FRESH_SPLIT,
    seed: int = 0,
    n_boot: int = 1000,
    overwrite: bool = False,
) -> tuple[FittedRun, GateVerdict]:
    """Build the next training set (see the module docstring), fit the parent's kind on it, run the gate, save the
    run with gate.json and gate.html in it. Returns the fitted run and the gate's verdict. `seed` seeds the fresh
    rows' split and the replay sample (the gate's resamples have their own, `gate.seed`).

    `drifted` adds labelled samples of the new traffic drawn independently of the parent's decisions (a random
    sample labelled for evaluation): reviewed rows are mostly messages the parent already flagged, so a slice of
    them can hide what it missed. Each is a drifted set of the gate (it must improve) and a corner-case set of the
    new run (the fresh test slice is then only held to not regress); fresh, training and replayed rows near them
    are dropped as near any evaluation set."""
    parent_run, out = Path(parent_run), Path(out)
    parent = _classification_run(parent_run)
    positive, kind = list(parent.positive or []), parent.manifest.kind
    if kind not in RETRAIN_KINDS:
        raise ConfigError(
            f"PARENT_RUN {parent_run}: a {kind} run; retrain refits {', '.join(RETRAIN_KINDS)} runs. Fix: retrain "
            "the cascade's stages one by one, then fit the cascade again"
        )
    if not 0.0 <= replay_fraction <= 1.0:
        raise ConfigError(f"--replay-fraction {replay_fraction}: expected a share in [0, 1], e.g. 0.2")
    check_run_dir(out, overwrite=overwrite)
    gate = gate or GateConfig()

    splits = run_data_splits(parent_run, flag="PARENT_RUN")
    old = {name: _as_dataset(splits.dataset(name)) for name in ("train", "val", "test")}
    corners, notes = _parent_corner_sets(parent.manifest)
    _check_fresh_classes(fresh, old["train"])
    drifted = dict(drifted or {})
    clash = sorted(set(drifted) & set(corners))
    if clash:
        raise ConfigError(f"--drifted {clash}: the parent already has corner-case sets so named; rename the files")
    fixed = {"val": old["val"], "test": old["test"], **{f"corner:{k}": v for k, v in corners.items()}}
    fixed |= {f"drifted:{k}": v for k, v in drifted.items()}  # never trained on either

    tag = fresh.content_hash[:8]  # fresh and replayed ids stay unique across generations of retraining
    n_fresh = len(fresh)
    fresh = _with_ids(fresh, f"fresh.{tag}:")
    fresh, dropped_fresh = _drop_fresh_duplicates(fresh, old["train"], fixed)
    slices, not_new = _split_fresh(fresh, old["train"], fresh_split.model_copy(update={"seed": seed}))
    train = _concat([old["train"], slices["train"]])
    replay_info = None
    if replay_from is not None:
        n_before = len(train)
        exclude = [old["val"], old["test"], *corners.values(), *drifted.values(), slices["val"], slices["test"]]
        train, replay_info = replay_rows(replay_from, train, exclude=exclude, fraction=replay_fraction, seed=seed)
        ids = train.frame["id"].astype(str).tolist()
        train.frame["id"] = ids[:n_before] + [f"replay.{tag}:{i.removeprefix('replay:')}" for i in ids[n_before:]]
    evaluation = {**fixed, "fresh:val": slices["val"], "fresh:test": slices["test"]}
    train, leaks = _drop_near_evaluation(train, evaluation, tag)

    corner_name = _free_name("fresh", {**corners, **drifted})
    with tempfile.TemporaryDirectory(prefix="finesieve-retrain-") as tmp:
        data, fresh_test = _write_and_reload(
            Path(tmp), out, parent.manifest, train, _concat([old["val"], slices["val"]]), old["test"], slices["test"]
        )
        new_splits = Splits(
            assignment=np.array(
                ["train"] * len(train) + ["val"] * (len(old["val"]) + len(slices["val"])) + ["test"] * len(old["test"]),
                dtype=object,
            ),
            config=splits.config,
            data_hash=data.content_hash,
            source=data,
        )
        corner_sets = {**corners, **drifted, **({corner_name: fresh_test} if len(fresh_test) else {})}
        gate_sets = {"test": (new_splits.dataset("test"), "fixed")}
        gate_sets |= {f"corner:{k}": (v, "fixed") for k, v in corners.items()}
        if len(fresh_test):  # with independent drifted samples, the reviewed slice must only not regress
            gate_sets[f"corner:{corner_name}"] = (fresh_test, "fixed" if drifted else "drifted")
        gate_sets |= {f"corner:{k}": (v, "drifted") for k, v in drifted.items()}
        report = {
            "parent_run": str(parent_run),
            "parent_data_hash": splits.data_hash,
            "parent_split_hash": splits.split_hash,
            "fresh": {
                "source": fresh.source,
                "content_hash": fresh.content_hash,
                "n_rows": n_fresh,
                "rejected": fresh.rejected.to_dict(),
                "dropped": dropped_fresh,
                "not_new_to_training": not_new,
                "slices": {name: len(ds) for name, ds in slices.items()},
                "test_slice_corner_set": corner_name if len(fresh_test) else None,
            },
            "training_rows_dropped_near_evaluation": leaks,
            "n_train": len(train),
            "notes": notes,
        }
        verdicts: list[GateVerdict] = []

        def after_fit(scorer) -> dict:
            """Run the gate on the fitted candidate and stage its report and the data files beside the model."""
            val = _as_dataset(new_splits.dataset("val"))
            threshold, _ = choose_threshold(scorer, val, positive)  # as fit_and_save chooses it: same data, same rule
            sets = score_gate_sets(scorer, parent.scorer, gate_sets, positive=positive)
            verdict = run_gate(
                sets,
                thresholds={"candidate": threshold, "current": float(parent.threshold or 0.0)},
                config=gate,
                candidate=str(out),
                current=str(parent_run),
                notes=notes,
            )
            staging = partial_path(out)
            write_gate_report(verdict, staging)
            for name in (TRAINING_DATA, FRESH_TEST):
                if (Path(tmp) / name).exists():
                    shutil.copyfile(Path(tmp) / name, staging / name)
            verdicts.append(verdict)
            return {
                "retrain": report,
                "replay": replay_info,
                "gate": {"promote": verdict.promote, "decision": verdict.decision, "reasons": verdict.reasons},
            }

        fitted = _fit(parent, new_splits, corner_sets, out, after_fit, n_boot=n_boot, overwrite=overwrite)
    return fitted, verdicts[0]


# ----------------------------------------------------------------------------- the parent


def _classification_run(run_dir: str | Path) -> Run:
    run = load_run(run_dir)
    if not isinstance(run.task, ClassificationTask) or run.threshold is None:
        raise ConfigError(
            f"PARENT_RUN {run_dir}: a {run.task.kind} run; retrain and its gate need a classification run "
            "with an operating threshold"
        )
    return run


def _parent_corner_sets(manifest: RunManifest) -> tuple[dict[str, Dataset], list[str]]:
    """The parent's corner-case sets reloaded from their recorded files (as the CLI loads them: the parent's
    columns without votes, its redaction), and a note for each one that cannot be: missing or changed."""
    spec = ColumnSpec.model_validate(manifest.data.get("column_spec") or {}).model_copy(update={"vote_cols": None})
    normalise = bool(manifest.data.get("label_normalisation"))
    sets, notes = {}, []
    for name, recorded in (manifest.data.get("corner_sets") or {}).items():
        source = recorded.get("source")
        if source and is_functional_suite(source):  # builtin:NAME or a suite file (evals.functional)
            try:
                suite = load_functional_suite(source, redaction=manifest.preprocessing.redaction)
            except (ConfigError, DataError) as err:
                notes.append(f"corner set {name!r} skipped: {err}")
                continue
            if suite.content_hash != recorded.get("content_hash"):
                notes.append(
                    f"corner set {name!r} skipped: the suite {source} has changed since the parent was evaluated on it"
                )
                continue
            sets[name] = suite
            continue
        if not source or not Path(source).is_file():
            notes.append(f"corner set {name!r} skipped: its file {source!r} is not available")
            continue
        # With the run's id column, or with row numbers as ids: a corner file of an earlier generation may lack it.
        found = None
        for corner_spec in dict.fromkeys([spec, spec.model_copy(update={"id_col": None})]):
            try:
                dataset = load_dataset(
                    source, corner_spec, redaction=manifest.preprocessing.redaction, normalise_labels=normalise
                )
            except DataError:
                continue
            if dataset.content_hash == recorded.get("content_hash"):
                found = dataset
                break
        if found is None:
            notes.append(
                f"corner set {name!r} skipped: {source} no longer reads as the set the parent was evaluated on "
                f"(content hash recorded {str(recorded.get('content_hash'))[:12]}…)"
            )
            continue
        sets[name] = found
    return sets, notes


def _check_fresh_classes(fresh: Dataset, train: Dataset) -> None:
    counts = fresh.class_counts()
    unknown = sorted(c for c, n in counts.items() if n and c not in train.classes)
    if unknown:
        raise ConfigError(
            f"--fresh {fresh.source}: label(s) {unknown} are not classes of the parent run {train.classes}. Fix: "
            "map them to the parent's classes, or train a new run for a new policy"
        )


# ----------------------------------------------------------------------------- the fresh rows


def _drop_fresh_duplicates(
    fresh: Dataset, train: Dataset, fixed: dict[str, Dataset]
) -> tuple[Dataset, dict[str, int | dict[str, int]]]:
    """Fresh rows without near-copies of fixed evaluation messages and without exact copies of training rows
    or of each other (the first copy is kept); how many went, per reason and per evaluation set."""
    near = np.zeros(len(fresh), bool)
    per_set = {}
    for name, dataset in fixed.items():
        kept, n = exclude_near_duplicates(fresh, dataset.texts)
        per_set[name] = n
        near |= ~kept
    groups = exact_duplicate_groups(list(train.texts) + list(fresh.texts))
    seen = set(groups[: len(train)].tolist())
    copy = np.zeros(len(fresh), bool)
    for i, g in enumerate(groups[len(train) :].tolist()):
        copy[i] = g in seen
        seen.add(g)
    copy &= ~near
    dropped: dict[str, int | dict[str, int]] = {
        "near_duplicates_of_evaluation_sets": int(near.sum()),
        "near_duplicates_per_evaluation_set": per_set,
        "exact_duplicates_of_training_rows": int(copy.sum()),
    }
    return fresh.subset(~near & ~copy), dropped


def _split_fresh(fresh: Dataset, train: Dataset, config: SplitConfig) -> tuple[dict[str, Dataset], int]:
    """Fresh train / val / test slices; rows that near-duplicate a training row are not new and only train."""
    new, n_not_new = exclude_near_duplicates(fresh, train.texts)
    empty = fresh.subset(np.zeros(len(fresh), bool))
    if not new.any():
        return {"train": fresh, "val": empty, "test": empty}, n_not_new
    split = make_splits(fresh.subset(new), config)
    slices = {name: _as_dataset(split.dataset(name)) for name in ("train", "val", "test")}
    slices["train"] = _concat([slices["train"], fresh.subset(~new)])
    return slices, n_not_new


def _drop_near_evaluation(train: Dataset, evaluation: dict[str, Dataset], tag: str) -> tuple[Dataset, dict[str, int]]:
    """Training rows that near-duplicate no evaluation message; how many were dropped, by where they came from
    (parent, fresh or replay: this retrain's ids carry `tag`)."""
    texts = [t for dataset in evaluation.values() for t in dataset.texts]
    kept, _ = exclude_near_duplicates(train, texts)
    origin = [
        next((o for o in ("fresh", "replay") if i.startswith(f"{o}.{tag}:")), "parent")
        for i in train.frame["id"].astype(str)
    ]
    dropped = pd.Series(origin)[~kept].value_counts()
    return train.subset(kept), {str(k): int(v) for k, v in dropped.items()}


# ----------------------------------------------------------------------------- datasets and files


def _as_dataset(dataset) -> Dataset:
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"{dataset.source}: retrain needs classification data, found {type(dataset).__name__}")
    return dataset


def _with_ids(dataset: Dataset, prefix: str) -> Dataset:
    frame = dataset.frame.copy()
    frame["id"] = prefix + frame["id"].astype(str)
    return dataclasses.replace(dataset, frame=frame)


def _concat(parts: Sequence[Dataset]) -> Dataset:
    """Rows of several datasets (the first one's spec and preprocessing), keeping the columns every row has."""
    frame = pd.concat([p.frame[COLUMNS] for p in parts], ignore_index=True)
    classes = sorted({c for p in parts for c in p.classes})
    return dataclasses.replace(parts[0], frame=frame, classes=classes)


def _free_name(base: str, taken) -> str:
    if base not in taken:
        return base
    return next(f"{base}-{k}" for k in range(2, len(taken) + 3) if f"{base}-{k}" not in taken)


def _write_and_reload(
    tmp: Path, out: Path, manifest: RunManifest, train: Dataset, val: Dataset, test: Dataset, fresh_test: Dataset
) -> tuple[Dataset, Dataset]:
    """Write the new data (train, val, test rows in that order) and the fresh test slice as CSV files of redacted
    texts, and read them back as the new run will be reloaded: the data sets the run is trained and judged on.
    Their recorded source is their final place in the run directory."""
    parent_spec = ColumnSpec.model_validate(manifest.data.get("column_spec") or {})
    label_col = parent_spec.label_cols[0] if len(parent_spec.label_cols) == 1 else "labels"
    sep = parent_spec.label_sep or "|"
    id_col = "id" if "id" not in (parent_spec.text_col, label_col) else "row_id"
    spec = ColumnSpec(
        text_col=parent_spec.text_col,
        label_cols=(label_col,),
        label_sep=sep if train.multilabel else None,
        id_col=id_col,
        file_format="csv",
    )
    loaded = []
    for name, dataset in ((TRAINING_DATA, _concat([train, val, test])), (FRESH_TEST, fresh_test)):
        if not len(dataset):
            loaded.append(fresh_test)
            continue
        frame = pd.DataFrame(
            {
                id_col: dataset.frame["id"].astype(str),
                spec.text_col: dataset.frame["text"],  # redacted: a run directory never holds raw personal data
                label_col: [sep.join(labels) for labels in dataset.frame["labels"]],
            }
        )
        frame.to_csv(tmp / name, index=False, quoting=1)  # csv.QUOTE_ALL
        reread = load_dataset(tmp / name, spec, redaction=manifest.preprocessing.redaction)
        if reread.frame["id"].astype(str).tolist() != frame[id_col].tolist():
            raise DataError(
                f"{tmp / name}: {len(frame) - len(reread)} of the {len(frame)} rows written were rejected when "
                f"read back ({reread.rejected.to_dict()['counts']}); this is a bug in finesieve: please report it"
            )
        loaded.append(dataclasses.replace(reread, source=str(out.absolute() / name)))
    return loaded[0], loaded[1]


# ----------------------------------------------------------------------------- fitting


def _fit(
    parent: Run, splits: Splits, corner_sets: dict[str, Dataset], out: Path, after_fit, *, n_boot: int, overwrite: bool
) -> FittedRun:
    """The parent's kind, with the parent's recorded settings, fitted on the new split and saved."""
    kind, config = parent.manifest.kind, parent.manifest.scorer_config
    positive = list(parent.positive or [])
    if kind == "finetuned":
        # The parent's own replay was of data it already holds; this retrain's replay is in the training split.
        settings = FinetuneConfig.model_validate({**config, "replay_from": None})
        return train_finetune(
            settings,
            _as_dataset(splits.source),
            positive=positive,
            out=out,
            splits=splits,
            corner_sets=corner_sets,
            n_boot=n_boot,
            name=f"{kind} (retrained)",
            overwrite=overwrite,
            parent_run=str(parent.path),
            extra=after_fit,
        )
    config_cls, scorer_cls = PREFILTER_KINDS[kind]
    scorer = scorer_cls.from_config(config_cls.model_validate(config))  # type: ignore[attr-defined]
    val = _as_dataset(splits.dataset("val"))
    return fit_and_save(
        scorer,
        kind,
        splits,
        positive=positive,
        out=out,
        fit_kwargs={"val_texts": val.texts, "val_labels": val.labels} if kind == "char_cnn" else {},
        corner_sets=corner_sets,
        n_boot=n_boot,
        name=f"{kind} (retrained)",
        extra=after_fit,
        parent_run=str(parent.path),
        overwrite=overwrite,
        staging=start_run_dir(out, overwrite=overwrite),
    )
