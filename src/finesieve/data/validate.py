"""Row validation: decide for each raw row whether it is a usable labelled message, and say why not.

Works on one chunk at a time so files larger than memory can be checked in a stream. A rejected row is
never dropped silently: it becomes a `RowProblem` (file, row, column, value, problem, fix), is counted in
the summary and, when asked, written with its raw values to a rejects file so nothing is lost.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from finesieve.data.errors import RowProblem
from finesieve.data.spec import ColumnSpec

TRUE_VALUES = {"1", "true", "yes", "y", "t"}
FALSE_VALUES = {"0", "false", "no", "n", "f", ""}

FIXES = {
    "missing_text": "fill in the message text or remove the row",
    "empty_text": "the text is empty or only whitespace: fill it in or remove the row",
    "non_text": "the text column must hold the message as a string, not a number, list or object",
    "bad_encoding": "the bytes are not valid in the file's encoding: re-save the file as UTF-8, "
    "or pass the right one with --encoding (e.g. latin-1)",
    "missing_label": "give the row a label, or move it to an unlabelled file for scoring",
    "unknown_label": "use one of the allowed classes, or add this class to --classes",
    "bad_indicator": "a per-category label column must hold 0/1 (or true/false)",
    "missing_id": "every row needs an id when --id-col is set: fill it in",
    "duplicate_id": "ids must be unique: remove the repeated row or give it a new id",
    "bad_timestamp": "use ISO 8601 (2024-05-01T12:00:00Z) or epoch seconds",
    "malformed_record": "each line must be one JSON object: fix the line's JSON syntax",
    "bad_votes": "vote counts must be non-negative numbers with at least one vote in the row; "
    "fix the counts or drop --vote-col",
}


def _short(value, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # show bad bytes as \xNN, not surrogates
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _has_surrogates(text: str) -> bool:
    # Bytes that do not decode are carried as lone surrogates (errors="surrogateescape") so we can say which row.
    return any("\udc80" <= ch <= "\udcff" for ch in text)


@dataclass
class ChunkResult:
    accepted: pd.DataFrame  # columns: id, row, text_raw, labels, + time/user/thread when mapped
    problems: list[RowProblem]
    rejected_rows: list[dict]  # raw values of rejected rows, with their problems


@dataclass
class RowValidator:
    """Validates chunks of one file in order; remembers ids across chunks to catch duplicates.

    `labelled=False` checks a file to score (no label is read); `unique_ids=False` does not remember ids, so
    memory stays constant over a file of any size (duplicate ids are then not caught).
    """

    spec: ColumnSpec
    file: str
    seen_ids: dict[str, int] = field(default_factory=dict)  # id -> row where first seen
    labelled: bool = True
    unique_ids: bool = True

    def validate(self, chunk: pd.DataFrame) -> ChunkResult:
        """`chunk` holds the raw mapped columns plus `_row` (1-based data row in the file)."""
        spec = self.spec
        allowed = set(spec.classes) if spec.classes else None
        records, problems, rejected = [], [], []
        for raw in chunk.to_dict("records"):
            row = int(raw["_row"])
            row_problems: list[RowProblem] = []

            def problem(column: str, value, kind: str, fix: str | None = None) -> None:
                row_problems.append(RowProblem(self.file, row, column, _short(value), kind, fix or FIXES[kind]))

            if "_malformed" in raw and not _is_missing(raw.get("_malformed")):
                problem("<line>", raw["_malformed"], "malformed_record")
                problems.extend(row_problems)
                rejected.append({"row": row, "problems": [p.to_dict() for p in row_problems]})
                continue

            text = raw.get(spec.text_col)
            if _is_missing(text):
                problem(spec.text_col, text, "missing_text")
            elif not isinstance(text, str):
                problem(spec.text_col, text, "non_text")
            elif _has_surrogates(text):
                problem(spec.text_col, text, "bad_encoding")
            elif not text.strip():
                problem(spec.text_col, text, "empty_text")

            labels = self._labels(raw, allowed, problem) if self.labelled else ()
            votes = self._votes(raw, problem) if self.labelled and spec.vote_cols else None

            row_id = str(row)
            if spec.id_col is not None:
                value = raw.get(spec.id_col)
                if _is_missing(value) or str(value).strip() == "":
                    problem(spec.id_col, value, "missing_id")
                else:
                    row_id = str(value).strip()
                    if row_id in self.seen_ids and not row_problems:
                        problem(spec.id_col, value, "duplicate_id",
                                f"id already used at row {self.seen_ids[row_id]}: " + FIXES["duplicate_id"])

            record = {"id": row_id, "row": row, "text_raw": text, "labels": labels}
            for role, col in (("time", spec.time_col), ("user", spec.user_col), ("thread", spec.thread_col)):
                if col is None:
                    continue
                value = raw.get(col)
                if role == "time" and not _is_missing(value) and str(value).strip():
                    parsed = _parse_time(value)
                    if parsed is None:
                        problem(col, value, "bad_timestamp")
                    value = parsed
                record[role] = None if _is_missing(value) else (value if role == "time" else str(value))

            for col in spec.meta_cols:
                value = raw.get(col)
                record[col] = None if _is_missing(value) else str(value)
            if votes is not None:
                record["votes"] = votes

            if row_problems:
                problems.extend(row_problems)
                rejected.append(
                    {"row": row, **{k: _jsonable(v) for k, v in raw.items() if k != "_row"},
                     "problems": [p.to_dict() for p in row_problems]}
                )
                continue
            if spec.id_col is not None and self.unique_ids:
                self.seen_ids[row_id] = row
            records.append(record)

        columns = ["id", "row", "text_raw", "labels"] + [
            role for role, col in (("time", spec.time_col), ("user", spec.user_col), ("thread", spec.thread_col))
            if col is not None
        ] + list(spec.meta_cols) + (["votes"] if self.labelled and spec.vote_cols else [])
        return ChunkResult(pd.DataFrame.from_records(records, columns=columns), problems, rejected)

    def _votes(self, raw: dict, problem) -> tuple[float, ...]:
        """Vote counts in `spec.vote_cols` order; non-numeric, negative or all-zero counts are a problem."""
        votes = []
        for col in self.spec.vote_cols.values():
            value = raw.get(col)
            try:
                count = float(value)
            except (TypeError, ValueError):
                count = math.nan
            if not math.isfinite(count) or count < 0:
                problem(col, value, "bad_votes")
                return ()
            votes.append(count)
        if sum(votes) <= 0:
            problem(next(iter(self.spec.vote_cols.values())), votes, "bad_votes")
            return ()
        return tuple(votes)

    def _labels(self, raw: dict, allowed: set[str] | None, problem) -> tuple[str, ...]:
        spec = self.spec
        if spec.indicator_labels:
            labels = []
            for col in spec.label_cols:
                value = raw.get(col)
                flag = "" if _is_missing(value) else str(value).strip().lower()
                if flag.endswith(".0"):  # 1.0 / 0.0 from spreadsheets and Parquet floats
                    flag = flag[:-2]
                if _is_missing(value):
                    problem(col, value, "missing_label")
                elif flag in TRUE_VALUES:
                    labels.append(col)
                elif flag not in FALSE_VALUES:
                    problem(col, value, "bad_indicator")
            return tuple(labels)

        col = spec.label_cols[0]
        value = raw.get(col)
        if _is_missing(value):
            problem(col, value, "missing_label")
            return ()
        if isinstance(value, (list, tuple, np.ndarray)):  # JSON arrays, Parquet list columns
            labels = tuple(sorted({str(v).strip() for v in list(value) if str(v).strip()}))
            if not spec.multilabel and len(labels) != 1:
                problem(col, value, "missing_label" if not labels else "unknown_label",
                        "a single-label task needs exactly one label per row; for several, pass --label-sep")
                return ()
        elif spec.label_sep is not None:
            labels = tuple(sorted({part.strip() for part in str(value).split(spec.label_sep) if part.strip()}))
        else:
            text = str(value).strip()
            if text == "":
                problem(col, value, "missing_label")
                return ()
            if text.endswith(".0") and text[:-2].lstrip("-").isdigit():
                text = text[:-2]  # integer labels read back as floats
            labels = (text,)
        if allowed is not None:
            for label in labels:
                if label not in allowed:
                    problem(col, label, "unknown_label", _unknown_label_fix(label, sorted(allowed)))
        return labels


def _unknown_label_fix(label: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(label, allowed, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}allowed classes are {allowed}; fix the label or add it to --classes"


def suspicious_labels(counts: dict[str, int], max_share: float = 0.001, max_count: int = 5) -> dict[str, str]:
    """Rare labels that look like typos of frequent ones ('Spam' beside 'spam'), when classes were inferred.

    Returns {rare_label: likely_intended_label}. Such rows are rejected with a pointer to --classes, because a
    one-off class silently becomes a class the model must learn from a handful of examples.
    """
    total = sum(counts.values()) or 1
    frequent = [c for c, n in counts.items() if n > max_count and n / total > max_share]
    out = {}
    for label, n in counts.items():
        if n <= max_count and n / total <= max_share:
            norm = label.strip().lower().replace(" ", "_").replace("-", "_")
            for other in frequent:
                if norm == other.lower().replace(" ", "_").replace("-", "_") or difflib.SequenceMatcher(
                    None, label.lower(), other.lower()
                ).ratio() >= 0.8:
                    out[label] = other
                    break
    return out


def _parse_time(value):
    try:
        if isinstance(value, (int, float)) or str(value).strip().lstrip("-").replace(".", "", 1).isdigit():
            return pd.Timestamp(float(value), unit="s", tz="UTC")
        ts = pd.Timestamp(str(value).strip())
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (ValueError, TypeError, OverflowError):
        return None


def _jsonable(value):
    if _is_missing(value):
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (int, float, bool)):
        return value
    return repr(value)
