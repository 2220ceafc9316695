"""Slow evals from reviewers' decisions (`finesieve.monitor.slow_evals`): exact figures on a hand-made window, and
the intervals' coverage checked by simulation with fixed seeds (each interval must hold the truth about as often
as it claims)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finesieve.data.errors import ConfigError
from finesieve.monitor.slow_evals import sample_size, slow_evals, wilson


def reviews(flag_violations: int, flag_harmless: int, audit_violations: int, audit_clean: int) -> pd.DataFrame:
    rows = (
        [("flagged", True)] * flag_violations
        + [("flagged", False)] * flag_harmless
        + [("audit", True)] * audit_violations
        + [("audit", False)] * audit_clean
    )
    return pd.DataFrame(rows, columns=["reason", "violation"])


def test_wilson_interval_matches_the_published_one():
    e = wilson(8, 10)
    assert e.value == 0.8 and (round(e.low, 3), round(e.high, 3)) == (0.490, 0.943)  # Wilson (1927), 95%
    none = wilson(0, 0)
    assert none.value is None and none.n == 0 and str(none) == "- (n=0)"
    zero = wilson(0, 40)
    assert zero.low == 0.0 and 0 < zero.high < 0.1  # never a zero-width interval at 0


def test_wilson_intervals_hold_the_true_share_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    for p, n in ((0.1, 50), (0.6, 200)):
        hits = rng.binomial(n, p, size=2000)
        covered = np.mean([wilson(int(k), n).low <= p <= wilson(int(k), n).high for k in hits])
        assert 0.93 <= covered <= 0.975, (p, n, covered)


def test_precision_overturns_and_recall_on_a_known_window():
    evals = slow_evals(reviews(60, 40, 4, 396), flagged=1_000, delivered=20_000)
    assert evals.queue_precision.value == 0.6 and evals.queue_precision.n == 100
    assert evals.overturn_rate.value == (40 + 4) / 500  # harmless flags and audited misses
    assert evals.audit_violation_rate.value == 0.01 and evals.audit_violation_rate.n == 400
    assert evals.recall.value == pytest.approx(600 / (600 + 200))  # 1000 x 0.6 caught, 20000 x 0.01 missed
    assert evals.recall.low < 0.75 < evals.recall.high
    assert evals.audit_needed(margin=0.005) == sample_size(0.01, 0.005) == 1522
    assert set(evals.as_dict()) == {"queue_precision", "overturn_rate", "audit_violation_rate", "recall"}


def test_recall_interval_from_a_random_audit_covers_the_true_recall():
    # A population: 1,000 flags of which 600 are violations, 20,000 deliveries of which 200 are: recall 0.75.
    rng = np.random.default_rng(1)
    flag_truth = np.repeat([True, False], [600, 400])
    delivered_truth = np.repeat([True, False], [200, 19_800])
    covered = []
    for _ in range(300):
        flags = rng.choice(flag_truth, 150, replace=False)
        audits = rng.choice(delivered_truth, 800, replace=False)
        window = reviews(int(flags.sum()), int((~flags).sum()), int(audits.sum()), int((~audits).sum()))
        r = slow_evals(window, flagged=1_000, delivered=20_000).recall
        covered.append(r.low <= 0.75 <= r.high)
    assert 0.92 <= np.mean(covered) <= 0.99  # a 95% interval: neither too narrow nor needlessly wide


def test_undefined_figures_are_none_not_invented():
    no_audit = slow_evals(reviews(5, 5, 0, 0), flagged=100, delivered=1_000)
    assert no_audit.recall.value is None  # misses among deliveries are unknown without an audit
    assert no_audit.audit_violation_rate.value is None and no_audit.audit_needed(0.02) == sample_size(None, 0.02)
    no_violation = slow_evals(reviews(0, 10, 0, 50), flagged=10, delivered=500)
    assert no_violation.queue_precision.value == 0.0 and no_violation.recall.value is None


def test_the_confusion_table_puts_the_reviewers_category_beside_the_models():
    window = pd.DataFrame(
        {
            "reason": ["flagged", "flagged", "flagged", "audit"],
            "violation": [True, True, False, False],
            "category": ["scam", "scam", "abuse", ""],
            "decided_category": ["scam", "abuse", None, None],
        }
    )
    confusion = slow_evals(window, flagged=3, delivered=10).confusion
    assert confusion.loc["scam", "scam"] == 1 and confusion.loc["scam", "abuse"] == 1
    assert confusion.loc["abuse", "not a violation"] == 1 and confusion.to_numpy().sum() == 3


def test_bad_input_names_the_problem():
    with pytest.raises(ConfigError, match=r"lack the columns \['violation'\]"):
        slow_evals(pd.DataFrame({"reason": ["audit"]}), flagged=0, delivered=1)
    with pytest.raises(ConfigError, match=r"reasons \['spam'\] are unknown"):
        slow_evals(pd.DataFrame({"reason": ["spam"], "violation": [True]}), flagged=0, delivered=1)
    with pytest.raises(ConfigError, match="margin 0"):
        sample_size(0.5, 0)
    assert sample_size(0.5, 0.05) == 385
