"""The in-memory datasets every later stage reads: validated rows with cleaned and redacted texts.

One class per task kind (`data.task`): `Dataset` (classification: texts with labels), `RankingDataset`
(query-candidate pairs with relevance grades) and `GenerationDataset` (inputs with reference texts). All three
have `frame`, `texts`, `ids`, `subset`, `content_hash` and `len`, which is what splitting (`data.split`) and
evaluation (`evals.harness.evaluate_task`) read.


A `Dataset` holds one row per accepted message. Columns of `frame`:
  id        str    the file's id column, or the row number when the file has none
  row       int    1-based data row in the source file (for error messages and traceability)
  text_raw  str    the text exactly as read (kept in memory for review, never written out)
  text      str    cleaned (Unicode, invisible characters, look-alikes) and redacted: what is trained and stored
  labels    tuple  the message's labels; one element for binary and multi-class tasks
  time, user, thread   optional metadata columns, when mapped
  votes     tuple  annotator vote counts in `spec.vote_cols` order, when mapped (soft labels)

`label_normalisation` records the label spellings that `load_dataset(..., normalise_labels=True)` mapped to one
class ({"Hate_Speech": "hate_speech"}), and `label_normalised_rows` how many rows it changed ({} and 0 when
the file spelled every label one way).

    from finesieve.data.load import load_dataset
    ds = load_dataset("messages.csv", ColumnSpec())
    ds.texts, ds.labels, ds.indicator(), ds.rejected.to_dict()
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
import pandas as pd

from finesieve.data.preprocess import PreparedTexts, Preprocessing
from finesieve.data.spec import ColumnSpec, GenerationSpec, RankingSpec


@dataclass
class RejectionSummary:
    """What validation rejected and why; nothing is dropped without being counted here."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)  # first problems, as RowProblem.to_dict()
    rejects_path: str | None = None  # where every rejected row was written, if anywhere

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "counts": dict(self.counts),
            "examples": self.examples,
            "rejects_path": self.rejects_path,
        }


