"""Dynamic batching (`finesieve.serve.batcher`), alone and through the Moderator on SQLite and PostgreSQL.

    source /tmp/pg.env && OMP_NUM_THREADS=1 .venv/bin/pytest -q -p no:randomly tests/serve/test_batcher.py

The model is the real SMS spam cascade of tests/serve/conftest.py wrapped by `CountingCascade`, a subclass that
records the size of every `decide` call, can hold its first call until the test releases it (so the requests that
arrive meanwhile are queued, and batched, deterministically: no sleeps, no timing), and fails on any text holding
POISON. Every batched answer is compared with deciding that message alone.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import create_engine
from sqlalchemy import text as sql
from sqlalchemy.orm import Session

from finesieve.data.preprocess import prepare
from finesieve.models.base import set_preprocessing
from finesieve.models.cascade import Cascade, Decisions
from finesieve.runs import load_run
from finesieve.serve import store
from finesieve.serve.batcher import Batcher
from finesieve.serve.db import Message, connect
from finesieve.serve.moderation import MessageIn, Moderator, load_models
from finesieve.serve.settings import ServiceSettings

POISON = "POISON"


class CountingCascade(Cascade):
    """The same stages and thresholds as `cascade`; counts decide calls, may hold the first, fails on POISON."""

    def __init__(self, cascade: Cascade, gate: threading.Event | None = None):
        super().__init__(
            cascade.model,
            positive=cascade.positive,
            thresholds=cascade.thresholds,
            prefilter=cascade.prefilter,
            rules=cascade.rules,
        )
        set_preprocessing(self, getattr(cascade, "preprocessing_", None))  # the run's, as load_run set it
        self.gate = gate
        self.sizes: list[int] = []

    def decide(self, texts) -> Decisions:
        self.sizes.append(len(texts))
        if self.gate is not None and len(self.sizes) == 1:
            assert self.gate.wait(60), "the test never released the first call"
        if any(POISON in t for t in texts):
            raise RuntimeError("the model's tokenizer crashed")
        return super().decide(texts)


def wait_until(condition, what: str, limit_s: float = 60.0) -> None:
    """Poll `condition` until true; fail after `limit_s` (a bound against hanging, not a speed check)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


@pytest.fixture(scope="module")
def cascade(service_cascade_run) -> Cascade:
    return load_run(service_cascade_run).scorer


@pytest.fixture(scope="module")
def texts(sms_unseen) -> list[str]:
    return sms_unseen["text"].head(40).tolist()


def rows(decisions: Decisions) -> list[Decisions]:
    """A batch's Decisions as one-row Decisions, the batcher's results per item."""
    return [
        replace(
            decisions,
            action=decisions.action[i : i + 1],
            category=decisions.category[i : i + 1],
            decided_by=decisions.decided_by[i : i + 1],
            stage_scores={stage: scores[i : i + 1] for stage, scores in decisions.stage_scores.items()},
            rules_fired=decisions.rules_fired[i : i + 1],
            proba=decisions.proba[i : i + 1],
        )
        for i in range(len(decisions.action))
    ]


def decide_rows(counting: CountingCascade):
    return lambda texts: rows(counting.decide(texts))


def assert_same_rows(got: list[Decisions], want: Decisions) -> None:
    assert len(got) == len(want.action)
    for row, expected in zip(got, rows(want)):
        assert_same_decisions(row, expected)


def assert_same_decisions(got: Decisions, want: Decisions) -> None:
    assert list(got.action) == list(want.action) and list(got.category) == list(want.category)
    assert list(got.decided_by) == list(want.decided_by) and got.rules_fired == want.rules_fired
    np.testing.assert_allclose(got.proba, want.proba, rtol=0, atol=1e-12)
    assert set(got.stage_scores) == set(want.stage_scores)
    for stage, scores in want.stage_scores.items():
        np.testing.assert_allclose(got.stage_scores[stage], scores, rtol=0, atol=1e-12, err_msg=stage)


# ----------------------------------------------------------------------------------------------- the batcher alone


