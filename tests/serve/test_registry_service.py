"""The service on registry references: it serves registry:spam@champion, switches runs on an admin's reload (or its
registry poll) under concurrent traffic without a failed request, rolls back, and scores every message with a shadow
that would block everything without that ever changing an answer. Plus the migration that adds shadow_scores, and
`shadow_comparison` on hand-made rows with reviews. SQLite always, PostgreSQL with FINESIEVE_TEST_PG_URL.

The service runs in uvicorn on a loopback port in a thread (as tests/client does), with the small SMS runs of
tests/serve/conftest.py; the registry is a SQLite MLflow store in the test's folder.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from finesieve import registry
from finesieve.data.errors import ConfigError
from finesieve.data.preprocess import prepare
from finesieve.manifest import reference_stats
from finesieve.models.cascade import Cascade, CascadeThresholds
from finesieve.monitor.report import write_monitor_report
from finesieve.runs import save_run
from finesieve.serve import accounts
from finesieve.serve.app import create_app
from finesieve.serve.db import AuditEntry, Message, ReviewItem, connect, create_db_engine, upgrade
from finesieve.serve.moderation import MessageIn, Moderator, load_models, model_version
from finesieve.serve.monitoring import monitor, over_time
from finesieve.serve.settings import ServiceSettings
from finesieve.serve.shadow import shadow_comparison

TASK = {"classes": ["ham", "spam"], "multilabel": False, "positive": ["spam"]}
PASSWORD = "correct horse battery staple"
STARTUP_S = 60.0


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    """argon2id with small costs: the same algorithm and checks, without 64 MiB and 3 passes per login."""
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(scope="module")
def run_v2(tmp_path_factory, service_stages) -> Path:
    """The larger TF-IDF of the SMS fixtures at threshold 0.5: another real run, with decisions of its own."""
    return save_run(
        tmp_path_factory.mktemp("runs") / "tfidf_v2",
        service_stages[0],
        kind="tfidf",
        task={**TASK, "threshold": 0.5},
        data={},
        metrics={},
    )


@pytest.fixture(scope="module")
def block_all_run(tmp_path_factory, service_stages) -> Path:
    """A cascade that blocks every message (review and block thresholds at 0): the shadow that must never act."""
    cascade = Cascade(
        service_stages[1], positive=["spam"], thresholds=CascadeThresholds(review=0.0, block={"spam": 0.0})
    )
    return save_run(
        tmp_path_factory.mktemp("runs") / "block_all",
        cascade,
        kind="cascade",
        task={**TASK, "threshold": 0.0},
        data={},
        metrics={},
    )


@pytest.fixture
def spam_registry(tmp_path, service_tfidf_run, run_v2, block_all_run) -> str:
    """spam/1 (the small TF-IDF) is the champion, spam/2 a second TF-IDF, spam/3 the block-everything challenger."""
    uri = f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}"
    registry.register(service_tfidf_run, "spam", uri=uri)
    registry.register(run_v2, "spam", uri=uri)
    registry.register(block_all_run, "spam", alias="challenger", uri=uri)
    registry.promote("spam", 1, uri=uri)
    return uri


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yields its URL, stops it afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start: see the log above"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_S)
        sock.close()


def admin_client(url: str, db_url: str) -> httpx.Client:
    """An httpx client logged in as an admin, sending the session's CSRF token on every request."""
    accounts.add_user(db_url, "root", PASSWORD, "admin")
    client = httpx.Client(base_url=url, timeout=60)
    response = client.post("/v1/auth/login", json={"username": "root", "password": PASSWORD})
    assert response.status_code == 200, response.text
    client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
    return client


def moderate(client: httpx.Client, ids_texts: list[tuple[str, str]]) -> list[dict]:
    body = {"model": "spam", "messages": [{"id": i, "text": t} for i, t in ids_texts]}
    response = client.post("/v1/moderate", json=body)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def decided_alone(run: Path, texts: list[str]) -> list[str]:
    """The actions `run` takes on `texts` on its own, outside the service: what the live answers must equal."""
    served = load_models({"spam": run})["spam"]
    prepared, _ = prepare(texts, served.run.preprocessing, redactor=served.redactor)
    return [str(a) for a in served.decide(prepared).action]


