"""Batch scoring: run a trained run over a file of messages of any size, writing an action and scores per message.

    finesieve score runs/cascade --data messages.csv --out decisions.csv --id-col message_id --rejects rejects.jsonl

    from finesieve.serve.batch import score_file
    summary = score_file("runs/cascade", "messages.csv", "decisions.csv", spec=ColumnSpec(text_col="text", id_col="id"))

The file is streamed chunk by chunk (`iter_chunks`; label columns, if the file has any, are not read) and only
the current chunk is held, so memory does not grow with the file. Each chunk is validated as a training file is
(`RowValidator`: missing, empty, non-text or undecodable text, a missing id, a malformed JSONL line; ids are not
checked for uniqueness, which would hold every id in memory). Rejected rows are counted per problem and written
to the rejects file, never scored. The other texts are cleaned and redacted exactly as `load_dataset` does for
training, then decided by the cascade. A single-scorer run is scored as a one-stage cascade whose review
threshold is the run's validation threshold, so every run writes the same columns:

    id                 the id column, or the row number when none is mapped
    row                1-based data row in the input file (the header is not counted)
    action             deliver | review | block
    category           the positive category behind a review or block; empty for deliveries
    decided_by         rules | prefilter | model
    score              positive score of the stage that decided (from the cascade's probabilities)
    score_rules, score_prefilter, score_model
                       each stage's positive score; empty (NaN/null) where that stage did not run for the message
    rules_fired        names of the rules that fired, '|'-separated
    text               only with include_text: the redacted text that was scored (the raw text is never written)

The output is CSV or JSONL, chosen by the extension of `out`. It is written chunk by chunk to `OUT.partial`
and renamed to `out` when the whole file has been read, so a file under the final name is always complete.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TextIO

import pandas as pd
from tqdm.auto import tqdm

from finesieve.cascade.cascade import ACTIONS, STAGES, Cascade, CascadeThresholds, Decisions
from finesieve.data.errors import ConfigError
from finesieve.data.load import detect_format, iter_chunks, prepare_texts
from finesieve.data.redact import RedactionConfig, Redactor
from finesieve.data.spec import ColumnSpec
from finesieve.data.validate import ChunkResult, RowValidator
from finesieve.models.base import positive_scores
from finesieve.runs import Run, load_run

OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
COLUMNS = ["id", "row", "action", "category", "decided_by", "score", *(f"score_{s}" for s in STAGES), "rules_fired"]
CHUNK_ROWS = 5000


@dataclass
class BatchSummary:
    """What one scoring pass did, in counts only (nothing per message is kept)."""

    run: str
    data: str
    out: str
    rejects_path: str | None = None
    n_rows: int = 0  # data rows read
    n_scored: int = 0
    rejected: Counter = field(default_factory=Counter)  # problem -> rows; a row counts under its first problem
    actions: Counter = field(default_factory=lambda: Counter(dict.fromkeys(ACTIONS, 0)))
    decided_by: Counter = field(default_factory=Counter)
    stage_seconds: Counter = field(default_factory=Counter)  # stage -> wall seconds spent deciding
    seconds: float = 0.0  # wall time of the whole pass: reading, validating, preprocessing, scoring, writing

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def rows_per_second(self) -> float:
        return self.n_rows / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "run": self.run,
            "data": self.data,
            "out": self.out,
            "rejects_path": self.rejects_path,
            "n_rows": self.n_rows,
            "n_scored": self.n_scored,
            "n_rejected": self.n_rejected,
            "rejected": dict(self.rejected),
            "actions": dict(self.actions),
            "decided_by": dict(self.decided_by),
            "stage_seconds": {k: round(float(v), 3) for k, v in self.stage_seconds.items()},
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
        }

    def summary_line(self) -> str:
        rejected = ""
        if self.n_rejected:
            kinds = ", ".join(f"{kind} {n:,}" for kind, n in self.rejected.most_common())
            where = f"; rows in {self.rejects_path}" if self.rejects_path else "; list them with --rejects FILE"
            rejected = f" ({self.n_rejected:,} rejected: {kinds}{where})"
        actions = ", ".join(f"{self.actions[a]:,} {a}" for a in ACTIONS)
        return (f"scored {self.n_scored:,} of {self.n_rows:,} rows{rejected}: {actions}; "
                f"{self.rows_per_second:,.0f} rows/s; written to {self.out}")


def score_file(
    run: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    spec: ColumnSpec,
    chunk_rows: int = CHUNK_ROWS,
    rejects_path: str | Path | None = None,
    include_text: bool = False,
    progress: bool = True,
    redaction: RedactionConfig | None = None,
) -> BatchSummary:
    """Score every row of `data` with the run at `run` and write one output row per accepted message to `out`.

    `spec` maps the text column (and optionally the id column); its label columns are ignored. `redaction`
    must be what the run was trained with (`load_dataset`'s default when None). Memory holds one chunk of
    `chunk_rows` rows at a time, whatever the file's size.
    """
    data, out = Path(data), Path(out)
    out_format = output_format(out)
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows is {chunk_rows}: read at least 1 row per chunk (e.g. --chunk-rows 5000)")
    _check_distinct(data, out, rejects_path)
    cascade = as_cascade(load_run(run))
    scoring_spec = _scoring_spec(spec)
    chunks = _first_read(iter_chunks(data, scoring_spec, chunk_rows, labelled=False))
    # Ids are checked row by row but not remembered, which would grow with the file; `finesieve data validate
    # --id-col` checks uniqueness.
    validator = RowValidator(scoring_spec, str(data), labelled=False, unique_ids=False)
    redactor = Redactor(redaction or RedactionConfig())
    summary = BatchSummary(run=str(run), data=str(data), out=str(out),
                           rejects_path=str(rejects_path) if rejects_path else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writer = _Writer(stack.enter_context(open(partial, "w", encoding="utf-8", newline="")), out_format,
                         COLUMNS + (["text"] if include_text else []))
        rejects_fh = stack.enter_context(open(rejects_path, "w", encoding="utf-8")) if rejects_path else None
        bar = stack.enter_context(tqdm(total=_estimate_rows(data, scoring_spec) if progress else None,
                                       disable=not progress, unit="rows", dynamic_ncols=True,
                                       desc=f"scoring {data.name}"))
        for chunk in chunks:
            _score_chunk(chunk, cascade=cascade, validator=validator, redactor=redactor, text_col=spec.text_col,
                         writer=writer, rejects_fh=rejects_fh, summary=summary)
            bar.update(len(chunk))
            bar.set_postfix({a: summary.actions[a] for a in ("review", "block")}, refresh=False)
        bar.total = bar.n  # the estimate counted lines; a quoted newline inside a CSV field is not a row
        bar.refresh()
    os.replace(partial, out)
    summary.seconds = time.perf_counter() - start
    return summary


def _score_chunk(chunk: pd.DataFrame, *, cascade: Cascade, validator: RowValidator, redactor: Redactor, text_col: str,
                 writer: "_Writer", rejects_fh: TextIO | None, summary: BatchSummary) -> None:
    """Validate, preprocess, decide, write and count one chunk. A function of its own, so that nothing derived
    from this chunk is still referenced while the next one is read: memory holds one chunk, not two."""
    result = validator.validate(chunk)
    summary.n_rows += len(chunk)
    _account_rejects(summary, result, rejects_fh)
    if result.accepted.empty:
        return
    texts, _ = prepare_texts(result.accepted["text_raw"], redactor, text_col)
    decisions = cascade.decide(texts)
    frame = decisions_frame(cascade, decisions, result.accepted)
    frame["text"] = texts  # written only when the writer's columns ask for it
    writer.write(frame)
    _account_decisions(summary, decisions)


def output_format(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(f"{out}: cannot tell the output format from the extension {suffix or '(none)'!r}: "
                          f"name the output file with one of {sorted(OUTPUT_FORMATS)}, e.g. decisions.csv")
    return OUTPUT_FORMATS[suffix]


def as_cascade(run: Run) -> Cascade:
    """The run's scorer as a cascade: a cascade run as it is, any other scorer as a one-stage cascade.

    The one-stage cascade sends a message to review at or above the run's validation threshold and blocks
    nothing, so a single model and a cascade write the same columns.
    """
    if isinstance(run.scorer, Cascade):
        return run.scorer
    if not run.positive or run.threshold is None:
        raise ConfigError(
            f"{run.path}: the run records no positive class or threshold (task.positive and task.threshold in "
            f"manifest.json; found {run.positive!r} and {run.threshold!r}), so its scores cannot be turned into "
            "actions. Fix: train it with `finesieve fit`, `prefilter train` or `train`, which record both"
        )
    return Cascade(run.scorer, positive=run.positive, thresholds=CascadeThresholds(review=run.threshold))


def decisions_frame(cascade: Cascade, decisions: Decisions, accepted: pd.DataFrame) -> pd.DataFrame:
    """One output row per decided message, in COLUMNS order; a stage the cascade lacks gets a NaN column."""
    frame = decisions.to_frame().assign(
        id=accepted["id"].to_numpy(), row=accepted["row"].to_numpy(),
        score=positive_scores(decisions.proba, cascade.classes_, cascade.positive, cascade.multilabel_))
    return frame.reindex(columns=COLUMNS)


class _Writer:
    """Appends output rows chunk by chunk: CSV under a header written once (even if no row is accepted), or
    one JSON object per line."""

    def __init__(self, fh: TextIO, out_format: str, columns: list[str]):
        self.fh, self.out_format, self.columns = fh, out_format, columns
        if out_format == "csv":
            pd.DataFrame(columns=columns).to_csv(fh, index=False)

    def write(self, frame: pd.DataFrame) -> None:
        frame = frame[self.columns]
        if self.out_format == "csv":
            frame.to_csv(self.fh, header=False, index=False, na_rep="")
            return
        # NaN scores become null. 15 digits: scores read back as they were computed.
        lines = frame.to_json(orient="records", lines=True, force_ascii=False, double_precision=15)
        self.fh.write(lines if lines.endswith("\n") else lines + "\n")


def _account_rejects(summary: BatchSummary, result: ChunkResult, rejects_fh: TextIO | None) -> None:
    rows_seen = set()
    for problem in result.problems:
        if problem.row not in rows_seen:  # a row counts once, under its first problem (as in data validate)
            summary.rejected[problem.problem] += 1
            rows_seen.add(problem.row)
    if rejects_fh is not None:
        for record in result.rejected_rows:
            rejects_fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def _account_decisions(summary: BatchSummary, decisions: Decisions) -> None:
    summary.n_scored += len(decisions.action)
    summary.actions.update(decisions.action.tolist())
    summary.decided_by.update(decisions.decided_by.tolist())
    summary.stage_seconds.update(decisions.seconds)


def _first_read(chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The same chunks, the first one read now: a wrong path, format or column fails before a file is written."""
    first = next(chunks, None)
    return itertools.chain([first] if first is not None else [], chunks)


def _scoring_spec(spec: ColumnSpec) -> ColumnSpec:
    # Scoring reads the text and the id only: time, user, thread and meta columns are neither needed nor checked.
    return ColumnSpec(text_col=spec.text_col, id_col=spec.id_col,
                      file_format=spec.file_format, encoding=spec.encoding)


def _check_distinct(data: Path, out: Path, rejects_path: str | Path | None) -> None:
    paths = {"--data": data, "--out": out, "--rejects": rejects_path}
    paths = {name: Path(p).resolve() for name, p in paths.items() if p is not None}
    for a, b in itertools.combinations(paths, 2):
        if paths[a] == paths[b]:
            raise ConfigError(f"{a} and {b} are the same file ({paths[a]}): writing one would destroy the other; "
                              "give each its own path")


def _estimate_rows(path: Path, spec: ColumnSpec) -> int | None:
    """Rows in the file, for the progress bar: Parquet metadata, else a count of line ends (in 1 MiB blocks,
    far faster than scoring; a CSV field holding a newline makes it an over-estimate)."""
    fmt = detect_format(path, spec)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # unreadable metadata: iter_chunks reports it; the bar just has no total
            return None
    lines = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            lines += block.count(b"\n")
    return max(0, lines - 1) if fmt in ("csv", "tsv") else lines
