"""Row validation: decide for each raw row whether it is a usable labelled message, and say why not.

Works on one chunk at a time so files larger than memory can be checked in a stream. A rejected row is
never dropped silently: it becomes a `RowProblem` (file, row, line, column, value, problem, fix), is counted in
the summary and, when asked, written with its raw values to a rejects file so nothing is lost.

    result = RowValidator(spec, "messages.csv").validate(chunk)   # chunk from load.iter_chunks
    result.accepted, result.problems, result.rejected_rows

`RankingRowValidator` and `GenerationRowValidator` do the same for query-candidate pairs with a relevance grade
and for inputs with reference texts (`data.task`): the same problems, places and fixes, plus a grade that is not
a number (or outside the task's grades), a pair given twice and a query whose text differs between its rows.

Label hygiene lives here too: `label_key` is a label's identity with its spelling set aside, `label_variants`
finds the labels of a file that differ only in case, spacing, '_' or '-' (which would otherwise train as
separate classes), and `suspicious_labels` finds rare labels that look like typos of frequent ones.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from finesieve.data.dataset import pair_id
from finesieve.data.errors import DataError, RowProblem
from finesieve.data.normalize import clean
from finesieve.data.spec import ColumnSpec, GenerationSpec, RankingSpec
from finesieve.data.task import RankingTask

TRUE_VALUES = {"1", "true", "yes", "y", "t"}
FALSE_VALUES = {"0", "false", "no", "n", "f", ""}

FIXES = {
    "missing_text": "fill in the message text or remove the row",
    "empty_text": "the text is empty, only whitespace, or only invisible or control characters: fill it in or "
    "remove the row",
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
    "bad_field_count": "give the row exactly one value per header column: quote every field that contains the "
    'separator (a comma in a CSV, a tab in a TSV), e.g. "Hello, world"',
    "malformed_quotes": "a quoted field must end with its quote right before the separator or the line end; write a "
    'quote inside a quoted field twice ("")',
    "unbalanced_quote": "close the quote opened on this line, or write a quote that is part of the text twice "
    '(""); the lines after it were read as rows of their own',
    "blank_line": "remove the blank line (it is counted as a row so that row numbers match the file)",
    "bad_votes": "vote counts must be non-negative numbers with at least one vote in the row; "
    "fix the counts or drop --vote-col",
    "missing_query": "every pair needs a query id (e.g. the job): fill it in or remove the row",
    "missing_candidate": "every pair needs a candidate id (e.g. the resume): fill it in or remove the row",
    "bad_relevance": "the relevance must be a number: a grade (e.g. 1-7) or 0/1 for binary relevance; fix the cell "
    "or remove the row",
    "duplicate_pair": "each (query, candidate) pair may appear once: remove the repeated row, or merge its grades "
    "(e.g. their mean) before loading",
    "query_text_mismatch": "every row of one query must hold the same query text: fix the text, or give the other "
    "query its own id",
}


# Columns the readers in load.py add to a chunk beside the file's own: never written back as the row's values.
INTERNAL_COLUMNS = frozenset({"_row", "_line", "_malformed", "_problem", "_fix"})
# A label seen at most this many times may be a typo (`suspicious_labels`).
RARE_LABEL_MAX = 5
# A printable ASCII character survives `clean`: a text holding one cannot be empty once cleaned.
_VISIBLE_ASCII = re.compile(r"[!-~]")
_INVISIBLE_ONLY_FIX = (
    "the text holds only invisible or control characters (zero-width spaces, direction marks, "
    "control codes), so nothing is left once cleaned: fill in the message or remove the row"
)


def _short(value, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # show bad bytes as \xNN, not surrogates
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _has_surrogates(text: str) -> bool:
    # Bytes that do not decode are carried as lone surrogates (errors="surrogateescape") so we can say which row.
    return not text.isascii() and _ESCAPED_BYTE.search(text) is not None


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

    With `spec.classes`, a label that differs from an allowed class only in spelling (same `label_key`, e.g.
    'Spam' for 'spam') is accepted as written: whether it is refused or normalised is decided over the whole
    file, by `load_dataset` and `validate_file` (see `label_variants`).
    """

    spec: ColumnSpec
    file: str
    seen_ids: dict[str, int] = field(default_factory=dict)  # id -> row where first seen
    labelled: bool = True
    unique_ids: bool = True

    def validate(self, chunk: pd.DataFrame) -> ChunkResult:
        """`chunk` holds the raw mapped columns plus `_row` (1-based data row in the file), and may hold `_line`
        (1-based line where the row starts) and, for a row the reader could not split, `_malformed` (its raw
        text), `_problem` (the kind; malformed_record when absent) and `_fix` (see `load.iter_chunks`)."""
        spec = self.spec
        columns = (
            ["id", "row", "text_raw", "labels"]
            + [
                role
                for role, col in (("time", spec.time_col), ("user", spec.user_col), ("thread", spec.thread_col))
                if col is not None
            ]
            + list(spec.meta_cols)
            + (["votes"] if self.labelled and spec.vote_cols else [])
        )
        allowed = set(spec.classes) if spec.classes else None
        return _validate_rows(chunk, self.file, partial(self._check_row, allowed=allowed), self._accept, columns)

    def _check_row(
        self, raw: dict, row: int, problem, row_problems: list[RowProblem], *, allowed: set[str] | None
    ) -> dict:
        spec = self.spec
        text = raw.get(spec.text_col)
        if (found := _text_problem(text)) is not None:
            problem(spec.text_col, text, *found)

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
                    problem(
                        spec.id_col,
                        value,
                        "duplicate_id",
                        f"id already used at row {self.seen_ids[row_id]}: " + FIXES["duplicate_id"],
                    )

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

        record.update(_meta(raw, spec.meta_cols))
        if votes is not None:
            record["votes"] = votes
        return record

    def _accept(self, record: dict) -> None:
        if self.spec.id_col is not None and self.unique_ids:
            self.seen_ids[record["id"]] = record["row"]

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
                problem(
                    col,
                    value,
                    "missing_label" if not labels else "unknown_label",
                    "a single-label task needs exactly one label per row; for several, pass --label-sep",
                )
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
            allowed_keys = {label_key(c) for c in allowed}
            for label in labels:
                # A spelling variant of a class is judged over the whole file by the caller, not rejected here.
                if label not in allowed and label_key(label) not in allowed_keys:
                    problem(col, label, "unknown_label", _unknown_label_fix(label, sorted(allowed)))
        return labels


