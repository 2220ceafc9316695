"""`finesieve monitor` on the service's database (SQLite and PostgreSQL): slow evals from real reviews of real SMS
messages, and score drift against the run's reference statistics, through the command a user runs.

    source /tmp/pg.env && OMP_NUM_THREADS=1 .venv/bin/pytest -q -p no:randomly tests/serve/test_monitoring.py

The run is the SMS cascade of conftest.py saved with reference statistics from 600 unseen messages. The service
decides 400 other unseen messages (20% of deliveries audited), and every queued item is decided by a "reviewer"
who answers with the message's true label, so the expected figures are counted from the labels here.

Windows over time: messages are dated an hour apart by hand, and the same traffic is read from the database and
from the file `finesieve score --include-text` writes of it (with a time column and the exported reviews), which
must give reports of one shape with the same counts.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from finesieve.cli import app as cli_app
from finesieve.data.preprocess import Preprocessing, prepare
from finesieve.data.spec import ColumnSpec
from finesieve.manifest import reference_stats
from finesieve.monitor.scored_file import monitor_file
from finesieve.runs import save_run
from finesieve.serve import queue
from finesieve.serve.batch import score_file
from finesieve.serve.db import Message, connect, utcnow
from finesieve.serve.moderation import MessageIn, Moderator, load_models
from finesieve.serve.monitoring import monitor_windows, read_window
from finesieve.serve.review_export import export_reviews
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


# Real Russian text messages: 64 distinct ones arriving in the last hour, a script the run never saw.
CYRILLIC = [
    f"{name}, {message}"
    for name in ["Аня", "Саша", "Миша", "Оля", "Дима", "Катя", "Лена", "Паша"]
    for message in [
        "ты сегодня придёшь на ужин?",
        "позвони мне, когда освободишься",
        "я уже в дороге, буду через десять минут",
        "спасибо за вчерашний вечер",
        "не забудь купить хлеб и молоко",
        "встречаемся у метро в семь",
        "как прошёл экзамен? напиши потом",
        "мама просила перезвонить ей сегодня",
    ]
]


def run_with_inputs(tmp_path, service_cascade, sms_unseen, sms_csv):
    """The cascade saved with the input statistics of prepared (cleaned, redacted) texts, as training keeps them."""
    validation = list(prepare(sms_unseen["text"].iloc[400:1000], Preprocessing())[0])
    training = list(prepare(pd.read_csv(sms_csv, dtype=str)["text"].iloc[:600], Preprocessing())[0])
    decisions = service_cascade.decide(validation)
    reference = reference_stats(
        decisions.proba, service_cascade.classes_, validation, decisions.flagged, train_texts=training
    )
    return save_run(
        tmp_path / "spam",
        service_cascade,
        kind="cascade",
        task={"classes": ["ham", "spam"], "multilabel": False, "positive": ["spam"], "threshold": 0.5},
        data={},
        metrics={},
        reference=reference,
    )


def test_windows_over_time_split_the_period_and_the_file_gives_the_same_report(
    db_url, tmp_path, service_cascade, sms_unseen, sms_csv
):
    run = run_with_inputs(tmp_path, service_cascade, sms_unseen, sms_csv)
    rows = sms_unseen.iloc[:300]
    traffic = pd.DataFrame(
        {"id": list(rows["msg_id"]) + [f"ru-{i}" for i in range(64)], "text": list(rows["text"]) + CYRILLIC}
    )
    start = datetime(2026, 12, 1, 9, 0)
    traffic["time"] = [start + timedelta(hours=i // 100, minutes=i % 100 // 2) for i in range(300)] + [
        start + timedelta(hours=3, minutes=5)
    ] * 64
    settings = ServiceSettings(database_url=db_url, runs={"spam": run}, audit_rate=0.2)
    engine = connect(db_url)
    moderator = Moderator(load_models(settings.runs), engine, settings)
    try:
        moderator.moderate("spam", [MessageIn(t, id=i) for t, i in zip(traffic["text"], traffic["id"])])
        with Session(engine) as session, session.begin():
            for message_id, time in zip(traffic["id"], traffic["time"]):
                session.execute(update(Message).where(Message.id == message_id).values(created_at=time))
            gone = list(traffic["id"][100:110])  # the retention period deleted these texts
            session.execute(update(Message).where(Message.id.in_(gone)).values(text=None))
        review_everything(engine, dict(zip(rows["msg_id"], rows["label"])) | {f"ru-{i}": "ham" for i in range(64)})
    finally:
        moderator.close()
        engine.dispose()

    report = monitor_windows(db_url, str(run), "spam", None, None, timedelta(hours=1), embeddings=False)
    windows = report["windows"]
    assert [w["messages"] for w in windows] == [100, 100, 100, 64]
    assert [w["since"] for w in windows] == [(start + timedelta(hours=h)).isoformat() for h in range(4)]
    assert windows[0]["until"] == windows[1]["since"] and report["overall"]["messages"] == 364
    assert [w["inputs"]["n"] for w in windows] == [100, 90, 100, 64]  # deleted texts are skipped, not counted
    assert read_window(db_url, "spam").texts.__len__() == 354
    reviewed = [w["slow_evals"]["overturn_rate"]["n"] for w in windows]
    assert sum(reviewed) == report["overall"]["slow_evals"]["overturn_rate"]["n"] > 0
    for w in windows[:3]:  # SMS like the reference: no input alert
        assert not [a for a in w["alerts"] if a.startswith(("out-of-vocabulary", "input length", "embedding"))]
    assert any(a.startswith("out-of-vocabulary rate") for a in windows[3]["alerts"])
    assert windows[3]["inputs"]["script_mix"]["window"]["cyrillic"] == 1.0
    assert windows[3]["ngrams"][0]["examples"][0] in CYRILLIC

    # The same traffic as a scored file with a time column, and the reviews as exported: one report shape.
    (tmp_path / "messages.csv").write_text(traffic[["id", "text"]].to_csv(index=False))
    score_file(
        run,
        tmp_path / "messages.csv",
        tmp_path / "scored.csv",
        spec=ColumnSpec(text_col="text", id_col="id"),
        include_text=True,
        progress=False,
    )
    scored = pd.read_csv(tmp_path / "scored.csv", dtype={"id": str})
    scored["time"] = scored["id"].map(dict(zip(traffic["id"], traffic["time"].map(lambda t: t.isoformat() + "Z"))))
    scored.to_csv(tmp_path / "timed.csv", index=False)
    exported = export_reviews(db_url, run, tmp_path / "reviews.csv", model="spam")
    from_file = monitor_file(
        run,
        tmp_path / "timed.csv",
        reviews=tmp_path / "reviews.csv",
        time_col="time",
        every=timedelta(hours=1),
        embeddings=False,
    )
    assert from_file.keys() == report.keys() and from_file["windows"][0].keys() == windows[0].keys()
    assert [w["messages"] for w in from_file["windows"]] == [100, 100, 100, 64]
    assert [w["inputs"]["n"] for w in from_file["windows"]] == [100, 100, 100, 64]  # the file kept every text
    assert [w["actions"] for w in from_file["windows"]] == [w["actions"] for w in windows]
    # The export skips the reviews of the messages whose text was deleted (all in the second hour).
    from_file_reviewed = [w["slow_evals"]["overturn_rate"]["n"] for w in from_file["windows"]]
    skipped = sum(exported.skipped.values())
    assert skipped > 0 and from_file_reviewed == [reviewed[0], reviewed[1] - skipped, reviewed[2], reviewed[3]]
    assert from_file["windows"][3]["ngrams"][0]["ngram"] == windows[3]["ngrams"][0]["ngram"]
    assert from_file["windows"][0]["drift"]["spam"]["n"] == windows[0]["drift"]["spam"]["n"] == 100