def test_registry_champion_is_served_switched_under_load_rolled_back_and_shadowed(
    db_url, spam_registry, service_tfidf_run, run_v2, block_all_run, sms_unseen, service_stages, tmp_path
):
    settings = ServiceSettings(
        database_url=db_url,
        runs={"spam": "registry:spam@champion"},
        shadow={"spam": "registry:spam@challenger"},
        registry_uri=spam_registry,
        require_auth=False,
        audit_rate=0.0,
        batch_wait_ms=1.0,
    )
    v1, v2, blocker = model_version(service_tfidf_run), model_version(run_v2), model_version(block_all_run)
    texts = list(sms_unseen["text"][:300])
    app = create_app(settings)
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        # 1. registry:spam@champion resolved at start-up: version 1 decides, as it does alone.
        first = moderate(client, [(f"a{i}", t) for i, t in enumerate(texts[:60])])
        assert {r["model_version"] for r in first} == {v1}
        assert [r["action"] for r in first] == decided_alone(service_tfidf_run, texts[:60])
        assert 0 < sum(r["action"] == "deliver" for r in first) < 60  # the shadow below would block all of them

        # 2. the shadow (spam/3, blocks everything) scored every message, stored beside the live decision, unused.
        app.state.moderator.shadow_scorer.wait_idle()
        with Session(app.state.engine) as session:
            rows = session.execute(select(Message.action, Message.shadow_scores).where(Message.id.like("a%"))).all()
            queued = session.scalar(select(ReviewItem).where(ReviewItem.message_id.like("a%")).limit(1))
            n_queued = len(session.scalars(select(ReviewItem.id)).all())
        assert len(rows) == 60 and all(s is not None and s["version"] == blocker for _, s in rows)
        assert all(s["action"] == "block" for _, s in rows)
        scored = app.state.metrics.registry.get_sample_value("finesieve_shadow_scored_total", {"model": "spam"})
        assert scored == 60 and app.state.moderator.shadow_scorer.failures["spam"] == 0
        assert sorted(a for a, _ in rows) == sorted(r["action"] for r in first)  # stored live actions unchanged
        assert n_queued == sum(r["action"] != "deliver" for r in first)  # only live flags reach the queue
        assert queued is None or queued.reason == "flagged"
        comparison = shadow_comparison(db_url, "spam")
        assert comparison["messages"] == 60 and comparison["flag_rate"]["shadow"] == 1.0
        assert comparison["agreement"] == pytest.approx(comparison["flag_rate"]["live"])  # agree exactly on flags
        # ... and `finesieve monitor` over the database reports it beside the live model's figures.
        scorer = service_stages[1]  # the champion's scorer, saved again with reference statistics to monitor against
        reference = reference_stats(
            scorer.predict_proba(texts[100:]), list(scorer.classes_), texts[100:], train_texts=texts[100:]
        )
        task = {**TASK, "threshold": 0.3}
        monitored = save_run(
            tmp_path / "monitored", scorer, kind="tfidf", task=task, data={}, metrics={}, reference=reference
        )
        report = monitor(monitored, database_url=db_url, model="spam", embeddings=False)
        assert report["shadow"] == comparison and report["messages"] == 60
        page = write_monitor_report(over_time(report), tmp_path / "monitor.html").read_text()
        assert "Shadow model vs live" in page and blocker in page

        # 3. the hot switch: promote spam/2, an admin reloads while four clients send requests; none fails.
        admin = admin_client(url, db_url)
        assert client.post("/v1/admin/models/spam/reload").status_code == 401  # not logged in
        assert admin.post("/v1/admin/models/nope/reload").status_code == 404
        registry.promote("spam", 2, uri=spam_registry)
        answers: list[tuple[float, dict]] = []
        failures: list[str] = []
        stop = threading.Event()

        def traffic(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as own:
                for n in range(10_000):
                    if stop.is_set():
                        return
                    text_ = texts[(worker * 37 + n) % len(texts)]
                    try:
                        response = own.post(
                            "/v1/moderate",
                            json={"model": "spam", "messages": [{"id": f"b{worker}-{n}", "text": text_}]},
                        )
                    except httpx.HTTPError as err:
                        failures.append(repr(err))
                        continue
                    if response.status_code != 200:
                        failures.append(response.text)
                    else:
                        answers.append((time.monotonic(), response.json()["results"][0]))

        threads = [threading.Thread(target=traffic, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        reload = admin.post("/v1/admin/models/spam/reload")
        switched_at = time.monotonic()
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(60)
        assert reload.status_code == 200, reload.text
        assert reload.json()["previous_version"] == v1 and reload.json()["version"] == v2 and reload.json()["changed"]
        assert failures == [] and len(answers) > 20
        assert {a["model_version"] for _, a in answers} == {v1, v2}  # both served, nothing else
        after = [a for t, a in answers if t > switched_at + 0.05]
        assert after and all(a["model_version"] == v2 for a in after)
        with Session(app.state.engine) as session:  # each stored row names the run that decided it
            stored = dict(session.execute(select(Message.id, Message.model_version).where(Message.id.like("b%"))).all())
        assert all(stored[a["id"]] == a["model_version"] for _, a in answers)
        second = moderate(client, [(f"c{i}", t) for i, t in enumerate(texts[:60])])
        assert [r["action"] for r in second] == decided_alone(run_v2, texts[:60])

        # 4. rollback: champion back to spam/1, reloaded, served again.
        assert registry.rollback("spam", uri=spam_registry).version == 1
        back = admin.post("/v1/admin/models/spam/reload")
        assert back.status_code == 200 and back.json()["version"] == v1
        third = moderate(client, [(f"d{i}", t) for i, t in enumerate(texts[:60])])
        assert {r["model_version"] for r in third} == {v1}
        assert [r["action"] for r in third] == decided_alone(service_tfidf_run, texts[:60])
        unchanged = admin.post("/v1/admin/models/spam/reload")
        assert unchanged.status_code == 200 and unchanged.json()["changed"] is False
        admin.close()
    with Session(connect(db_url)) as session:  # the switches are in the audit log, with who made them
        reloads = session.execute(
            select(AuditEntry.actor, AuditEntry.details).where(AuditEntry.action == "reload")
        ).all()
    assert [(actor, d["version"], d["changed"]) for actor, d in reloads] == [
        ("root", v2, True),
        ("root", v1, True),
        ("root", v1, False),
    ]


def test_a_run_that_cannot_be_served_is_refused_and_the_old_one_keeps_serving(
    tmp_path, spam_registry, service_tfidf_run, run_v2
):
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp_path / 'svc.db'}",
        runs={"spam": "registry:spam@champion"},
        registry_uri=spam_registry,
        require_auth=False,
    )
    app = create_app(settings)
    registry.promote("spam", 2, uri=spam_registry)
    model_file = next(p for p in (run_v2 / "model").rglob("*") if p.is_file())
    original = model_file.read_bytes()
    accounts.add_user(settings.database_url, "root", PASSWORD, "admin")
    try:
        model_file.write_bytes(original + b"\n")  # the registry's champion now fails its hashes
        with TestClient(app) as client:
            login = client.post("/v1/auth/login", json={"username": "root", "password": PASSWORD})
            refused = client.post("/v1/admin/models/spam/reload", headers={"X-CSRF-Token": login.json()["csrf_token"]})
            assert refused.status_code == 409 and model_file.name in refused.json()["detail"]
            answer = client.post("/v1/moderate", json={"model": "spam", "text": "see you at 6"})
            assert answer.status_code == 200 and answer.json()["results"][0]["model_version"] == model_version(
                service_tfidf_run
            )
    finally:
        model_file.write_bytes(original)


def test_the_registry_poll_switches_to_a_moved_alias_without_a_reload_call(tmp_path, spam_registry, run_v2):
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp_path / 'svc.db'}",
        runs={"spam": "registry:spam@champion"},
        registry_uri=spam_registry,
        registry_poll_s=0.2,
        require_auth=False,
    )
    with TestClient(create_app(settings)) as client:
        registry.promote("spam", 2, uri=spam_registry)
        deadline, version = time.monotonic() + 30, None
        while time.monotonic() < deadline and version != model_version(run_v2):
            time.sleep(0.2)
            answer = client.post("/v1/moderate", json={"model": "spam", "text": "free entry, text WIN now"})
            version = answer.json()["results"][0]["model_version"]
        assert version == model_version(run_v2)


