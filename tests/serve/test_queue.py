"""The review queue on SQLite and PostgreSQL: order, atomic leases under concurrency, expiry, decide, undo, stats."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from finesieve.serve import queue, store
from finesieve.serve.db import ReviewItem, alembic_config, connect, create_db_engine, upgrade, utcnow

LEASE_S = 600.0


def message_row(message_id: str, **overrides) -> dict:
    row = {
        "id": message_id,
        "model": "spam",
        "model_version": "cascade@abc",
        "text": f"call <PHONE> now ({message_id})",
        "text_length": 20,
        "action": "review",
        "category": "spam",
        "decided_by": "model",
        "score": 0.7,
        "category_scores": {"spam": 0.7},
        "stage_scores": {"model": 0.7},
        "rules_fired": [],
        "latency_ms": 1.0,
        "failure": None,
    }
    return {**row, **overrides}


def fill(engine, items: list[tuple[str, str, float]], *, age_s: dict[str, float] | None = None) -> dict[str, int]:
    """Messages and their review items (message id, reason, priority); `age_s` backdates some. Returns id -> item."""
    with Session(engine) as session, session.begin():
        store.insert_messages(session, [message_row(m) for m, _, _ in items])
        store.enqueue_reviews(session, [{"message_id": m, "reason": r, "priority": p} for m, r, p in items])
    with Session(engine) as session, session.begin():
        for message_id, seconds in (age_s or {}).items():
            item = session.scalar(select(ReviewItem).where(ReviewItem.message_id == message_id))
            item.created_at = item.created_at - timedelta(seconds=seconds)
            item.due_at = store.due_at(item.created_at, item.priority)
    with Session(engine) as session:
        return {i.message_id: i.id for i in store.review_items(session)}


def lease(engine, reviewer: str, **kwargs) -> ReviewItem | None:
    with Session(engine) as session, session.begin():
        item = queue.lease_next(session, reviewer, LEASE_S, **kwargs)
        session.expunge_all()
        return item


def test_order_is_failures_then_priority_then_age_and_waiting_raises_priority(db_url):
    engine = connect(db_url)
    fill(
        engine, [("audit", "audit", 0.0), ("low", "flagged", 0.55), ("high", "flagged", 0.95), ("fail", "failure", 2.0)]
    )
    order = [lease(engine, f"r{i}").message_id for i in range(4)]
    assert order == ["fail", "high", "low", "audit"]
    assert lease(engine, "r9") is None

    # An audit item that has waited 2 h (worth 2 points) overtakes a fresh flagged one at 0.95: no starvation.
    fill(engine, [("old-audit", "audit", 0.0), ("new-high", "flagged", 0.95)], age_s={"old-audit": 2 * 3600})
    assert [lease(engine, f"s{i}").message_id for i in range(2)] == ["old-audit", "new-high"]
    engine.dispose()


def test_a_reviewer_holding_a_lease_gets_the_same_item_back(db_url):
    engine = connect(db_url)
    fill(engine, [("a", "flagged", 0.9), ("b", "flagged", 0.8)])
    first = lease(engine, "ana")
    again = lease(engine, "ana")
    assert again.id == first.id and again.lease_owner == "ana"
    assert lease(engine, "ben").message_id == "b"
    engine.dispose()


def test_concurrent_reviewers_never_hold_the_same_item(db_url):
    engine = connect(db_url)
    n_items, n_reviewers = 40, 8
    fill(engine, [(f"m{i}", "flagged", i / n_items) for i in range(n_items)])
    barrier, taken, errors = threading.Barrier(n_reviewers), [], []

    def work(reviewer: str) -> None:
        try:
            barrier.wait(timeout=10)
            while True:
                with Session(engine) as session, session.begin():  # its own connection per thread
                    item = queue.lease_next(session, reviewer, LEASE_S)
                    if item is None:
                        return
                    taken.append((item.id, reviewer))
                    queue.decide(session, item.id, reviewer, True, "spam", None)  # free this reviewer for the next
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(f"r{i}",)) for i in range(n_reviewers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    counts = Counter(item_id for item_id, _ in taken)
    assert len(counts) == n_items and set(counts.values()) == {1}  # every item leased exactly once
    assert len({reviewer for _, reviewer in taken}) > 1  # the reviewers really ran side by side
    with Session(engine) as session:
        assert {i.state for i in store.review_items(session)} == {"decided"}
    engine.dispose()


def test_an_expired_lease_returns_to_the_pool_and_its_late_decision_is_refused(db_url):
    engine = connect(db_url)
    ids = fill(engine, [("a", "flagged", 0.9)])
    assert lease(engine, "ana").id == ids["a"]
    assert lease(engine, "ben") is None  # held by ana
    later = utcnow() + timedelta(seconds=LEASE_S + 1)
    assert lease(engine, "ben", now=later).id == ids["a"]  # ana's lease ran out
    with Session(engine) as session, session.begin(), pytest.raises(queue.LeaseConflict, match="another reviewer"):
        queue.decide(session, ids["a"], "ana", True, "spam", None, now=later)
    with Session(engine) as session, session.begin():
        item = queue.decide(session, ids["a"], "ben", False, None, "fine", now=later)
        assert (item.state, item.reviewer, item.violation, item.note) == ("decided", "ben", False, "fine")
        assert item.decided_at == later
    engine.dispose()


def test_decide_needs_the_lease_and_undo_release_follow_their_rules(db_url):
    engine = connect(db_url)
    ids = fill(engine, [("a", "flagged", 0.9), ("b", "flagged", 0.5)])
    with Session(engine) as session, session.begin(), pytest.raises(queue.LeaseConflict, match="not leased"):
        queue.decide(session, ids["a"], "ana", True, "spam", None)
    with Session(engine) as session, session.begin(), pytest.raises(queue.ItemNotFound, match="no review item"):
        queue.decide(session, 999_999, "ana", True, "spam", None)
    lease(engine, "ana")
    with Session(engine) as session, session.begin():
        decided = queue.decide(session, ids["a"], "ana", True, "spam", "obvious")
        decided_at = decided.decided_at
    with Session(engine) as session, session.begin(), pytest.raises(queue.LeaseConflict, match="another reviewer"):
        queue.undo(session, ids["a"], "ben", window_s=120, lease_s=LEASE_S)
    too_late = decided_at + timedelta(seconds=121)
    with Session(engine) as session, session.begin(), pytest.raises(queue.LeaseConflict, match="undo window"):
        queue.undo(session, ids["a"], "ana", window_s=120, lease_s=LEASE_S, now=too_late)
    with Session(engine) as session, session.begin():
        item = queue.undo(session, ids["a"], "ana", window_s=120, lease_s=LEASE_S)
        assert (item.state, item.lease_owner, item.violation, item.reviewer) == ("leased", "ana", None, None)
    assert lease(engine, "ana").id == ids["a"]  # the undone item is ana's current item again
    with Session(engine) as session, session.begin(), pytest.raises(queue.LeaseConflict):
        queue.release(session, ids["a"], "ben")
    with Session(engine) as session, session.begin():
        item = queue.release(session, ids["a"], "ana")
        assert (item.state, item.lease_owner, item.lease_expires_at) == ("pending", None, None)
    # A skip (release) puts the item behind the waiting ones: the next lease is "b" (lower score), then "a" again.
    assert lease(engine, "ana").id == ids["b"]
    with Session(engine) as session, session.begin():
        queue.decide(session, ids["b"], "ana", False, None, None)
    assert lease(engine, "ana").id == ids["a"]
    with Session(engine) as session:
        actions = [e.action for e in store.audit_entries(session)]
    assert actions == [
        "review_lease",
        "review_decide",
        "review_undo",
        "review_release",
        "review_lease",
        "review_decide",
        "review_lease",
    ]
    engine.dispose()


def test_stats_count_states_reasons_rates_and_hours(db_url):
    engine = connect(db_url)
    items = [(f"f{i}", "flagged", 0.9 - i / 100) for i in range(4)]
    items += [(f"a{i}", "audit", 0.0) for i in range(2)] + [("x", "failure", 2.0)]
    fill(engine, items)
    now = utcnow()
    verdicts = {"x": False, "f0": True, "f1": True, "f2": True, "f3": False, "a0": True, "a1": False}
    for _ in verdicts:
        with Session(engine) as session, session.begin():
            item = queue.lease_next(session, "ana", LEASE_S)
            queue.decide(session, item.id, "ana", verdicts[item.message_id], None, None)
    fill(engine, [("p", "flagged", 0.1)])
    with Session(engine) as session, session.begin():
        queue.lease_next(session, "ben", LEASE_S)  # p: leased but undecided
    with Session(engine) as session, session.begin():  # one decision 3 h ago, 30 s after its item arrived
        old = session.scalar(select(ReviewItem).where(ReviewItem.message_id == "a1"))
        old.created_at, old.decided_at = now - timedelta(hours=3, seconds=30), now - timedelta(hours=3)
    with Session(engine) as session:
        numbers = queue.stats(session, now=now + timedelta(seconds=1))
    assert (numbers["pending"], numbers["leased"], numbers["decided"]) == (0, 1, 7)
    assert numbers["by_reason"] == {"flagged": 1, "audit": 0, "failure": 0}
    assert numbers["oldest_pending_age_s"] is None
    assert numbers["queue_precision"] == pytest.approx(3 / 4) and numbers["overturn_rate"] == pytest.approx(1 / 4)
    assert numbers["audit_violation_rate"] == pytest.approx(1 / 2)  # the failure's verdict counts in neither
    assert numbers["decisions_last_hour"] == 6
    hours = numbers["decisions_per_hour"]
    assert len(hours) == 24 and sum(h["decisions"] for h in hours) == 7
    three_hours_ago = (now - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0).isoformat()
    assert [h["decisions"] for h in hours if h["hour"] == three_hours_ago] == [1]
    # six decisions within a second or so of their item's arrival, one after 30 s
    assert 30 / 7 <= numbers["mean_seconds_to_decision"] < 30 / 7 + 5
    engine.dispose()


def test_stats_rates_are_none_while_nothing_is_decided(db_url):
    engine = connect(db_url)
    fill(engine, [("a", "flagged", 0.9)], age_s={"a": 100.0})
    with Session(engine) as session:
        numbers = queue.stats(session)
    assert numbers["pending"] == 1 and numbers["by_reason"]["flagged"] == 1
    assert numbers["oldest_pending_age_s"] >= 100.0
    assert [numbers[k] for k in ("queue_precision", "overturn_rate", "audit_violation_rate")] == [None] * 3
    assert numbers["mean_seconds_to_decision"] is None and numbers["decisions_last_hour"] == 0
    engine.dispose()


def test_migration_0002_backfills_the_order_of_items_queued_before_it(db_url):
    engine = create_db_engine(db_url)
    upgrade(engine, "0001")
    created = utcnow().replace(microsecond=0) - timedelta(hours=1)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO messages (id, model, model_version, text, text_length, created_at, action, category, "
                "decided_by, score, category_scores, stage_scores, rules_fired, latency_ms) VALUES ('m', 'spam', "
                "'v', 't', 1, :at, 'review', 'spam', 'model', 0.5, '{}', '{}', '[]', 1.0)"
            ),
            {"at": created},
        )
        connection.execute(
            text(
                "INSERT INTO review_items (message_id, reason, priority, state, created_at) "
                "VALUES ('m', 'flagged', 0.5, 'pending', :at)"
            ),
            {"at": created},
        )
    upgrade(engine, "0002")
    with Session(engine) as session:
        item = session.scalar(select(ReviewItem))
        assert item.due_at == created - timedelta(minutes=30)
        assert session.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0002"
    command.downgrade(alembic_config(engine.url.render_as_string(hide_password=False)), "0001")
    assert "users" not in inspect(engine).get_table_names()  # the downgrade runs too
    engine.dispose()
