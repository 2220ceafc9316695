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
(and the rejects to `REJECTS.partial`), both renamed to their final names when the whole file has been read, so
a file under a final name is always complete.

Resuming. After each chunk, once its decisions and rejects are flushed and fsynced, a progress record
`OUT.partial.progress.json` is replaced atomically: rows done, the byte sizes of both partial files, the summary
counters so far and the job's identity (run and manifest hash, data path, size, mtime and head hash, columns,
redaction, include_text, output format, rejects path). `score_file(..., resume=True)` (`finesieve score
--resume`) checks that identity, truncates both partial files to the recorded sizes (dropping a chunk half
written when the process was killed), restores the counters, skips the rows already done and carries on; the
result is byte for byte what an uninterrupted pass writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pandas as pd
from tqdm.auto import tqdm

import finesieve
from finesieve.data.errors import ConfigError
from finesieve.data.load import detect_format, iter_chunks
from finesieve.data.preprocess import Preprocessing, prepare
from finesieve.data.redact import Redactor
from finesieve.data.spec import ColumnSpec
from finesieve.data.validate import ChunkResult, RowValidator
from finesieve.models.base import positive_scores
from finesieve.models.cascade import ACTIONS, STAGES, Cascade, CascadeThresholds, Decisions
from finesieve.outputs import atomic_file, check_output_file, check_outputs, partial_path
from finesieve.runs import MANIFEST, Run, load_run

OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
COLUMNS = ["id", "row", "action", "category", "decided_by", "score", *(f"score_{s}" for s in STAGES), "rules_fired"]
CHUNK_ROWS = 5000
PROGRESS_SUFFIX = ".progress.json"  # beside OUT.partial: OUT.partial.progress.json
PROGRESS_FORMAT = 1
HEAD_BYTES = 1 << 20  # the data file's first MiB is hashed into the job's identity


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
        return (
            f"scored {self.n_scored:,} of {self.n_rows:,} rows{rejected}: {actions}; "
            f"{self.rows_per_second:,.0f} rows/s; written to {self.out}"
        )


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
    preprocessing: Preprocessing | None = None,
    resume: bool = False,
) -> BatchSummary:
    """Score every row of `data` with the run at `run` and write one output row per accepted message to `out`.

    `spec` maps the text column (and optionally the id column); its label columns are ignored. Texts are cleaned
    and redacted as the run's training texts were (its manifest's `preprocessing`), unless `preprocessing` says
    otherwise. Memory holds one chunk of
    `chunk_rows` rows at a time, whatever the file's size. `resume` continues the interrupted job whose
    `OUT.partial` and progress record are beside `out` (see the module docstring); it refuses when there is none,
    or when the run, the data file, the columns or the output options differ from that job's.
    """
    data, out = Path(data), Path(out)
    rejects = Path(rejects_path) if rejects_path is not None else None
    out_format = output_format(out)
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows is {chunk_rows}: read at least 1 row per chunk (e.g. --chunk-rows 5000)")
    check_output_file(out)
    if rejects is not None:
        check_output_file(rejects, "--rejects")
    check_outputs({"--out": out, "--rejects": rejects}, {"--data": data, "RUN": run})
    loaded = load_run(run)
    preprocessing = preprocessing or loaded.preprocessing
    cascade = as_cascade(loaded)
    scoring_spec = _scoring_spec(spec)
    chunks = _first_read(iter_chunks(data, scoring_spec, chunk_rows, labelled=False))
    identity = job_identity(
        run,
        data,
        spec=scoring_spec,
        include_text=include_text,
        out_format=out_format,
        rejects_path=rejects,
        preprocessing=preprocessing,
    )
    partial, rejects_partial, record = partial_path(out), partial_path(rejects) if rejects else None, progress_path(out)
    summary = BatchSummary(run=str(run), data=str(data), out=str(out), rejects_path=str(rejects) if rejects else None)
    saved = _resume_point(record, identity, partial, rejects_partial, out) if resume else None
    if saved is not None:
        _restore_counters(summary, saved["counters"])
    # Ids are checked row by row but not remembered, which would grow with the file; `finesieve data validate
    # --id-col` checks uniqueness.
    validator = RowValidator(scoring_spec, str(data), labelled=False, unique_ids=False)
    redactor = Redactor(preprocessing.redaction)
    out.parent.mkdir(parents=True, exist_ok=True)
    if rejects is not None:
        rejects.parent.mkdir(parents=True, exist_ok=True)
    start, seconds_before = time.perf_counter(), summary.seconds
    with contextlib.ExitStack() as stack:
        if saved is not None:  # drop whatever was written after the last complete chunk, then append
            os.truncate(partial, saved["out_partial_bytes"])
            if rejects_partial is not None:
                os.truncate(rejects_partial, saved["rejects_partial_bytes"])
        mode = "a" if saved is not None else "w"
        out_fh = stack.enter_context(open(partial, mode, encoding="utf-8", newline=""))
        writer = _Writer(out_fh, out_format, COLUMNS + (["text"] if include_text else []), header=saved is None)
        rejects_fh = stack.enter_context(open(rejects_partial, mode, encoding="utf-8")) if rejects_partial else None
        checkpoint = _Checkpoint(record, identity, out_fh, rejects_fh)
        if saved is None:
            checkpoint.save(summary)  # the header alone: a job stopped in its first chunk can resume too
        bar = stack.enter_context(
            tqdm(
                total=_estimate_rows(data, scoring_spec) if progress else None,
                initial=summary.n_rows,
                disable=not progress,
                unit="rows",
                dynamic_ncols=True,
                desc=f"scoring {data.name}",
            )
        )
        for chunk in _skip_rows(chunks, summary.n_rows):
            _score_chunk(
                chunk,
                cascade=cascade,
                validator=validator,
                preprocessing=preprocessing,
                redactor=redactor,
                writer=writer,
                rejects_fh=rejects_fh,
                summary=summary,
            )
            summary.seconds = seconds_before + time.perf_counter() - start
            checkpoint.save(summary)
            bar.update(len(chunk))
            bar.set_postfix({a: summary.actions[a] for a in ("review", "block")}, refresh=False)
        bar.total = bar.n  # the estimate counted lines; a quoted newline inside a CSV field is not a row
        bar.refresh()
    # Rejects first, the output last: a file under OUT's final name means the whole job is complete.
    if rejects_partial is not None:
        os.replace(rejects_partial, rejects)
    os.replace(partial, out)
    record.unlink(missing_ok=True)
    summary.seconds = seconds_before + time.perf_counter() - start
    return summary


def _score_chunk(
    chunk: pd.DataFrame,
    *,
    cascade: Cascade,
    validator: RowValidator,
    preprocessing: Preprocessing,
    redactor: Redactor,
    writer: _Writer,
    rejects_fh: TextIO | None,
    summary: BatchSummary,
) -> None:
    """Validate, preprocess, decide, write and count one chunk. A function of its own, so that nothing derived
    from this chunk is still referenced while the next one is read: memory holds one chunk, not two."""
    result = validator.validate(chunk)
    summary.n_rows += len(chunk)
    _account_rejects(summary, result, rejects_fh)
    if result.accepted.empty:
        return
    texts, _ = prepare(result.accepted["text_raw"], preprocessing, redactor=redactor)
    decisions = cascade.decide(texts)
    frame = decisions_frame(cascade, decisions, result.accepted)
    frame["text"] = texts  # written only when the writer's columns ask for it
    writer.write(frame)
    _account_decisions(summary, decisions)


def progress_path(out: str | Path) -> Path:
    """Where the progress record of the job writing `out` lives: `OUT.partial.progress.json`."""
    partial = partial_path(out)
    return partial.with_name(partial.name + PROGRESS_SUFFIX)


