"""Read labelled files (CSV, TSV, JSONL, Parquet) in chunks, validate every row, clean and redact the text.

    from finesieve.data.load import load_dataset
    ds = load_dataset("messages.csv", ColumnSpec(text_col="text", label_cols=("label",)))

Files are streamed chunk by chunk, so `validate_file` checks a file of any size in constant memory (but
for the set of ids), and `load_dataset` holds only the mapped columns of accepted rows. Every problem names
the file, the row and the column; rejected rows are counted and can be written to a rejects file.
"""

from __future__ import annotations

import difflib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pandas as pd

from finesieve.data.dataset import Dataset, RejectionSummary
from finesieve.data.errors import DataError, RowProblem
from finesieve.data.normalize import clean
from finesieve.data.redact import RedactionConfig, Redactor
from finesieve.data.spec import ColumnSpec
from finesieve.data.validate import FIXES, RowValidator, suspicious_labels

EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
CHUNK_ROWS = 20_000
MAX_EXAMPLES = 20


def detect_format(path: Path, spec: ColumnSpec) -> str:
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


def _needed_columns(spec: ColumnSpec) -> list[str]:
    cols = [spec.text_col, *spec.label_cols, spec.id_col, spec.time_col, spec.user_col, spec.thread_col, *spec.meta_cols,
            *(spec.vote_cols or {}).values()]
    return [c for c in cols if c is not None]


def _label_columns(spec: ColumnSpec) -> set[str]:
    """Columns only a labelled file has (labels and vote counts): a file to score may lack them."""
    return set(spec.label_cols) | set((spec.vote_cols or {}).values())


def _check_columns(path: Path, available: list[str], spec: ColumnSpec, labelled: bool = True) -> None:
    needed = _needed_columns(spec) if labelled else [c for c in _needed_columns(spec) if c not in _label_columns(spec)]
    missing = [c for c in needed if c not in available]
    if not missing:
        return
    hints = []
    for col in missing:
        close = difflib.get_close_matches(col, available, n=1, cutoff=0.5)
        hints.append(f"'{col}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    raise DataError(
        f"{path}: column(s) {', '.join(hints)} not found. The file has columns {available}. "
        "Map yours with --text-col / --label-col / --id-col."
    )


