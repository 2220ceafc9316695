"""Read labelled files (CSV, TSV, JSONL, Parquet) in chunks, validate every row, clean and redact the text.

    from finesieve.data.load import load_dataset
    ds = load_dataset("messages.csv", ColumnSpec(text_col="text", label_cols=("label",)))

Files are streamed chunk by chunk, so `validate_file` checks a file of any size in constant memory (but
for the set of ids), and `load_dataset` holds only the mapped columns of accepted rows. Every problem names
the file, the row (and, for text formats, the line) and the column; rejected rows are counted and can be
written to a rejects file, and rows read = rows accepted + rows rejected, always.

Ranking and generation files (`data.task`) go through the same reader, row checks, rejects file, cleaning and
redaction, into their own dataset types (`data.dataset`):

    pairs = load_ranking_dataset("hr_scores.csv", RankingSpec(query_col="job_id", candidate_col="resume_id",
                                 query_text_col="job_terms", candidate_text_col="resume_text",
                                 relevance_col="hr_score"), task=RankingTask(relevance="graded", min_grade=1,
                                 max_grade=7, relevant_grade=5))
    examples = load_generation_dataset("feedback.csv", GenerationSpec(input_col="resume", reference_col="feedback"))

CSV and TSV are read strictly (`data.delimited`): a record with too many or too few fields, broken quotes or
an unclosed quote is a rejected row, never a silently shifted one. Labels spelled several ways ('Spam' beside
'spam') are refused, or mapped to one spelling with `normalise_labels=True` (`validate.label_variants`).
"""

from __future__ import annotations

import codecs
import contextlib
import difflib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from finesieve.data.dataset import Dataset, GenerationDataset, RankingDataset, RejectionSummary
from finesieve.data.delimited import Record, iter_records, read_header
from finesieve.data.errors import DataError, FinesieveError, RowProblem
from finesieve.data.preprocess import Preprocessing, prepare
from finesieve.data.redact import RedactionConfig, Redactor
from finesieve.data.spec import AnySpec, ColumnSpec, GenerationSpec, RankingSpec
from finesieve.data.task import RankingTask
from finesieve.data.validate import (
    FIXES,
    RARE_LABEL_MAX,
    GenerationRowValidator,
    RankingRowValidator,
    RowValidator,
    label_key,
    label_variants,
    label_variants_error,
    suspicious_labels,
)
from finesieve.outputs import check_output_file, partial_path

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
CHUNK_ROWS = 20_000
MAX_EXAMPLES = 20


def detect_format(path: Path, spec: AnySpec) -> str:
    if spec.file_format is not None:
        return spec.file_format
    suffixes = [s.lower() for s in path.suffixes]
    for suffix in reversed(suffixes):
        if suffix in EXTENSIONS:
            return EXTENSIONS[suffix]
    raise DataError(
        f"{path}: cannot tell the file format from the extension {path.suffix!r}: "
        f"use one of {sorted(EXTENSIONS)} or pass --format csv|tsv|jsonl|parquet"
    )


def _needed_columns(spec: AnySpec) -> list[str]:
    if not isinstance(spec, ColumnSpec):
        return spec.columns
    cols = [
        spec.text_col,
        *spec.label_cols,
        spec.id_col,
        spec.time_col,
        spec.user_col,
        spec.thread_col,
        *spec.meta_cols,
        *(spec.vote_cols or {}).values(),
    ]
    return [c for c in cols if c is not None]


def _label_columns(spec: AnySpec) -> set[str]:
    """Columns only a labelled file has (labels and vote counts; relevance; references): a file to score may
    lack them."""
    if not isinstance(spec, ColumnSpec):
        return spec.target_columns
    return set(spec.label_cols) | set((spec.vote_cols or {}).values())


def _mapping_hint(spec: AnySpec) -> str:
    if isinstance(spec, ColumnSpec):
        return "Map yours with --text-col / --label-col / --id-col."
    return f"Map yours with the {type(spec).__name__} settings {' / '.join(spec.ROLES)}."


