"""The monitor's report: one model's traffic over a period, cut into time windows, each compared with the run's
reference statistics. The service's database (`serve.monitoring`) and a scored file (`monitor.scored_file`) are
read into the same `Traffic`, so both give reports of one shape.

    from finesieve.monitor.window import Traffic, monitor_over_time, window_report
    traffic = Traffic(model="spam", messages=messages, scores=scores, reviews=reviews)
    report = monitor_over_time(traffic, "runs/spam", every=timedelta(hours=1))
    report["windows"][0]["inputs"]["oov_rate"]          # {"window": 0.09, "reference": 0.08}
    report["overall"]["ngrams"][0]["ngram"]             # the n-gram that rose most over the whole period

A window report holds: "model", "run", "since", "until", "messages", "actions" ({deliver|review|block: n}),
"flag_rate" ({"window", "reference"}), "slow_evals" (`SlowEvals.as_dict()`), "audits_needed_for_0.01", "drift"
({class: {"psi", "ks", "ks_pvalue", "n"}}), "inputs" (`InputDrift.as_dict()`, null without stored texts),
"ngrams" ([{"ngram", "window_share", "reference_share", "lift", "examples"}]) and "alerts" ([str]). A report over
time is {"model", "run", "windows": [window report, ...] in time order, "overall": the whole period's report}.

Times are naive UTC, as the service stores them; an aware `since`/`until` is converted. Windows start at `since`
or, without it, at the first message's time rounded down to a multiple of `every` since the Unix epoch (hourly
windows start on the hour), and each covers [start, start + every).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from finesieve.data.errors import ConfigError
from finesieve.manifest import ReferenceStats
from finesieve.monitor.alerts import AlertThresholds, alerts_for
from finesieve.monitor.drift import score_drift
from finesieve.monitor.inputs import input_drift, rising_ngrams
from finesieve.monitor.slow_evals import slow_evals
from finesieve.runs import run_manifest

MAX_WINDOWS = 2000  # more than this is a mistyped --every, not a report anyone reads
REVIEW_COLUMNS = ["created_at", "reason", "violation", "category", "decided_category"]


@dataclass
class Window:
    model: str
    since: datetime | None
    until: datetime | None
    scores: dict[str, np.ndarray]  # positive class -> scores, one per message decided by a stage that scored it
    actions: Counter
    reviews: pd.DataFrame  # decided review items: reason, violation, category (model's), decided_category
    texts: list[str] = field(default_factory=list)  # the stored (redacted) texts; deleted ones are left out


@dataclass
class Traffic:
    """Every message of one model over a period, one row each (same index in `messages` and `scores`), and the
    decided reviews of those messages."""

    model: str
    messages: pd.DataFrame  # created_at (naive UTC, NaT when unknown), action, text (None when not stored)
    scores: pd.DataFrame  # one column per positive class, NaN where no stage scored the message
    reviews: pd.DataFrame  # REVIEW_COLUMNS; created_at is the reviewed message's

    def window(self, since: datetime | None = None, until: datetime | None = None) -> Window:
        """The messages created in [since, until) (all of them when both are None) and their reviews."""
        keep = _in_period(self.messages["created_at"], since, until)
        messages, scores = self.messages[keep], self.scores[keep]
        reviews = self.reviews[_in_period(self.reviews["created_at"], since, until)]
        texts = messages["text"]
        return Window(
            model=self.model,
            since=since,
            until=until,
            scores={c: scores[c].dropna().to_numpy(dtype=float) for c in scores.columns if scores[c].notna().any()},
            actions=Counter(messages["action"].tolist()),
            reviews=reviews.drop(columns="created_at").reset_index(drop=True),
            texts=[t for t in texts.tolist() if isinstance(t, str)],
        )

    def windows(self, every: timedelta, since: datetime | None = None, until: datetime | None = None) -> list[Window]:
        """Consecutive windows of length `every` covering [since, until) (default: the messages' own period)."""
        if every <= timedelta(0):
            raise ConfigError(f"--every {every}: give a positive window length, e.g. 1h or 1d")
        times = self.messages["created_at"].dropna()
        if since is None and until is None and times.empty:
            return []
        start = naive_utc(since) if since is not None else _floor(times.min().to_pydatetime(), every)
        end = naive_utc(until) if until is not None else times.max().to_pydatetime() + timedelta(microseconds=1)
        count = -(-(end - start) // every) if end > start else 0
        if count > MAX_WINDOWS:
            raise ConfigError(
                f"--every {every} cuts {start.isoformat()} to {end.isoformat()} into {count} windows (at most "
                f"{MAX_WINDOWS}): choose a longer --every or a shorter period (--since/--until)"
            )
        bounds = [start + i * every for i in range(count)] + [end]
        return [self.window(a, min(a + every, b)) for a, b in zip(bounds, bounds[1:])]


def load_reference(run_dir: str | Path) -> ReferenceStats:
    reference = run_manifest(run_dir).reference
    if reference is None:
        raise ConfigError(
            f"{run_dir}: its manifest keeps no reference statistics (written by an older finesieve): retrain it, "
            "or monitor a run that has them"
        )
    return reference


def window_report(
    window: Window,
    reference: ReferenceStats,
    run_dir: str | Path,
    thresholds: AlertThresholds | None = None,
    *,
    embeddings: bool = True,
) -> dict:
    """One window's report (see the module doc): slow evals, score and input drift, rising n-grams, alerts."""
    n = sum(window.actions.values())
    delivered = window.actions.get("deliver", 0)
    evals = slow_evals(window.reviews, flagged=n - delivered, delivered=delivered)
    drift = score_drift(reference, {c: s for c, s in window.scores.items() if c in reference.score_histograms})
    inputs = input_drift(reference, window.texts, run_dir=run_dir, embeddings=embeddings)
    ngrams = rising_ngrams(reference.inputs, window.texts) if reference.inputs is not None else []
    return {
        "model": window.model,
        "run": str(run_dir),
        "since": window.since.isoformat() if window.since else None,
        "until": window.until.isoformat() if window.until else None,
        "messages": n,
        "actions": dict(window.actions),
        "flag_rate": {"window": (n - delivered) / n if n else None, "reference": reference.flag_rate},
        "slow_evals": evals.as_dict(),
        "audits_needed_for_0.01": evals.audit_needed(0.01),
        "drift": {name: vars(d) for name, d in drift.items()},
        "inputs": inputs.as_dict() if inputs is not None else None,
        "ngrams": [g.as_dict() for g in ngrams],
        "alerts": alerts_for(
            thresholds or AlertThresholds(), drift, evals, inputs, flags=(n, n - delivered, reference.flag_rate)
        ),
    }


def monitor_over_time(
    traffic: Traffic,
    run_dir: str | Path,
    *,
    every: timedelta,
    since: datetime | None = None,
    until: datetime | None = None,
    thresholds: AlertThresholds | None = None,
    embeddings: bool = True,
) -> dict:
    """The report over time: one window report per `every`, in time order, and the whole period's."""
    reference = load_reference(run_dir)
    windows = traffic.windows(every, since, until)
    if windows:
        overall = traffic.window(windows[0].since, windows[-1].until)
    else:
        overall = traffic.window(since, until)
    return {
        "model": traffic.model,
        "run": str(run_dir),
        "windows": [window_report(w, reference, run_dir, thresholds, embeddings=embeddings) for w in windows],
        "overall": window_report(overall, reference, run_dir, thresholds, embeddings=embeddings),
    }


def naive_utc(moment: datetime) -> datetime:
    """`moment` as naive UTC, the way the service stores times (a naive one is taken to be UTC already)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


def _floor(moment: datetime, every: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1)
    return epoch + ((moment - epoch) // every) * every


def _in_period(times: pd.Series, since: datetime | None, until: datetime | None) -> np.ndarray:
    keep = np.ones(len(times), dtype=bool)
    if since is not None:
        keep &= (times >= pd.Timestamp(naive_utc(since))).to_numpy()
    if until is not None:
        keep &= (times < pd.Timestamp(naive_utc(until))).to_numpy()
    return keep