def test_single_messages_from_many_threads_share_one_call_and_get_their_own_rows(cascade, texts):
    counting = CountingCascade(cascade, gate=threading.Event())
    batcher = Batcher(decide_rows(counting), name="spam", max_items=64, wait_s=0.005)
    try:
        blocker = batcher.submit(["hold the worker"])
        wait_until(lambda: counting.sizes == [1], "the first call to start")
        futures: dict[int, object] = {}

        def send(i: int) -> None:
            futures[i] = batcher.submit([texts[i]])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(texts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert batcher.pending == len(texts)
        counting.gate.set()
        results = {i: f.result(timeout=60) for i, f in futures.items()}
        blocker.result(timeout=60)
    finally:
        batcher.close(timeout=60)
    assert counting.sizes == [1, len(texts)]  # 40 messages, one merged call
    assert batcher.calls == 2
    for i, got in results.items():
        assert_same_rows(got, cascade.decide([texts[i]]))


def test_a_request_is_never_split_and_a_batch_holds_at_most_max_texts(cascade, texts):
    counting = CountingCascade(cascade, gate=threading.Event())
    batcher = Batcher(decide_rows(counting), name="spam", max_items=4)
    try:
        batcher.submit(["hold"])
        wait_until(lambda: counting.sizes == [1], "the first call to start")
        big = batcher.submit(texts[:6])  # larger than max_texts: decided alone, whole
        small = [batcher.submit([t]) for t in texts[6:11]]
        counting.gate.set()
        assert_same_rows(big.result(timeout=60), cascade.decide(texts[:6]))
        for future, text in zip(small, texts[6:11]):
            assert_same_rows(future.result(timeout=60), cascade.decide([text]))
    finally:
        batcher.close(timeout=60)
    assert counting.sizes == [1, 6, 4, 1]


def test_a_failing_request_in_a_merged_call_fails_only_itself(cascade, texts):
    counting = CountingCascade(cascade, gate=threading.Event())
    batcher = Batcher(decide_rows(counting), name="spam")
    try:
        batcher.submit(["hold"])
        wait_until(lambda: counting.sizes == [1], "the first call to start")
        before = batcher.submit(texts[:2])
        bad = batcher.submit([f"{POISON} pill", texts[2]])
        after = batcher.submit(texts[3:5])
        counting.gate.set()
        with pytest.raises(RuntimeError, match="tokenizer crashed"):
            bad.result(timeout=60)
        assert_same_rows(before.result(timeout=60), cascade.decide(texts[:2]))
        assert_same_rows(after.result(timeout=60), cascade.decide(texts[3:5]))
    finally:
        batcher.close(timeout=60)
    assert counting.sizes == [1, 6, 2, 2, 2]  # merged once, then each request alone


def test_close_drains_the_queue_then_refuses_new_requests(cascade, texts):
    counting = CountingCascade(cascade, gate=threading.Event())
    batcher = Batcher(decide_rows(counting), name="spam", max_items=2)
    blocker = batcher.submit(["hold"])
    wait_until(lambda: counting.sizes == [1], "the first call to start")
    queued = [batcher.submit([t]) for t in texts[:5]]
    closing = threading.Thread(target=batcher.close, kwargs={"timeout": 60})
    closing.start()
    wait_until(lambda: batcher._closed, "close to begin")
    with pytest.raises(RuntimeError, match="'spam' is shutting down"):
        batcher.submit(["too late"])
    counting.gate.set()
    closing.join()
    assert not closing.is_alive() and not batcher._thread.is_alive()
    blocker.result(timeout=0)
    for future, text in zip(queued, texts[:5]):
        assert future.done() and not future.cancelled()
        assert_same_rows(future.result(timeout=0), cascade.decide([text]))
    assert counting.sizes == [1, 2, 2, 1]


def test_a_request_cancelled_while_queued_is_never_decided(cascade, texts):
    counting = CountingCascade(cascade, gate=threading.Event())
    batcher = Batcher(decide_rows(counting), name="spam")
    try:
        batcher.submit(["hold"])
        wait_until(lambda: counting.sizes == [1], "the first call to start")
        gave_up = batcher.submit(texts[:3])
        kept = batcher.submit(texts[3:4])
        assert gave_up.cancel()  # what the Moderator does when model_timeout_s passes
        counting.gate.set()
        assert_same_rows(kept.result(timeout=60), cascade.decide(texts[3:4]))
    finally:
        batcher.close(timeout=60)
    assert counting.sizes == [1, 1]


# ----------------------------------------------------------------------------------------------- through the Moderator


@pytest.fixture
def moderator(db_url, service_cascade_run):
    """A Moderator over the real spam run, its cascade replaced by a held CountingCascade."""
    settings = ServiceSettings(database_url=db_url, runs={"spam": service_cascade_run}, audit_rate=0.0)
    models = load_models(settings.runs)
    models["spam"].cascade = CountingCascade(models["spam"].cascade, gate=threading.Event())
    engine = connect(db_url)
    moderator = Moderator(models, engine, settings)
    yield moderator
    moderator.close()
    engine.dispose()


def _send_concurrently(moderator: Moderator, requests: list[list[MessageIn]]) -> list:
    """Hold the model's first call, send every request from its own thread, release once all are queued."""
    counting = moderator.models["spam"].cascade
    batcher = moderator.batchers["spam"]
    first = threading.Thread(target=moderator.moderate, args=("spam", [MessageIn("hold", id="hold")]))
    first.start()
    wait_until(lambda: counting.sizes == [1], "the first call to start")
    results: list = [None] * len(requests)

    def send(i: int) -> None:
        results[i] = moderator.moderate("spam", requests[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    wait_until(lambda: batcher.pending == len(requests), "every request to reach the queue")
    counting.gate.set()
    for thread in [first, *threads]:
        thread.join(timeout=120)
        assert not thread.is_alive()
    return results


def test_concurrent_requests_through_the_moderator_are_batched_and_decided_as_alone(moderator, sms_unseen):
    rows = sms_unseen.head(24)
    requests = [[MessageIn(text=t, id=i)] for t, i in zip(rows["text"], rows["msg_id"])]
    results = _send_concurrently(moderator, requests)
    counting = moderator.models["spam"].cascade
    assert counting.sizes == [1, len(requests)]  # 24 requests, one model call
    served = moderator.models["spam"]
    prepared, _ = prepare(rows["text"].tolist(), served.run.preprocessing, redactor=served.redactor)
    for (outcome,), text, message_id in zip(results, prepared, rows["msg_id"]):
        alone = Cascade.decide(counting, [text])  # the real cascade, uncounted, on this message alone
        assert outcome.id == message_id and outcome.failure is None and not outcome.duplicate
        assert (outcome.action, outcome.decided_by) == (alone.action[0], alone.decided_by[0])
        assert outcome.category == alone.category[0]
        np.testing.assert_allclose(outcome.category_scores["spam"], alone.proba[0, 1], rtol=0, atol=1e-12)


def test_a_poisonous_message_in_a_merged_batch_fails_only_itself(moderator, sms_unseen):
    rows = sms_unseen.head(6)
    requests = [[MessageIn(text=t, id=i)] for t, i in zip(rows["text"], rows["msg_id"])]
    requests.append([MessageIn(text="see you soon", id="ok-1"), MessageIn(text=f"{POISON} pill", id="bad")])
    results = _send_concurrently(moderator, requests)
    *singles, (ok, bad) = results
    assert bad.decided_by == "failure" and bad.action == "review" and bad.score is None
    assert bad.failure == "RuntimeError: the model's tokenizer crashed"
    assert ok.failure is None and ok.decided_by != "failure"
    assert all(outcome.failure is None for (outcome,) in singles)


# ----------------------------------------------------------------------------------------------- the writer


@contextlib.contextmanager
def write_lock(db_url: str):
    """Hold the database's write lock from another connection, so the service's next commit waits for it."""
    if db_url.startswith("sqlite"):
        connection = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")  # SQLite's one writer lock; readers go on (WAL)
        try:
            yield
        finally:
            connection.rollback()
            connection.close()
        return
    engine = create_engine(db_url)
    with engine.connect() as connection:
        connection.execute(sql("LOCK TABLE messages IN EXCLUSIVE MODE"))  # SELECTs go on, inserts wait
        try:
            yield
        finally:
            connection.rollback()
    engine.dispose()


def test_batches_queued_behind_a_slow_commit_are_stored_together_and_an_id_decided_twice_is_stored_once(
    db_url, service_cascade_run, sms_unseen
):
    settings = ServiceSettings(database_url=db_url, runs={"spam": service_cascade_run}, audit_rate=0.0, batch_wait_ms=0)
    engine = connect(db_url)
    moderator = Moderator(load_models(settings.runs), engine, settings)
    text_x, text_y = sms_unseen["text"].iloc[0], sms_unseen["text"].iloc[1]
    try:
        with write_lock(db_url):
            _, first = moderator.submit("spam", [MessageIn(text_x, id="x")])
            wait_until(lambda: moderator.writer.calls == 1, "the first commit to start (and wait for the lock)")
            # Decided while "x" is not stored yet: the batcher does not wait for the writer.
            _, retry = moderator.submit("spam", [MessageIn(text_x, id="x")])
            wait_until(lambda: moderator.writer.pending == 1, "the retry's batch to queue behind the commit")
            _, other = moderator.submit("spam", [MessageIn(text_y, id="y")])
            wait_until(lambda: moderator.writer.pending == 2, "the next batch to queue behind it too")
        (x,), (x_again,), (y,) = (f.result(timeout=60) for f in (first, retry, other))
    finally:
        moderator.close()
    assert moderator.writer.calls == 2  # the first batch alone, then the two queued behind it in one transaction
    assert not x.duplicate and x_again.duplicate and not y.duplicate
    assert (x_again.action, x_again.score, x_again.latency_ms) == (x.action, x.score, x.latency_ms)  # the stored one
    with Session(engine) as session:
        assert store.count(session, Message) == 2
        assert set(store.get_messages(session, ["x", "y"])) == {"x", "y"}
    engine.dispose()
