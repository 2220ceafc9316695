"""Structured records (a screening form, an applicant-tracking export) written as one text per row, so the same
train / eval / score path that reads messages reads them too.

    finesieve data compose --data screening.csv --field Skills --field "Experience (Years)" --field Education \
        --keep "Resume_ID" --keep "Recruiter Decision" --out screening_text.csv
    compose_text({"Skills": "Python, SQL", "Education": "B.Sc"}, ["Skills", "Education"])
    # 'Skills: Python, SQL\nEducation: B.Sc'

Each chosen field becomes a "Name: value" line, in the order given; an empty value is left out, so a missing
certification reads as no line rather than "Certifications: ". Columns not chosen are dropped: leave out what
must not reach a model (a name; a score that was computed from the decision, which would leak the label), and
keep (`keep`) the id and label columns the later commands map with --id-col / --label-col.

A field that alone tells the labels apart is almost always a leak (a score the decision was made from, a
column filled in after the decision): `leaky_fields` finds numeric fields whose ROC AUC against each class is
0.99 or more, and `compose_file` refuses them unless told they are wanted.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from finesieve.data.errors import ConfigError, DataError
from finesieve.data.load import iter_chunks
from finesieve.data.spec import ColumnSpec
from finesieve.outputs import atomic_file

LEAK_AUC = 0.99  # a field this separable on its own is a leak far more often than a find


def compose_text(record: Mapping[str, object], fields: Sequence[str]) -> str:
    """The record's chosen fields as "Name: value" lines; empty values left out."""
    lines = []
    for name in fields:
        value = record.get(name)
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
        if text:
            lines.append(f"{name}: {text}")
    return "\n".join(lines)


def _auc(y: np.ndarray, x: np.ndarray) -> float:
    """ROC AUC of score x for 0/1 y (Mann-Whitney, ties counted half); the data layer keeps its own copy because
    the metrics live above it."""
    from scipy.stats import rankdata

    ranks = rankdata(x)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def leaky_fields(frame: pd.DataFrame, fields: Sequence[str], label_col: str) -> dict[str, float]:
    """Numeric fields that separate some class from the rest with ROC AUC >= LEAK_AUC in either direction:
    name -> that AUC. A field that is not a number in every non-empty row is not judged."""
    labels = frame[label_col].astype(str).to_numpy()
    found = {}
    for name in fields:
        values = pd.to_numeric(frame[name].replace("", np.nan), errors="coerce")
        filled = frame[name].astype(str).str.strip() != ""
        if values[filled].isna().any() or filled.sum() < 2:
            continue
        x, y_all = values[filled].to_numpy(dtype=float), labels[filled.to_numpy()]
        best = 0.0
        for cls in np.unique(y_all):
            y = (y_all == cls).astype(int)
            if 0 < y.sum() < len(y):
                auc = _auc(y, x)
                best = max(best, auc, 1 - auc)
        if best >= LEAK_AUC:
            found[name] = round(best, 4)
    return found


@dataclass
class ComposeSummary:
    rows: int
    fields: list[str]
    kept: list[str]
    empty_texts: int
    out: Path

    def __str__(self) -> str:
        empty = f"; {self.empty_texts} row(s) had every field empty" if self.empty_texts else ""
        return (
            f"{self.rows} row(s) written to {self.out}: column 'text' from {len(self.fields)} field(s), "
            f"kept {self.kept}{empty}"
        )


def compose_file(
    path: str | Path,
    out: str | Path,
    fields: Sequence[str],
    *,
    keep: Sequence[str] = (),
    label_col: str | None = None,
    allow_leaky: Sequence[str] = (),
    text_col: str = "text",
    encoding: str = "utf-8",
) -> ComposeSummary:
    """Write `out` (CSV): the `keep` columns as they are, then `text_col` composed from `fields`. With
    `label_col` (which must be kept), numeric fields that alone separate the labels are refused unless named in
    `allow_leaky`. Rows the reader cannot split are refused with their row numbers."""
    fields, keep = list(dict.fromkeys(fields)), list(dict.fromkeys(keep))
    if not fields:
        raise ConfigError("no --field given: name the columns to write into the text")
    if text_col in keep:
        raise ConfigError(f"--keep {text_col!r} is the name of the composed text column: keep it under another name")
    if label_col is not None and label_col not in keep:
        keep.append(label_col)
    both = sorted(set(fields) & set(keep))
    if both:
        raise ConfigError(f"column(s) {both} are both a --field and kept: a label or id must not reach the text")
    spec = ColumnSpec(text_col=fields[0], label_cols=("_none",), meta_cols=(*fields[1:], *keep), encoding=encoding)
    frames = list(iter_chunks(path, spec, labelled=False))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*fields, *keep])
    if "_malformed" in frame and frame["_malformed"].notna().any():
        bad = frame.loc[frame["_malformed"].notna(), "_row"].tolist()
        raise DataError(f"{path}: row(s) {bad[:10]} cannot be split into columns; fix them and compose again")
    if label_col is not None:
        leaks = {k: v for k, v in leaky_fields(frame, fields, label_col).items() if k not in set(allow_leaky)}
        if leaks:
            raise DataError(
                f"{path}: field(s) {leaks} alone separate the {label_col!r} classes (ROC AUC shown): a score or "
                "column filled in from the decision leaks the label. Fix: leave the field out, or pass "
                "--allow-leaky NAME if it truly is known before the decision"
            )
    texts = [compose_text(record, fields) for record in frame[fields].to_dict("records")]
    with atomic_file(out, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*keep, text_col])
        for record, text in zip(frame[keep].to_dict("records"), texts):
            writer.writerow([*(record[k] for k in keep), text])
    return ComposeSummary(
        rows=len(texts), fields=fields, kept=keep, empty_texts=sum(not t for t in texts), out=Path(out)
    )
