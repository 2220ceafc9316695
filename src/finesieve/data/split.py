"""Reproducible, leak-free train/val/test splits.

    from finesieve.data.split import SplitConfig, make_splits, load_splits
    splits = make_splits(dataset, SplitConfig(test_frac=0.1, val_frac=0.1, seed=0))
    splits.save("runs/x/splits.json")              # ids and text hashes per split, hashes, sizes, class counts
    splits = load_splits("runs/x/splits.json", dataset)   # refuses a dataset whose content changed
    members = read_split_members("runs/x/splits.json")    # ids and text hashes per split, without the dataset

How a split is made:
  1. Groups. Near-duplicate clusters (finesieve.data.dedupe) are groups, merged with the groups of
     `group_col` when set (all rows of one thread or user). A group is never cut across splits, so no
     copy of a test message is trained on.
  2. Strata. Each group is stratified by its label (the most common among its rows; for multi-label
     data the sorted label combination, with combinations too rare to spread over the splits lumped
     into their most frequent single label, or "other").
  3. Assignment. Within each stratum, groups are ordered by a hash of their ids, shuffled by an RNG
     seeded from `seed` and the data, and dealt whole to test, then val, until each reaches
     round(frac * stratum rows); the rest is train. The same data and seed give the same split by id,
     whatever the row order in the file.
  4. Guard. check_leakage(...).raise_if_leaking() runs on the result.

Ranking and generation data (`data.dataset.RankingDataset`, `GenerationDataset`) are split by the same code:
  - ranking: all pairs of one query (one job) are one group, whatever `group_col` says besides, and the
    near-duplicate clusters are those of the query texts (one job posted twice under two ids stays in one
    split). Candidates are not grouped: one resume may be judged for a training job and for a test job, which
    is what matching a new job to known candidates looks like; `Splits.to_dict` counts such candidates.
  - generation: grouped like classification (near-duplicate inputs, and `group_col`).
  Neither has class labels, so each is one stratum. The seed mixes in the rows' content as for classification.

Corner-case sets (hand-picked hard examples: obfuscations, reclaimed slurs, quotes of abuse) are
evaluated on their own and never mixed into the random test set: their purpose is to measure known
weaknesses, and diluting them into a random sample hides exactly that. To keep them honest, drop
their near-duplicates from the main data before splitting:

    kept, n_removed = exclude_near_duplicates(dataset, corner_texts)
    splits = make_splits(dataset.subset(kept), config)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

import finesieve
from finesieve.data.dataset import AnyDataset, Dataset, RankingDataset
from finesieve.data.dedupe import UnionFind, check_leakage, near_duplicate_clusters
from finesieve.data.errors import ConfigError, DataError

SPLIT_NAMES = ("train", "val", "test")
TEXT_HASH_HEX = 16  # hex digits kept of sha256(text): 64 bits, so a chance match among 1e6 x 1e5 texts is ~5e-9


def text_hash(text: str) -> str:
    """Short hash of a cleaned and redacted text (`Dataset.texts`): how a run remembers which texts it saw."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:TEXT_HASH_HEX]


