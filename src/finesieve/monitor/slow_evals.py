"""Slow evals: what the reviewers' decisions say about a model in production, every figure with its interval.

    from finesieve.monitor.slow_evals import slow_evals
    evals = slow_evals(reviews, flagged=1_204, delivered=48_310)
    evals.queue_precision            # Estimate(value=0.62, low=0.57, high=0.67, n=310)
    evals.recall                     # from the random audit sample of delivered messages
    evals.audit_needed(margin=0.01)  # audits to decide, for the audit's violation rate to +-0.01 at 95%

`reviews` holds one row per decided review item, as `finesieve data export-reviews` writes them or the service
stores them: `reason` (flagged | audit | failure) and `violation` (the reviewer's verdict, bool), and, for the
confusion table, `category` (the model's) and `decided_category` (the reviewer's). `flagged` and `delivered` count
the model's actions over the same window, reviewed or not.

    queue precision   violations among reviewed flagged messages: what reviewers' time buys
    overturn rate     reviews that disagree with the model: a flag judged harmless, or an audited delivery
                      judged a violation
    recall            flagged violations / all violations. The flagged ones are estimated as flagged x queue
                      precision; the missed ones as delivered x the audit's violation rate. The audit is a random
                      sample of deliveries (the service samples by a hash of the message id), so the estimate is
                      unbiased, however few violations the flags catch.
Proportions get Wilson intervals; recall, a ratio of two estimated proportions, gets a parametric bootstrap
(Jeffreys posteriors of both proportions, percentile interval, fixed seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from finesieve.data.errors import ConfigError
from finesieve.evals.metrics import wilson_interval

REQUIRED = ("reason", "violation")
BOOTSTRAP_DRAWS = 4000


@dataclass(frozen=True)
class Estimate:
    """A figure with its two-sided interval at `confidence`; value and bounds are None when nothing was measured."""

    value: float | None
    low: float | None
    high: float | None
    n: int  # the reviews it rests on
    confidence: float = 0.95

    def __str__(self) -> str:
        if self.value is None:
            return f"- (n={self.n})"
        return f"{self.value:.3f} [{self.low:.3f}-{self.high:.3f}] (n={self.n})"


def wilson(successes: int, n: int, confidence: float = 0.95) -> Estimate:
    """The share successes / n with its Wilson score interval (sound at small n and near 0 or 1)."""
    if n == 0:
        return Estimate(None, None, None, 0, confidence)
    low, high = wilson_interval(successes, n, confidence)
    return Estimate(successes / n, low, high, n, confidence)


def sample_size(p: float | None, margin: float, confidence: float = 0.95) -> int:
    """Reviews needed for a share near `p` (0.5 when unknown: the most) to be known to +-`margin`."""
    if not 0 < margin < 1:
        raise ConfigError(f"margin {margin}: give a half-width between 0 and 1, e.g. 0.02")
    p = 0.5 if p is None else min(max(p, 1e-3), 1 - 1e-3)
    z = float(norm.ppf(0.5 + confidence / 2))
    return math.ceil(z * z * p * (1 - p) / (margin * margin))


@dataclass(frozen=True)
class SlowEvals:
    queue_precision: Estimate
    overturn_rate: Estimate
    audit_violation_rate: Estimate
    recall: Estimate
    confusion: pd.DataFrame  # model category (rows) x reviewer's category, counts of reviewed flagged messages

    def audit_needed(self, margin: float, confidence: float = 0.95) -> int:
        """Audited deliveries needed for the audit's violation rate to be known to +-`margin`."""
        return sample_size(self.audit_violation_rate.value, margin, confidence)

    def as_dict(self) -> dict:
        def est(e: Estimate) -> dict:
            return {"value": e.value, "low": e.low, "high": e.high, "n": e.n}

        return {
            "queue_precision": est(self.queue_precision),
            "overturn_rate": est(self.overturn_rate),
            "audit_violation_rate": est(self.audit_violation_rate),
            "recall": est(self.recall),
        }


def slow_evals(
    reviews: pd.DataFrame, *, flagged: int, delivered: int, confidence: float = 0.95, seed: int = 0
) -> SlowEvals:
    """The slow evals of one window: see the module doc for the columns and what each figure means."""
    missing = [c for c in REQUIRED if c not in reviews.columns]
    if missing:
        raise ConfigError(
            f"reviews lack the columns {missing} (they have {list(reviews.columns)}): pass the decided review items "
            "as `finesieve data export-reviews` writes them"
        )
    if flagged < 0 or delivered < 0:
        raise ConfigError(f"flagged={flagged}, delivered={delivered}: counts of messages cannot be negative")
    reason = reviews["reason"].astype(str)
    violation = reviews["violation"].astype(bool)
    is_flag = reason.isin(["flagged", "failure"]).to_numpy()
    is_audit = (reason == "audit").to_numpy()
    unknown = sorted(set(reason[~(is_flag | is_audit)]))
    if unknown:
        raise ConfigError(f"review reasons {unknown} are unknown: expected flagged, audit or failure")
    flag_v, audit_v = violation[is_flag], violation[is_audit]
    precision = wilson(int(flag_v.sum()), len(flag_v), confidence)
    overturned = int((~flag_v).sum()) + int(audit_v.sum())
    overturn = wilson(overturned, len(flag_v) + len(audit_v), confidence)
    audit = wilson(int(audit_v.sum()), len(audit_v), confidence)
    recall = _recall(precision, audit, flagged, delivered, confidence, seed)
    confusion = pd.DataFrame()
    if {"category", "decided_category"} <= set(reviews.columns):
        flags = reviews[is_flag]
        reviewer = flags["decided_category"].where(flags["violation"].astype(bool), "not a violation")
        confusion = pd.crosstab(flags["category"].fillna(""), reviewer.fillna(""))
    return SlowEvals(precision, overturn, audit, recall, confusion)


def _recall(
    precision: Estimate, audit: Estimate, flagged: int, delivered: int, confidence: float, seed: int
) -> Estimate:
    """flagged x precision / (flagged x precision + delivered x audit rate), with a bootstrap interval."""
    n = precision.n + audit.n
    if flagged and precision.value is None:
        return Estimate(None, None, None, n, confidence)  # flags whose precision nobody measured
    if delivered and audit.value is None:
        return Estimate(None, None, None, n, confidence)  # deliveries nobody audited: misses unknown
    p, a = precision.value or 0.0, audit.value or 0.0
    caught, missed = flagged * p, delivered * a
    if caught + missed == 0:
        return Estimate(None, None, None, n, confidence)  # no violation seen at all: recall undefined
    rng = np.random.default_rng(seed)

    def draws(e: Estimate) -> np.ndarray:  # Jeffreys posterior of the share
        if e.value is None:
            return np.zeros(BOOTSTRAP_DRAWS)
        k = round(e.value * e.n)
        return rng.beta(k + 0.5, e.n - k + 0.5, BOOTSTRAP_DRAWS)

    tp, fn = flagged * draws(precision), delivered * draws(audit)
    sampled = tp / np.maximum(tp + fn, 1e-12)
    tail = (1 - confidence) / 2
    low, high = np.quantile(sampled, [tail, 1 - tail])
    return Estimate(caught / (caught + missed), float(low), float(high), n, confidence)