def _check_columns(path: Path, available: list[str], spec: AnySpec, labelled: bool = True) -> None:
    needed = _needed_columns(spec) if labelled else [c for c in _needed_columns(spec) if c not in _label_columns(spec)]
    missing = [c for c in needed if c not in available]
    if not missing:
        return
    hints = []
    for col in missing:
        close = difflib.get_close_matches(col, available, n=1, cutoff=0.5)
        hints.append(f"'{col}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    raise DataError(
        f"{path}: column(s) {', '.join(hints)} not found. The file has columns {available}. " + _mapping_hint(spec)
    )


def iter_chunks(
    path: str | Path, spec: AnySpec, chunk_rows: int = CHUNK_ROWS, labelled: bool = True
) -> Iterator[pd.DataFrame]:
    """Yield the mapped raw columns (object dtype) in chunks, plus `_row` (1-based data row) and, for CSV, TSV and
    JSONL, `_line` (1-based physical line where the row starts). A row that cannot be split into columns has
    `_malformed` (its raw text), `_problem` (the kind: malformed_record, bad_field_count, malformed_quotes,
    unbalanced_quote, blank_line) and `_fix`; `RowValidator` turns it into a rejected row."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file: check the path")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file: name the data file inside it")
    fmt = detect_format(path, spec)
    if fmt in ("csv", "tsv"):
        yield from _iter_delimited(path, spec, fmt, chunk_rows, labelled)
    elif fmt == "jsonl":
        yield from _iter_jsonl(path, spec, chunk_rows, labelled)
    else:
        yield from _iter_parquet(path, spec, chunk_rows, labelled)


def _iter_delimited(path: Path, spec: AnySpec, fmt: str, chunk_rows: int, labelled: bool) -> Iterator[pd.DataFrame]:
    sep = "\t" if fmt == "tsv" else ","
    header = read_header(path, sep=sep, encoding=spec.encoding)
    _check_columns(path, header.names, spec, labelled)
    wanted = [c for c in _needed_columns(spec) if c in header.names]
    positions = [header.names.index(c) for c in wanted]
    batch: list[Record] = []
    for record in iter_records(path, header, sep=sep, encoding=spec.encoding):
        batch.append(record)
        if len(batch) >= chunk_rows:
            yield _delimited_chunk(batch, wanted, positions)
            batch = []
    if batch:
        yield _delimited_chunk(batch, wanted, positions)


def _delimited_chunk(records: list[Record], wanted: list[str], positions: list[int]) -> pd.DataFrame:
    # dtype=object: pandas 3 strings are Arrow-backed and cannot hold the surrogates that mark undecodable bytes.
    chunk = pd.DataFrame(
        {col: [r.fields[i] if r.fields is not None else None for r in records] for col, i in zip(wanted, positions)},
        dtype=object,
    )
    chunk["_row"] = [r.row for r in records]
    chunk["_line"] = [r.line for r in records]
    if any(r.fields is None for r in records):
        chunk["_malformed"] = pd.Series([r.raw for r in records], dtype=object)
        chunk["_problem"] = pd.Series([r.problem for r in records], dtype=object)
        chunk["_fix"] = pd.Series([r.fix for r in records], dtype=object)
    return chunk


def _iter_jsonl(path: Path, spec: AnySpec, chunk_rows: int, labelled: bool) -> Iterator[pd.DataFrame]:
    wanted = _needed_columns(spec) if labelled else [c for c in _needed_columns(spec) if c not in _label_columns(spec)]
    try:
        codecs.lookup(spec.encoding)
    except LookupError:
        raise DataError(
            f"{path}: unknown encoding {spec.encoding!r}: pass a Python codec name such as utf-8 or latin-1"
        ) from None
    rows: list[dict] = []
    checked = False
    with open(path, "rb") as fh:
        # Every line is a row, blank ones included, so that rows read = accepted + rejected = the file's lines.
        for row, raw_line in enumerate(fh, start=1):
            record: dict = {"_row": row, "_line": row}
            try:
                text = raw_line.decode(spec.encoding, errors="surrogateescape").rstrip("\r\n")
            except UnicodeDecodeError as err:  # surrogateescape cannot carry every bad byte of every codec
                record.update(
                    _malformed=repr(raw_line[:60]),
                    _problem="bad_encoding",
                    _fix=f"line {row} cannot be decoded as {spec.encoding} ({err.reason}): " + FIXES["bad_encoding"],
                )
                rows.append(record)
                continue
            if not text.strip():
                record.update(
                    _malformed=text, _problem="blank_line", _fix=f"line {row} is blank: " + FIXES["blank_line"]
                )
                rows.append(record)
                continue
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError(f"a JSON {type(obj).__name__}, not an object")
            except ValueError as err:  # json.JSONDecodeError is a ValueError
                record.update(
                    _malformed=text,
                    _problem="malformed_record",
                    _fix=f"line {row} is not one JSON object ({err}): " + FIXES["malformed_record"],
                )
                rows.append(record)
                continue
            if not checked:
                # Column presence is judged on the first record: JSONL has no header.
                _check_columns(path, list(obj), spec, labelled)
                checked = True
            for col in wanted:
                record[col] = obj.get(col)
            rows.append(record)
            if len(rows) >= chunk_rows:
                yield pd.DataFrame.from_records(rows)
                rows = []
    if rows:
        yield pd.DataFrame.from_records(rows)


def _iter_parquet(path: Path, spec: AnySpec, chunk_rows: int, labelled: bool) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a non-Parquet file
        raise DataError(f"{path}: not a readable Parquet file ({err}); check the file or pass --format") from None
    _check_columns(path, pf.schema_arrow.names, spec, labelled)
    wanted = [c for c in _needed_columns(spec) if c in pf.schema_arrow.names]
    start = 1
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=wanted):
        chunk = batch.to_pandas().astype(object)
        chunk = chunk.where(chunk.notna(), None)
        chunk["_row"] = range(start, start + len(chunk))
        start += len(chunk)
        yield chunk


@dataclass
class ValidationReport:
    """What a streamed pass over a file found: rows accepted, rejected per problem, label counts.

    `n_rows == n_accepted + sum(rejected.values())` always. `label_normalisation` maps each label spelling that
    `normalise_labels=True` merged to the class it became ({"Hate_Speech": "hate_speech"}), `n_rows_normalised`
    counts the rows it changed.
    """

    file: str
    n_rows: int = 0
    n_accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    examples: list[RowProblem] = field(default_factory=list)
    label_counts: Counter = field(default_factory=Counter)
    rejects_path: str | None = None
    label_normalisation: dict[str, str] = field(default_factory=dict)
    n_rows_normalised: int = 0

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "n_rows": self.n_rows,
            "n_accepted": self.n_accepted,
            "n_rejected": sum(self.rejected.values()),
            "rejected": dict(self.rejected),
            "examples": [p.to_dict() for p in self.examples],
            "label_counts": dict(self.label_counts),
            "label_normalisation": dict(self.label_normalisation),
            "n_rows_normalised": self.n_rows_normalised,
            "rejects_path": self.rejects_path,
        }

    def summary_lines(self) -> list[str]:
        lines = [
            f"{self.file}: {self.n_rows:,} rows read, {self.n_accepted:,} accepted, {sum(self.rejected.values()):,} rejected"
        ]
        for kind, n in self.rejected.most_common():
            lines.append(f"  {kind}: {n:,} row(s). Fix: {FIXES.get(kind, '')}")
        for problem in self.examples[:5]:
            lines.append(f"  e.g. {problem}")
        if self.label_normalisation:
            mapped = ", ".join(f"{v!r} -> {c!r}" for v, c in sorted(self.label_normalisation.items()))
            lines.append(
                f"  labels normalised (--normalise-labels): {mapped}; {self.n_rows_normalised:,} row(s) changed"
            )
        if self.rejects_path:
            lines.append(f"  every rejected row, with its problems, is in {self.rejects_path}")
        return lines


def _memory_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def load_dataset(
    path: str | Path,
    spec: ColumnSpec,
    *,
    redaction: RedactionConfig | None = None,
    rejects_path: str | Path | None = None,
    strict: bool = False,
    max_rows: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
    normalise_labels: bool = False,
) -> Dataset:
    """Load, validate, clean and redact a labelled file into a `Dataset`.

    Rejected rows are counted in `dataset.rejected` (and written to `rejects_path` when given); `strict`
    raises a DataError listing the problems instead. `max_rows` reads only the first rows of a large file.
    Labels spelled several ways ('Spam' beside 'spam') raise a DataError listing them, unless
    `normalise_labels` maps each to one spelling (recorded in `dataset.label_normalisation`).
    """
    path = Path(path)
    _refuse_too_large(path, max_rows)
    _refuse_class_spellings(path, spec)
    report = ValidationReport(file=str(path), rejects_path=str(rejects_path) if rejects_path else None)
    with _rejects_file(rejects_path) as staged:  # under its name only once every rejected row is in it
        frame, redaction_counts = _read_accepted(path, spec, report, redaction, staged, max_rows, chunk_rows)
        frame, report.label_normalisation, report.n_rows_normalised = _settle_label_spellings(
            frame, spec, str(path), normalise_labels
        )
        frame = _reject_label_typos(frame, spec, str(path), report, staged)

    if strict and report.rejected:
        raise DataError("\n".join(["strict mode: the file has rejected rows"] + report.summary_lines()))
    if frame.empty:
        raise DataError("\n".join([f"{path}: no valid rows"] + report.summary_lines()))
    classes = _classes(frame, spec)
    _check_classes(path, classes, spec)
    rejected = _rejection_summary(report)
    return Dataset(
        frame=frame[
            [
                c
                for c in ["id", "row", "text_raw", "text", "labels", "time", "user", "thread", *spec.meta_cols, "votes"]
                if c in frame
            ]
        ],
        classes=classes,
        spec=spec,
        source=str(path),
        rejected=rejected,
        redaction_counts=dict(redaction_counts),
        label_normalisation=dict(report.label_normalisation),
        label_normalised_rows=report.n_rows_normalised,
        preprocessing=Preprocessing(redaction=redaction or RedactionConfig(), text_field=spec.text_col),
    )


def _refuse_too_large(path: Path, max_rows: int | None) -> None:
    if max_rows is not None or not path.exists():
        return
    avail = _memory_available()
    # In-memory frames of short texts take several times the file's size; past that, stream instead.
    if avail is not None and path.stat().st_size * 4 > avail:
        raise DataError(
            f"{path}: {path.stat().st_size / 2**30:.1f} GiB is too large to load into the "
            f"{avail / 2**30:.1f} GiB of free memory. Check it in a stream with `finesieve data validate`, "
            "score it with `finesieve score` (streams), or load a part with --max-rows."
        )


def _refuse_class_spellings(path: Path, spec: ColumnSpec) -> None:
    """Two declared classes with one `label_key` ('spam' and 'Spam') would make every variant ambiguous."""
    by_key: dict[str, list[str]] = {}
    for c in spec.classes or ():
        by_key.setdefault(label_key(c), []).append(c)
    clashes = [names for names in by_key.values() if len(names) > 1]
    if clashes:
        raise DataError(
            f"{path}: --classes names the same class in several spellings {clashes} (they differ only "
            "in case, spaces, '_' or '-'): declare each class once"
        )


def _text_fields(spec: AnySpec) -> list[tuple[str, str, str]]:
    """(raw column, cleaned column, source column) of each text a row of `spec` carries; the source column picks
    the redaction's per-field entities (`RedactionConfig.fields`)."""
    if isinstance(spec, RankingSpec):
        query = [("query_text_raw", "query_text", spec.query_text_col)] if spec.query_text_col is not None else []
        return [*query, ("text_raw", "text", spec.candidate_text_col)]
    if isinstance(spec, GenerationSpec):
        return [("text_raw", "text", spec.input_col), ("reference_raw", "reference", spec.reference_col)]
    return [("text_raw", "text", spec.text_col)]


