"""Alert thresholds from YAML, the alerts they raise on slow evals and drift, and the webhook, delivered to a real
HTTP receiver on loopback (`finesieve.monitor.alerts`)."""

from __future__ import annotations

import socket

import pandas as pd
import pytest

from finesieve.data.errors import ConfigError
from finesieve.monitor.alerts import AlertThresholds, alerts_for, send_webhook
from finesieve.monitor.drift import ScoreDrift
from finesieve.monitor.inputs import EmbeddingDistance, InputDrift
from finesieve.monitor.slow_evals import slow_evals


def window(flag_violations: int, flag_harmless: int, audit_violations: int, audit_clean: int):
    rows = (
        [("flagged", True)] * flag_violations
        + [("flagged", False)] * flag_harmless
        + [("audit", True)] * audit_violations
        + [("audit", False)] * audit_clean
    )
    reviews = pd.DataFrame(rows, columns=["reason", "violation"])
    return slow_evals(reviews, flagged=flag_violations + flag_harmless, delivered=10 * (audit_violations + audit_clean))


def test_thresholds_read_from_yaml_keep_defaults_and_name_bad_keys(tmp_path):
    assert AlertThresholds().psi == 0.25 and AlertThresholds().min_recall is None
    good = tmp_path / "alerts.yaml"
    good.write_text("min_queue_precision: 0.5\npsi: null\n")
    loaded = AlertThresholds.from_yaml(good)
    assert loaded.min_queue_precision == 0.5 and loaded.psi is None and loaded.max_overturn_rate is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_precision: 0.5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: min_precision: Extra inputs are not permitted"):
        AlertThresholds.from_yaml(bad)
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        AlertThresholds.from_yaml(tmp_path / "missing.yaml")


def test_slow_eval_alerts_need_the_whole_interval_past_the_threshold():
    thresholds = AlertThresholds(psi=None, min_queue_precision=0.8)
    clear = window(30, 70, 1, 99)  # precision 0.3 on 100 reviews: its interval is far below 0.8
    uncertain = window(2, 1, 1, 99)  # 2 of 3: could well be above 0.8
    assert any(a.startswith("queue precision 0.300") for a in alerts_for(thresholds, {}, clear))
    assert alerts_for(thresholds, {}, uncertain) == []
    overturns = alerts_for(AlertThresholds(psi=None, max_overturn_rate=0.2), {}, clear)
    assert len(overturns) == 1 and "overturn rate" in overturns[0] and "above 0.2" in overturns[0]


def test_drift_alerts_follow_the_psi_threshold():
    drift = {"spam": ScoreDrift(psi=0.3, ks=0.2, ks_pvalue=1e-6, n=500), "abuse": ScoreDrift(0.05, 0.02, 0.9, 500)}
    evals = window(5, 5, 0, 10)
    (alert,) = alerts_for(AlertThresholds(), drift, evals)
    assert alert.startswith("score drift on 'spam': PSI 0.300 > 0.25")
    assert alerts_for(AlertThresholds(psi=None), drift, evals) == []
    tiny = {"spam": ScoreDrift(psi=1.9, ks=0.46, ks_pvalue=0.23, n=5)}  # a demo's five messages
    assert alerts_for(AlertThresholds(), tiny, evals) == []


def test_the_webhook_posts_the_alerts_and_a_dead_endpoint_is_named(webhook_receiver):
    receiver = webhook_receiver
    assert send_webhook(receiver.url, {"model": "spam", "alerts": ["score drift on 'spam'"]}) == 204
    assert receiver.bodies == [{"model": "spam", "alerts": ["score drift on 'spam'"]}]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    with pytest.raises(ConfigError, match=rf"webhook {dead}: the alert could not be delivered"):
        send_webhook(dead, {"alerts": []})


def inputs(length_psi=0.1, ks_pvalue=0.5, oov=0.09, mmd_p=0.3) -> InputDrift:
    return InputDrift(
        n=500,
        length={"psi": length_psi, "ks": 0.1, "ks_pvalue": ks_pvalue, "window_q50": 60.0, "reference_q50": 58.0},
        entity_share={},
        oov_rate={"window": oov, "reference": 0.08},
        script_mix={"psi": 0.0, "window": {}, "reference": {}},
        embedding=EmbeddingDistance(mmd=0.01, p_value=mmd_p, n=256),
    )


def test_input_drift_alerts_follow_their_thresholds_and_can_be_switched_off(tmp_path):
    evals = window(5, 5, 0, 10)
    assert alerts_for(AlertThresholds(), {}, evals, inputs()) == []  # within every default
    length, oov, embedding = alerts_for(
        AlertThresholds(), {}, evals, inputs(length_psi=0.4, ks_pvalue=1e-5, oov=0.2, mmd_p=1 / 1001)
    )
    assert length.startswith("input length drift: PSI 0.400 > 0.25") and "n=500" in length
    assert oov.startswith("out-of-vocabulary rate 0.200 is 0.120 above the reference's 0.080")
    assert embedding.startswith("embedding drift: MMD^2 0.0100, permutation p=0.001 <= 0.001")
    # A large length PSI that is not significant is noise, as for scores.
    assert alerts_for(AlertThresholds(), {}, evals, inputs(length_psi=0.4, ks_pvalue=0.2)) == []
    quiet = tmp_path / "quiet.yaml"
    quiet.write_text("length_psi: null\nmax_oov_rise: null\nembedding_pvalue: null\n")
    loud = inputs(length_psi=0.4, ks_pvalue=1e-5, oov=0.2, mmd_p=1 / 1001)
    assert alerts_for(AlertThresholds.from_yaml(quiet), {}, evals, loud) == []
    assert AlertThresholds().max_oov_rise == 0.05 and AlertThresholds().embedding_pvalue == 0.001


def test_a_flag_rate_alert_needs_its_interval_outside_the_band_around_validation():
    evals = window(0, 0, 0, 0)
    limits = AlertThresholds()  # max_flag_rate_change 0.5: outside 0.5x-1.5x of the validation flag rate
    assert alerts_for(limits, {}, evals, flags=(1000, 100, 0.1)) == []  # the same rate
    assert alerts_for(limits, {}, evals, flags=(20, 4, 0.1)) == []  # 0.2 looks doubled, but 20 messages prove nothing
    [up] = alerts_for(limits, {}, evals, flags=(1000, 250, 0.1))
    assert up.startswith("flag rate 0.250") and "above the validation's 0.100" in up
    [down] = alerts_for(limits, {}, evals, flags=(2000, 40, 0.1))
    assert "below" in down
    assert alerts_for(limits, {}, evals, flags=(1000, 250, None)) == []  # no validation flag rate recorded
    assert alerts_for(AlertThresholds(max_flag_rate_change=None), {}, evals, flags=(1000, 250, 0.1)) == []
