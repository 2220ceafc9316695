"""The regression gate: a clearly better candidate is promoted, a worse one is refused on the set where it is worse
and for the right reason, the non-inferiority margin means what it says, and the report round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finesieve.data.errors import ConfigError
from finesieve.evals.gate import GATE_HTML, GATE_JSON, GateConfig, GateSet, read_verdict, run_gate, write_gate_report

THRESHOLDS = {"candidate": 0.5, "current": 0.5}


def scored(n: int, rate: float, signal: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(y bool (n,), scores (n,)): violations score `signal` higher on average."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < rate
    return y, rng.normal(size=n) + signal * y


def drifted(seed: int = 10) -> GateSet:
    """A fresh slice the current model barely separates and the candidate separates well."""
    y, old = scored(300, 0.3, 0.3, seed)
    new = np.random.default_rng(seed + 1).normal(size=300) + 2.5 * y
    return GateSet("fresh", "drifted", y, new, old)


def test_clearly_better_candidate_is_promoted():
    y, old = scored(600, 0.2, 1.5, 0)
    new = old + 1.0 * y  # the same ranking, violations pushed up: better on every metric
    verdict = run_gate([GateSet("test", "fixed", y, new, old), drifted()], thresholds=THRESHOLDS)
    assert verdict.promote and verdict.decision == "promote"
    test = verdict.set("test")
    assert test.passed and test.metric("roc_auc").ci[0] > 0
    assert verdict.set("fresh").improved and "improves" in verdict.set("fresh").reason


def test_worse_candidate_is_refused_on_the_set_where_it_is_worse():
    y, old = scored(600, 0.2, 1.5, 0)
    yc, old_c = scored(400, 0.3, 2.0, 3)
    worse_c = np.random.default_rng(4).normal(size=400) + 0.5 * yc  # forgets what the corner set tests
    sets = [
        GateSet("test", "fixed", y, old.copy(), old),
        GateSet("corner:leet", "fixed", yc, worse_c, old_c),
        drifted(),
    ]
    verdict = run_gate(sets, thresholds=THRESHOLDS)
    assert not verdict.promote and verdict.decision == "refuse"
    assert verdict.set("test").passed  # identical scores: a difference of exactly 0 is non-inferior
    corner = verdict.set("corner:leet")
    assert corner.passed is False and corner.metric("roc_auc").outcome == "regression not ruled out"
    assert [r.split(":")[0] for r in verdict.reasons] == ["corner"]
    assert (
        "corner:leet" in verdict.reasons[0]
        and "ROC AUC" in verdict.reasons[0]
        and "not ruled out" in verdict.reasons[0]
    )


def test_without_a_gain_on_the_drifted_slice_nothing_is_promoted():
    y, old = scored(600, 0.2, 1.5, 0)
    yf, sf = scored(300, 0.3, 1.0, 7)
    same = GateSet("fresh", "drifted", yf, sf.copy(), sf)
    verdict = run_gate([GateSet("test", "fixed", y, old, old), same], thresholds=THRESHOLDS)
    assert not verdict.promote and verdict.set("fresh").improved is False
    assert "no improvement shown" in verdict.reasons[0]
    alone = run_gate([GateSet("test", "fixed", y, old, old)], thresholds=THRESHOLDS)
    assert not alone.promote and "no drifted" in alone.reasons[0]


def test_margin_is_a_non_inferiority_bound():
    """A small true drop passes a wide margin and fails a narrow one; the decision follows lo > -margin exactly."""
    y, old = scored(2000, 0.2, 1.5, 1)
    noisy = old + np.random.default_rng(2).normal(scale=0.6, size=len(old))  # a little worse
    sets = [GateSet("test", "fixed", y, noisy, old), drifted()]
    narrow = run_gate(sets, thresholds=THRESHOLDS, config=GateConfig(margin=0.001, pr_auc_margin=0.001))
    wide = run_gate(sets, thresholds=THRESHOLDS, config=GateConfig(margin=0.2, pr_auc_margin=0.2))
    lo = narrow.set("test").metric("roc_auc").ci[0]
    assert -0.2 < lo < -0.001  # the drop is real but small
    assert not narrow.promote and narrow.set("test").passed is False
    assert wide.promote and wide.set("test").passed
    assert wide.set("test").metric("roc_auc").ci == narrow.set("test").metric("roc_auc").ci  # same evidence


def test_one_class_sets_use_recall_or_are_noted():
    y, old = scored(600, 0.2, 1.5, 0)
    violations = np.ones(40, bool)
    missed = GateSet("corner:obfuscated", "fixed", violations, np.full(40, 0.1), np.full(40, 0.9))
    clean = GateSet("corner:quotes", "fixed", np.zeros(30, bool), np.zeros(30), np.zeros(30))
    verdict = run_gate([GateSet("test", "fixed", y, old, old), missed, clean, drifted()], thresholds=THRESHOLDS)
    corner = verdict.set("corner:obfuscated")
    assert corner.metric("roc_auc").outcome == "undefined" and corner.metric("recall").decides
    assert corner.passed is False and "recall" in corner.reason  # it catches none of what the current one caught
    assert verdict.set("corner:quotes").passed is None
    assert any("corner:quotes" in note and "not judged" in note for note in verdict.notes)


def test_report_is_written_and_the_json_round_trips(tmp_path):
    y, old = scored(600, 0.2, 1.5, 0)
    verdict = run_gate(
        [GateSet("test", "fixed", y, old + 0.5 * y, old), drifted()],
        thresholds={"candidate": 0.61, "current": 0.47},
        config=GateConfig(n_boot=200),
        notes=["corner set 'x' skipped: its file is not available"],
    )
    json_path, html_path = write_gate_report(verdict, tmp_path / "run")
    assert json_path.name == GATE_JSON and html_path.name == GATE_HTML
    assert read_verdict(json_path) == verdict
    assert json.loads(json_path.read_text())["decision"] == "promote"
    page = html_path.read_text()
    assert "PROMOTE" in page and "data:image/png;base64" in page and "corner set &#x27;x&#x27; skipped" in page
    assert 'src="http' not in page  # self-contained


def test_gate_config_from_yaml(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text("margin: 0.03\nmin_gain: 0.01\n")
    config = GateConfig.from_yaml(path, margin=0.02)
    assert config.margin == 0.02 and config.min_gain == 0.01 and config.pr_auc_margin == 0.02
    path.write_text("margn: 0.03\n")
    with pytest.raises(ConfigError, match="did you mean margin"):
        GateConfig.from_yaml(path)
    path.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        GateConfig.from_yaml(path)


def test_a_small_set_is_refused_on_its_interval_not_its_point_estimate():
    """Too little evidence is not a pass: the point estimate is up, but the interval allows a drop beyond the margin."""
    y, old = scored(80, 0.25, 1.5, 1)
    new = old + np.random.default_rng(101).normal(scale=0.5, size=80)
    config = GateConfig(decide_on=("roc_auc",))
    verdict = run_gate([GateSet("small", "fixed", y, new, old), drifted()], thresholds=THRESHOLDS, config=config)
    auc = verdict.set("small").metric("roc_auc")
    assert auc.diff > 0 and auc.ci[0] < -config.margin
    assert not verdict.promote and verdict.set("small").passed is False and "not ruled out" in verdict.reasons[0]