def _reject_unsplit(raw: dict, row: int, problem, row_problems: list, problems: list, rejected: list) -> bool:
    """Reject a row the reader could not split into columns (it carries `_malformed`); True when it did."""
    if _is_missing(raw.get("_malformed")):
        return False
    kind, fix = raw.get("_problem"), raw.get("_fix")
    problem(
        "<line>",
        raw["_malformed"],
        "malformed_record" if _is_missing(kind) else kind,
        None if _is_missing(fix) else fix,
    )
    problems.extend(row_problems)
    rejected.append({"row": row, "raw": _jsonable(raw["_malformed"]), "problems": [p.to_dict() for p in row_problems]})
    return True


def _row_problem_collector(file: str, row: int, line: int | None, row_problems: list[RowProblem]):
    def problem(column: str, value, kind: str, fix: str | None = None) -> None:
        row_problems.append(RowProblem(file, row, column, _short(value), kind, fix or FIXES[kind], line))

    return problem


def _validate_rows(chunk: pd.DataFrame, file: str, check_row, accept, columns: list[str]) -> ChunkResult:
    """The pass every validator makes over a chunk: a row the reader could not split is rejected; otherwise
    `check_row(raw, row, problem, row_problems)` reports the row's problems through `problem` and returns its
    record (or None when it has problems). A row with problems is rejected with its raw values; an accepted one
    is handed to `accept(record)` (so the validator remembers ids or pairs across chunks) and kept."""
    records, problems, rejected = [], [], []
    for raw in chunk.to_dict("records"):
        row = int(raw["_row"])
        line = None if _is_missing(raw.get("_line")) else int(raw["_line"])
        row_problems: list[RowProblem] = []
        problem = _row_problem_collector(file, row, line, row_problems)
        if _reject_unsplit(raw, row, problem, row_problems, problems, rejected):
            continue
        record = check_row(raw, row, problem, row_problems)
        if row_problems:
            _reject_row(raw, row, row_problems, problems, rejected)
            continue
        accept(record)
        records.append(record)
    return ChunkResult(pd.DataFrame.from_records(records, columns=columns), problems, rejected)