def _read_accepted(
    path: Path,
    spec: AnySpec,
    report: ValidationReport,
    redaction: RedactionConfig | None,
    rejects_path,
    max_rows: int | None,
    chunk_rows: int,
    validator=None,
) -> tuple[pd.DataFrame, Counter]:
    """Stream the file through validation, cleaning and redaction: the accepted rows, and the redaction counts.
    `validator` checks each chunk (default: a `RowValidator` of the classification `spec`)."""
    preprocessing = Preprocessing(redaction=redaction or RedactionConfig())
    redactor = Redactor(preprocessing.redaction)
    validator = validator if validator is not None else RowValidator(spec, str(path))
    fields = _text_fields(spec)
    parts: list[pd.DataFrame] = []
    redaction_counts: Counter = Counter()
    rejects_fh = open(rejects_path, "w", encoding="utf-8") if rejects_path else None
    try:
        for chunk in iter_chunks(path, spec, chunk_rows):
            if max_rows is not None:
                chunk = chunk.iloc[: max(0, max_rows - report.n_rows)]
                if chunk.empty:
                    break
            result = validator.validate(chunk)
            _account(report, chunk, result, rejects_fh)
            accepted = result.accepted
            if not accepted.empty:
                for raw_col, out_col, source_col in fields:
                    redacted, counts = prepare(accepted[raw_col], preprocessing, redactor=redactor, field=source_col)
                    redaction_counts.update(counts)
                    accepted = accepted.assign(**{out_col: redacted})
                parts.append(accepted)
    finally:
        if rejects_fh:
            rejects_fh.close()
    frame = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["id", "row", "text_raw", "labels", "text"])
    )
    return frame, redaction_counts


