"""Monitor a scored file instead of the service's database: what `finesieve score` wrote, and optionally the
reviews `finesieve data export-reviews` wrote, read into the same `Traffic` as the database, so the report has the
same shape (`finesieve.monitor.window`).

    from finesieve.monitor.scored_file import monitor_file
    report = monitor_file("runs/spam", "decisions.csv", reviews="reviews.csv", time_col="received_at",
                          every=timedelta(days=1))
    report["windows"][3]["alerts"]

The scored file (CSV or JSONL, by extension) needs `id` and `action`; scores are read per class from `score_CLASS`
columns when the file has them, else from `score` for the run's single positive class; `text` (written with
`finesieve score --include-text`) gives the input drift, without it "inputs" is null. `time_col` names a column of
times (ISO 8601; naive ones are UTC) for windows over time; without it the whole file is one window. Reviews are
matched to the scored messages by `message_id` (their window is their message's; a review of a message not in
the file falls in the window of its `reviewed_at`), and their label column (the run's, as the export writes it)
says whether the reviewer found a violation: a label among the run's positive classes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from finesieve.data.errors import ConfigError
from finesieve.data.task import ClassificationTask
from finesieve.monitor.alerts import AlertThresholds
from finesieve.monitor.window import REVIEW_COLUMNS, Traffic, load_reference, monitor_over_time, window_report
from finesieve.runs import run_manifest

ACTIONS = ("deliver", "review", "block")


def read_scored_file(
    run_dir: str | Path, scored: str | Path, *, reviews: str | Path | None = None, time_col: str | None = None
) -> Traffic:
    """The scored file (and the reviews file) as `Traffic` for the run's model (the run directory's name)."""
    manifest = run_manifest(run_dir)
    task = manifest.task
    positive = list(task.positive) if isinstance(task, ClassificationTask) else []
    frame = _read_table(scored, "--scored", text_cols=("id", "text", "category"))
    missing = [c for c in ("id", "action", *([time_col] if time_col else [])) if c not in frame.columns]
    if missing:
        hint = f" (--time-col {time_col})" if time_col in missing else ""
        raise ConfigError(
            f"--scored {scored}: no column(s) {missing}{hint}; it has {list(frame.columns)}. Fix: pass the file "
            "`finesieve score` wrote (add --include-text there for input drift), and name its time column"
        )
    unknown = sorted(set(frame["action"].astype(str)) - set(ACTIONS))
    if unknown:
        raise ConfigError(f"--scored {scored}: actions {unknown[:5]} in column 'action'; expected one of {ACTIONS}")
    times = _times(frame[time_col], scored, time_col) if time_col else pd.Series(pd.NaT, index=frame.index)
    texts = frame["text"].where(frame["text"].notna(), None) if "text" in frame.columns else None
    messages = pd.DataFrame({"created_at": times, "action": frame["action"].astype(str), "text": texts})
    scores = pd.DataFrame(index=frame.index)
    for c in positive:
        column = f"score_{c}" if f"score_{c}" in frame.columns else "score" if len(positive) == 1 else None
        if column is not None and column in frame.columns:
            scores[c] = pd.to_numeric(frame[column], errors="coerce")
    review_frame = pd.DataFrame(columns=REVIEW_COLUMNS)
    if reviews is not None:
        review_frame = _read_reviews(reviews, manifest.data.get("column_spec") or {}, positive, frame, times)
    return Traffic(model=Path(run_dir).name, messages=messages, scores=scores, reviews=review_frame)


def monitor_file(
    run_dir: str | Path,
    scored: str | Path,
    *,
    reviews: str | Path | None = None,
    time_col: str | None = None,
    every: timedelta | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    thresholds: AlertThresholds | None = None,
    embeddings: bool = True,
) -> dict:
    """The report over time of a scored file ({"model", "run", "windows", "overall"}); without `every` (or without
    `time_col`, when the file has no times) it is one window report of [since, until)."""
    reference = load_reference(run_dir)
    if every is not None and time_col is None:
        raise ConfigError(f"--every {every} needs the time of each message: name its column with --time-col")
    traffic = read_scored_file(run_dir, scored, reviews=reviews, time_col=time_col)
    if every is None:
        return window_report(traffic.window(since, until), reference, run_dir, thresholds, embeddings=embeddings)
    return monitor_over_time(
        traffic, run_dir, every=every, since=since, until=until, thresholds=thresholds, embeddings=embeddings
    )


def _read_reviews(
    path: str | Path, column_spec: dict, positive: list[str], scored: pd.DataFrame, times: pd.Series
) -> pd.DataFrame:
    label_col = (column_spec.get("label_cols") or ["label"])[0]
    frame = _read_table(path, "--reviews", text_cols=("message_id", label_col, "reason", "model_action"))
    missing = [c for c in ("message_id", "reason", label_col) if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"--reviews {path}: no column(s) {missing}; it has {list(frame.columns)}. Fix: pass the file "
            "`finesieve data export-reviews` wrote for this run"
        )
    violation = frame[label_col].astype(str).isin(positive)
    by_id = pd.DataFrame({"created_at": times.to_numpy(), "category": scored.get("category")}, index=scored["id"])
    by_id = by_id[~by_id.index.duplicated()]
    matched = by_id.reindex(frame["message_id"].astype(str))
    created = pd.Series(matched["created_at"].to_numpy(), index=frame.index)
    if "reviewed_at" in frame.columns:
        created = created.fillna(_times(frame["reviewed_at"], path, "reviewed_at"))
    return pd.DataFrame(
        {
            "created_at": created,
            "reason": frame["reason"].astype(str),
            "violation": violation,
            "category": matched["category"].fillna("").to_numpy(),
            "decided_category": frame[label_col].where(violation, None),
        }
    )


def _read_table(path: str | Path, flag: str, text_cols: tuple[str, ...]) -> pd.DataFrame:
    path = Path(path)
    try:
        if path.suffix.lower() == ".jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        else:
            frame = pd.read_csv(path, dtype=dict.fromkeys(text_cols, str), keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{flag} {path}: cannot read it as {'JSONL' if path.suffix == '.jsonl' else 'CSV'} ({err})"
        ) from err
    if "id" in frame.columns:
        frame["id"] = frame["id"].astype(str)
    return frame


def _times(values: pd.Series, path: str | Path, column: str) -> pd.Series:
    """Times as naive UTC; a value that is not a time is refused with its row."""
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna() & values.notna()
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise ConfigError(
            f"{path}: column {column!r} row {row + 1}: {str(values.iloc[row])[:40]!r} is not an ISO 8601 time "
            "(e.g. 2026-12-01T10:00:00Z)"
        )
    return parsed.dt.tz_convert(None)