def _reject_row(raw: dict, row: int, row_problems: list[RowProblem], problems: list, rejected: list) -> None:
    problems.extend(row_problems)
    rejected.append(
        {
            "row": row,
            **{k: _jsonable(v) for k, v in raw.items() if k not in INTERNAL_COLUMNS},
            "problems": [p.to_dict() for p in row_problems],
        }
    )


def _meta(raw: dict, cols: Sequence[str]) -> dict:
    return {col: None if _is_missing(raw.get(col)) else str(raw.get(col)) for col in cols}


def _required_id(raw: dict, col: str, kind: str, problem) -> str | None:
    """The stripped id in `col`, or None after reporting it as `kind` (missing_query, missing_id...)."""
    value = raw.get(col)
    if _is_missing(value) or str(value).strip() == "":
        problem(col, value, kind)
        return None
    return str(value).strip()


@dataclass
class RankingRowValidator:
    """Validates chunks of a file of query-candidate pairs in order (`RankingSpec`).

    Each row needs a query id, a candidate id, a candidate text (and a query text when that column is mapped)
    and a numeric relevance; with a `task`, the grade must also lie in [task.min_grade, task.max_grade] (0 or 1
    for binary relevance). A pair seen before, or a query whose text differs from its first row's, is rejected.
    Remembers one entry per pair and one text per query across chunks.
    """

    spec: RankingSpec
    file: str
    task: RankingTask | None = None
    seen_pairs: dict[tuple[str, str], int] = field(default_factory=dict)  # (query, candidate) -> first row
    query_texts: dict[str, tuple[str, int]] = field(default_factory=dict)  # query -> (raw text, first row)

    def validate(self, chunk: pd.DataFrame) -> ChunkResult:
        """`chunk` as for `RowValidator.validate`; accepted rows have the columns of `RankingDataset.frame` but
        for the cleaned texts."""
        spec = self.spec
        columns = [
            "id",
            "row",
            "query",
            "candidate",
            *(["query_text_raw"] if spec.query_text_col else []),
            "text_raw",
            "relevance",
            *spec.meta_cols,
        ]
        return _validate_rows(chunk, self.file, self._check_row, self._accept, columns)

    def _check_row(self, raw: dict, row: int, problem, row_problems: list[RowProblem]) -> dict | None:
        spec = self.spec
        query = _required_id(raw, spec.query_col, "missing_query", problem)
        candidate = _required_id(raw, spec.candidate_col, "missing_candidate", problem)
        text = raw.get(spec.candidate_text_col)
        if (found := _text_problem(text)) is not None:
            problem(spec.candidate_text_col, text, *found)
        query_text = raw.get(spec.query_text_col) if spec.query_text_col is not None else None
        if spec.query_text_col is not None and (found := _text_problem(query_text)) is not None:
            problem(spec.query_text_col, query_text, *found)
        relevance = self._relevance(raw.get(spec.relevance_col), problem)

        if not row_problems and (first := self.seen_pairs.get((query, candidate))) is not None:
            problem(
                spec.candidate_col,
                candidate,
                "duplicate_pair",
                f"query '{query}' already has candidate '{candidate}' at row {first}: " + FIXES["duplicate_pair"],
            )
        if not row_problems and spec.query_text_col is not None and query in self.query_texts:
            first_text, first_row = self.query_texts[query]
            if query_text != first_text:
                problem(
                    spec.query_text_col,
                    query_text,
                    "query_text_mismatch",
                    f"query '{query}' has another text at row {first_row} ({_short(first_text)!r}): "
                    + FIXES["query_text_mismatch"],
                )
        if row_problems:
            return None

        record = {"id": pair_id(query, candidate), "row": row, "query": query, "candidate": candidate}
        if spec.query_text_col is not None:
            record["query_text_raw"] = query_text
        record.update(text_raw=text, relevance=relevance, **_meta(raw, spec.meta_cols))
        return record

    def _accept(self, record: dict) -> None:
        self.seen_pairs[(record["query"], record["candidate"])] = record["row"]
        if self.spec.query_text_col is not None:
            self.query_texts.setdefault(record["query"], (record["query_text_raw"], record["row"]))

    def _relevance(self, value, problem) -> float:
        """The grade as a float; a problem when it is not a finite number or outside the task's grades."""
        col = self.spec.relevance_col
        grade = math.nan
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            grade = float(value)
        elif isinstance(value, str):
            try:
                grade = float(value.strip())
            except ValueError:
                pass
        if not math.isfinite(grade):
            problem(col, value, "bad_relevance")
            return math.nan
        task = self.task
        if task is not None and task.relevance == "binary" and grade not in (0.0, 1.0):
            problem(
                col,
                value,
                "bad_relevance",
                "binary relevance is 0 or 1: fix the cell, or use a graded "
                "RankingTask (relevance='graded' with min_grade and max_grade)",
            )
        elif task is not None and not task.min_grade <= grade <= task.max_grade:
            problem(
                col,
                value,
                "bad_relevance",
                f"the task's grades run from {task.min_grade:g} to "
                f"{task.max_grade:g}: fix the cell, or the task's min_grade / max_grade",
            )
        return grade