def job_identity(
    run: str | Path,
    data: str | Path,
    *,
    spec: ColumnSpec,
    include_text: bool,
    out_format: str,
    rejects_path: str | Path | None,
    preprocessing: Preprocessing,
) -> dict:
    """What makes two scoring passes the same job: a resumed pass must match the interrupted one on every key.

    The data file is recognised by its size, modification time and the sha256 of its first MiB (hashing the
    whole file would cost a read of it); the run by the sha256 of its manifest.json.
    """
    run, data = Path(run), Path(data)
    stat = data.stat()
    with open(data, "rb") as fh:
        head = hashlib.sha256(fh.read(HEAD_BYTES)).hexdigest()
    return {
        "run": str(run.resolve()),
        "run_manifest_sha256": hashlib.sha256((run / MANIFEST).read_bytes()).hexdigest(),
        "data": str(data.resolve()),
        "data_size": stat.st_size,
        "data_mtime_ns": stat.st_mtime_ns,
        "data_head_sha256": head,
        "column_spec": spec.model_dump(mode="json"),
        "preprocessing": preprocessing.model_dump(mode="json"),
        "include_text": include_text,
        "output_format": out_format,
        "rejects_path": str(Path(rejects_path).resolve()) if rejects_path is not None else None,
    }


# How a changed identity key is named in the refusal.
_IDENTITY_NAMES = {
    "run": "the run directory",
    "run_manifest_sha256": "the run's manifest.json (the run was retrained or edited)",
    "data": "the data file path",
    "data_size": "the data file's size in bytes",
    "data_mtime_ns": "the data file's modification time (ns)",
    "data_head_sha256": "the data file's first MiB (sha256)",
    "column_spec": "the columns read (--text-col, --id-col, --format, --encoding)",
    "preprocessing": "the cleaning and redaction settings",
    "include_text": "--include-text",
    "output_format": "the output format",
    "rejects_path": "--rejects",
}


