"""The monitor's HTML report over time, rendered from windows that `monitor_report` really computed on a SQLite
service database with reviewed SMS traffic: plots, alerts, the per-window table, the n-gram drivers with their
example messages escaped, and an empty window that leaves a gap rather than a crash.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q -p no:randomly tests/monitor/test_report.py

The run is a TF-IDF spam model fitted on 300 SMS messages, with reference statistics from 400 others. The service
decides 200 unseen messages in the first hour, none in the second, and 150 spam messages in the third (the scores
and the inputs drift); the report cuts the three hours into hourly windows.
"""

from __future__ import annotations

import base64
import html
import re
from datetime import datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from finesieve.manifest import reference_stats
from finesieve.models.tfidf import TfidfLogReg
from finesieve.monitor.alerts import AlertThresholds
from finesieve.monitor.report import write_monitor_report
from finesieve.runs import save_run
from finesieve.serve import queue
from finesieve.serve.db import Message, connect
from finesieve.serve.moderation import MessageIn, Moderator, load_models
from finesieve.serve.monitoring import monitor_windows
from finesieve.serve.settings import ServiceSettings

THRESHOLD = 0.5
START = datetime(2026, 11, 30, 9)  # the first window's start: the messages' times are set from it
INJECTED = '<script>alert("x")</script> WIN a prize & call now'


@pytest.fixture(scope="module")
def sms(sms_csv) -> pd.DataFrame:
    df = pd.read_csv(sms_csv, dtype=str, keep_default_na=False)
    return df.assign(msg_id=[f"sms-{i}" for i in range(len(df))])


@pytest.fixture(scope="module")
def over_time(sms, tmp_path_factory) -> dict:
    """A report over three hours of a real service database, as `finesieve monitor --every 1h` builds it."""
    tmp = tmp_path_factory.mktemp("monitor")
    fit, validation, traffic = sms.iloc[:300], sms.iloc[300:700], sms.iloc[700:900]
    model = TfidfLogReg().fit(fit["text"].tolist(), [[label] for label in fit["label"]])
    proba = model.predict_proba(validation["text"].tolist())
    spam = list(model.classes_).index("spam")
    reference = reference_stats(
        proba,
        model.classes_,
        validation["text"].tolist(),
        flagged=proba[:, spam] >= THRESHOLD,
        train_texts=fit["text"].tolist(),
    )
    task = {"classes": ["ham", "spam"], "multilabel": False, "positive": ["spam"], "threshold": THRESHOLD}
    run = save_run(tmp / "spam", model, kind="tfidf", task=task, data={}, metrics={}, reference=reference)
    db_url = f"sqlite:///{tmp / 'service.db'}"
    settings = ServiceSettings(database_url=db_url, runs={"spam": run}, audit_rate=0.3, monitor_interval_s=0)
    engine = connect(db_url)
    moderator = Moderator(load_models(settings.runs), engine, settings)
    labels = dict(zip(sms["msg_id"], sms["label"]))
    late_spam = sms.iloc[900:][sms.iloc[900:]["label"] == "spam"].head(150)
    try:
        for rows, hour in ((traffic, 0), (late_spam, 2)):  # hour 1: no message arrives
            moderator.moderate("spam", [MessageIn(t, id=i) for t, i in zip(rows["text"], rows["msg_id"])])
            with Session(engine) as session, session.begin():  # as if they had arrived in that hour
                for n, message_id in enumerate(rows["msg_id"]):
                    at = START + timedelta(hours=hour, seconds=10 * n)
                    session.execute(update(Message).where(Message.id == message_id).values(created_at=at))
        with Session(engine) as session, session.begin():
            while (item := queue.lease_next(session, "rita", 600)) is not None:
                violation = labels[item.message_id] == "spam"
                queue.decide(session, item.id, "rita", violation, "spam" if violation else None, None)
    finally:
        moderator.close()
        engine.dispose()
    report = monitor_windows(
        db_url, str(run), "spam", START, START + timedelta(hours=3), timedelta(hours=1), embeddings=False
    )
    report["overall"]["ngrams"].append(
        {"ngram": "win a prize", "window_share": 0.21, "reference_share": 0.01, "lift": 21.0, "examples": [INJECTED]}
    )
    return report


