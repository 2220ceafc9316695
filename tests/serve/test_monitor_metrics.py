"""The monitor's figures on the running service's /metrics (finesieve_monitor_*), after real reviewed SMS traffic.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q -p no:randomly tests/serve/test_monitor_metrics.py

The "spam" model is the SMS cascade of conftest.py saved with reference statistics from 600 unseen messages; the
"tfidf" run has none, so the monitor skips it. A reviewer decides every queued item with the message's true label,
so the expected queue precision is counted from the labels here. The monitor runs every 0.2 s over the last hour.
"""

from __future__ import annotations

import logging
import math
import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from finesieve.manifest import reference_stats
from finesieve.monitor.slow_evals import wilson
from finesieve.runs import run_manifest, save_run
from finesieve.serve import monitor_task, queue, store
from finesieve.serve.app import create_app
from finesieve.serve.settings import ServiceSettings

INTERVAL_S = 0.2
WAIT_S = 30.0  # the most a test waits for the monitor to catch up (a tick takes well under a second)


@pytest.fixture(scope="module")
def monitored_run(tmp_path_factory, service_cascade, sms_unseen):
    validation = sms_unseen.iloc[400:1000]
    texts = validation["text"].tolist()
    decisions = service_cascade.decide(texts)
    reference = reference_stats(decisions.proba, service_cascade.classes_, texts, decisions.flagged)
    return save_run(
        tmp_path_factory.mktemp("monitored") / "spam",
        service_cascade,
        kind="cascade",
        task={"classes": ["ham", "spam"], "multilabel": False, "positive": ["spam"], "threshold": 0.5},
        data={},
        metrics={},
        reference=reference,
    )


@pytest.fixture
def start(db_url, monitored_run, service_tfidf_run):
    """Start a service (TestClient) with the monitor every INTERVAL_S; returns (client, headers with a key)."""
    clients = []

    def started(**overrides):
        settings = ServiceSettings(
            database_url=db_url,
            runs={"spam": monitored_run, "tfidf": service_tfidf_run},
            **{"monitor_interval_s": INTERVAL_S, **overrides},
        )
        app = create_app(settings)
        with Session(app.state.engine) as session, session.begin():
            key = store.create_api_key(session, "all", ["*"])
        client = TestClient(app).__enter__()
        clients.append(client)
        return client, {"Authorization": f"Bearer {key}"}

    yield started
    for client in clients:
        client.__exit__(None, None, None)