@dataclass
class Dataset:
    frame: pd.DataFrame
    classes: list[str]
    spec: ColumnSpec
    source: str = "<memory>"
    rejected: RejectionSummary = field(default_factory=RejectionSummary)
    redaction_counts: dict[str, int] = field(default_factory=dict)
    label_normalisation: dict[str, str] = field(default_factory=dict)  # label as written -> class it was mapped to
    label_normalised_rows: int = 0  # rows whose labels that mapping changed
    # How `text` was made from `text_raw` (None: taken as given, e.g. `from_records`); a run records it.
    preprocessing: Preprocessing | None = None

    @property
    def multilabel(self) -> bool:
        return self.spec.multilabel

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def texts(self) -> list[str]:
        """The cleaned and redacted texts; tagged with their preprocessing so a loaded scorer skips redoing it."""
        texts = self.frame["text"].tolist()
        return PreparedTexts(texts, self.preprocessing) if self.preprocessing is not None else texts

    @property
    def ids(self) -> list[str]:
        return self.frame["id"].tolist()

    @property
    def labels(self) -> list:
        """Class names for single-label tasks, tuples of class names for multi-label ones."""
        if self.multilabel:
            return self.frame["labels"].tolist()
        return [labels[0] for labels in self.frame["labels"]]

    def indicator(self, classes: Sequence[str] | None = None) -> np.ndarray:
        """(n, n_classes) 0/1 matrix of labels in `classes` order (default: this dataset's classes)."""
        classes = list(classes if classes is not None else self.classes)
        index = {c: j for j, c in enumerate(classes)}
        y = np.zeros((len(self.frame), len(classes)), dtype=np.int8)
        for i, labels in enumerate(self.frame["labels"]):
            for label in labels:
                if label in index:
                    y[i, index[label]] = 1
        return y

    def vote_shares(self, classes: Sequence[str] | None = None) -> np.ndarray | None:
        """(n, n_classes) share of annotators' votes per class in `classes` order, or None without vote columns.
        Rows that carry no votes (e.g. replayed from data without them) are NaN."""
        if not self.spec.vote_cols or "votes" not in self.frame:
            return None
        classes = list(classes if classes is not None else self.classes)
        columns = [classes.index(c) if c in classes else -1 for c in self.spec.vote_cols]
        shares = np.full((len(self.frame), len(classes)), np.nan)
        for i, votes in enumerate(self.frame["votes"]):
            if isinstance(votes, tuple) and len(votes) == len(columns) and sum(votes) > 0:
                shares[i] = 0.0
                for j, count in zip(columns, votes):
                    if j >= 0:
                        shares[i, j] += count
                shares[i] /= sum(votes)
        return shares

    def violation(self, positive: Sequence[str]) -> np.ndarray:
        """(n,) 0/1: 1 where the message carries any of the `positive` classes."""
        unknown = [p for p in positive if p not in self.classes]
        if unknown:
            raise ValueError(
                f"positive class(es) {unknown} not among the data's classes {self.classes}: "
                "pass one of those with --positive"
            )
        return self.indicator()[:, [self.classes.index(p) for p in positive]].max(axis=1).astype(int)

    def subset(self, mask_or_index) -> Dataset:
        frame = self.frame[mask_or_index] if _is_mask(mask_or_index) else self.frame.iloc[mask_or_index]
        return Dataset(
            frame=frame.reset_index(drop=True),
            classes=list(self.classes),
            spec=self.spec,
            source=self.source,
            rejected=self.rejected,
            redaction_counts=self.redaction_counts,
            label_normalisation=self.label_normalisation,
            label_normalised_rows=self.label_normalised_rows,
            preprocessing=self.preprocessing,
        )

    @property
    def content_hash(self) -> str:
        """sha256 over ids, raw texts and labels: the same data hashes the same from CSV, JSONL or Parquet."""
        h = hashlib.sha256()
        for row_id, text, labels in zip(self.frame["id"], self.frame["text_raw"], self.frame["labels"]):
            h.update(str(row_id).encode())
            h.update(b"\x1f")
            h.update(text.encode("utf-8", "surrogatepass"))
            h.update(b"\x1f")
            h.update("|".join(labels).encode())
            h.update(b"\x1e")
        return h.hexdigest()

    @property
    def votes_hash(self) -> str | None:
        """sha256 over ids and annotator votes, or None without vote columns. Kept apart from `content_hash`
        so that mapping vote columns does not change the data's identity or its split."""
        if "votes" not in self.frame:
            return None
        h = hashlib.sha256()
        for row_id, votes in zip(self.frame["id"], self.frame["votes"]):
            h.update(f"{row_id}\x1f{votes}\x1e".encode())
        return h.hexdigest()

    def class_counts(self) -> dict[str, int]:
        counts = {c: 0 for c in self.classes}
        for labels in self.frame["labels"]:
            for label in labels:
                counts[label] = counts.get(label, 0) + 1
        return counts


def _is_mask(x) -> bool:
    arr = np.asarray(x)
    return arr.dtype == bool


def from_records(
    texts: Sequence[str],
    labels: Sequence,
    *,
    ids: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    multilabel: bool = False,
) -> Dataset:
    """Build a Dataset from Python lists (tests, notebooks). Texts are taken as already cleaned."""
    label_tuples = [tuple(lbl) if multilabel else (str(lbl),) for lbl in labels]
    if classes is None:
        classes = sorted({c for t in label_tuples for c in t})
    frame = pd.DataFrame(
        {
            "id": list(ids) if ids is not None else [str(i + 1) for i in range(len(texts))],
            "row": np.arange(1, len(texts) + 1),
            "text_raw": list(texts),
            "text": list(texts),
            "labels": label_tuples,
        }
    )
    spec = ColumnSpec(label_sep="|" if multilabel else None)
    return Dataset(frame=frame, classes=list(classes), spec=spec)


