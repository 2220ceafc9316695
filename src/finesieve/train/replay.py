"""Replay buffer: mix a share of an earlier model's training data into a new fine-tune, against forgetting.

A model retrained only on fresh data drifts away from what it knew (catastrophic forgetting); replaying a
random fraction of the old training rows keeps the old decision boundary in the loss. The source is an
earlier run directory (its recorded data file and training split are reloaded and checked against their
hashes) or a plain data file. Replayed rows that duplicate or near-duplicate the new validation or test
messages are left out, so replay never leaks evaluation data into training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finesieve.data.dataset import Dataset
from finesieve.data.errors import ConfigError
from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import Splits, exclude_near_duplicates, load_splits
from finesieve.runs import MANIFEST, SPLITS, is_run_dir, run_manifest, run_splits_path


def run_data_splits(run_dir: str | Path, flag: str = "--replay-from") -> Splits:
    """A run's own data and split, reloaded as the run read them: its recorded data file (with its redaction, and
    its labels normalised if they were then) and its splits.json, refused when the file's content hash changed."""
    run_dir = Path(run_dir)
    manifest = run_manifest(run_dir)
    data = manifest.data
    if not data.get("source") or not Path(data["source"]).exists():
        raise ConfigError(
            f"{flag} {run_dir}: the run's training file {data.get('source')!r} is not available: "
            "restore it at that path, or pass the data file itself"
        )
    parent = load_dataset(
        data["source"],
        ColumnSpec.model_validate(data["column_spec"]),
        redaction=manifest.preprocessing.redaction,
        normalise_labels=bool(data.get("label_normalisation")),
    )
    splits_path = run_splits_path(run_dir)
    if splits_path is None:
        raise ConfigError(
            f"{flag} {run_dir}: the run has no {SPLITS}, so its training split is unknown: pass the data file itself"
        )
    return load_splits(splits_path, parent)


def replay_source(source: str | Path, spec: ColumnSpec) -> tuple[Dataset, str]:
    """(the rows that may be replayed, a description) from a run directory or a data file."""
    source = Path(source)
    if is_run_dir(source):
        train = run_data_splits(source).dataset("train")
        if not isinstance(train, Dataset):
            raise ConfigError(f"--replay-from {source}: a {type(train).__name__} run; replay needs classification data")
        return train, f"training split of run {source}"
    if source.is_file():
        # Replayed rows only add examples of known classes: spelling variants of a label are folded, not refused.
        return load_dataset(source, spec, normalise_labels=True), f"file {source}"
    raise ConfigError(f"--replay-from {source}: neither a run directory (with {MANIFEST}) nor a data file")


def replay_rows(
    source: str | Path, train: Dataset, *, exclude: list[Dataset], fraction: float, seed: int = 0
) -> tuple[Dataset, dict]:
    """`train` plus round(fraction * len(train)) rows sampled from `source`; and what was done, for the manifest."""
    old, described = replay_source(source, train.spec)
    held_out = [t for ds in exclude for t in ds.texts]
    known = set(train.texts)
    keep, n_near = exclude_near_duplicates(old, held_out)
    keep &= np.array([t not in known for t in old.texts])
    candidates = old.subset(keep)
    n = min(len(candidates), int(round(fraction * len(train))))
    rng = np.random.default_rng(seed)
    picked = (
        candidates.subset(np.sort(rng.choice(len(candidates), size=n, replace=False)))
        if n
        else candidates.subset(np.zeros(len(candidates), bool))
    )
    frame = picked.frame.copy()
    frame["id"] = "replay:" + frame["id"].astype(str)  # ids stay unique beside the new data's
    merged = Dataset(
        frame=pd.concat([train.frame, frame[[c for c in train.frame.columns if c in frame]]], ignore_index=True),
        classes=sorted(set(train.classes) | set(old.classes)),
        spec=train.spec,
        source=train.source,
        rejected=train.rejected,
        redaction_counts=train.redaction_counts,
        preprocessing=train.preprocessing,
    )
    info = {
        "source": described,
        "fraction": fraction,
        "n_new": len(train),
        "n_replayed": n,
        "n_available": len(old),
        "n_left_out_overlapping_val_or_test": int(len(old) - keep.sum()),
        "replayed_class_counts": picked.class_counts(),
    }
    return merged, info