def test_a_failing_shadow_is_counted_and_never_reaches_the_answer(tmp_path, service_tfidf_run, block_all_run):
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp_path / 'svc.db'}",
        runs={"spam": service_tfidf_run},
        shadow={"spam": block_all_run},
    )
    models = load_models(settings.runs)
    shadow = load_models({"spam": block_all_run})["spam"]

    def broken(texts):
        raise RuntimeError("the shadow fell over")

    shadow.decide = broken  # type: ignore[method-assign]
    engine = connect(settings.database_url)
    moderator = Moderator(models, engine, settings, shadows={"spam": shadow})
    try:
        outcomes = moderator.moderate("spam", [MessageIn("see you at 6", "m1"), MessageIn("WIN cash now", "m2")])
        moderator.shadow_scorer.wait_idle()
        assert [o.failure for o in outcomes] == [None, None] and moderator.shadow_scorer.failures["spam"] == 2
        with Session(engine) as session:
            assert session.scalars(select(Message.shadow_scores)).all() == [None, None]
    finally:
        moderator.close()
        engine.dispose()


def test_settings_refuse_a_shadow_of_a_model_not_served(service_tfidf_run):
    with pytest.raises(ValueError, match=r"shadow names \['other'\], which are not served models"):
        ServiceSettings(runs={"spam": service_tfidf_run}, shadow={"other": service_tfidf_run})


def test_an_unresolvable_registry_reference_stops_the_start_up(tmp_path, spam_registry):
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp_path / 'svc.db'}", runs={"spam": "registry:spam@nope"}, registry_uri=spam_registry
    )
    with pytest.raises(ConfigError, match="model 'spam' has no alias 'nope'"):
        create_app(settings)


