"""What `finesieve monitor` reads from the service's database: one model's messages and reviews in a time window.

    from finesieve.serve.monitoring import read_window
    window = read_window("sqlite:///./finesieve.db", "spam", since=datetime(2026, 12, 1))
    window.scores["spam"]        # the positive class's calibrated score of every message decided in the window
    window.actions               # Counter: deliver / review / block
    window.reviews               # decided review items: reason, violation, category (model's), decided_category

Texts are not read: the statistics here need scores, actions and reviewers' verdicts only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from finesieve.data.errors import ConfigError
from finesieve.monitor.alerts import AlertThresholds, alerts_for
from finesieve.monitor.drift import score_drift
from finesieve.monitor.slow_evals import slow_evals
from finesieve.runs import run_manifest
from finesieve.serve.db import Message, ReviewItem, connect

BATCH_ROWS = 5000


@dataclass
class Window:
    model: str
    since: datetime | None
    until: datetime | None
    scores: dict[str, np.ndarray]  # positive class -> scores, one per message decided by a stage that scored it
    actions: Counter
    reviews: pd.DataFrame


def read_window(database_url: str, model: str, since: datetime | None = None, until: datetime | None = None) -> Window:
    """`model`'s messages created in [since, until) and the decided reviews of those messages."""
    engine = connect(database_url)
    in_window = [Message.model == model]
    if since is not None:
        in_window.append(Message.created_at >= since)
    if until is not None:
        in_window.append(Message.created_at < until)
    scores: dict[str, list[float]] = {}
    actions: Counter = Counter()
    try:
        with Session(engine) as session:
            query = select(Message.action, Message.category_scores).where(*in_window)
            for action, category_scores in session.execute(query.execution_options(yield_per=BATCH_ROWS)):
                actions[action] += 1
                for name, value in (category_scores or {}).items():
                    scores.setdefault(name, []).append(float(value))
            rows = session.execute(
                select(ReviewItem.reason, ReviewItem.violation, Message.category, ReviewItem.decided_category)
                .join(Message, Message.id == ReviewItem.message_id)
                .where(ReviewItem.state == "decided", *in_window)
            ).all()
    finally:
        engine.dispose()
    reviews = pd.DataFrame(rows, columns=["reason", "violation", "category", "decided_category"])
    return Window(
        model=model,
        since=since,
        until=until,
        scores={name: np.asarray(values) for name, values in scores.items()},
        actions=actions,
        reviews=reviews,
    )


def monitor_report(
    database_url: str,
    run_dir: str,
    model: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    thresholds: AlertThresholds | None = None,
) -> dict:
    """The window's slow evals and score drift against `run_dir`'s reference statistics, and the alerts that
    `thresholds` (default: `AlertThresholds()`) raise on them. What `finesieve monitor` prints and writes."""
    reference = run_manifest(run_dir).reference
    if reference is None:
        raise ConfigError(
            f"{run_dir}: its manifest keeps no reference statistics (written by an older finesieve): retrain it, "
            "or monitor a run that has them"
        )
    window = read_window(database_url, model, since, until)
    n = sum(window.actions.values())
    flagged = n - window.actions.get("deliver", 0)
    evals = slow_evals(window.reviews, flagged=flagged, delivered=window.actions.get("deliver", 0))
    drift = score_drift(reference, {c: s for c, s in window.scores.items() if c in reference.score_histograms})
    alerts = alerts_for(thresholds or AlertThresholds(), drift, evals)
    return {
        "model": model,
        "run": str(run_dir),
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "messages": n,
        "actions": dict(window.actions),
        "flag_rate": {"window": flagged / n if n else None, "reference": reference.flag_rate},
        "slow_evals": evals.as_dict(),
        "audits_needed_for_0.01": evals.audit_needed(0.01),
        "drift": {name: vars(d) for name, d in drift.items()},
        "alerts": alerts,
    }
