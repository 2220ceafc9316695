"""The drift scenario, small: a slice of the SMS Spam Collection with the prize-and-cash campaign held back, the
whole loop run for real (train, batch-score, simulated reviewers, monitor, retrain with the gate), then the
monitor command on the files the scenario wrote. bench/drift_scenario.py runs it on all the data."""

import json

import pytest
from typer.testing import CliRunner

from finesieve.cli import app as cli_app
from finesieve.drift_scenario import START, ScenarioConfig, evade, partition, run_scenario


@pytest.fixture(scope="module")
def scenario(sms_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("scenario")
    config = ScenarioConfig(data=sms_csv, max_rows=2000, window=100, windows_before=2, repeats=10, n_boot=100)
    return run_scenario(config, out, log=lambda _: None), out, config


def test_the_campaign_is_held_back_from_the_parent(scenario):
    _, out, config = scenario
    import pandas as pd

    parts = partition(pd.read_csv(config.data, nrows=config.max_rows, dtype=str, keep_default_na=False), config)
    parent = pd.read_csv(out / "data" / "parent.csv", dtype=str, keep_default_na=False)
    assert not parent["text"].str.contains(config.campaign_pattern, case=False)[parent["label"] == "spam"].any()
    assert len(parts["campaign_stream"]) >= 20 and len(parts["campaign_eval"]) >= 10
    held_out = set(parts["campaign_eval"]["text"]) | set(parts["eval_old"]["text"])
    assert not held_out & set(parent["text"])  # the evaluation rows never reach the parent


def test_the_monitor_detects_the_campaign_and_stays_quiet_without_it(scenario):
    figures, _, config = scenario
    detection = figures["detection"]
    assert detection["alerting_before"] == 0
    assert detection["first_alerting_window_after"] is not None
    assert detection["messages_to_detection"] <= 2 * config.window
    rates = figures["repeated_windows"]
    assert rates["false_alarm_rate"] <= 0.1
    assert rates["detection_rate"] >= 0.8


def test_retraining_on_reviewer_labels_recovers_and_replay_keeps_the_old_test_set(scenario):
    figures, out, _ = scenario
    quality = figures["quality"]
    assert quality["retrained"]["campaign_recall"] >= quality["parent"]["campaign_recall"]
    assert figures["recovery_gap_auc"] <= 0.02  # within 0.02 ROC AUC of the oracle on new traffic
    assert figures["replay_old_loss_auc"] <= 0.01  # the parent's fixed test split
    gate = json.loads((out / "runs" / "retrained" / "gate.json").read_text())
    assert gate["decision"] == figures["gate"]["decision"]
    # The independent sample of new traffic must improve; the reviewed slice (mostly what the parent flagged
    # already) must only not regress.
    roles = {s["name"]: s["role"] for s in gate["sets"]}
    assert roles == {"test": "fixed", "corner:fresh": "fixed", "corner:new_traffic": "drifted"}
    assert (out / "monitor.html").read_text().count("<img") >= 3
    assert json.loads((out / "figures.json").read_text())["detection"] == figures["detection"]


def test_monitor_command_over_the_scored_file(scenario, tmp_path):
    _, out, config = scenario
    html, report = tmp_path / "monitor.html", tmp_path / "monitor.json"
    args = ["monitor", str(out / "runs" / "parent"), "--scored", str(out / "scored.csv")]
    args += ["--reviews", str(out / "reviews.csv"), "--time-col", "received_at", "--every", f"{config.window}m"]
    args += ["--since", START.isoformat()]  # windows from the first message: the shift falls on a window's edge
    result = CliRunner().invoke(cli_app, [*args, "--html", str(html), "--out", str(report)])
    assert result.exit_code == 3, result.output  # the campaign's windows raise alerts
    windows = json.loads(report.read_text())["windows"]
    assert [bool(w["alerts"]) for w in windows[: config.windows_before]] == [False] * config.windows_before
    assert any(w["alerts"] for w in windows[config.windows_before :])
    assert "alert:" in result.output and html.exists()
    again = CliRunner().invoke(cli_app, [*args, "--html", str(html)])
    assert again.exit_code == 2 and "exists already" in again.output  # never overwritten
    neither = CliRunner().invoke(cli_app, ["monitor", str(out / "runs" / "parent")])
    assert neither.exit_code != 0 and "--db" in neither.output and "--scored" in neither.output


def test_evasion_rewrites_words_in_look_alike_characters():
    import numpy as np

    text = evade("Claim your prize now", np.random.default_rng(0), share=1.0)
    assert text == "c141m y0ur pr1z3 n0w"
