"""The moderation service end to end through its HTTP API, on SQLite and (when configured) PostgreSQL.

The runs are the small SMS spam runs of tests/serve/conftest.py: a cascade named "spam" in which every stage and
action occurs, and its small TF-IDF alone named "tfidf". Decisions are compared with `Cascade.decide` on the same
prepared texts; the database is read directly to check what was (and was not) stored.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx2 as httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from finesieve.cli import app as cli_app
from finesieve.data.errors import ConfigError
from finesieve.data.preprocess import prepare
from finesieve.models.base import positive_scores
from finesieve.models.cascade import Cascade
from finesieve.runs import load_run
from finesieve.serve import store
from finesieve.serve.app import create_app
from finesieve.serve.db import Message, ReviewItem
from finesieve.serve.settings import ServiceSettings

PHONE = "07781 482 378"


@pytest.fixture
def make_client(db_url, service_cascade_run, service_tfidf_run):
    """Build a started service (TestClient) with overridden settings; returns (client, keys by name)."""
    clients = []

    def make(**overrides):
        settings = ServiceSettings(
            database_url=db_url, runs={"spam": service_cascade_run, "tfidf": service_tfidf_run}, **overrides
        )
        app = create_app(settings)
        with Session(app.state.engine) as session, session.begin():
            keys = {
                "all": store.create_api_key(session, "all", ["*"]),
                "spam": store.create_api_key(session, "spam-only", ["spam"]),
                "tfidf": store.create_api_key(session, "tfidf-only", ["tfidf"]),
            }
        client = TestClient(app).__enter__()
        clients.append(client)
        return client, keys

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def service(make_client):
    return make_client()


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def db_session(client) -> Session:
    return Session(client.app.state.engine)


def test_batch_decisions_equal_the_cascade_on_the_same_prepared_texts(service, service_cascade_run, sms_unseen):
    client, keys = service
    rows = sms_unseen.head(200)
    body = {"model": "spam", "messages": [{"id": i, "text": t} for i, t in zip(rows["msg_id"], rows["text"])]}
    response = client.post("/v1/moderate", json=body, headers=auth(keys["all"]))
    assert response.status_code == 200, response.text
    results = response.json()["results"]

    run = load_run(service_cascade_run)
    cascade: Cascade = run.scorer
    texts, _ = prepare(list(rows["text"]), run.preprocessing)
    expected = cascade.decide(texts)
    assert [r["id"] for r in results] == list(rows["msg_id"])
    assert [r["action"] for r in results] == list(expected.action)
    assert [r["category"] for r in results] == list(expected.category)
    assert [r["decided_by"] for r in results] == list(expected.decided_by)
    assert set(expected.action) == {"deliver", "review", "block"}  # every action is exercised
    score = positive_scores(expected.proba, cascade.classes_, cascade.positive, cascade.multilabel_)
    np.testing.assert_allclose([r["score"] for r in results], score)
    np.testing.assert_allclose([r["category_scores"]["spam"] for r in results], expected.proba[:, 1])
    for r, model_score in zip(results, expected.stage_scores["model"]):
        assert ("model" in r["stage_scores"]) == (not np.isnan(model_score))
    assert all(not r["duplicate"] and r["failure"] is None for r in results)
    assert results[0]["model_version"].startswith("cascade@") and len(results[0]["model_version"]) == 8 + 64

    with db_session(client) as session:
        assert store.count(session, Message) == 200
        items = store.review_items(session)
        flagged = {r["id"] for r in results if r["action"] != "deliver"}
        assert {i.message_id for i in items if i.reason == "flagged"} == flagged
        audited = {i.message_id for i in items if i.reason == "audit"}
        assert audited and not audited & flagged and len(audited) < 0.1 * (200 - len(flagged))


def test_single_message_form_and_default_model(service):
    client, keys = service
    response = client.post("/v1/moderate", json={"text": "WINNER!! Claim your prize now"}, headers=auth(keys["all"]))
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["model"] == "spam" and len(payload["results"]) == 1  # the first run is the default
    (result,) = payload["results"]
    assert result["action"] == "block" and result["decided_by"] == "rules" and "prize" in result["rules_fired"]
    assert len(result["id"]) == 36  # a generated uuid4
    stored = client.get(f"/v1/messages/{result['id']}", headers=auth(keys["all"])).json()
    assert stored["action"] == "block" and stored["text_stored"] and stored["text_length"] > 0
    assert "text" not in stored


def test_a_single_scorer_run_is_served_at_its_threshold(service, service_tfidf_run, sms_unseen):
    client, keys = service
    texts = list(sms_unseen["text"].head(50))
    response = client.post(
        "/v1/moderate", json={"model": "tfidf", "messages": [{"text": t} for t in texts]}, headers=auth(keys["tfidf"])
    )
    results = response.json()["results"]
    run = load_run(service_tfidf_run)
    spam = run.scorer.predict_proba(prepare(texts, run.preprocessing)[0])[:, 1]
    assert [r["action"] for r in results] == ["review" if s >= 0.3 else "deliver" for s in spam]
    assert {r["decided_by"] for r in results} == {"model"}


def test_a_retry_with_the_same_id_returns_the_stored_decision(service):
    client, keys = service
    body = {"messages": [{"id": "a-1", "text": "Free entry to win cash, txt WIN now"}, {"id": "a-2", "text": "ok"}]}
    first = client.post("/v1/moderate", json=body, headers=auth(keys["all"])).json()["results"]
    again = client.post("/v1/moderate", json=body, headers=auth(keys["all"])).json()["results"]
    assert [r["duplicate"] for r in first] == [False, False] and [r["duplicate"] for r in again] == [True, True]
    drop = ("duplicate",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in again] == [
        {k: v for k, v in r.items() if k not in drop} for r in first
    ]
    # Same id with another text still answers the stored decision: the id is the idempotency key.
    other = client.post("/v1/moderate", json={"id": "a-2", "text": "changed"}, headers=auth(keys["all"]))
    assert other.json()["results"][0]["duplicate"] is True
    with db_session(client) as session:
        assert store.count(session, Message) == 2
        assert len(store.review_items(session, "a-1")) == len(
            [1 for r in first if r["id"] == "a-1" and r["action"] != "deliver"]
        )
    dup = client.post(
        "/v1/moderate",
        json={"messages": [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}]},
        headers=auth(keys["all"]),
    )
    assert dup.status_code == 422 and "body.messages.1.id" in dup.json()["message"]


def test_openai_moderation_shape(service):
    client, keys = service
    response = client.post(
        "/v1/moderations",
        json={"input": ["WINNER!! Claim your prize now", "see you at lunch"], "model": "spam"},
        headers=auth(keys["all"]),
    )
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["id"].startswith("modr-") and payload["model"] == "spam"
    spam, lunch = payload["results"]
    assert spam == {"flagged": True, "categories": {"spam": True}, "category_scores": spam["category_scores"]}
    assert lunch["flagged"] is False and lunch["categories"] == {"spam": False}
    assert 0.0 <= lunch["category_scores"]["spam"] < spam["category_scores"]["spam"] <= 1.0
    single = client.post("/v1/moderations", json={"input": "hello there"}, headers=auth(keys["all"]))
    assert len(single.json()["results"]) == 1
    with db_session(client) as session:
        assert store.count(session, Message) == 3  # stored like any other message


def test_only_redacted_text_is_stored(service, db_url):
    client, keys = service
    raw = f"call me on {PHONE} or mail bob@example.com to claim"
    response = client.post("/v1/moderate", json={"id": "pii", "text": raw}, headers=auth(keys["all"]))
    assert response.status_code == 200
    with db_session(client) as session:
        stored = session.scalar(select(Message).where(Message.id == "pii"))
        assert "<PHONE>" in stored.text and "<EMAIL>" in stored.text
        dumped = " ".join(
            str(row)
            for table in ("messages", "review_items", "audit_log")
            for row in session.execute(text(f"SELECT * FROM {table}"))
        )
    assert PHONE not in dumped and "bob@example.com" not in dumped
    # No fragment of the number survives either; a fragment inside a hex digest (a key hash, a run
    # id) is not one, which is why the lookarounds exclude hex neighbours.
    for group in PHONE.split():
        assert not re.search(rf"(?<![0-9a-fA-F]){group}(?![0-9a-fA-F])", dumped), group
    if db_url.startswith("sqlite:///"):  # the file and its write-ahead log, byte for byte
        path = db_url.removeprefix("sqlite:///")
        for file in (path, path + "-wal"):
            if os.path.exists(file):
                data = open(file, "rb").read()
                assert PHONE.encode() not in data and b"bob@example.com" not in data


def test_auth_missing_wrong_and_out_of_scope_keys(service):
    client, keys = service
    body = {"model": "spam", "text": "hello"}
    missing = client.post("/v1/moderate", json=body)
    assert missing.status_code == 401 and "Authorization" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/moderate", json=body, headers={"Authorization": "Basic abc"}).status_code == 401
    wrong = client.post("/v1/moderate", json=body, headers=auth("fsk_not-a-key"))
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.json()["detail"]
    scoped = client.post("/v1/moderate", json=body, headers=auth(keys["tfidf"]))
    assert scoped.status_code == 403 and "'tfidf-only' may not use model 'spam'" in scoped.json()["detail"]
    assert client.post("/v1/moderate", json=body, headers=auth(keys["spam"])).status_code == 200
    for path in ("/readyz", "/metrics", "/v1/messages/x"):
        assert client.get(path).status_code == 401, path
    assert client.get("/healthz").status_code == 200
    # Another scope's stored message is not shown.
    mid = client.post("/v1/moderate", json={**body, "id": "s-1"}, headers=auth(keys["spam"])).json()
    assert mid["results"][0]["id"] == "s-1"
    assert client.get("/v1/messages/s-1", headers=auth(keys["tfidf"])).status_code == 404
    assert client.get("/v1/messages/s-1", headers=auth(keys["spam"])).status_code == 200
    with db_session(client) as session, session.begin():
        store.revoke_api_key(session, "spam-only")
    client.app.state.callers.ttl_s, client.app.state.callers._found = 0.0, {}  # as after key_cache_s passed
    assert client.post("/v1/moderate", json=body, headers=auth(keys["spam"])).status_code == 401


def test_a_revoked_key_is_refused_once_its_cached_lookup_expires(make_client):
    client, keys = make_client(key_cache_s=0.5)
    body = {"model": "spam", "text": "hello"}
    # The cached entry is made during this request, so it expires no earlier than 0.5 s after `asked_at` (measuring
    # from the revocation instead failed on a loaded machine, where this request itself took 0.4 s).
    asked_at = time.monotonic()
    assert client.post("/v1/moderate", json=body, headers=auth(keys["spam"])).status_code == 200
    with db_session(client) as session, session.begin():
        store.revoke_api_key(session, "spam-only")
    revoked_at = time.monotonic()
    # Within key_cache_s the key found a moment ago is still trusted (the documented price of not querying the
    # database on every request); after it, the database is asked again and the key is refused.
    within = client.post("/v1/moderate", json=body, headers=auth(keys["spam"])).status_code
    assert within == 200 or time.monotonic() - asked_at >= 0.5
    time.sleep(max(0.0, 0.55 - (time.monotonic() - revoked_at)))
    refused = client.post("/v1/moderate", json=body, headers=auth(keys["spam"]))
    assert refused.status_code == 401 and "unknown or revoked" in refused.json()["detail"]


def test_limits_and_validation_errors_name_the_field(make_client):
    client, keys = make_client(max_request_bytes=2_000, max_batch=3, max_text_chars=500)
    headers = auth(keys["all"])
    big = client.post("/v1/moderate", json={"text": "x" * 3_000}, headers=headers)
    assert big.status_code == 413 and "at most 2,000" in big.json()["detail"]

    def chunks():  # no Content-Length: the limit holds while the body streams in
        yield b'{"text": "'
        for _ in range(10):
            yield b"y" * 300
        yield b'"}'

    streamed = client.post("/v1/moderate", content=chunks(), headers={**headers, "Content-Type": "application/json"})
    assert streamed.status_code == 413

    cases = {
        "body.messages.1.text": {"messages": [{"text": "a"}, {"id": "b"}]},
        "body.messages": {"messages": [{"text": "a"}] * 4},
        "body.messages.0.text": {"messages": [{"text": "z" * 600}]},
        "body.model": {"model": "nope", "text": "a"},
        "body.text": {"text": "z" * 600},
        "body.input.1": {"input": ["a", "z" * 600]},
        "body.txt": {"txt": "a"},
        "body.input": {"input": 5},
    }
    for field, body in cases.items():
        path = "/v1/moderations" if "input" in body else "/v1/moderate"
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 422, (field, response.text)
        assert field in response.json()["message"], (field, response.json())
    assert client.post("/v1/moderate", json={"text": "a"}, headers=headers).status_code == 200


def test_a_failing_stage_sends_its_message_to_review_with_the_reason(service, monkeypatch):
    client, keys = service
    decide = Cascade.decide

    def poisoned(self, texts):
        if any("POISON" in t for t in texts):
            raise RuntimeError("the model's tokenizer crashed")
        return decide(self, texts)

    monkeypatch.setattr(Cascade, "decide", poisoned)
    body = {
        "messages": [
            {"id": "p1", "text": "see you soon"},
            {"id": "p2", "text": "POISON pill"},
            {"id": "p3", "text": "ok"},
        ]
    }
    results = client.post("/v1/moderate", json=body, headers=auth(keys["all"])).json()["results"]
    ok1, bad, ok3 = results
    assert bad["action"] == "review" and bad["decided_by"] == "failure" and bad["score"] is None
    assert bad["failure"] == "RuntimeError: the model's tokenizer crashed"
    assert ok1["decided_by"] != "failure" and ok3["decided_by"] != "failure"  # retried alone, decided
    with db_session(client) as session:
        (item,) = store.review_items(session, "p2")
        assert item.reason == "failure" and item.priority > 1.0
    metrics = client.get("/metrics", headers=auth(keys["all"])).text
    assert 'finesieve_model_errors_total{model="spam"} 1.0' in metrics


def test_a_model_timeout_sends_the_batch_to_review(make_client, monkeypatch):
    client, keys = make_client(model_timeout_s=0.2, failure_action="block")
    decide = Cascade.decide
    monkeypatch.setattr(Cascade, "decide", lambda self, texts: (time.sleep(1.0), decide(self, texts))[1])
    results = client.post(
        "/v1/moderate", json={"messages": [{"text": "a"}, {"text": "b"}]}, headers=auth(keys["all"])
    ).json()["results"]
    assert [r["action"] for r in results] == ["block", "block"]  # failure_action; never deliver
    assert all(r["failure"] == "timeout: the model did not answer within 0.2 s" for r in results)
    with db_session(client) as session:
        assert {i.reason for i in store.review_items(session)} == {"failure"}
        assert store.count(session, ReviewItem) == 2


def test_health_readiness_and_metrics(service):
    client, keys = service
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz", headers=auth(keys["all"]))
    assert ready.status_code == 200 and ready.json()["models"] == ["spam", "tfidf"]
    client.post("/v1/moderate", json={"text": "WINNER!! Claim your prize now"}, headers=auth(keys["all"]))
    metrics = client.get("/metrics", headers=auth(keys["all"]))
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'finesieve_decisions_total{action="block",model="spam"} 1.0' in metrics.text
    assert 'finesieve_requests_total{method="POST",route="/v1/moderate",status="200"} 1.0' in metrics.text
    assert 'finesieve_request_seconds_count{route="/readyz"} 1.0' in metrics.text
    assert 'finesieve_deciding_stage_total{model="spam",stage="rules"} 1.0' in metrics.text  # the prize rule blocks
    assert 'finesieve_stage_seconds_count{model="spam",stage="rules"} 1.0' in metrics.text
    client.app.state.engine.dispose()
    client.app.state.moderator.engine = _broken_engine()
    down = client.get("/readyz", headers=auth(keys["all"]))
    # the key lookup uses app.state.engine (still fine); the readiness probe sees the broken one
    assert down.status_code == 503 and "database unreachable" in down.json()["problems"][0]


def _broken_engine():
    from sqlalchemy import create_engine

    return create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})


def test_a_run_that_cannot_be_served_is_refused_naming_the_file(service_cascade_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(service_cascade_run, broken)
    shutil.rmtree(broken / "model")
    with pytest.raises(ConfigError, match=r"model 'bad' .*broken.*model"):
        create_app(
            ServiceSettings(
                database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", runs={"ok": service_cascade_run, "bad": broken}
            )
        )
    (tmp_path / "bad_manifest").mkdir()
    (tmp_path / "bad_manifest" / "manifest.json").write_text('{"kind": "tfidf"}')
    with pytest.raises(ConfigError, match=r"bad_manifest.*manifest\.json"):
        create_app(
            ServiceSettings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", runs={"m": tmp_path / "bad_manifest"})
        )


# --- the real command: `finesieve serve` in a subprocess, with uvicorn -------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_refuses_a_public_host_without_keys(service_cascade_run, tmp_path):
    db = f"sqlite:///{tmp_path / 'svc.db'}"
    result = CliRunner().invoke(cli_app, ["serve", str(service_cascade_run), "--db", db, "--host", "0.0.0.0"])
    assert (
        result.exit_code == 2
        and "refusing to listen on 0.0.0.0" in result.output
        and "serve-key create" in result.output
    )


def test_finesieve_serve_answers_over_http(service_cascade_run, tmp_path):
    db = f"sqlite:///{tmp_path / 'svc.db'}"
    created = CliRunner().invoke(cli_app, ["serve-key", "create", "ci", "--models", "spam", "--db", db])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    listed = CliRunner().invoke(cli_app, ["serve-key", "list", "--db", db])
    assert listed.exit_code == 0 and "ci\tmodels=spam" in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout  # only the hash is stored; the key is never shown again
    port = free_port()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "finesieve.cli",
            "serve",
            str(service_cascade_run),
            "--name",
            "spam",
            "--db",
            db,
            "--port",
            str(port),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert child.poll() is None, child.communicate()[0].decode()[-3000:]
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with httpx.Client(base_url=base, headers=auth(key), timeout=10) as http:
            assert http.get("/readyz").status_code == 200
            body = {"messages": [{"id": "c1", "text": "WINNER!! Claim your prize now"}, {"id": "c2", "text": "lunch?"}]}
            results = http.post("/v1/moderate", json=body).json()["results"]
            assert [r["action"] for r in results] == ["block", "deliver"]
            assert http.post("/v1/moderate", json=body).json()["results"][0]["duplicate"] is True
            assert httpx.post(f"{base}/v1/moderate", json=body).status_code == 401
            revoked = CliRunner().invoke(cli_app, ["serve-key", "revoke", "ci", "--db", db])
            assert revoked.exit_code == 0 and "revoked" in revoked.stdout
            time.sleep(5.2)  # the server trusts a found key for key_cache_s (5 s by default), then asks again
            assert http.post("/v1/moderate", json=body).status_code == 401
        again = CliRunner().invoke(cli_app, ["serve-key", "revoke", "ci", "--db", db])
        assert again.exit_code != 0 and "no active API key named 'ci'" in again.output
    finally:
        child.terminate()
        output = child.communicate(timeout=30)[0].decode()
    # uvicorn shuts down cleanly on SIGTERM, then re-raises the signal: the process ends "killed by SIGTERM".
    assert child.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output[-3000:]


def test_settings_read_the_environment_and_check_the_default_model(monkeypatch, tmp_path):
    monkeypatch.setenv("FINESIEVE_RUNS", '{"spam": "runs/cascade", "tfidf": "runs/tfidf"}')
    monkeypatch.setenv("FINESIEVE_AUDIT_RATE", "0.1")
    monkeypatch.setenv("FINESIEVE_DEFAULT_MODEL", "tfidf")
    settings = ServiceSettings()
    assert settings.model_names == ["spam", "tfidf"] and settings.audit_rate == 0.1
    assert settings.fallback_model == "tfidf" and settings.database_url == "sqlite:///./finesieve.db"
    monkeypatch.setenv("FINESIEVE_DEFAULT_MODEL", "nope")
    with pytest.raises(ValueError, match="default_model 'nope' is not one of the served models"):
        ServiceSettings()
    with pytest.raises(ValueError, match="audit_rate"):
        ServiceSettings(audit_rate=1.5)


def test_the_openapi_document_needs_a_key_and_the_cdn_docs_pages_are_off(service):
    client, keys = service
    assert client.get("/openapi.json").status_code == 401
    document = client.get("/openapi.json", headers=auth(keys["spam"]))
    assert document.status_code == 200 and "/v1/moderate" in document.json()["paths"]
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404


def test_an_ensemble_run_is_served_like_any_run(tmp_path, service_stages, sms_unseen, sms_csv):
    """A stacked ensemble (evals' 'ensemble' run kind) behind the API: the same decisions as the run itself."""
    from finesieve.data.load import load_dataset
    from finesieve.data.spec import ColumnSpec
    from finesieve.models.ensemble import StackedEnsemble
    from finesieve.runs import save_run

    model, prefilter, _ = service_stages
    held = load_dataset(sms_csv, ColumnSpec(text_col="text", label_cols=("label",))).subset(slice(3000, 3600))
    ensemble = StackedEnsemble({"big": model, "small": prefilter}).fit(held.texts, held.labels)
    path = save_run(
        tmp_path / "ensemble",
        ensemble,
        kind="ensemble",
        task={"classes": ["ham", "spam"], "positive": ["spam"], "threshold": 0.5},
        data={},
        metrics={},
    )
    app = create_app(ServiceSettings(database_url=f"sqlite:///{tmp_path / 's.db'}", runs={"ens": path}))
    with Session(app.state.engine) as session, session.begin():
        key = store.create_api_key(session, "ens", ["ens"])
    texts = list(sms_unseen["text"].head(60))
    with TestClient(app) as client:
        response = client.post(
            "/v1/moderate", json={"model": "ens", "messages": [{"text": t} for t in texts]}, headers=auth(key)
        )
    assert response.status_code == 200, response.text
    run = load_run(path)
    spam = run.scorer.predict_proba(prepare(texts, run.preprocessing)[0])[:, 1]
    results = response.json()["results"]
    np.testing.assert_allclose([r["score"] for r in results], spam, atol=1e-9)
    assert [r["action"] for r in results] == ["review" if s >= 0.5 else "deliver" for s in spam]