def _images(page: str) -> list[bytes]:
    return [
        base64.b64decode(data) for data in re.findall(r'<img alt="figure" src="data:image/png;base64,([^"]+)"', page)
    ]


def test_report_over_time_shows_plots_alerts_windows_and_escaped_drivers(over_time, tmp_path):
    windows = over_time["windows"]
    assert [w["messages"] for w in windows][1] == 0 and windows[2]["alerts"], "the fixture lost its shape"
    assert windows[0]["inputs"] and len(over_time["overall"]["ngrams"]) > 1, "the monitor read no texts"
    path = write_monitor_report(over_time, tmp_path / "monitor.html", thresholds=AlertThresholds())
    page = path.read_text(encoding="utf-8")

    images = _images(page)
    assert len(images) == 4  # score PSI, rates, slow evals, inputs
    assert all(image.startswith(b"\x89PNG") for image in images)
    drift_alert = windows[2]["alerts"][0]
    assert drift_alert.startswith("score drift on 'spam'")
    assert html.escape(f"window 3 ({windows[2]['since'].replace('T', ' ')[:19]}): {drift_alert}") in page
    assert "1 window(s) hold no messages: window 2" in page
    assert f"{over_time['overall']['messages']:,} messages in 3 window(s)" in page

    rows = re.findall(r"<tr>(.*?)</tr>", page.split("<h2>Per window</h2>")[1].split("<tbody>")[1].split("</tbody>")[0])
    assert len(rows) == 3
    assert '<td class="num">0</td>' in rows[1] and "- (n=0)" in rows[1]  # the empty window: zero, no figures
    precision = windows[0]["slow_evals"]["queue_precision"]
    assert f"{precision['value']:.3f} [{precision['low']:.3f}-{precision['high']:.3f}] (n={precision['n']})" in rows[0]

    drivers = page.split("What drives the drift")[1]
    assert "<td>win a prize</td>" in drivers and '<td class="num">21.000</td>' in drivers
    assert all(f"<td>{html.escape(g['ngram'])}</td>" in drivers for g in over_time["overall"]["ngrams"])
    assert "<script>" not in page  # the example message is shown as text, never run
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; WIN a prize &amp; call now" in drivers


def test_report_says_what_is_missing_instead_of_crashing(over_time, tmp_path):
    empty = over_time["windows"][1]  # no messages, so no reviews, drift or texts
    assert empty["inputs"] is None and empty["ngrams"] == []
    report = {"model": "spam", "run": over_time["run"], "windows": [empty], "overall": empty}
    page = write_monitor_report(report, tmp_path / "empty.html").read_text(encoding="utf-8")

    assert "<img" not in page  # nothing to plot: no empty axes pretending to be a figure
    assert "No window has scores to compare with the reference" in page
    assert "No window holds messages: no rates to plot." in page
    assert "No reviewer has decided a message of these windows yet" in page
    assert "No input statistics: the windows hold no stored texts" in page
    assert "The report has no n-gram analysis" in page
    assert "No alert in any window or over the whole period." in page


def test_one_window_without_reviews_or_inputs_still_plots_what_it_has(over_time, tmp_path):
    first = over_time["windows"][0]
    unreviewed = {name: {"value": None, "low": None, "high": None, "n": 0} for name in first["slow_evals"]}
    window = {**first, "slow_evals": unreviewed, "alerts": []}
    overall = {**window, "ngrams": []}  # texts were read, and no n-gram rose
    window = {k: v for k, v in window.items() if k != "inputs"}  # a monitor that computes no input drift
    report = {"model": "spam", "run": over_time["run"], "windows": [window], "overall": overall}
    page = write_monitor_report(report, tmp_path / "one.html").read_text(encoding="utf-8")

    assert len(_images(page)) == 2  # score PSI and rates; slow evals and inputs are missing and say so
    assert "No reviewer has decided a message" in page and "No input statistics" in page
    assert "No n-gram&#x27;s share of messages rose against the reference." in page