class SplitConfig(BaseModel):
    """How to cut a dataset into train, val and test."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    test_frac: float = Field(0.1, description="Fraction of rows in the test split, in (0, 1).")
    val_frac: float = Field(0.1, description="Fraction of rows in the validation split, in [0, 1); 0 for none.")
    seed: int = Field(0, description="Random seed; the split also depends on the data's content hash.")
    near_dup_threshold: float = Field(
        0.8, description="Estimated Jaccard similarity of character shingles above which two texts are kept together."
    )
    group_col: str | None = Field(
        None, description="Column of dataset.frame (e.g. 'thread' or 'user') whose rows must stay in one split."
    )

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if not 0.0 < self.test_frac < 1.0:
            raise ValueError(f"test_frac={self.test_frac}: expected a fraction in (0, 1), e.g. 0.1")
        if not 0.0 <= self.val_frac < 1.0:
            raise ValueError(f"val_frac={self.val_frac}: expected a fraction in [0, 1), e.g. 0.1 (0 for no val split)")
        if self.test_frac + self.val_frac >= 1.0:
            raise ValueError(
                f"test_frac + val_frac = {self.test_frac + self.val_frac:g} leaves nothing to train on: "
                "make test_frac and val_frac sum to less than 1 (e.g. 0.1 and 0.1)"
            )
        if not 0.0 < self.near_dup_threshold <= 1.0:
            raise ValueError(f"near_dup_threshold={self.near_dup_threshold}: expected a similarity in (0, 1], e.g. 0.8")
        return self


@dataclass
class Splits:
    """Which split each row of `dataset` is in, with the hashes that make it reproducible and checkable."""

    assignment: np.ndarray  # (n,) "train" / "val" / "test" per row of the dataset
    config: SplitConfig
    data_hash: str  # dataset.content_hash when the split was made
    source: AnyDataset = field(repr=False)

    def _check_name(self, name: str) -> None:
        if name not in SPLIT_NAMES:
            raise ConfigError(f"split {name!r} does not exist: use one of {', '.join(SPLIT_NAMES)}")

    def ids(self, name: str) -> list[str]:
        """Ids of the rows in split `name`, in dataset order."""
        self._check_name(name)
        return [str(i) for i in self.source.frame["id"][self.assignment == name]]

    def dataset(self, name: str) -> AnyDataset:
        self._check_name(name)
        return self.source.subset(self.assignment == name)

    def sizes(self) -> dict[str, int]:
        return {name: int((self.assignment == name).sum()) for name in SPLIT_NAMES}

    def text_hashes(self, name: str) -> list[str]:
        """`text_hash` of each row's cleaned and redacted text in split `name`, in `ids(name)` order."""
        self._check_name(name)
        return [text_hash(t) for t in self.source.frame["text"][self.assignment == name]]

    @property
    def split_hash(self) -> str:
        """sha256 over the sorted ids of each split: equal hashes mean the same rows went to the same splits."""
        h = hashlib.sha256()
        for name in SPLIT_NAMES:
            h.update(name.encode() + b"\x1d")
            for row_id in sorted(self.ids(name)):
                h.update(row_id.encode("utf-8", "surrogatepass") + b"\x1f")
        return h.hexdigest()

    def class_counts(self) -> dict[str, dict[str, int]]:
        return {name: self.dataset(name).class_counts() for name in SPLIT_NAMES}

    def to_dict(self) -> dict:
        out = {
            "seed": self.config.seed,
            "test_frac": self.config.test_frac,
            "val_frac": self.config.val_frac,
            "config": self.config.model_dump(),
            "data_hash": self.data_hash,
            "split_hash": self.split_hash,
            "sizes": self.sizes(),
        }
        if isinstance(self.source, Dataset):
            out["class_counts"] = self.class_counts()
            return out
        # Ranking and generation data have no classes: each split's own summary (pairs, queries, grades).
        out["kind"] = self.source.kind
        out["summaries"] = {name: self.dataset(name).summary() for name in SPLIT_NAMES}
        if isinstance(self.source, RankingDataset):
            out["candidates_in_several_splits"] = self.shared_candidates()
        return out

    def shared_candidates(self) -> int:
        """How many candidates of a ranking split are judged in more than one split (0 for other data)."""
        if not isinstance(self.source, RankingDataset):
            return 0
        seen = pd.DataFrame({"candidate": self.source.frame["candidate"], "split": self.assignment})
        return int((seen.drop_duplicates().groupby("candidate").size() > 1).sum())

    def save(self, path: str | Path) -> Path:
        """Write the summary plus the ids and text hashes of every split as sorted, indented JSON.

        The text hashes let a run recognise its training and validation messages in another file, whatever
        their ids there (`read_split_members`); files written before them lack `text_hashes` and still load.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            **self.to_dict(),
            "finesieve_version": finesieve.__version__,
            "ids": {name: self.ids(name) for name in SPLIT_NAMES},
            "text_hashes": {name: self.text_hashes(name) for name in SPLIT_NAMES},
        }
        path.write_text(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def load_splits(path: str | Path, dataset: AnyDataset) -> Splits:
    """Re-apply saved split ids to `dataset`; refuses when its content differs from the one split."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path}: cannot read a saved split ({exc}). Fix: pass the splits.json written by Splits.save"
        ) from exc
    missing = [k for k in ("data_hash", "split_hash", "config", "ids") if k not in payload]
    if missing:
        raise DataError(f"{path}: missing {missing}; this is not a file written by Splits.save")
    if payload["data_hash"] != dataset.content_hash:
        raise DataError(
            f"{path}: the split was made from data with content hash {payload['data_hash'][:12]}…, but this dataset "
            f"hashes to {dataset.content_hash[:12]}… (rows, texts, labels or their order changed). "
            "Fix: load the exact file the split was made from, or make a new split with make_splits."
        )
    where = {str(row_id): name for name in SPLIT_NAMES for row_id in payload["ids"].get(name, [])}
    unknown = [str(i) for i in dataset.frame["id"] if str(i) not in where]
    if unknown:
        raise DataError(
            f"{path}: {len(unknown)} dataset id(s) are in no saved split (e.g. {unknown[:3]}). Fix: make a new split"
        )
    splits = Splits(
        assignment=np.array([where[str(i)] for i in dataset.frame["id"]], dtype=object),
        config=SplitConfig.model_validate(payload["config"]),
        data_hash=dataset.content_hash,
        source=dataset,
    )
    if splits.split_hash != payload["split_hash"]:
        raise DataError(
            f"{path}: the ids per split do not match the saved split_hash (file edited?). Fix: make a new split"
        )
    return splits