@dataclass
class GenerationRowValidator:
    """Validates chunks of a file of inputs with reference texts in order (`GenerationSpec`): both texts must be
    usable messages (`_text_problem`), ids present and unique when `spec.id_col` is set."""

    spec: GenerationSpec
    file: str
    seen_ids: dict[str, int] = field(default_factory=dict)  # id -> row where first seen

    def validate(self, chunk: pd.DataFrame) -> ChunkResult:
        """`chunk` as for `RowValidator.validate`; accepted rows have the columns of `GenerationDataset.frame`
        but for the cleaned texts."""
        columns = ["id", "row", "text_raw", "reference_raw", *self.spec.meta_cols]
        return _validate_rows(chunk, self.file, self._check_row, self._accept, columns)

    def _check_row(self, raw: dict, row: int, problem, row_problems: list[RowProblem]) -> dict:
        spec = self.spec
        text, reference = raw.get(spec.input_col), raw.get(spec.reference_col)
        for col, value in ((spec.input_col, text), (spec.reference_col, reference)):
            if (found := _text_problem(value)) is not None:
                problem(col, value, *found)
        row_id = str(row)
        if spec.id_col is not None:
            row_id = _required_id(raw, spec.id_col, "missing_id", problem)
            if row_id is not None and row_id in self.seen_ids and not row_problems:
                problem(
                    spec.id_col,
                    raw.get(spec.id_col),
                    "duplicate_id",
                    f"id already used at row {self.seen_ids[row_id]}: " + FIXES["duplicate_id"],
                )
        return {"id": row_id, "row": row, "text_raw": text, "reference_raw": reference, **_meta(raw, spec.meta_cols)}

    def _accept(self, record: dict) -> None:
        if self.spec.id_col is not None:
            self.seen_ids[record["id"]] = record["row"]


def _text_problem(text) -> tuple[str, str | None] | None:
    """(problem kind, specific fix or None) when a raw text cannot be a message; None when it can."""
    if _is_missing(text):
        return "missing_text", None
    if not isinstance(text, str):
        return "non_text", None
    if _has_surrogates(text):
        return "bad_encoding", None
    if not text.strip():
        return "empty_text", None
    if not _VISIBLE_ASCII.search(text) and not clean(text):
        # Training and scoring see the cleaned text: an empty one would be a silent empty example.
        return "empty_text", _INVISIBLE_ONLY_FIX
    return None