def samples(client, headers) -> dict[tuple[str, tuple], float]:
    """Every sample on /metrics: (name, sorted label pairs) -> value."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def monitor_value(metrics: dict, name: str, **labels) -> float | None:
    return metrics.get((f"finesieve_monitor_{name}", tuple(sorted({"model": "spam", **labels}.items()))))


def wait_for(client, headers, ready) -> dict:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        metrics = samples(client, headers)
        if ready(metrics):
            return metrics
        time.sleep(INTERVAL_S / 2)
    raise AssertionError(f"the monitor's gauges did not show the traffic within {WAIT_S} s")


def moderate(client, headers, rows, prefix: str = "") -> list[dict]:
    results = []
    for start in range(0, len(rows), 100):
        chunk = rows.iloc[start : start + 100]
        body = {
            "model": "spam",
            "messages": [{"id": prefix + i, "text": t} for i, t in zip(chunk["msg_id"], chunk["text"])],
        }
        response = client.post("/v1/moderate", json=body, headers=headers)
        assert response.status_code == 200, response.text
        results += response.json()["results"]
    return results


def review_everything(client, labels: dict[str, str]) -> None:
    with Session(client.app.state.engine) as session, session.begin():
        while (item := queue.lease_next(session, "rita", 600)) is not None:
            violation = labels[item.message_id] == "spam"
            queue.decide(session, item.id, "rita", violation, "spam" if violation else None, None)


def test_metrics_show_the_monitors_figures_after_reviewed_traffic(start, sms_unseen, monitored_run, caplog):
    caplog.set_level(logging.INFO, logger="finesieve.serve.monitor")
    client, headers = start(audit_rate=0.2)
    rows = sms_unseen.iloc[:300]
    labels = dict(zip(rows["msg_id"], rows["label"]))
    results = moderate(client, headers, rows)
    review_everything(client, labels)
    flagged = [r for r in results if r["action"] != "deliver"]
    true_flags = sum(labels[r["id"]] == "spam" for r in flagged)

    def reviews_seen(metrics: dict) -> bool:
        n = monitor_value(metrics, "messages")
        return n == len(rows) and monitor_value(metrics, "queue_precision") == true_flags / len(flagged)

    metrics = wait_for(client, headers, reviews_seen)

    assert monitor_value(metrics, "flag_rate") == pytest.approx(len(flagged) / len(rows))
    reference_rate = run_manifest(monitored_run).reference.flag_rate
    assert monitor_value(metrics, "reference_flag_rate") == reference_rate and 0 < reference_rate < 0.5
    interval = wilson(true_flags, len(flagged))
    assert monitor_value(metrics, "queue_precision_low") == interval.low < interval.value
    assert monitor_value(metrics, "queue_precision_high") == interval.high
    recall = [monitor_value(metrics, "recall" + suffix) for suffix in ("_low", "", "_high")]
    assert all(math.isfinite(v) for v in recall) and recall[0] <= recall[1] <= recall[2] and recall[1] > 0.5
    overturn = monitor_value(metrics, "overturn_rate")
    assert 0 <= overturn < 0.5  # reviewers agree with most of the cascade's flags and deliveries
    assert 0 <= monitor_value(metrics, "score_psi", category="spam") < 0.25  # unseen messages like validation's
    assert monitor_value(metrics, "alerting") == 0
    assert time.time() - monitor_value(metrics, "updated_timestamp_seconds") < WAIT_S
    # the run without reference statistics: no figures, and one log line however many ticks have run
    assert not [key for key in metrics if key[0].startswith("finesieve_monitor_") and ("model", "tfidf") in key[1]]
    skipped = [r for r in caplog.records if r.getMessage() == "monitor_skipped"]
    assert len(skipped) == 1 and skipped[0].fields["model"] == "tfidf"
    assert monitor_value(metrics, "errors_total") in (None, 0.0)


def test_a_window_of_spam_only_sets_the_alerting_gauge(start, sms_unseen, caplog):
    caplog.set_level(logging.INFO, logger="finesieve.serve.monitor")
    client, headers = start()
    spam = sms_unseen[sms_unseen["label"] == "spam"]
    moderate(client, headers, spam)

    metrics = wait_for(client, headers, lambda m: monitor_value(m, "messages") == len(spam))

    assert monitor_value(metrics, "alerting") == 1
    assert monitor_value(metrics, "score_psi", category="spam") > 0.25
    assert math.isnan(monitor_value(metrics, "queue_precision"))  # nobody has reviewed: unmeasured, not 0
    (alert,) = [r for r in caplog.records if r.getMessage() == "monitor_alert"]
    assert alert.fields["alerts"][0].startswith("score drift on 'spam'")


def test_a_failing_monitor_is_counted_and_logged_and_the_service_keeps_answering(
    start, sms_unseen, monkeypatch, caplog
):
    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("database gone")

    monkeypatch.setattr(monitor_task, "monitor_report", broken)
    client, headers = start()
    metrics = wait_for(client, headers, lambda m: (monitor_value(m, "errors_total") or 0) >= 2)

    assert monitor_value(metrics, "messages") is None  # no figure was ever set
    assert len(moderate(client, headers, sms_unseen.iloc[:10])) == 10
    assert client.get("/healthz").status_code == 200
    assert any(r.getMessage() == "monitor_failed" and r.fields["model"] == "spam" for r in caplog.records)
    client.__exit__(None, None, None)  # shutdown stops the task: no report is asked for after it
    stopped_at = len(calls)
    time.sleep(3 * INTERVAL_S)
    assert len(calls) == stopped_at


def test_interval_zero_turns_the_monitor_off(start, sms_unseen, monkeypatch):
    calls = []
    monkeypatch.setattr(monitor_task, "monitor_report", lambda *a, **k: calls.append(a))
    client, headers = start(monitor_interval_s=0)
    moderate(client, headers, sms_unseen.iloc[:10])
    time.sleep(3 * INTERVAL_S)
    assert not [key for key in samples(client, headers) if key[0].startswith("finesieve_monitor_")]
    assert calls == []
