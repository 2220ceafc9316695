"""Reviewer accounts on SQLite and PostgreSQL: argon2 hashes, sessions, disabling, the login guard, the CLI."""

from __future__ import annotations

from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from finesieve.cli import app as cli_app
from finesieve.data.errors import ConfigError
from finesieve.serve import accounts, store
from finesieve.serve.db import User, UserSession, connect, utcnow
from finesieve.serve.ratelimit import KeyBuckets, LoginGuard, retry_after

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    """argon2id with small costs: the same algorithm and checks, without 64 MiB and 3 passes per login."""
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def test_users_are_stored_with_an_argon2_hash_and_checked_on_creation(db_url):
    engine = connect(db_url)
    with Session(engine) as session, session.begin():
        accounts.create_user(session, "ana", PASSWORD, "reviewer", actor="cli")
    with Session(engine) as session:
        row = session.scalar(select(User))
        assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
        assert (row.username, row.role, row.disabled_at) == ("ana", "reviewer", None)
        assert accounts.verify(session, "ana", PASSWORD).username == "ana"
        assert accounts.verify(session, "ana", PASSWORD + "!") is None
        assert accounts.verify(session, "nobody", PASSWORD) is None
    for name, password, role, match in [
        ("ana", PASSWORD, "reviewer", "'ana' exists already"),
        ("ben", "short", "reviewer", "at least 10 are required"),
        ("ben", PASSWORD, "boss", "use --role reviewer or --role admin"),
        ("  ", PASSWORD, "admin", "give a name"),
    ]:
        with Session(engine) as session, session.begin(), pytest.raises(ConfigError, match=match):
            accounts.create_user(session, name, password, role, actor="cli")
    with Session(engine) as session:
        assert store.count(session, User) == 1
        assert [(e.actor, e.action, e.details) for e in store.audit_entries(session)] == [
            ("cli", "create_user", {"username": "ana", "role": "reviewer"})
        ]
    engine.dispose()


def test_a_login_opens_a_session_that_expires_logs_out_and_ends_when_disabled(db_url):
    engine = connect(db_url)
    with Session(engine) as session, session.begin():
        accounts.create_user(session, "ana", PASSWORD, "admin", actor="cli")
    with Session(engine) as session, session.begin():
        assert accounts.login(session, "ana", "wrong password", ttl_s=60, client="10.0.0.1") is None
        first = accounts.login(session, "ana", PASSWORD, ttl_s=60, client="10.0.0.1")
        second = accounts.login(session, "ana", PASSWORD, ttl_s=60)
    with Session(engine) as session:
        user = accounts.find_session(session, first.token)
        assert (user.username, user.role, user.csrf_token) == ("ana", "admin", first.user.csrf_token)
        assert first.token not in {s.token_sha256 for s in session.scalars(select(UserSession))}  # hashed only
        assert accounts.find_session(session, first.token + "x") is None
    with Session(engine) as session, session.begin():
        accounts.logout(session, first.token)
    with Session(engine) as session, session.begin():
        assert accounts.find_session(session, first.token) is None
        assert accounts.find_session(session, second.token) is not None
        session.execute(update(UserSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    with Session(engine) as session:
        assert accounts.find_session(session, second.token) is None  # expired
    with Session(engine) as session, session.begin():
        third = accounts.login(session, "ana", PASSWORD, ttl_s=60)
        assert store.count(session, UserSession) == 1  # a login deletes its user's expired sessions
    with Session(engine) as session, session.begin():
        accounts.disable_user(session, "ana", actor="root")
    with Session(engine) as session, session.begin():
        assert accounts.find_session(session, third.token) is None
        assert accounts.login(session, "ana", PASSWORD, ttl_s=60) is None  # a disabled user cannot log in
    with Session(engine) as session:
        actions = [e.action for e in store.audit_entries(session)]
    assert actions == ["create_user", "login_failed", "login", "login", "logout", "login", "disable_user",
                       "login_failed"]  # fmt: skip
    engine.dispose()


def test_the_login_guard_blocks_a_name_or_an_address_after_five_failures_a_minute():
    guard = LoginGuard(failures=5, window_s=60)
    for t in range(5):
        assert guard.blocked("ana", "10.0.0.1", now=100.0 + t) == 0.0
        guard.failed("ana", "10.0.0.1", now=100.0 + t)
    assert guard.blocked("ana", "10.9.9.9", now=105.0) == pytest.approx(55.0)  # the name, from anywhere
    assert guard.blocked("ben", "10.0.0.1", now=105.0) == pytest.approx(55.0)  # the address, for any name
    assert guard.blocked("ben", "10.9.9.9", now=105.0) == 0.0
    assert guard.blocked("ana", "10.0.0.1", now=160.5) == 0.0  # the first failure left the window
    assert retry_after(0.2) == "1" and retry_after(54.1) == "55"


def test_key_buckets_allow_the_burst_then_the_rate():
    buckets = KeyBuckets(per_s=10, burst=3)
    assert [buckets.take("a", now=0.0) for _ in range(3)] == [0.0] * 3
    assert buckets.take("a", now=0.0) == pytest.approx(0.1)  # empty: one token comes in 1/10 s
    assert buckets.take("b", now=0.0) == 0.0  # another key has its own bucket
    assert buckets.take("a", now=0.1) == 0.0 and buckets.take("a", now=0.1) > 0
    assert [buckets.take("a", now=100.0) for _ in range(4)][-1] > 0  # refills to the burst, never beyond


def test_the_cli_creates_users_from_the_environment_or_a_prompt(tmp_path):
    db = f"sqlite:///{tmp_path / 'service.db'}"
    runner = CliRunner()
    result = runner.invoke(
        cli_app, ["serve-user", "create", "ana", "--role", "admin", "--db", db], env={"FINESIEVE_PASSWORD": PASSWORD}
    )
    assert result.exit_code == 0, result.output
    assert "'ana' created with role admin" in result.output
    result = runner.invoke(
        cli_app, ["serve-user", "create", "ben", "--role", "reviewer", "--db", db], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    short = runner.invoke(
        cli_app, ["serve-user", "create", "cy", "--role", "reviewer", "--db", db], env={"FINESIEVE_PASSWORD": "short"}
    )
    assert short.exit_code != 0 and "at least 10 are required" in short.output
    bad_role = runner.invoke(
        cli_app, ["serve-user", "create", "cy", "--role", "root", "--db", db], env={"FINESIEVE_PASSWORD": PASSWORD}
    )
    assert bad_role.exit_code != 0 and "reviewer, admin" in bad_role.output
    engine = connect(db)
    with Session(engine) as session:
        assert {(u.username, u.role) for u in session.scalars(select(User))} == {("ana", "admin"), ("ben", "reviewer")}
        assert accounts.verify(session, "ben", PASSWORD) is not None
    engine.dispose()