def test_migration_0003_adds_shadow_scores_to_an_existing_database(db_url):
    engine = create_db_engine(db_url)
    try:
        upgrade(engine, "0002")  # a database as the service left it before shadow models
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO messages (id, model, model_version, text, text_length, created_at, action, category, "
                    "decided_by, score, category_scores, stage_scores, rules_fired, latency_ms) VALUES ('old', 'spam', "
                    "'v@1', 'hi', 2, '2026-12-01 10:00:00', 'deliver', '', 'model', 0.1, '{}', '{}', '[]', 1.0)"
                )
            )
        upgrade(engine)
        with Session(engine) as session:
            old = session.get(Message, "old")
            assert old is not None and old.shadow_scores is None and old.action == "deliver"
            old.shadow_scores = {"version": "x@2", "action": "block", "score": 0.9, "category_scores": {}}
            session.commit()
        with Session(engine) as session:
            assert session.get(Message, "old").shadow_scores["action"] == "block"
    finally:
        engine.dispose()


def test_shadow_comparison_counts_agreement_rates_correlation_and_reviewed_precision_recall(db_url):
    engine = connect(db_url)
    # (id, live action, live score, shadow action, shadow score, reviewed violation or None)
    cases = [
        ("m1", "block", 0.95, "block", 0.90, True),
        ("m2", "review", 0.60, "deliver", 0.20, False),
        ("m3", "deliver", 0.10, "review", 0.70, True),
        ("m4", "deliver", 0.05, "review", 0.50, None),
        ("m5", "review", 0.55, "review", 0.65, True),
    ]
    rows = [
        {
            "id": i,
            "model": "spam",
            "model_version": "live@1",
            "text": "t",
            "text_length": 1,
            "action": action,
            "category": "",
            "decided_by": "model",
            "score": score,
            "category_scores": {},
            "stage_scores": {},
            "rules_fired": [],
            "latency_ms": 1.0,
            "shadow_scores": {"version": "shadow@2", "action": s_action, "score": s_score, "category_scores": {}},
        }
        for i, action, score, s_action, s_score, _ in cases
    ]
    rows.append({**rows[-1], "id": "m6", "shadow_scores": None})  # not shadowed: left out
    with Session(engine) as session, session.begin():
        session.execute(insert(Message), rows)
        for i, *_, violation in cases:
            if violation is not None:
                session.add(ReviewItem(message_id=i, reason="flagged", state="decided", violation=violation))
    engine.dispose()
    result = shadow_comparison(db_url, "spam")
    assert result["messages"] == 5 and result["shadow_versions"] == {"shadow@2": 5}
    assert result["agreement"] == pytest.approx(2 / 5)  # m1 and m5 are flagged by both; nothing else agrees
    assert result["flag_rate"] == {"live": pytest.approx(3 / 5), "shadow": pytest.approx(4 / 5)}
    assert result["score_correlation"] == pytest.approx(0.2551, abs=1e-4)
    reviewed = result["reviewed"]
    assert reviewed["n"] == 4 and reviewed["violations"] == 3
    # live flags m1, m2, m5: 2 of 3 are violations; it catches m1 and m5 of m1, m3, m5
    assert reviewed["live"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "flagged": 3}
    # shadow flags m1, m3, m5: all violations, all caught
    assert reviewed["shadow"] == {"precision": 1.0, "recall": 1.0, "flagged": 3}


def test_serve_command_reads_shadow_flags_and_names_a_registry_reference_by_its_model(service_tfidf_run, monkeypatch):
    """`finesieve serve registry:spam@champion --shadow spam=RUN`: the model is named `spam` (not the reference), the
    shadow reaches the settings; a --shadow without NAME= is refused before anything starts."""
    from typer.testing import CliRunner

    from finesieve import cli
    from finesieve.serve import service

    started = {}
    monkeypatch.setattr(service, "run_service", lambda settings, warn: started.setdefault("settings", settings))
    ok = CliRunner().invoke(
        cli.app, ["serve", "registry:spam@champion", "--shadow", f"spam={service_tfidf_run}", "--registry-poll", "30"]
    )
    assert ok.exit_code == 0, ok.output
    settings = started["settings"]
    assert list(settings.runs) == ["spam"] and str(settings.runs["spam"]) == "registry:spam@champion"
    assert str(settings.shadow["spam"]) == str(service_tfidf_run) and settings.registry_poll_s == 30
    bad = CliRunner().invoke(cli.app, ["serve", str(service_tfidf_run), "--shadow", "spam"])
    assert bad.exit_code == 2 and "NAME=RUN_OR_REF" in bad.output