class _Checkpoint:
    """Writes the progress record after the chunk's rows are on disk: a record never counts bytes that a crash
    could lose, so truncating to its sizes always leaves whole chunks."""

    def __init__(self, path: Path, identity: dict, out_fh: TextIO, rejects_fh: TextIO | None):
        self.path, self.identity, self.out_fh, self.rejects_fh = path, identity, out_fh, rejects_fh

    def save(self, summary: BatchSummary) -> None:
        sizes = {}
        for key, fh in (("out_partial_bytes", self.out_fh), ("rejects_partial_bytes", self.rejects_fh)):
            if fh is None:
                sizes[key] = None
                continue
            fh.flush()
            os.fsync(fh.fileno())
            sizes[key] = os.fstat(fh.fileno()).st_size
        record = {
            "format": PROGRESS_FORMAT,
            "finesieve_version": finesieve.__version__,
            "identity": self.identity,
            "rows_done": summary.n_rows,
            **sizes,
            "counters": _counters(summary),
        }
        with atomic_file(self.path) as fh:
            fh.write(json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _counters(summary: BatchSummary) -> dict:
    """The summary's running totals, unrounded (to_dict rounds seconds), so a resumed pass adds on exactly."""
    return {
        "n_rows": summary.n_rows,
        "n_scored": summary.n_scored,
        "rejected": dict(summary.rejected),
        "actions": dict(summary.actions),
        "decided_by": dict(summary.decided_by),
        "stage_seconds": dict(summary.stage_seconds),
        "seconds": summary.seconds,
    }


def _restore_counters(summary: BatchSummary, counters: dict) -> None:
    summary.n_rows, summary.n_scored = int(counters["n_rows"]), int(counters["n_scored"])
    summary.rejected = Counter(counters["rejected"])
    summary.actions = Counter(counters["actions"])
    summary.decided_by = Counter(counters["decided_by"])
    summary.stage_seconds = Counter(counters["stage_seconds"])
    summary.seconds = float(counters["seconds"])


def _resume_point(record_path: Path, identity: dict, partial: Path, rejects_partial: Path | None, out: Path) -> dict:
    """The progress record of the interrupted job to continue, after checking that it is this job's and that its
    partial files hold at least what it counts; a ConfigError naming the problem and the fix otherwise."""
    start_over = "Fix: start over without --resume (the partial output is then replaced)"
    if not partial.exists():
        finished = f"; {out} exists, so the job it was writing finished" if out.exists() else ""
        raise ConfigError(
            f"--resume: there is no partial output {partial} to continue{finished}. Fix: drop "
            "--resume to score the file from the beginning"
        )
    if not record_path.exists():
        raise ConfigError(
            f"--resume: {partial} has no progress record {record_path.name} beside it, so how much "
            f"of it is complete is unknown (written by an older finesieve?). {start_over}"
        )
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        saved, counters, out_bytes = record["identity"], record["counters"], int(record["out_partial_bytes"])
        if int(record["rows_done"]) != int(counters["n_rows"]):
            raise ValueError(f"rows_done {record['rows_done']} differs from the counted rows {counters['n_rows']}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"--resume: the progress record {record_path} cannot be read ({type(err).__name__}: {err}). {start_over}"
        ) from None
    changed = [key for key in dict.fromkeys([*saved, *identity]) if saved.get(key) != identity.get(key)]
    if changed:
        what = "; ".join(
            f"{_IDENTITY_NAMES.get(key, key)} was {_shown(saved.get(key))}, now {_shown(identity.get(key))}"
            for key in changed
        )
        raise ConfigError(
            f"--resume: {partial} was written by another job: {what}. {start_over}, or resume with "
            "the interrupted job's run, data file and options"
        )
    if partial.stat().st_size < out_bytes:
        raise ConfigError(
            f"--resume: {partial} holds {partial.stat().st_size:,} bytes but its progress record "
            f"counts {out_bytes:,} (the file was cut or edited). {start_over}"
        )
    if rejects_partial is not None:
        rejects_bytes = record.get("rejects_partial_bytes")
        have = rejects_partial.stat().st_size if rejects_partial.exists() else None
        if rejects_bytes is None or have is None or have < rejects_bytes:
            raise ConfigError(
                f"--resume: the partial rejects file {rejects_partial} is missing or shorter than "
                f"its progress record counts ({have} of {rejects_bytes} bytes). {start_over}"
            )
    return {
        "out_partial_bytes": out_bytes,
        "rejects_partial_bytes": record.get("rejects_partial_bytes"),
        "counters": counters,
    }


def _shown(value, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _skip_rows(chunks: Iterator[pd.DataFrame], n: int) -> Iterator[pd.DataFrame]:
    """The chunks after the first `n` rows: whole chunks are read but not validated or scored, and a chunk that
    straddles row `n` (a resumed job read with another chunk_rows) is cut."""
    done = 0
    for chunk in chunks:
        if done >= n:
            yield chunk
        elif done + len(chunk) <= n:
            done += len(chunk)
        else:
            yield chunk.iloc[n - done :]
            done = n


def output_format(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(
            f"{out}: cannot tell the output format from the extension {suffix or '(none)'!r}: "
            f"name the output file with one of {sorted(OUTPUT_FORMATS)}, e.g. decisions.csv"
        )
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
        id=accepted["id"].to_numpy(),
        row=accepted["row"].to_numpy(),
        score=positive_scores(decisions.proba, cascade.classes_, cascade.positive, cascade.multilabel_),
    )
    return frame.reindex(columns=COLUMNS)


class _Writer:
    """Appends output rows chunk by chunk: CSV under a header written once (even if no row is accepted), or
    one JSON object per line."""

    def __init__(self, fh: TextIO, out_format: str, columns: list[str], header: bool = True):
        self.fh, self.out_format, self.columns = fh, out_format, columns
        if out_format == "csv" and header:  # a resumed job appends to a file that has its header
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
    return ColumnSpec(text_col=spec.text_col, id_col=spec.id_col, file_format=spec.file_format, encoding=spec.encoding)


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
