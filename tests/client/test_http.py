"""The sync and async clients against the real service (uvicorn on a loopback port, SQLite and PostgreSQL).

Decisions are compared with the rows the service stored; retries are provoked by a real TCP proxy that drops
connections, loses answers or answers 429/503 itself (tests/client/conftest.py), and counted there and in the
service's own request counter, so "not retried" is checked, not assumed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from flaky_proxy import DROP, LOSE_ANSWER, STALL, FlakyProxy, canned
from sqlalchemy import select

from finesieve.client import (
    AsyncModerationClient,
    AuthenticationError,
    InvalidRequestError,
    ModerationClient,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnreachableError,
)
from finesieve.client.retry import MAX_RETRY_AFTER_S, retry_after_seconds, wait_before_retry
from finesieve.data.errors import ConfigError
from finesieve.serve import store
from finesieve.serve.db import Message

PRIZE = "WINNER!! Claim your prize now"  # the spam cascade's `prize` rule blocks it
FAST = {"backoff": 0.01, "max_backoff": 0.05}  # retries in milliseconds: the tests count them, never time them
MODERATE = "/v1/moderate"


def retry_waits(caplog) -> list[float]:
    """The waits the client logged before each retry, in seconds."""
    return [
        float(re.search(r"in ([0-9.]+) s", r.getMessage()).group(1))
        for r in caplog.records
        if r.name == "finesieve.client"
    ]


def assert_stored(service, decisions) -> None:
    """Each decision equals the row the service stored under its id."""
    with service.session() as session:
        rows = store.get_messages(session, [d.id for d in decisions])
    assert set(rows) == {d.id for d in decisions}
    for decision in decisions:
        row = rows[decision.id]
        assert (decision.action, decision.category, decision.decided_by) == (row.action, row.category, row.decided_by)
        assert (decision.model, decision.model_version, decision.rules_fired) == (
            row.model,
            row.model_version,
            row.rules_fired,
        )
        assert decision.score == pytest.approx(row.score)
        assert decision.category_scores == pytest.approx(row.category_scores)
        assert decision.stage_scores == pytest.approx(row.stage_scores)


def test_sync_moderate_one_text_a_list_and_a_batch_with_ids_equal_the_stored_decisions(service, sms_unseen):
    texts = sms_unseen.text.head(20).tolist()
    with ModerationClient(service.url, service.keys["all"]) as client:
        one = client.moderate(PRIZE)
        listed = client.moderate(texts)
        with_ids = client.moderate([{"id": f"sync-{i}", "text": t} for i, t in enumerate(texts[:5])], model="tfidf")
        stored = client.get_message("sync-3")

    assert (one.action, one.decided_by, one.rules_fired, one.duplicate) == ("block", "rules", ["prize"], False)
    assert uuid.UUID(one.id).version == 4  # the client's idempotency key, not one the server made up
    assert len(listed) == len(texts) and len({d.id for d in listed}) == len(texts)
    assert {d.action for d in listed} >= {"deliver"}
    assert [d.id for d in with_ids] == [f"sync-{i}" for i in range(5)] and {d.model for d in with_ids} == {"tfidf"}
    assert_stored(service, [one, *listed, *with_ids])
    assert stored.id == "sync-3" and stored.action == with_ids[3].action and stored.text_stored
    assert stored.text_length > 0


def test_async_moderate_one_text_a_list_and_a_batch_with_ids_equal_the_stored_decisions(service, sms_unseen):
    texts = sms_unseen.text.iloc[20:30].tolist()

    async def calls():
        async with AsyncModerationClient(service.url, service.keys["all"]) as client:
            one = await client.moderate(PRIZE, id="async-prize")
            listed = await client.moderate(texts)
            with_ids = await client.moderate([{"id": f"async-{i}", "text": t} for i, t in enumerate(texts[:3])])
            stored = await client.get_message("async-prize")
            return one, listed, with_ids, stored, await client.health(), await client.ready()

    one, listed, with_ids, stored, healthy, readiness = asyncio.run(calls())
    assert (one.id, one.action, one.decided_by) == ("async-prize", "block", "rules")
    assert len(listed) == len(texts) and [d.id for d in with_ids] == ["async-0", "async-1", "async-2"]
    assert_stored(service, [one, *listed, *with_ids])
    assert (stored.action, stored.rules_fired) == ("block", ["prize"])
    assert healthy and readiness.ready and readiness.models == ["spam", "tfidf"]


def test_the_same_id_again_returns_the_stored_decision_marked_duplicate(service):
    with ModerationClient(service.url, service.keys["all"]) as client:
        first = client.moderate("see you at 7 then", id="dup-1")
        again = client.moderate("see you at 7 then", id="dup-1")
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.model_dump(exclude={"duplicate"}) == first.model_dump(exclude={"duplicate"})


def test_a_list_longer_than_batch_size_goes_in_several_requests_in_order(service, sms_unseen):
    texts = sms_unseen.text.iloc[40:45].tolist()
    before = service.requests(MODERATE, 200)
    with ModerationClient(service.url, service.keys["all"], batch_size=2) as client:
        decisions = client.moderate([{"id": f"chunk-{i}", "text": t} for i, t in enumerate(texts)])
    assert service.requests(MODERATE, 200) - before == 3  # 2 + 2 + 1
    assert [d.id for d in decisions] == [f"chunk-{i}" for i in range(5)]


def test_a_lost_answer_is_retried_and_returns_the_one_stored_decision(service_on_db, caplog):
    """The service decides and stores, the answer is lost on the way: the retry carries the same id, so the
    caller gets that decision (duplicate=True) and the database holds one row, on SQLite and PostgreSQL."""
    service = service_on_db
    with (
        FlakyProxy(service.port, [LOSE_ANSWER]) as proxy,
        ModerationClient(proxy.url, service.keys["all"], **FAST) as client,
    ):
        decision = client.moderate(PRIZE)
    assert proxy.connections == 2 and len(retry_waits(caplog)) == 1
    assert decision.duplicate and decision.action == "block"
    assert service.requests(MODERATE, 200) == 2  # the service answered twice ...
    with service.session() as session:  # ... and stored one row: this database is the test's own
        assert session.scalars(select(Message.id)).all() == [decision.id]


def test_a_read_timeout_is_retried_and_the_async_client_gets_the_stored_decision(service, caplog):
    caplog.set_level(logging.WARNING, logger="finesieve.client")

    async def call():
        with FlakyProxy(service.port, [STALL]) as proxy:
            async with AsyncModerationClient(proxy.url, service.keys["all"], timeout=0.5, **FAST) as client:
                return await client.moderate(PRIZE, id="stalled-1"), proxy.connections

    decision, connections = asyncio.run(call())
    assert connections == 2 and (decision.id, decision.duplicate, decision.action) == ("stalled-1", True, "block")
    assert ["ReadTimeout" in r.getMessage() for r in caplog.records if r.name == "finesieve.client"] == [True]


def test_dropped_connections_are_retried_with_growing_backoff_sync_and_async(service, caplog):
    caplog.set_level(logging.WARNING, logger="finesieve.client")
    with FlakyProxy(service.port, [DROP, DROP, DROP]) as proxy:
        with ModerationClient(proxy.url, service.keys["all"], retries=3, backoff=0.02, max_backoff=1.0) as client:
            decision = client.moderate("are we still on for lunch")
        assert proxy.connections == 4 and decision.action in {"deliver", "review", "block"}
    waits = retry_waits(caplog)
    # Jittered in the upper half of 0.02 * 2**attempt: each range lies above the last, so they grow.
    assert len(waits) == 3 and 0.01 <= waits[0] <= 0.02 and waits[0] <= waits[1] <= waits[2] <= 0.08
    caplog.clear()

    async def call():
        with FlakyProxy(service.port, [DROP, DROP]) as proxy:
            async with AsyncModerationClient(proxy.url, service.keys["all"], **FAST) as client:
                return await client.moderate(PRIZE), proxy.connections

    decision, connections = asyncio.run(call())
    assert connections == 3 and decision.action == "block" and len(retry_waits(caplog)) == 2


def test_429_honours_retry_after_and_502_503_504_are_retried(service, caplog):
    caplog.set_level(logging.WARNING, logger="finesieve.client")
    script = [canned(429, "Too Many Requests", "Retry-After: 1\r\n")]
    with FlakyProxy(service.port, script) as proxy, ModerationClient(proxy.url, service.keys["all"], **FAST) as client:
        assert client.moderate("ok").action == "deliver"
    assert retry_waits(caplog) == [1.0]  # the server's wait, not the 0.01 s backoff
    caplog.clear()

    script = [canned(502, "Bad Gateway"), canned(503, "Service Unavailable"), canned(504, "Gateway Timeout")]
    with FlakyProxy(service.port, script) as proxy, ModerationClient(proxy.url, service.keys["all"], **FAST) as client:
        assert client.moderate("ok").action == "deliver"
        assert proxy.connections == 4 and len(retry_waits(caplog)) == 3


def test_retries_end_in_a_clear_error_naming_the_url_and_the_last_failure(service):
    script = [canned(503, "Service Unavailable")] * 3
    with (
        FlakyProxy(service.port, script) as proxy,
        ModerationClient(proxy.url, service.keys["all"], retries=2, **FAST) as client,
    ):
        with pytest.raises(ServiceUnreachableError, match=r"after 3 attempt\(s\), the last HTTP 503") as err:
            client.moderate("ok")
    assert (err.value.attempts, err.value.status_code, proxy.connections) == (3, 503, 3)

    with socket.socket() as sock:  # a port nobody listens on: connection refused every time
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with ModerationClient(dead, "fsk_x", retries=1, **FAST) as client:
        with pytest.raises(ServiceUnreachableError, match=re.escape(dead)) as err:
            client.moderate("ok")
        assert err.value.attempts == 2 and "ConnectError" in str(err.value)
        assert client.health() is False


def test_422_401_403_404_raise_at_once_with_the_servers_detail(service, caplog):
    caplog.set_level(logging.WARNING, logger="finesieve.client")
    with ModerationClient(service.url, service.keys["all"], **FAST) as client:
        before = service.requests(MODERATE, 422)
        with pytest.raises(InvalidRequestError, match=r"body\.text") as err:
            client.moderate("")
        assert err.value.fields == ["body.text"] and err.value.status_code == 422
        with pytest.raises(InvalidRequestError) as err:
            client.moderate(["fine", ""])
        assert err.value.fields == ["body.messages.1.text"]
        with pytest.raises(InvalidRequestError, match=r"body\.model: unknown model 'nope'") as err:
            client.moderate("ok", model="nope")
        assert service.requests(MODERATE, 422) - before == 3
        with pytest.raises(NotFoundError, match="no message with id 'never-sent'"):
            client.get_message("never-sent")

    with ModerationClient(service.url, "fsk_not_a_key", **FAST) as client:
        before = service.requests(MODERATE, 401)
        with pytest.raises(AuthenticationError, match="unknown or revoked API key") as err:
            client.moderate("ok")
        assert err.value.status_code == 401 and service.requests(MODERATE, 401) - before == 1

    with ModerationClient(service.url, service.keys["tfidf"], **FAST) as client:
        before = service.requests(MODERATE, 403)
        with pytest.raises(PermissionDeniedError, match="may not use model 'spam'"):
            client.moderate("ok", model="spam")
        assert service.requests(MODERATE, 403) - before == 1
    assert retry_waits(caplog) == []


def test_wrong_arguments_raise_config_errors_naming_the_argument(service):
    with pytest.raises(ConfigError, match="retries"):
        ModerationClient(service.url, retries=-1)
    with pytest.raises(ConfigError, match="base_url.*http://127.0.0.1:8000"):
        AsyncModerationClient("127.0.0.1:8000")
    with ModerationClient(service.url, service.keys["all"]) as client:
        with pytest.raises(ConfigError, match="empty list"):
            client.moderate([])
        with pytest.raises(ConfigError, match="goes with one text"):
            client.moderate(["a"], id="x")
        with pytest.raises(ConfigError, match=r"messages\[1\] has unknown keys \['txt'\]"):
            client.moderate(["a", {"txt": "b"}])


def test_retry_waits_grow_with_jitter_cap_and_follow_retry_after():
    rng = random.Random(0)
    for attempt in range(8):
        ceiling = min(2.0, 0.1 * 2**attempt)
        assert ceiling / 2 <= wait_before_retry(attempt, 0.1, 2.0, rng=rng) <= ceiling
    assert wait_before_retry(5, 0.1, 2.0, retry_after="3") == 3.0
    assert wait_before_retry(0, 0.1, 2.0, retry_after="86400") == MAX_RETRY_AFTER_S
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_seconds(soon) <= 30
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
