"""The service's database on SQLite and PostgreSQL: migrations, idempotent inserts under a race, retention, keys."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from contextlib import closing
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text, update
from sqlalchemy.orm import Session

from finesieve.data.errors import ConfigError
from finesieve.serve import store
from finesieve.serve.db import (
    ApiKey,
    Base,
    Message,
    ReviewItem,
    WalCheckpointer,
    alembic_config,
    connect,
    create_db_engine,
    utcnow,
)

TABLES = {"messages", "review_items", "audit_log", "api_keys"}


def message_row(message_id: str, **overrides) -> dict:
    row = {
        "id": message_id,
        "model": "spam",
        "model_version": "cascade@abc",
        "text": "call <PHONE> now",
        "text_length": 16,
        "action": "review",
        "category": "spam",
        "decided_by": "model",
        "score": 0.7,
        "category_scores": {"spam": 0.7},
        "stage_scores": {"rules": 0.1, "model": 0.7},
        "rules_fired": ["money"],
        "latency_ms": 3.0,
        "failure": None,
    }
    return {**row, **overrides}


def head_revision() -> str:
    """The newest migration script's revision: a database migrated by `connect` must be at it."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_migrations_create_the_schema_from_empty_and_match_the_tables(db_url):
    engine = create_db_engine(db_url)
    assert not set(inspect(engine).get_table_names()) & TABLES
    engine.dispose()

    engine = connect(db_url)
    assert TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        # The scripts and the typed classes describe the same schema: autogenerate finds nothing to add.
        assert (
            compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata) == []
        )
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
    engine.dispose()
    connect(db_url).dispose()  # upgrading a database at head changes nothing


def test_inserting_a_known_id_keeps_the_first_row(db_url):
    engine = connect(db_url)
    with Session(engine) as session, session.begin():
        assert store.insert_messages(session, [message_row("m1"), message_row("m2")]) == {"m1", "m2"}
    with Session(engine) as session, session.begin():
        assert store.insert_messages(session, [message_row("m1", action="deliver"), message_row("m3")]) == {"m3"}
    with Session(engine) as session:
        stored = store.get_messages(session, ["m1", "m2", "m3"])
        assert store.count(session, Message) == 3 and stored["m1"].action == "review"
        assert stored["m1"].stage_scores == {"rules": 0.1, "model": 0.7} and stored["m1"].rules_fired == ["money"]
    engine.dispose()


def test_racing_inserts_of_one_id_leave_one_row(db_url):
    engine = connect(db_url)
    n = 8
    barrier, won, errors = threading.Barrier(n), [], []

    def insert(i: int) -> None:
        try:
            with Session(engine) as session, session.begin():
                barrier.wait(timeout=10)
                won.append(store.insert_messages(session, [message_row("same", score=i / 10)]))
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(len(w) for w in won) == [0] * (n - 1) + [1]  # exactly one request inserted, none failed
    with Session(engine) as session:
        assert store.count(session, Message) == 1
    engine.dispose()


def test_retention_deletes_old_texts_and_keeps_decisions(db_url):
    engine = connect(db_url)
    with Session(engine) as session, session.begin():
        store.insert_messages(session, [message_row("old"), message_row("new")])
        store.enqueue_reviews(session, [{"message_id": "old", "reason": "flagged", "priority": 0.7}])
        session.execute(update(Message).where(Message.id == "old").values(created_at=utcnow() - timedelta(days=40)))
    with Session(engine) as session, session.begin():
        assert store.purge_texts(session, older_than_days=30) == 1
    with Session(engine) as session:
        old, new = store.get_message(session, "old"), store.get_message(session, "new")
        assert old.text is None and new.text == "call <PHONE> now"
        assert (old.action, old.category, old.score, old.text_length) == ("review", "spam", 0.7, 16)
        assert [i.reason for i in store.review_items(session, "old")] == ["flagged"]
        assert store.audit_entries(session)[-1].details == {"older_than_days": 30, "messages": 1}
    with Session(engine) as session, session.begin():
        assert store.purge_texts(session, older_than_days=30) == 0  # already purged
    engine.dispose()


def test_api_keys_are_stored_hashed_scoped_and_revocable(db_url):
    engine = connect(db_url)
    with Session(engine) as session, session.begin():
        key = store.create_api_key(session, "billing", ["spam", "tfidf"])
    with Session(engine) as session:
        assert key.startswith(store.KEY_PREFIX)
        row = session.scalar(select(ApiKey))
        assert row.key_sha256 == store.hash_key(key) and key not in str(row.__dict__)
        caller = store.find_caller(session, key)
        assert caller.name == "billing" and caller.may_use("spam") and not caller.may_use("other")
        assert store.find_caller(session, key + "x") is None
        assert [e.action for e in store.audit_entries(session)] == ["create_api_key"]
    with Session(engine) as session, session.begin(), pytest.raises(ConfigError, match="'billing' exists already"):
        store.create_api_key(session, "billing", ["spam"])
    with Session(engine) as session, session.begin():
        store.revoke_api_key(session, "billing")
    with Session(engine) as session:
        assert store.find_caller(session, key) is None and store.active_key_count(session) == 0
    engine.dispose()


def test_review_items_start_pending_and_unleased(db_url):
    engine = connect(db_url)
    with Session(engine) as session, session.begin():
        store.insert_messages(session, [message_row("m1")])
        store.enqueue_reviews(session, [{"message_id": "m1", "reason": "flagged", "priority": 0.7}])
    with Session(engine) as session:
        item = store.review_items(session)[0]
        assert (item.message_id, item.state, item.lease_owner, item.violation) == ("m1", "pending", None, None)
        assert store.count(session, ReviewItem) == 1
    engine.dispose()


def test_sqlite_syncs_every_commit_unless_told_normal(tmp_path):
    # PRAGMA synchronous: 2 = FULL (the WAL is synced at every commit), 1 = NORMAL (at checkpoints only).
    for setting, expected in (("full", 2), ("normal", 1)):
        engine = connect(f"sqlite:///{tmp_path / setting}.db", setting)
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA synchronous")).scalar() == expected
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        engine.dispose()
    with pytest.raises(ValueError, match="'fast': use 'full' or 'normal'"):
        create_db_engine(f"sqlite:///{tmp_path / 'x.db'}", "fast")


def test_the_wal_checkpointer_copies_commits_into_the_database_file_off_the_commit_path(tmp_path):
    path = tmp_path / "svc.db"
    engine = connect(f"sqlite:///{path}", sqlite_autocheckpoint=False)
    checkpointer = WalCheckpointer(engine, every_s=0.05)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0  # commits never checkpoint
        rows = [message_row(f"w{i}") for i in range(50)]
        with Session(engine) as session, session.begin():
            store.insert_messages(session, rows)
        deadline = time.monotonic() + 30

        def rows_in_database_file() -> int:  # the main file alone, as if the WAL were lost
            copy = tmp_path / "copy.db"
            shutil.copyfile(path, copy)
            with closing(sqlite3.connect(copy)) as alone:
                try:
                    return alone.execute("SELECT count(*) FROM messages").fetchone()[0]
                except sqlite3.OperationalError:  # not even the schema (also in the WAL) is in the file yet
                    return 0

        while rows_in_database_file() < 50:
            assert time.monotonic() < deadline, "the checkpointer never copied the commit into the database file"
            time.sleep(0.05)
    finally:
        checkpointer.close()
        engine.dispose()
    assert not checkpointer._thread.is_alive()
