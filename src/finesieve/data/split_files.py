"""`finesieve data split`: write a reproducible split of a labelled file as train/val/test JSONL files.

Only redacted text is written (never the raw text), with the id, labels and mapped metadata, plus
`splits.json` (ids per split, seed, data and split hashes) so any later figure can be traced to its rows.
Corner-case files are checked against the main data: main rows that near-duplicate a corner case are kept
out of every split (counted, and listed in `excluded_for_corner_cases.jsonl`), and each corner-case set is
written on its own, never mixed into the random test set.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from finesieve.data.dataset import Dataset
from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import SPLIT_NAMES, SplitConfig, exclude_near_duplicates, make_splits
from finesieve.outputs import commit_run_dir, start_run_dir

META = ("time", "user", "thread")


def write_jsonl(dataset: Dataset, path: Path) -> None:
    extra = [c for c in (*META, *dataset.spec.meta_cols) if c in dataset.frame]
    with open(path, "w", encoding="utf-8") as fh:
        for rec in dataset.frame[["id", "text", "labels", *extra]].to_dict("records"):
            rec["labels"] = list(rec["labels"])
            if "time" in rec and rec["time"] is not None:
                rec["time"] = str(rec["time"])
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def write_split_files(
    file: str | Path,
    spec: ColumnSpec,
    out: str | Path,
    *,
    test_frac: float = 0.1,
    val_frac: float = 0.1,
    seed: int = 0,
    group_col: str | None = None,
    corner_files: Sequence[str | Path] = (),
    overwrite: bool = False,
    normalise_labels: bool = False,
) -> list[str]:
    """Load, split and write; returns the summary lines to print.

    The folder is assembled in `OUT.partial` and renamed when complete; an existing non-empty `out` is refused
    unless `overwrite`, which replaces it whole (no file of an earlier split is left beside the new ones).
    """
    out = Path(out)
    config = SplitConfig(test_frac=test_frac, val_frac=val_frac, seed=seed, group_col=group_col)
    staging = start_run_dir(out, overwrite=overwrite)
    try:
        lines, splits = _write(file, spec, out, staging, config, corner_files, normalise_labels)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-made is left behind
        raise
    commit_run_dir(staging, out)
    lines.append(
        f"split {splits.sizes()} with seed {seed}; data hash {splits.data_hash[:12]}, "
        f"split hash {splits.split_hash[:12]}; written to {out}"
    )
    return lines


def _write(
    file, spec: ColumnSpec, out: Path, staging: Path, config: SplitConfig, corner_files, normalise_labels: bool
) -> tuple[list[str], object]:
    dataset = load_dataset(file, spec, rejects_path=staging / "rejected_rows.jsonl", normalise_labels=normalise_labels)
    lines = [
        f"{file}: {len(dataset):,} rows accepted, {dataset.rejected.total:,} rejected"
        + (f" (see {out / 'rejected_rows.jsonl'})" if dataset.rejected.total else "")
    ]
    corner_texts = []
    for corner in corner_files:
        corner_set = load_dataset(corner, spec, normalise_labels=normalise_labels)
        corner_texts += corner_set.texts
        write_jsonl(corner_set, staging / f"corner_{Path(corner).stem}.jsonl")
        lines.append(f"corner-case set {Path(corner).stem}: {len(corner_set):,} rows, evaluated on its own")
    if corner_texts:
        kept, n_removed = exclude_near_duplicates(dataset, corner_texts, threshold=config.near_dup_threshold)
        if n_removed:
            write_jsonl(dataset.subset(~kept), staging / "excluded_for_corner_cases.jsonl")
            dataset = dataset.subset(kept)
        lines.append(
            f"{n_removed:,} main rows near-duplicate a corner case and were kept out of every split "
            f"(listed in {out / 'excluded_for_corner_cases.jsonl'})"
            if n_removed
            else "no main row near-duplicates a corner case"
        )
    splits = make_splits(dataset, config)
    for name in SPLIT_NAMES:
        write_jsonl(splits.dataset(name), staging / f"{name}.jsonl")
    splits.save(staging / "splits.json")
    return lines, splits