def load_ranking_dataset(
    path: str | Path,
    spec: RankingSpec,
    *,
    task: RankingTask | None = None,
    redaction: RedactionConfig | None = None,
    rejects_path: str | Path | None = None,
    strict: bool = False,
    max_rows: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> RankingDataset:
    """Load, validate, clean and redact a file of query-candidate pairs into a `RankingDataset`.

    A row is rejected (counted, and written to `rejects_path` when given) when an id or a text is missing, the
    relevance is not a number (or, with `task`, outside its grades), the pair came before, or its query's text
    differs from the query's first row; `strict` raises a DataError listing the problems instead. Query and
    candidate texts are cleaned and redacted like messages (`data.preprocess.prepare`).
    """
    path = Path(path)
    validator = RankingRowValidator(spec, str(path), task=task)
    frame, report, redaction_counts = _load_rows(
        path, spec, validator, redaction, rejects_path, strict, max_rows, chunk_rows
    )
    columns = ["id", "row", "query", "candidate", "query_text_raw", "query_text", "text_raw", "text", "relevance"]
    frame = frame[[c for c in [*columns, *spec.meta_cols] if c in frame]].astype({"relevance": float})
    return RankingDataset(
        frame=frame,
        spec=spec,
        source=str(path),
        rejected=_rejection_summary(report),
        redaction_counts=dict(redaction_counts),
    )


def load_generation_dataset(
    path: str | Path,
    spec: GenerationSpec,
    *,
    redaction: RedactionConfig | None = None,
    rejects_path: str | Path | None = None,
    strict: bool = False,
    max_rows: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> GenerationDataset:
    """Load, validate, clean and redact a file of inputs with reference texts into a `GenerationDataset`.

    A row is rejected (counted, and written to `rejects_path` when given) when its input or reference is missing,
    empty or undecodable, or its id is missing or repeated; `strict` raises a DataError listing the problems
    instead. Inputs and references are cleaned and redacted like messages (`data.preprocess.prepare`).
    """
    path = Path(path)
    validator = GenerationRowValidator(spec, str(path))
    frame, report, redaction_counts = _load_rows(
        path, spec, validator, redaction, rejects_path, strict, max_rows, chunk_rows
    )
    columns = ["id", "row", "text_raw", "text", "reference_raw", "reference"]
    frame = frame[[c for c in [*columns, *spec.meta_cols] if c in frame]]
    return GenerationDataset(
        frame=frame,
        spec=spec,
        source=str(path),
        rejected=_rejection_summary(report),
        redaction_counts=dict(redaction_counts),
    )


def _load_rows(
    path: Path,
    spec: AnySpec,
    validator,
    redaction: RedactionConfig | None,
    rejects_path,
    strict: bool,
    max_rows: int | None,
    chunk_rows: int,
) -> tuple[pd.DataFrame, ValidationReport, Counter]:
    """The accepted, cleaned and redacted rows of a ranking or generation file, its report and redaction counts;
    a DataError in strict mode when any row was rejected, and whenever no row was accepted."""
    _refuse_too_large(path, max_rows)
    report = ValidationReport(file=str(path), rejects_path=str(rejects_path) if rejects_path else None)
    with _rejects_file(rejects_path) as staged:  # under its name only once every rejected row is in it
        frame, redaction_counts = _read_accepted(
            path, spec, report, redaction, staged, max_rows, chunk_rows, validator=validator
        )
    if strict and report.rejected:
        raise DataError("\n".join(["strict mode: the file has rejected rows"] + report.summary_lines()))
    if frame.empty:
        raise DataError("\n".join([f"{path}: no valid rows"] + report.summary_lines()))
    return frame, report, redaction_counts


def _rejection_summary(report: ValidationReport) -> RejectionSummary:
    return RejectionSummary(
        counts=dict(report.rejected), examples=[p.to_dict() for p in report.examples], rejects_path=report.rejects_path
    )


def _settle_label_spellings(
    frame: pd.DataFrame, spec: ColumnSpec, file: str, normalise: bool
) -> tuple[pd.DataFrame, dict[str, str], int]:
    """Refuse labels spelled several ways, or map each to its canonical spelling: (frame, mapping, rows changed)."""
    if frame.empty or spec.indicator_labels:  # indicator labels are column names: one spelling each
        return frame, {}, 0
    counts = Counter(lbl for labels in frame["labels"] for lbl in labels)
    variants = label_variants(counts, spec.classes)
    if not variants:
        return frame, {}, 0
    if not normalise:
        first_rows: dict[str, int] = {}
        for row, labels in zip(frame["row"], frame["labels"]):
            for lbl in labels:
                first_rows.setdefault(lbl, int(row))
        raise label_variants_error(
            file, spec.label_cols[0], variants, counts, first_rows, classes_given=spec.classes is not None
        )
    mapped = frame["labels"].map(lambda labels: _map_labels(labels, variants))
    changed = sum(a != b for a, b in zip(mapped, frame["labels"]))
    return frame.assign(labels=mapped), variants, changed


def _map_labels(labels: tuple[str, ...], variants: dict[str, str]) -> tuple[str, ...]:
    if not any(lbl in variants for lbl in labels):
        return labels
    # Sorted and without repeats, as `RowValidator` builds them: 'scam|Scam' becomes ('scam',).
    return tuple(sorted({variants.get(lbl, lbl) for lbl in labels}))


def _check_classes(path: Path, classes: list[str], spec: ColumnSpec) -> None:
    if spec.vote_cols and (extra := sorted(set(spec.vote_cols) - set(classes))):
        raise DataError(
            f"{path}: --vote-col names class(es) {extra} that no row is labelled with; the classes are "
            f"{classes}. Fix: map each class's vote column as CLASS=COLUMN"
        )
    if len(classes) < 2 and not spec.multilabel:
        raise DataError(
            f"{path}: the label column '{spec.label_cols[0]}' holds one class only ({classes}): "
            "a classifier needs at least two; check --label-col"
        )


def validate_file(
    path: str | Path,
    spec: ColumnSpec,
    *,
    rejects_path: str | Path | None = None,
    chunk_rows: int = CHUNK_ROWS,
    normalise_labels: bool = False,
) -> ValidationReport:
    """Check every row of a file in a stream (constant memory but for the id set and one entry per distinct
    label, or per distinct label set with --label-sep); nothing is kept.

    Labels spelled several ways are found once the pass has counted them: a DataError lists them, unless
    `normalise_labels` merges them (the mapping is in the report).
    """
    _refuse_class_spellings(Path(path), spec)
    validator = RowValidator(spec, str(path))
    report = ValidationReport(file=str(path), rejects_path=str(rejects_path) if rejects_path else None)
    labels_seen = _LabelTally(keep_sets=spec.label_sep is not None)
    with _rejects_file(rejects_path) as staged:
        rejects_fh = open(staged, "w", encoding="utf-8") if staged else None
        try:
            for chunk in iter_chunks(path, spec, chunk_rows):
                result = validator.validate(chunk)
                _account(report, chunk, result, rejects_fh)
                labels_seen.add(result.accepted)
            if not spec.indicator_labels:
                labels_seen.settle_spellings(report, spec, str(path), normalise_labels)
            report.label_counts = labels_seen.counts
            if spec.classes is None and not spec.multilabel:
                _reject_streamed_typos(report, labels_seen, spec, str(path), rejects_fh)
        finally:
            if rejects_fh:
                rejects_fh.close()
    return report


@contextlib.contextmanager
def _rejects_file(rejects_path: str | Path | None):
    """The staging path (`REJECTS.partial`) the rejected rows are written to; renamed to `rejects_path` when the
    pass ends, even when it ends in a DataError about the data (the rejects say why), removed on any other error."""
    if rejects_path is None:
        yield None
        return
    final = check_output_file(rejects_path, "--rejects")
    final.parent.mkdir(parents=True, exist_ok=True)
    staged = partial_path(final)
    staged.write_text("", encoding="utf-8")
    try:
        yield staged
    except FinesieveError:
        os.replace(staged, final)
        raise
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    os.replace(staged, final)


@dataclass
class _LabelTally:
    """What `validate_file` remembers of the labels of accepted rows: counts, the first rows of each label (all
    rows of a rare one, for its typo rejection) and, for multi-label files, the count of each label set (so the
    rows a normalisation changes are counted exactly)."""

    keep_sets: bool
    counts: Counter = field(default_factory=Counter)
    rows: dict[str, list[int]] = field(default_factory=dict)
    sets: Counter = field(default_factory=Counter)

    def add(self, accepted: pd.DataFrame) -> None:
        for row, labels in zip(accepted["row"], accepted["labels"]):
            self.counts.update(labels)
            if self.keep_sets:
                self.sets[labels] += 1
            for lbl in labels:
                rows = self.rows.setdefault(lbl, [])
                if len(rows) < RARE_LABEL_MAX:
                    rows.append(int(row))

    def settle_spellings(self, report: ValidationReport, spec: ColumnSpec, file: str, normalise: bool) -> None:
        variants = label_variants(self.counts, spec.classes)
        if not variants:
            return
        if not normalise:
            raise label_variants_error(
                file,
                spec.label_cols[0],
                variants,
                self.counts,
                {lbl: rows[0] for lbl, rows in self.rows.items()},
                classes_given=spec.classes is not None,
            )
        report.label_normalisation = variants
        if self.keep_sets:
            report.n_rows_normalised = sum(n for labels, n in self.sets.items() if any(v in variants for v in labels))
            merged_sets: Counter = Counter()
            for labels, n in self.sets.items():
                merged_sets[_map_labels(labels, variants)] += n
            self.sets = merged_sets
            self.counts = Counter()
            for labels, n in merged_sets.items():
                self.counts.update({lbl: n for lbl in labels})
        else:
            report.n_rows_normalised = sum(self.counts[v] for v in variants)
            merged: Counter = Counter()
            for lbl, n in self.counts.items():
                merged[variants.get(lbl, lbl)] += n
            self.counts = merged
        merged_rows: dict[str, list[int]] = {}
        for lbl, rows in self.rows.items():
            merged_rows.setdefault(variants.get(lbl, lbl), []).extend(rows)
        self.rows = {lbl: sorted(rows)[:RARE_LABEL_MAX] for lbl, rows in merged_rows.items()}


def _reject_streamed_typos(
    report: ValidationReport, labels_seen: _LabelTally, spec: ColumnSpec, file: str, rejects_fh
) -> None:
    """Reject the rows of rare labels that look like typos, found once the pass has counted every label."""
    for label, intended in suspicious_labels(dict(report.label_counts), max_count=RARE_LABEL_MAX).items():
        n = report.label_counts.pop(label)
        report.rejected["unknown_label"] += n
        report.n_accepted -= n
        # A rare label has at most RARE_LABEL_MAX rows, and the tally kept every one of them.
        for i, row in enumerate(labels_seen.rows[label]):
            problem = _typo_problem(file, row, spec.label_cols[0], label, intended)
            if i == 0 or len(report.examples) < MAX_EXAMPLES:  # one example per typo, however many came before
                report.examples.append(problem)
            if rejects_fh:
                rejects_fh.write(
                    json.dumps(
                        {"row": row, spec.label_cols[0]: label, "problems": [problem.to_dict()]}, ensure_ascii=False
                    )
                    + "\n"
                )


def _typo_problem(file: str, row: int, column: str, label: str, intended: str) -> RowProblem:
    return RowProblem(
        file,
        row,
        column,
        label,
        "unknown_label",
        f"'{label}' is rare and looks like a typo of '{intended}': fix it, or declare the allowed "
        "classes with --classes",
    )


def _account(report: ValidationReport, chunk: pd.DataFrame, result, rejects_fh) -> None:
    report.n_rows += len(chunk)
    report.n_accepted += len(result.accepted)
    rows_seen = set()
    for problem in result.problems:
        if problem.row not in rows_seen:  # a row counts once, under its first problem
            report.rejected[problem.problem] += 1
            rows_seen.add(problem.row)
        if len(report.examples) < MAX_EXAMPLES:
            report.examples.append(problem)
    if rejects_fh:
        for rec in result.rejected_rows:
            rejects_fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _reject_label_typos(
    frame: pd.DataFrame, spec: ColumnSpec, file: str, report: ValidationReport, rejects_path
) -> pd.DataFrame:
    """Drop the rows of rare labels that look like typos of frequent ones, counting each as rejected."""
    if frame.empty or spec.classes is not None or spec.multilabel:
        return frame
    counts = Counter(lbl for labels in frame["labels"] for lbl in labels)
    typos = suspicious_labels(dict(counts), max_count=RARE_LABEL_MAX)
    if not typos:
        return frame
    bad = frame["labels"].map(lambda t: bool(t) and t[0] in typos)
    problems = [
        _typo_problem(file, int(r), spec.label_cols[0], t[0], typos[t[0]])
        for r, t in zip(frame.loc[bad, "row"], frame.loc[bad, "labels"])
    ]
    for problem in problems:
        report.rejected[problem.problem] += 1
        report.n_accepted -= 1
        if len(report.examples) < MAX_EXAMPLES:
            report.examples.append(problem)
    if rejects_path:
        with open(rejects_path, "a", encoding="utf-8") as fh:
            for problem in problems:
                fh.write(
                    json.dumps(
                        {"row": problem.row, spec.label_cols[0]: problem.value, "problems": [problem.to_dict()]},
                        ensure_ascii=False,
                    )
                    + "\n"
                )
    return frame[~bad].reset_index(drop=True)


def _classes(frame: pd.DataFrame, spec: ColumnSpec) -> list[str]:
    if spec.classes is not None:
        return list(spec.classes)
    if spec.indicator_labels:
        return list(spec.label_cols)
    return sorted({lbl for labels in frame["labels"] for lbl in labels})