@dataclass
class SplitMembers:
    """Which ids and texts a saved split put in each split, read without the dataset it was made from."""

    path: Path
    data_hash: str  # content hash of the dataset the split was made from
    ids: dict[str, set[str]]  # split name -> ids
    text_hashes: dict[str, set[str]] | None  # split name -> text_hash of its texts; None in older files


def read_split_members(path: str | Path) -> SplitMembers:
    """The ids (and, in files that have them, the text hashes) of each split saved in `path` by `Splits.save`."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path}: cannot read a saved split ({exc}). Fix: pass the splits.json written by Splits.save"
        ) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("ids"), dict) or "data_hash" not in payload:
        raise DataError(f"{path}: no 'ids' per split or no 'data_hash'; this is not a file written by Splits.save")
    hashes = payload.get("text_hashes")
    if hashes is not None and not isinstance(hashes, dict):
        raise DataError(
            f"{path}: 'text_hashes' is a {type(hashes).__name__}, expected an object of split name -> "
            "list of hashes. Fix: write the split again with Splits.save"
        )
    return SplitMembers(
        path=path,
        data_hash=str(payload["data_hash"]),
        ids={name: {str(i) for i in payload["ids"].get(name, [])} for name in SPLIT_NAMES},
        text_hashes=None if hashes is None else {name: set(map(str, hashes.get(name, []))) for name in SPLIT_NAMES},
    )


def _dedupe_texts(dataset: AnyDataset) -> list[str]:
    """The texts whose near-duplicates must share a split: the messages, the generation inputs, or a ranking
    set's query texts (its query ids when it has none)."""
    if isinstance(dataset, RankingDataset):
        return dataset.query_texts if dataset.query_texts is not None else dataset.queries
    return dataset.texts


