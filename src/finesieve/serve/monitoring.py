"""What `finesieve monitor` reads from the service's database: one model's messages and reviews, in one window or
cut into windows over time, and the monitor's report of them (`finesieve.monitor.window` for its shape).

    from finesieve.serve.monitoring import monitor_report, monitor_windows, read_window
    window = read_window("sqlite:///./finesieve.db", "spam", since=datetime(2026, 12, 1))
    window.scores["spam"]        # the positive class's calibrated score of every message decided in the window
    window.actions               # Counter: deliver / review / block
    window.reviews               # decided review items: reason, violation, category (model's), decided_category
    window.texts                 # the stored redacted texts (those the retention period deleted are left out)
    report = monitor_windows(url, "runs/spam", "spam", since=None, until=None, every=timedelta(hours=1))

The period is read in one pass (two queries: messages, decided reviews) and split by `created_at` in memory, not
queried once per window.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from finesieve.data.errors import ConfigError
from finesieve.monitor.alerts import AlertThresholds
from finesieve.monitor.scored_file import monitor_file
from finesieve.monitor.window import REVIEW_COLUMNS, Traffic, Window, load_reference, monitor_over_time, window_report
from finesieve.serve.db import Message, ReviewItem, connect
from finesieve.serve.shadow import shadow_comparison

__all__ = ["Window", "monitor", "monitor_report", "monitor_windows", "parse_every", "read_traffic", "read_window"]

BATCH_ROWS = 5000


def read_traffic(
    database_url: str, model: str, since: datetime | None = None, until: datetime | None = None
) -> Traffic:
    """`model`'s messages created in [since, until), with their scores and stored texts, and their decided reviews."""
    engine = connect(database_url)
    in_window = [Message.model == model]
    if since is not None:
        in_window.append(Message.created_at >= since)
    if until is not None:
        in_window.append(Message.created_at < until)
    messages, scores = [], []
    try:
        with Session(engine) as session:
            query = select(Message.created_at, Message.action, Message.text, Message.category_scores).where(*in_window)
            for created_at, action, text, category_scores in session.execute(
                query.execution_options(yield_per=BATCH_ROWS)
            ):
                messages.append((created_at, action, text))
                scores.append({name: float(value) for name, value in (category_scores or {}).items()})
            reviews = session.execute(
                select(
                    Message.created_at,
                    ReviewItem.reason,
                    ReviewItem.violation,
                    Message.category,
                    ReviewItem.decided_category,
                )
                .join(Message, Message.id == ReviewItem.message_id)
                .where(ReviewItem.state == "decided", *in_window)
            ).all()
    finally:
        engine.dispose()
    frame = pd.DataFrame(messages, columns=["created_at", "action", "text"])
    frame["created_at"] = pd.to_datetime(frame["created_at"])
    review_frame = pd.DataFrame(reviews, columns=REVIEW_COLUMNS)
    review_frame["created_at"] = pd.to_datetime(review_frame["created_at"])
    return Traffic(model=model, messages=frame, scores=pd.DataFrame(scores, index=frame.index), reviews=review_frame)


def read_window(database_url: str, model: str, since: datetime | None = None, until: datetime | None = None) -> Window:
    """`model`'s messages created in [since, until) and the decided reviews of those messages."""
    window = read_traffic(database_url, model, since, until).window()
    window.since, window.until = since, until
    return window


def monitor_report(
    database_url: str,
    run_dir: str,
    model: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    thresholds: AlertThresholds | None = None,
    embeddings: bool = True,
) -> dict:
    """The window's slow evals, score and input drift against `run_dir`'s reference statistics, and the alerts that
    `thresholds` (default: `AlertThresholds()`) raise on them. What `finesieve monitor` prints and writes.
    `embeddings=False` skips the embedding distance (seconds of CPU per window)."""
    reference = load_reference(run_dir)
    window = read_window(database_url, model, since, until)
    return window_report(window, reference, run_dir, thresholds, embeddings=embeddings)


def monitor_windows(
    database_url: str,
    run_dir: str,
    model: str,
    since: datetime | None,
    until: datetime | None,
    every: timedelta,
    thresholds: AlertThresholds | None = None,
    *,
    embeddings: bool = True,
) -> dict:
    """The report over time: {"model", "run", "windows": [one report per `every`, in time order], "overall"}."""
    load_reference(run_dir)  # a run without reference statistics is refused before the database is read
    traffic = read_traffic(database_url, model, since, until)
    return monitor_over_time(
        traffic, run_dir, every=every, since=since, until=until, thresholds=thresholds, embeddings=embeddings
    )


def monitor(
    run_dir: str | Path,
    *,
    database_url: str | None = None,
    scored: str | Path | None = None,
    reviews: str | Path | None = None,
    time_col: str | None = None,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    every: timedelta | None = None,
    thresholds: AlertThresholds | None = None,
    embeddings: bool = True,
) -> dict:
    """What `finesieve monitor` runs: the report of the service's database (`database_url`, the messages of
    `model`, default the run folder's name) or of a scored file (`scored`, with `reviews` and `time_col`); over
    time when `every` is given, else one window. From the database, a period some messages of which a shadow model
    also scored gets a "shadow" section: live vs shadow agreement, flag rates, score correlation, and each one's
    precision and recall on the reviewed messages (`serve.shadow.shadow_comparison`)."""
    if (database_url is None) == (scored is None):
        raise ConfigError("monitor reads either the service's database (--db) or a scored file (--scored): give one")
    if database_url is None:
        assert scored is not None  # exactly one of the two, checked above
        return monitor_file(
            run_dir,
            scored,
            reviews=reviews,
            time_col=time_col,
            every=every,
            since=since,
            until=until,
            thresholds=thresholds,
            embeddings=embeddings,
        )
    if reviews is not None or time_col is not None:
        raise ConfigError("--reviews and --time-col go with --scored; the database holds its reviews and times")
    name = model or Path(run_dir).resolve().name
    if every is None:
        report = monitor_report(
            database_url, str(run_dir), name, since=since, until=until, thresholds=thresholds, embeddings=embeddings
        )
    else:
        report = monitor_windows(
            database_url, str(run_dir), name, since, until, every, thresholds, embeddings=embeddings
        )
    comparison = shadow_comparison(database_url, name, since, until)
    if comparison["messages"]:  # a shadow model scored this period: live vs shadow on the same messages
        report["shadow"] = comparison
    return report


def report_alerts(report: dict) -> list[str]:
    """The alerts of a report: a window report's own, or each window's of a report over time, dated."""
    if "windows" not in report:
        return list(report["alerts"])
    return [f"[{w['since']} .. {w['until']}] {alert}" for w in report["windows"] for alert in w["alerts"]]


def parse_every(text: str) -> timedelta:
    """'90s', '30m', '1h', '1d' or '2w' as a timedelta."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in units or not value > 0:
        raise ConfigError(f"--every {text!r}: write a positive number and a unit (s, m, h, d, w), e.g. 1h or 30m")
    return timedelta(**{units[unit]: value})


def over_time(report: dict) -> dict:
    """A report over time as it is, a one-window report as a report over time of that one window (for the HTML)."""
    if "windows" in report:
        return report
    wrapped = {"model": report["model"], "run": report["run"], "windows": [report], "overall": report}
    return wrapped | ({"shadow": report["shadow"]} if "shadow" in report else {})
