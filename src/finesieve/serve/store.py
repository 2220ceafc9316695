"""The moderation service's queries: every read and write of its database goes through these functions.

    from sqlalchemy.orm import Session
    from finesieve.serve import store
    with Session(engine) as session, session.begin():
        inserted = store.insert_messages(session, rows)      # ids actually inserted; others already existed
        stored = store.get_messages(session, ids)            # id -> Message
        store.purge_texts(session, older_than_days=30)       # texts of older messages set to NULL, decisions kept

Idempotency rests on the primary key of `messages`: rows are inserted with INSERT ... ON CONFLICT DO NOTHING
(SQLite and PostgreSQL both have it), so two requests racing with one message id leave exactly one row; the loser
reads the winner's decision back. API keys are stored as the sha256 of the key: a key is 32 random bytes, so a
slow password hash adds nothing against guessing, and lookup stays one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import Session

from finesieve.data.errors import ConfigError
from finesieve.serve.db import ApiKey, AuditEntry, Message, ReviewItem, utcnow

KEY_PREFIX = "fsk_"
ALL_MODELS = "*"


def insert_messages(session: Session, rows: Sequence[dict]) -> set[str]:
    """Insert message rows (dicts of Message columns) unless their id exists; returns the ids inserted."""
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    now = utcnow()
    values = [{"created_at": now, **row} for row in rows]
    if dialect not in _INSERT_IGNORING_KNOWN_IDS:
        raise ConfigError(f"database dialect {dialect!r} is not supported: use sqlite:/// or postgresql+psycopg://")
    # One statement without the values in it, executed over the rows: SQLAlchemy compiles it once and caches it
    # (inlining the values compiled it anew per request, ~5 ms of a single message's time).
    return set(session.scalars(_INSERT_IGNORING_KNOWN_IDS[dialect], values).all())


_INSERT_IGNORING_KNOWN_IDS = {
    "sqlite": sqlite.insert(Message).on_conflict_do_nothing(index_elements=["id"]).returning(Message.id),
    "postgresql": postgresql.insert(Message).on_conflict_do_nothing(index_elements=["id"]).returning(Message.id),
}


def get_messages(session: Session, ids: Iterable[str]) -> dict[str, Message]:
    ids = list(ids)
    if not ids:
        return {}
    return {m.id: m for m in session.scalars(select(Message).where(Message.id.in_(ids)))}


def get_message(session: Session, message_id: str) -> Message | None:
    return session.get(Message, message_id)


# The review queue's order. An item is served as if it had arrived `priority * AGE_SCALE_S` seconds earlier:
# sorting by due_at ascending is sorting by `priority + age_s / AGE_SCALE_S` descending, so one priority point
# (a whole score range) is worth an hour of waiting, and an item that waits long enough overtakes any newer one
# (no starvation). Failures (priority 2) start two hours ahead, a flagged message its score in hours, audits none.
AGE_SCALE_S = 3600.0


def due_at(created_at: datetime, priority: float) -> datetime:
    return created_at - timedelta(seconds=priority * AGE_SCALE_S)


def enqueue_reviews(session: Session, items: Sequence[dict]) -> None:
    """Add review items (dicts with message_id, reason, priority); they start pending, unleased."""
    now = utcnow()
    session.add_all(
        ReviewItem(state="pending", created_at=now, due_at=due_at(now, item.get("priority", 0.0)), **item)
        for item in items
    )


def review_items(session: Session, message_id: str | None = None) -> list[ReviewItem]:
    query = select(ReviewItem).order_by(ReviewItem.priority.desc(), ReviewItem.id)
    if message_id is not None:
        query = query.where(ReviewItem.message_id == message_id)
    return list(session.scalars(query))


def queue_depth(session: Session) -> tuple[dict[tuple[str, str], int], datetime | None]:
    """Review items counted by (reason, state), and when the oldest undecided one was queued (None: none)."""
    counts = session.execute(
        select(ReviewItem.reason, ReviewItem.state, func.count()).group_by(ReviewItem.reason, ReviewItem.state)
    ).all()
    oldest = session.scalar(select(func.min(ReviewItem.created_at)).where(ReviewItem.state != "decided"))
    return {(reason, state): n for reason, state, n in counts}, oldest


def purge_texts(session: Session, older_than_days: int, *, actor: str = "retention") -> int:
    """Set the text of messages older than `older_than_days` to NULL, keeping their decisions; returns how many."""
    if older_than_days < 0:
        raise ConfigError(f"older_than_days is {older_than_days}: pass 0 or more days")
    cutoff = utcnow() - timedelta(days=older_than_days)
    result = cast(
        CursorResult,
        session.execute(
            update(Message).where(Message.created_at < cutoff, Message.text.is_not(None)).values(text=None)
        ),
    )
    count = result.rowcount or 0
    audit(session, actor, "purge_texts", {"older_than_days": older_than_days, "messages": count})
    return count


def audit(session: Session, actor: str, action: str, details: dict | None = None) -> None:
    session.add(AuditEntry(actor=actor, action=action, at=utcnow(), details=details or {}))


def audit_entries(session: Session) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def count(session: Session, table) -> int:
    return session.scalar(select(func.count()).select_from(table)) or 0


# ------------------------------------------------------------------------------------------------- API keys


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's name and the models it may use ('*' in models: every model)."""

    name: str
    models: tuple[str, ...]

    def may_use(self, model: str) -> bool:
        return ALL_MODELS in self.models or model in self.models


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(session: Session, name: str, models: Sequence[str], *, actor: str = "cli") -> str:
    """Store a new key for `models` under `name` and return it: the only time the key itself is seen."""
    name = name.strip()
    if not name:
        raise ConfigError("an API key needs a name (who it is for), e.g. `finesieve serve-key create billing-app`")
    models = [m.strip() for m in models if m.strip()]
    if not models:
        raise ConfigError(f"API key {name!r}: name the models it may call with --models a,b (or '*' for all)")
    if session.scalar(select(ApiKey).where(ApiKey.name == name)) is not None:
        raise ConfigError(f"an API key named {name!r} exists already: choose another name, or revoke it first")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(name=name, key_sha256=hash_key(key), models=models, created_at=utcnow()))
    audit(session, actor, "create_api_key", {"name": name, "models": models})
    return key


def revoke_api_key(session: Session, name: str, *, actor: str = "cli") -> None:
    result = cast(
        CursorResult,
        session.execute(
            update(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
        ),
    )
    if not result.rowcount:
        raise ConfigError(f"no active API key named {name!r}: list the keys, or check the name")
    audit(session, actor, "revoke_api_key", {"name": name})


def find_caller(session: Session, key: str) -> Caller | None:
    """The caller a presented key belongs to; None for an unknown or revoked key."""
    row = session.scalar(select(ApiKey).where(ApiKey.key_sha256 == hash_key(key), ApiKey.revoked_at.is_(None)))
    return Caller(name=row.name, models=tuple(row.models)) if row is not None else None


def api_keys(session: Session) -> list[dict]:
    rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.name))
    return [
        {"name": r.name, "models": list(r.models), "created_at": r.created_at, "revoked_at": r.revoked_at} for r in rows
    ]


def active_key_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))) or 0


def ping(engine: Engine) -> None:
    """Raise unless the database answers a trivial query."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
