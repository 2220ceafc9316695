"""`finesieve monitor` on the service's database (SQLite and PostgreSQL): slow evals from real reviews of real SMS
messages, and score drift against the run's reference statistics, through the command a user runs.

    source /tmp/pg.env && OMP_NUM_THREADS=1 .venv/bin/pytest -q -p no:randomly tests/serve/test_monitoring.py

The run is the SMS cascade of conftest.py saved with reference statistics from 600 unseen messages. The service
decides 400 other unseen messages (20% of deliveries audited), and every queued item is decided by a "reviewer"
who answers with the message's true label, so the expected figures are counted from the labels here.
"""

from __future__ import annotations

import json

import numpy as np
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from finesieve.cli import app as cli_app
from finesieve.manifest import reference_stats
from finesieve.runs import save_run
from finesieve.serve import queue
from finesieve.serve.db import Message, connect, utcnow
from finesieve.serve.moderation import MessageIn, Moderator, load_models
from finesieve.serve.settings import ServiceSettings


def monitored_run(tmp_path, service_cascade, sms_unseen):
    validation = sms_unseen.iloc[400:1000]
    texts = validation["text"].tolist()
    decisions = service_cascade.decide(texts)
    reference = reference_stats(decisions.proba, service_cascade.classes_, texts, decisions.flagged)
    return save_run(
        tmp_path / "spam",
        service_cascade,
        kind="cascade",
        task={"classes": ["ham", "spam"], "multilabel": False, "positive": ["spam"], "threshold": 0.5},
        data={},
        metrics={},
        reference=reference,
    )


def review_everything(engine, labels: dict[str, str]) -> None:
    with Session(engine) as session, session.begin():
        while (item := queue.lease_next(session, "rita", 600)) is not None:
            violation = labels[item.message_id] == "spam"
            queue.decide(session, item.id, "rita", violation, "spam" if violation else None, None)


def test_monitor_reports_slow_evals_and_alerts_on_drift(
    db_url, tmp_path, service_cascade, sms_unseen, webhook_receiver
):
    run = monitored_run(tmp_path, service_cascade, sms_unseen)
    rows = sms_unseen.iloc[:400]
    labels = dict(zip(rows["msg_id"], rows["label"]))
    settings = ServiceSettings(database_url=db_url, runs={"spam": run}, audit_rate=0.2)
    engine = connect(db_url)
    moderator = Moderator(load_models(settings.runs), engine, settings)
    try:
        outcomes = moderator.moderate("spam", [MessageIn(t, id=i) for t, i in zip(rows["text"], rows["msg_id"])])
        review_everything(engine, labels)
        report_path = tmp_path / "monitor.json"
        result = CliRunner().invoke(
            cli_app, ["monitor", str(run), "--db", db_url, "--model", "spam", "--out", str(report_path)]
        )
        assert result.exit_code == 0, result.output
        report = json.loads(report_path.read_text())
        flagged = [o for o in outcomes if o.action != "deliver"]
        assert report["messages"] == 400 and report["actions"]["deliver"] == 400 - len(flagged)
        true_flags = sum(labels[o.id] == "spam" for o in flagged)
        precision = report["slow_evals"]["queue_precision"]
        assert precision["n"] == len(flagged) and precision["value"] == true_flags / len(flagged)
        assert precision["low"] < precision["value"] < precision["high"]
        audits = report["slow_evals"]["audit_violation_rate"]
        assert 40 <= audits["n"] <= 120  # 20% of ~350 deliveries, sampled by a hash of the id
        assert report["slow_evals"]["recall"]["value"] is not None
        assert report["drift"]["spam"]["n"] == 400 and report["drift"]["spam"]["psi"] < 0.25
        assert report["alerts"] == []
        strict = tmp_path / "alerts.yaml"
        strict.write_text("min_queue_precision: 0.999\n")  # above the whole interval of the measured precision
        alerted = CliRunner().invoke(
            cli_app, ["monitor", str(run), "--db", db_url, "--model", "spam"] + ["--thresholds", str(strict)]
        )
        assert alerted.exit_code == 3 and "alert: queue precision" in alerted.output

        # A window of spam only: the score distribution moves far from validation's, and the command alerts.
        shift_start = utcnow()
        spam = sms_unseen[sms_unseen["label"] == "spam"]
        moderator.moderate("spam", [MessageIn(t, id=f"late-{i}") for i, t in enumerate(spam["text"])])
        hook = webhook_receiver
        shifted = CliRunner().invoke(
            cli_app,
            ["monitor", str(run), "--db", db_url, "--model", "spam", "--since", shift_start.isoformat()]
            + ["--webhook", hook.url],
        )
        assert shifted.exit_code == 3, shifted.output
        assert "alert: score drift on 'spam'" in shifted.output and f"alerts sent to {hook.url}" in shifted.output
        (sent,) = hook.bodies
        assert sent["model"] == "spam" and sent["alerts"][0].startswith("score drift on 'spam'")
        drifted = json.loads(shifted.stdout[: shifted.stdout.rindex("}") + 1])
        assert drifted["messages"] == len(spam) and drifted["drift"]["spam"]["psi"] > 0.25
        with Session(engine) as session:
            assert session.query(Message).count() == 400 + len(spam)
    finally:
        moderator.close()
        engine.dispose()
    again = CliRunner().invoke(cli_app, ["monitor", str(run), "--db", db_url, "--out", str(report_path)])
    assert again.exit_code == 2 and "exists already" in again.output  # a report is never overwritten
    bad = CliRunner().invoke(cli_app, ["monitor", str(run), "--db", db_url, "--since", "yesterday"])
    assert bad.exit_code == 2 and "'yesterday' is not an ISO date" in bad.output
    assert np.isfinite(report["drift"]["spam"]["ks_pvalue"])