def pair_id(query: str, candidate: str) -> str:
    """The id of a (query, candidate) pair: a JSON list, so no pair of ids can spell another's."""
    return json.dumps([str(query), str(candidate)], ensure_ascii=False, separators=(",", ":"))


def _row_digest_hash(keys: Sequence[str], kind: str) -> str:
    h = hashlib.sha256(f"finesieve-{kind}\x1e".encode())
    for key in keys:
        h.update(key.encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()


@dataclass
class _KeyedRowsDataset:
    """What ranking and generation datasets share: a frame of accepted rows with `id`, `text_raw` and `text`
    columns, its spec and source, what validation rejected, and a content hash over `row_keys()`. Each subclass
    sets `kind` and `spec`'s type and says what identifies a row (`row_keys`)."""

    kind: ClassVar[str]
    frame: pd.DataFrame
    spec: RankingSpec | GenerationSpec
    source: str = "<memory>"
    rejected: RejectionSummary = field(default_factory=RejectionSummary)
    redaction_counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def texts(self) -> list[str]:
        """The texts that are scored (candidates, or inputs), cleaned and redacted, one per row."""
        return self.frame["text"].tolist()

    @property
    def ids(self) -> list[str]:
        return self.frame["id"].tolist()

    def subset(self, mask_or_index) -> Self:
        frame = self.frame[mask_or_index] if _is_mask(mask_or_index) else self.frame.iloc[mask_or_index]
        return type(self)(
            frame=frame.reset_index(drop=True),
            spec=self.spec,
            source=self.source,
            rejected=self.rejected,
            redaction_counts=self.redaction_counts,
        )

    def row_keys(self) -> list[str]:
        raise NotImplementedError

    @property
    def content_hash(self) -> str:
        """sha256 over `row_keys()` (ids, raw texts and what else identifies a row), in row order."""
        return _row_digest_hash(self.row_keys(), self.kind)


@dataclass
class RankingDataset(_KeyedRowsDataset):
    """Query-candidate pairs with relevance grades: one row per accepted pair. Columns of `frame`:
    id              str    `pair_id(query, candidate)`; a repeated pair is rejected when loading
    row             int    1-based data row in the source file
    query           str    the query id (e.g. the job)
    candidate       str    the candidate id (e.g. the resume)
    query_text_raw, query_text   str   the query's text as read / cleaned and redacted (when mapped)
    text_raw, text  str    the candidate's text as read / cleaned and redacted: what is scored and stored
    relevance       float  the pair's grade (0/1 for binary relevance)
    + `spec.meta_cols`, as text

      from finesieve.data.load import load_ranking_dataset
      ds = load_ranking_dataset("pairs.csv", RankingSpec(query_col="job_id", candidate_col="resume_id"))
      ds.queries, ds.texts, ds.relevance, ds.n_queries
    """

    kind: ClassVar[str] = "ranking"
    spec: RankingSpec

    @property
    def query_texts(self) -> list[str] | None:
        """The queries' cleaned and redacted texts, one per pair; None when no query text column is mapped."""
        return self.frame["query_text"].tolist() if "query_text" in self.frame else None

    @property
    def queries(self) -> list[str]:
        return self.frame["query"].tolist()

    @property
    def candidates(self) -> list[str]:
        return self.frame["candidate"].tolist()

    @property
    def relevance(self) -> np.ndarray:
        """(n,) float grade of each pair."""
        return self.frame["relevance"].to_numpy(dtype=float)

    @property
    def n_queries(self) -> int:
        return int(self.frame["query"].nunique())

    def row_keys(self) -> list[str]:
        """One string per row holding everything that identifies it (ids, raw texts, grade): what `content_hash`
        and the split's seed are computed from."""
        query_texts = self.frame["query_text_raw"] if "query_text_raw" in self.frame else [""] * len(self.frame)
        return [
            f"{row_id}\x1f{qt}\x1f{text}\x1f{float(rel)!r}"
            for row_id, qt, text, rel in zip(
                self.frame["id"], query_texts, self.frame["text_raw"], self.frame["relevance"]
            )
        ]

    def summary(self) -> dict:
        """Pairs, queries and pairs per grade: what a split records of each part."""
        grades = Counter(f"{g:g}" for g in self.relevance)
        return {
            "n_pairs": len(self),
            "n_queries": self.n_queries,
            "relevance_counts": {g: grades[g] for g in sorted(grades, key=float)},
        }


@dataclass
class GenerationDataset(_KeyedRowsDataset):
    """Inputs with reference texts: one row per accepted example. Columns of `frame`:
    id                str  the file's id column, or the row number when the file has none
    row               int  1-based data row in the source file
    text_raw, text    str  the input as read / cleaned and redacted: what a system reads
    reference_raw, reference  str  the reference as read / cleaned and redacted: what outputs are compared with
    + `spec.meta_cols`, as text

      from finesieve.data.load import load_generation_dataset
      ds = load_generation_dataset("feedback.csv", GenerationSpec(input_col="resume", reference_col="feedback"))
      ds.texts, ds.references
    """

    kind: ClassVar[str] = "generation"
    spec: GenerationSpec

    @property
    def references(self) -> list[str]:
        """The reference texts, cleaned and redacted."""
        return self.frame["reference"].tolist()

    def row_keys(self) -> list[str]:
        """One string per row: id, raw input and raw reference (see `RankingDataset.row_keys`)."""
        return [
            f"{row_id}\x1f{text}\x1f{ref}"
            for row_id, text, ref in zip(self.frame["id"], self.frame["text_raw"], self.frame["reference_raw"])
        ]

    def summary(self) -> dict:
        return {"n_examples": len(self)}


AnyDataset = Dataset | RankingDataset | GenerationDataset


def from_pairs(
    queries: Sequence[str],
    candidates: Sequence[str],
    texts: Sequence[str],
    relevance: Sequence[float],
    *,
    query_texts: Sequence[str] | None = None,
) -> RankingDataset:
    """Build a RankingDataset from Python lists (tests, notebooks). Texts are taken as already cleaned."""
    frame = pd.DataFrame(
        {
            "id": [pair_id(q, c) for q, c in zip(queries, candidates)],
            "row": np.arange(1, len(texts) + 1),
            "query": [str(q) for q in queries],
            "candidate": [str(c) for c in candidates],
            **(
                {"query_text_raw": list(query_texts), "query_text": list(query_texts)}
                if query_texts is not None
                else {}
            ),
            "text_raw": list(texts),
            "text": list(texts),
            "relevance": np.asarray(relevance, dtype=float),
        }
    )
    if frame["id"].duplicated().any():
        raise ValueError(
            f"pairs {frame.loc[frame['id'].duplicated(), 'id'].tolist()[:3]} appear more than once: "
            "give each (query, candidate) pair once"
        )
    spec = RankingSpec(query_text_col="query_text" if query_texts is not None else None)
    return RankingDataset(frame=frame, spec=spec)


def from_examples(
    inputs: Sequence[str], references: Sequence[str], *, ids: Sequence[str] | None = None
) -> GenerationDataset:
    """Build a GenerationDataset from Python lists (tests, notebooks). Texts are taken as already cleaned."""
    frame = pd.DataFrame(
        {
            "id": list(ids) if ids is not None else [str(i + 1) for i in range(len(inputs))],
            "row": np.arange(1, len(inputs) + 1),
            "text_raw": list(inputs),
            "text": list(inputs),
            "reference_raw": list(references),
            "reference": list(references),
        }
    )
    return GenerationDataset(frame=frame, spec=GenerationSpec())