def _groups(dataset: AnyDataset, config: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """(near-duplicate cluster id per row, group id per row): groups are clusters merged with group_col, and,
    for ranking data, with the query column."""
    clusters = near_duplicate_clusters(_dedupe_texts(dataset), threshold=config.near_dup_threshold)
    uf = UnionFind(len(dataset))
    first_row: dict = {}
    for i, c in enumerate(clusters.tolist()):
        uf.union(first_row.setdefault(("cluster", c), i), i)
    group_cols = [config.group_col] if config.group_col is not None else []
    if isinstance(dataset, RankingDataset) and "query" not in group_cols:
        group_cols.append("query")  # a query's pairs are ranked against each other: they cannot be cut apart
    for col in group_cols:
        if col not in dataset.frame.columns:
            raise ConfigError(
                f"group_col={col!r} is not a column of the dataset (columns: "
                f"{', '.join(map(str, dataset.frame.columns))}). Fix: map it when loading (e.g. thread_col) or unset group_col"
            )
        for i, value in enumerate(dataset.frame[col].tolist()):
            # A missing value says nothing about grouping: such rows are not lumped together.
            if pd.isna(value) or value == "":
                continue
            uf.union(first_row.setdefault(("group", col, value), i), i)
    return clusters, np.array(uf.roots())


def _strata(dataset: AnyDataset, members: list[np.ndarray], test_frac: float) -> list[str]:
    """One stratum name per group: its most common label (single-label) or label combination (multi-label);
    one stratum for data without classes (ranking, generation)."""
    if not isinstance(dataset, Dataset):
        return ["all"] * len(members)

    def top(values: list[str]) -> str:
        counts = Counter(values)
        return min(counts, key=lambda v: (-counts[v], v))  # ties broken by name, so row order cannot matter

    row_labels = dataset.frame["labels"].tolist()
    if not dataset.multilabel:
        return [top([row_labels[i][0] for i in rows]) for rows in members]
    combos = [top(["|".join(sorted(row_labels[i])) or "(none)" for i in rows]) for rows in members]
    # A combination needs enough groups to put one in test; rarer ones join their most frequent label.
    min_groups = max(2, math.ceil(1.0 / test_frac))
    n_groups = Counter(combos)
    label_freq = dataset.class_counts()
    lumped = []
    for combo in combos:
        if n_groups[combo] >= min_groups:
            lumped.append(combo)
        else:
            labels = [c for c in combo.split("|") if c != "(none)"]
            lumped.append(min(labels, key=lambda c: (-label_freq.get(c, 0), c)) if labels else "other")
    n_lumped = Counter(lumped)
    return [s if n_lumped[s] >= min_groups else "other" for s in lumped]


def _rng_seed(dataset: AnyDataset, seed: int) -> int:
    # content_hash follows row order; sorting per-row digests makes the seed depend on the content only.
    if isinstance(dataset, Dataset):
        keys = (
            f"{row_id}\x1f{text}\x1f{'|'.join(labels)}"
            for row_id, text, labels in zip(dataset.frame["id"], dataset.frame["text_raw"], dataset.frame["labels"])
        )
    else:
        keys = iter(dataset.row_keys())
    rows = sorted(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest() for key in keys)
    h = hashlib.sha256(f"finesieve-split\x1f{seed}\x1f".encode())
    for digest in rows:
        h.update(digest)
    return int.from_bytes(h.digest()[:8], "little")


def _fits(count: int, size: int, target: int) -> bool:
    """Whether a group of `size` rows should join a split holding `count` of `target` rows.

    Yes while short of target, unless the group would overshoot by more than the shortfall (one big
    cluster must not double a small stratum's test share).
    """
    return count < target and count + size - target <= target - count


def make_splits(dataset: AnyDataset, config: SplitConfig) -> Splits:
    """Group-aware, stratified, reproducible train/val/test split of `dataset` (see the module docstring)."""
    if len(dataset) == 0:
        raise DataError("the dataset is empty: load a file with at least a few rows per class before splitting")
    clusters, group_of_row = _groups(dataset, config)
    ids = dataset.frame["id"].astype(str).tolist()

    order = np.argsort(group_of_row, kind="stable")
    _, starts = np.unique(group_of_row[order], return_index=True)
    members = np.split(order, starts[1:])
    strata = _strata(dataset, members, config.test_frac)
    # A group's place before shuffling comes from its ids, not from where its rows sit in the file.
    group_key = [
        hashlib.sha256("\x1f".join(sorted(ids[i] for i in rows)).encode("utf-8", "surrogatepass")).hexdigest()
        for rows in members
    ]

    rng = np.random.default_rng(_rng_seed(dataset, config.seed))
    assignment = np.full(len(dataset), "train", dtype=object)
    for stratum in sorted(set(strata)):
        groups = sorted((g for g, s in enumerate(strata) if s == stratum), key=lambda g: group_key[g])
        groups = [groups[k] for k in rng.permutation(len(groups))]
        size = sum(len(members[g]) for g in groups)
        targets = {"test": round(config.test_frac * size), "val": round(config.val_frac * size)}
        counts = {"test": 0, "val": 0}
        for g in groups:
            for name in ("test", "val"):
                if _fits(counts[name], len(members[g]), targets[name]):
                    assignment[members[g]] = name
                    counts[name] += len(members[g])
                    break

    # By construction nothing straddles; this guard catches a future bug before it inflates a metric.
    check_leakage(clusters, assignment, protected=("test", "val"), texts=_dedupe_texts(dataset)).raise_if_leaking()
    return Splits(assignment=assignment, config=config, data_hash=dataset.content_hash, source=dataset)


def exclude_near_duplicates(
    dataset: Dataset, corner_texts: Sequence[str], threshold: float = 0.8
) -> tuple[np.ndarray, int]:
    """(kept_mask over dataset rows, n_removed): drop rows that near-duplicate any corner-case text.

    Clustering is transitive, so a row linked to a corner case through another row is dropped too;
    that errs towards keeping the corner-case set unseen.
    """
    texts = dataset.texts
    clusters = near_duplicate_clusters(list(texts) + list(corner_texts), threshold=threshold)
    corner_clusters = set(clusters[len(texts) :].tolist())
    kept = np.array([c not in corner_clusters for c in clusters[: len(texts)].tolist()], dtype=bool)
    return kept, int((~kept).sum())