def _unknown_label_fix(label: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(label, allowed, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}allowed classes are {allowed}; fix the label or add it to --classes"


def suspicious_labels(
    counts: dict[str, int], max_share: float = 0.001, max_count: int = RARE_LABEL_MAX
) -> dict[str, str]:
    """Rare labels that look like typos of frequent ones ('spma' beside 'spam'), when classes were inferred.

    Returns {rare_label: likely_intended_label}. Such rows are rejected with a pointer to --classes, because a
    one-off class silently becomes a class the model must learn from a handful of examples. Spelling variants
    ('Spam' beside 'spam', same `label_key`) are not typos: `label_variants` finds them, whatever their count.
    """
    total = sum(counts.values()) or 1
    frequent = [c for c, n in counts.items() if n > max_count and n / total > max_share]
    out = {}
    for label, n in counts.items():
        if n <= max_count and n / total <= max_share:
            for other in frequent:
                if label_key(label) == label_key(other):
                    continue
                a, b = label.lower(), other.lower()
                if difflib.SequenceMatcher(None, a, b).ratio() >= 0.8 or _swapped_neighbours(a, b):
                    out[label] = other
                    break
    return out


def _swapped_neighbours(a: str, b: str) -> bool:
    """True when `a` is `b` with two adjacent characters swapped ('spma' for 'spam'): the commonest typing slip,
    which the similarity ratio scores too low on short labels."""
    if len(a) != len(b) or len(a) < 3:
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


_LABEL_ENDS = re.compile(r"^[\s_]+|[\s_]+$")
_LABEL_SPACING = re.compile(r"[\s_\-]+")


def label_key(label: str) -> str:
    """A label's identity with its spelling set aside: casefolded, whitespace and '_' stripped from the ends,
    and every run of whitespace, '_' and '-' made one '_'.

        label_key("Hate_Speech") == label_key(" hate  speech") == label_key("HATE-SPEECH") == "hate_speech"

    A leading '-' is not stripped (it becomes '_'), so the numeric labels '-1' and '1' stay apart.
    """
    return _LABEL_SPACING.sub("_", _LABEL_ENDS.sub("", label.casefold()))


def label_variants(counts: Mapping[str, int], classes: Sequence[str] | None = None) -> dict[str, str]:
    """{variant: canonical spelling} for every label spelled differently from another with the same `label_key`.

    `counts` maps each label as written to its number of rows. Without `classes`, a group's canonical spelling is
    its most frequent one (a tie goes to the spelling that is its own key, e.g. 'off_platform', then to the first
    in sorted order); with `classes`, it is the class whose key matches, even when that spelling never occurs
    (labels matching no class are `unknown_label` rows instead).

        label_variants({"hate_speech": 1144, "Hate_Speech": 3, "offensive": 15352})  # {"Hate_Speech": "hate_speech"}
    """
    groups: dict[str, list[str]] = {}
    for label in counts:
        groups.setdefault(label_key(label), []).append(label)
    class_of = {label_key(c): c for c in classes} if classes is not None else None
    variants = {}
    for key, spellings in groups.items():
        if class_of is not None:
            if key not in class_of:
                continue
            canonical = class_of[key]
        elif len(spellings) < 2:
            continue
        else:
            canonical = min(spellings, key=lambda s: (-counts[s], s != key, s))
        variants.update({s: canonical for s in spellings if s != canonical})
    return variants


def label_variants_error(
    file: str,
    column: str,
    variants: Mapping[str, str],
    counts: Mapping[str, int],
    first_rows: Mapping[str, int],
    *,
    classes_given: bool,
) -> DataError:
    """The refusal of a file whose labels are spelled several ways: every group with each spelling's count and
    first row, the canonical spelling first, and the two fixes."""
    groups: dict[str, list[str]] = {}
    for variant, canonical in sorted(variants.items()):
        groups.setdefault(canonical, []).append(variant)

    def spelling(label: str) -> str:
        n = counts.get(label, 0)
        if n == 0:
            return f"{label!r} (in --classes, no row)"
        return f"{label!r} ({n:,} row{'s' if n != 1 else ''}, first at row {first_rows[label]})"

    if classes_given:
        lines = [f"{file}: column '{column}' spells classes of --classes in other ways (case, spaces, '_' or '-'):"]
    else:
        lines = [
            f"{file}: column '{column}' spells the same label in several ways (case, spaces, '_' or '-'); "
            "each spelling would silently become a class of its own:"
        ]
    for canonical in sorted(groups):
        lines.append("  " + " = ".join(spelling(s) for s in [canonical, *groups[canonical]]))
    target = "its spelling in --classes" if classes_given else "its most frequent spelling"
    lines.append(
        f"Fix: correct the spellings in the file, or pass --normalise-labels to map each variant to {target} "
        "(the first of each group above)."
    )
    return DataError("\n".join(lines))


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
