"""Export the reviewers' decisions as a labelled CSV that `finesieve train --data` and `--replay-from` read.

    from finesieve.serve.review_export import export_reviews
    summary = export_reviews("sqlite:///./finesieve.db", "runs/cascade", "reviews.csv", model="spam", since=None)
    print(summary)       # rows written, per label; rows skipped and why

`finesieve data export-reviews` calls it. The file uses the run's own column names (its manifest's column mapping;
`text` and `label` when it has none) and class names, read from the run directory's manifest:

    violation, with a decided category      -> that category (it must be one of the run's positive classes)
    violation, no category                  -> the message's own category, else the run's only positive class
    not a violation                         -> the run's negative class (a single-label run has exactly one)

beside the metadata columns message_id, reason (flagged | audit | failure), reviewer, reviewed_at, model,
model_version, model_action and note. Only redacted texts were ever stored, so only redacted texts are written;
items whose text the retention period deleted are skipped and counted, as is any row whose label cannot be
decided (nothing is dropped silently). Rows stream out of the database in decision order, in constant memory.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from finesieve.data.errors import ConfigError
from finesieve.data.spec import ColumnSpec
from finesieve.data.task import ClassificationTask
from finesieve.outputs import atomic_file, check_output_file
from finesieve.runs import run_manifest
from finesieve.serve.db import Message, ReviewItem, connect

META_COLUMNS = ("message_id", "reason", "reviewer", "reviewed_at", "model", "model_version", "model_action", "note")
BATCH_ROWS = 1000  # rows fetched from the database at a time


@dataclass
class ExportSummary:
    out: Path
    written: int = 0
    labels: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)  # reason -> rows

    def __str__(self) -> str:
        labels = ", ".join(f"{label} {n}" for label, n in sorted(self.labels.items())) or "none"
        skipped = "; ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
        return f"{self.written} reviewed messages written to {self.out} ({labels}); skipped: {skipped}"


@dataclass(frozen=True)
class _Labels:
    """How a review becomes a label, from the run's task."""

    positive: tuple[str, ...]
    negative: str

    def label(self, item: ReviewItem, message: Message) -> tuple[str | None, str]:
        """(the label, or None and why not)."""
        if not item.violation:
            return self.negative, ""
        if item.decided_category:
            if item.decided_category in self.positive:
                return item.decided_category, ""
            return None, f"decided category not a positive class of the run {list(self.positive)}"
        if message.category in self.positive:
            return message.category, ""
        if len(self.positive) == 1:
            return self.positive[0], ""
        return None, "violations without a category (the run has several positive classes)"


def _run_format(run_dir: str | Path) -> tuple[ColumnSpec, _Labels]:
    manifest = run_manifest(run_dir)
    task = manifest.task
    if not isinstance(task, ClassificationTask) or task.multilabel:
        raise ConfigError(
            f"--run {run_dir}: a {getattr(task, 'kind', 'non-classification')} "
            f"{'multi-label ' if getattr(task, 'multilabel', False) else ''}task; reviews export as single-label "
            "classification rows only: name a single-label classification run"
        )
    negatives = [c for c in task.classes if c not in task.positive]
    if len(negatives) != 1:
        raise ConfigError(
            f"--run {run_dir}: classes {list(task.classes)} have {len(negatives)} non-violation classes "
            f"({negatives}); a 'not a violation' review needs exactly one to map to: name a run with one"
        )
    spec_data = manifest.data.get("column_spec")
    spec = ColumnSpec.model_validate(spec_data) if spec_data else ColumnSpec(text_col="text", label_cols=("label",))
    return spec, _Labels(positive=tuple(task.positive), negative=negatives[0])


def _check_out(out: Path, overwrite: bool) -> None:
    check_output_file(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} exists already: pass --overwrite to replace it, or choose another --out")


def export_reviews(
    database_url: str,
    run_dir: str | Path,
    out: str | Path,
    *,
    model: str | None = None,
    since: date | None = None,
    overwrite: bool = False,
) -> ExportSummary:
    """Write the decided reviews (of `model`'s messages, decided on or after `since`) to `out`; see the module doc."""
    out = Path(out)
    _check_out(out, overwrite)
    spec, labels = _run_format(run_dir)
    text_col, label_col = spec.text_col, spec.label_cols[0]
    if clash := {text_col, label_col} & set(META_COLUMNS):
        raise ConfigError(f"--run {run_dir}: its columns {sorted(clash)} clash with the export's metadata columns")
    query = (
        select(ReviewItem, Message)
        .join(Message, Message.id == ReviewItem.message_id)
        .where(ReviewItem.state == "decided")
        .order_by(ReviewItem.decided_at, ReviewItem.id)
    )
    if model is not None:
        query = query.where(Message.model == model)
    if since is not None:
        query = query.where(ReviewItem.decided_at >= datetime.combine(since, time.min))
    summary = ExportSummary(out=out)
    engine = connect(database_url)
    try:
        with Session(engine) as session, atomic_file(out, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=[text_col, label_col, *META_COLUMNS])
            writer.writeheader()
            for item, message in session.execute(query.execution_options(yield_per=BATCH_ROWS)):
                if message.text is None:
                    summary.skipped["texts deleted by retention"] += 1
                    continue
                label, why = labels.label(item, message)
                if label is None:
                    summary.skipped[why] += 1
                    continue
                writer.writerow(
                    {
                        text_col: message.text,
                        label_col: label,
                        "message_id": message.id,
                        "reason": item.reason,
                        "reviewer": item.reviewer,
                        "reviewed_at": item.decided_at.isoformat() if item.decided_at else "",
                        "model": message.model,
                        "model_version": message.model_version,
                        "model_action": message.action,
                        "note": item.note or "",
                    }
                )
                summary.written += 1
                summary.labels[label] += 1
    finally:
        engine.dispose()
    return summary