def iter_chunks(path: str | Path, spec: ColumnSpec, chunk_rows: int = CHUNK_ROWS, labelled: bool = True) -> Iterator[pd.DataFrame]:
    """Yield the mapped raw columns in chunks, plus `_row` (1-based data row); JSONL syntax errors as `_malformed`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file: check the path")
    fmt = detect_format(path, spec)
    if fmt in ("csv", "tsv"):
        yield from _iter_delimited(path, spec, fmt, chunk_rows, labelled)
    elif fmt == "jsonl":
        yield from _iter_jsonl(path, spec, chunk_rows, labelled)
    else:
        yield from _iter_parquet(path, spec, chunk_rows, labelled)


def _iter_delimited(path: Path, spec: ColumnSpec, fmt: str, chunk_rows: int, labelled: bool) -> Iterator[pd.DataFrame]:
    sep = "\t" if fmt == "tsv" else ","
    # dtype=object: pandas 3 strings are Arrow-backed and cannot hold the surrogates that mark undecodable bytes.
    kwargs = dict(sep=sep, dtype=object, keep_default_na=False, encoding=spec.encoding, encoding_errors="surrogateescape")
    try:
        header = pd.read_csv(path, nrows=0, **kwargs).columns.tolist()
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty: it needs a header row naming the columns") from None
    except LookupError:
        raise DataError(f"{path}: unknown encoding {spec.encoding!r}: pass a Python codec name such as utf-8 or latin-1") from None
    _check_columns(path, header, spec, labelled)
    wanted = [c for c in _needed_columns(spec) if c in header]
    start = 1
    try:
        reader = pd.read_csv(path, usecols=wanted, chunksize=chunk_rows, **kwargs)
        for chunk in reader:
            chunk["_row"] = range(start, start + len(chunk))
            start += len(chunk)
            yield chunk
    except pd.errors.ParserError as err:
        raise DataError(
            f"{path}: the {fmt.upper()} cannot be parsed after data row {start - 1} ({err}). "
            "Fix: quote fields that contain the separator or newlines, or check the --format."
        ) from None


def _iter_jsonl(path: Path, spec: ColumnSpec, chunk_rows: int, labelled: bool) -> Iterator[pd.DataFrame]:
    wanted = _needed_columns(spec) if labelled else [c for c in _needed_columns(spec) if c not in _label_columns(spec)]
    rows: list[dict] = []
    checked = False
    with open(path, "rb") as fh:
        row = 0
        for raw_line in fh:
            if not raw_line.strip():
                continue
            row += 1
            record: dict = {"_row": row}
            try:
                obj = json.loads(raw_line.decode(spec.encoding, errors="surrogateescape"))
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
            except (ValueError, UnicodeDecodeError) as err:
                record["_malformed"] = f"{raw_line[:60]!r} ({err})"
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


def _iter_parquet(path: Path, spec: ColumnSpec, chunk_rows: int, labelled: bool) -> Iterator[pd.DataFrame]:
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
    """What a streamed pass over a file found: rows accepted, rejected per problem, label counts."""

    file: str
    n_rows: int = 0
    n_accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    examples: list[RowProblem] = field(default_factory=list)
    label_counts: Counter = field(default_factory=Counter)
    rejects_path: str | None = None

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "n_rows": self.n_rows,
            "n_accepted": self.n_accepted,
            "n_rejected": sum(self.rejected.values()),
            "rejected": dict(self.rejected),
            "examples": [p.to_dict() for p in self.examples],
            "label_counts": dict(self.label_counts),
            "rejects_path": self.rejects_path,
        }

    def summary_lines(self) -> list[str]:
        lines = [f"{self.file}: {self.n_rows:,} rows read, {self.n_accepted:,} accepted, {sum(self.rejected.values()):,} rejected"]
        for kind, n in self.rejected.most_common():
            lines.append(f"  {kind}: {n:,} row(s). Fix: {FIXES.get(kind, '')}")
        for problem in self.examples[:5]:
            lines.append(f"  e.g. {problem}")
        if self.rejects_path:
            lines.append(f"  every rejected row, with its problems, is in {self.rejects_path}")
        return lines


def _memory_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def prepare_texts(raw_texts, redactor: Redactor, field: str = "text") -> tuple[list[str], Counter]:
    """Clean then redact each text: the one preprocessing shared by training (`load_dataset`) and scoring
    (`finesieve score`), so a model sees the same kind of text in both. Returns the texts and the
    placeholder counts."""
    texts, counts = [], Counter()
    for raw in raw_texts:
        out = redactor.redact(clean(raw), field=field)
        texts.append(out.text)
        counts.update(out.counts)
    return texts, counts


def load_dataset(
    path: str | Path,
    spec: ColumnSpec,
    *,
    redaction: RedactionConfig | None = None,
    rejects_path: str | Path | None = None,
    strict: bool = False,
    max_rows: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Dataset:
    """Load, validate, clean and redact a labelled file into a `Dataset`.

    Rejected rows are counted in `dataset.rejected` (and written to `rejects_path` when given); `strict`
    raises a DataError listing the problems instead. `max_rows` reads only the first rows of a large file.
    """
    path = Path(path)
    if max_rows is None and path.exists():
        avail = _memory_available()
        # In-memory frames of short texts take several times the file's size; past that, stream instead.
        if avail is not None and path.stat().st_size * 4 > avail:
            raise DataError(
                f"{path}: {path.stat().st_size / 2**30:.1f} GiB is too large to load into the "
                f"{avail / 2**30:.1f} GiB of free memory. Check it in a stream with `finesieve data validate`, "
                "score it with `finesieve score` (streams), or load a part with --max-rows."
            )
    redactor = Redactor(redaction or RedactionConfig())
    validator = RowValidator(spec, str(path))
    parts: list[pd.DataFrame] = []
    report = ValidationReport(file=str(path), rejects_path=str(rejects_path) if rejects_path else None)
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
                redacted, counts = prepare_texts(accepted["text_raw"], redactor, spec.text_col)
                redaction_counts.update(counts)
                accepted = accepted.assign(text=redacted)
                parts.append(accepted)
    finally:
        if rejects_fh:
            rejects_fh.close()

    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["id", "row", "text_raw", "labels", "text"])
    frame, typo_problems = _reject_label_typos(frame, spec, str(path))
    for problem in typo_problems:
        report.rejected[problem.problem] += 1
        report.n_accepted -= 1
        if len(report.examples) < MAX_EXAMPLES:
            report.examples.append(problem)
    if rejects_path and typo_problems:
        with open(rejects_path, "a", encoding="utf-8") as fh:
            for problem in typo_problems:
                fh.write(json.dumps({"row": problem.row, "problems": [problem.to_dict()]}) + "\n")

    if strict and report.rejected:
        raise DataError("\n".join(["strict mode: the file has rejected rows"] + report.summary_lines()))
    if frame.empty:
        raise DataError("\n".join([f"{path}: no valid rows"] + report.summary_lines()))

    classes = _classes(frame, spec)
    if spec.vote_cols and (extra := sorted(set(spec.vote_cols) - set(classes))):
        raise DataError(f"{path}: --vote-col names class(es) {extra} that no row is labelled with; the classes are "
                        f"{classes}. Fix: map each class's vote column as CLASS=COLUMN")
    if len(classes) < 2 and not spec.multilabel:
        raise DataError(
            f"{path}: the label column '{spec.label_cols[0]}' holds one class only ({classes}): "
            "a classifier needs at least two; check --label-col"
        )
    rejected = RejectionSummary(
        counts=dict(report.rejected),
        examples=[p.to_dict() for p in report.examples],
        rejects_path=report.rejects_path,
    )
    return Dataset(
        frame=frame[[c for c in ["id", "row", "text_raw", "text", "labels", "time", "user", "thread", *spec.meta_cols,
                                 "votes"] if c in frame]],
        classes=classes,
        spec=spec,
        source=str(path),
        rejected=rejected,
        redaction_counts=dict(redaction_counts),
    )


def validate_file(path: str | Path, spec: ColumnSpec, *, rejects_path: str | Path | None = None,
                  chunk_rows: int = CHUNK_ROWS) -> ValidationReport:
    """Check every row of a file in a stream (constant memory but for the id set); nothing is kept."""
    validator = RowValidator(spec, str(path))
    report = ValidationReport(file=str(path), rejects_path=str(rejects_path) if rejects_path else None)
    rejects_fh = open(rejects_path, "w", encoding="utf-8") if rejects_path else None
    try:
        for chunk in iter_chunks(path, spec, chunk_rows):
            result = validator.validate(chunk)
            _account(report, chunk, result, rejects_fh)
            for labels in result.accepted["labels"]:
                report.label_counts.update(labels)
    finally:
        if rejects_fh:
            rejects_fh.close()
    if spec.classes is None and not spec.multilabel:
        for label, intended in suspicious_labels(dict(report.label_counts)).items():
            n = report.label_counts.pop(label)
            report.rejected["unknown_label"] += n
            report.n_accepted -= n
            report.examples.append(RowProblem(str(path), 0, spec.label_cols[0], label, "unknown_label",
                                              f"{n} row(s) carry '{label}', likely a typo of '{intended}': fix them or "
                                              "declare the allowed classes with --classes"))
    return report


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


def _reject_label_typos(frame: pd.DataFrame, spec: ColumnSpec, file: str) -> tuple[pd.DataFrame, list[RowProblem]]:
    if frame.empty or spec.classes is not None or spec.multilabel:
        return frame, []
    counts = Counter(lbl for labels in frame["labels"] for lbl in labels)
    typos = suspicious_labels(dict(counts))
    if not typos:
        return frame, []
    bad = frame["labels"].map(lambda t: bool(t) and t[0] in typos)
    problems = [
        RowProblem(file, int(r), spec.label_cols[0], t[0], "unknown_label",
                   f"'{t[0]}' is rare and looks like a typo of '{typos[t[0]]}': fix it, or declare the allowed "
                   "classes with --classes")
        for r, t in zip(frame.loc[bad, "row"], frame.loc[bad, "labels"])
    ]
    return frame[~bad].reset_index(drop=True), problems


def _classes(frame: pd.DataFrame, spec: ColumnSpec) -> list[str]:
    if spec.classes is not None:
        return list(spec.classes)
    if spec.indicator_labels:
        return list(spec.label_cols)
    return sorted({lbl for labels in frame["labels"] for lbl in labels})
