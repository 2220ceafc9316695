"""The moderation service's database: its tables (SQLAlchemy 2, typed), the engine and the migrations.

    from finesieve.serve.db import connect
    engine = connect("sqlite:///./finesieve.db")      # creates or upgrades the schema (Alembic), then returns
    engine = connect("postgresql+psycopg://postgres@127.0.0.1:55432/postgres")

The schema is owned by the Alembic scripts in `migrations/` (shipped inside the package): `connect` applies every
script up to the newest, so a new database and an old one end on the same tables. The classes below must agree
with the scripts (a test compares them). Queries live in `finesieve.serve.store` (messages, API keys, the audit
log), `finesieve.serve.queue` (review items) and `finesieve.serve.accounts` (users and their sessions).

SQLite runs in WAL mode (readers do not block the writer) with a busy timeout, so several worker threads share one
file. Times are naive UTC datetimes on both databases.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_MS = 10_000  # how long a writer waits for SQLite's lock before failing


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Message(Base):
    """One moderated message: the decision, the scores and the redacted text (never the raw one)."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the client's message id, or a uuid4
    model: Mapped[str] = mapped_column(String(100), index=True)
    model_version: Mapped[str] = mapped_column(String(300))  # run directory name @ sha256 of its manifest.json
    text: Mapped[str | None] = mapped_column(Text)  # redacted; NULL once the retention period has passed
    text_length: Mapped[int] = mapped_column(Integer)  # characters of the redacted text
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(20))  # deliver | review | block
    category: Mapped[str] = mapped_column(String(100), default="")
    decided_by: Mapped[str] = mapped_column(String(20))  # rules | prefilter | model | failure
    score: Mapped[float | None] = mapped_column(Float)
    category_scores: Mapped[dict] = mapped_column(JSON, default=dict)
    stage_scores: Mapped[dict] = mapped_column(JSON, default=dict)  # stage -> score, absent where it did not run
    rules_fired: Mapped[list] = mapped_column(JSON, default=list)
    latency_ms: Mapped[float] = mapped_column(Float)
    failure: Mapped[str | None] = mapped_column(Text)  # why the model did not decide: the error or the timeout
    # What the shadow model (finesieve.serve.shadow) would have decided, written after the live decision and never
    # acted on: {"version", "action", "category", "score", "category_scores"}; NULL without a shadow (or before
    # it answered). none_as_null: a Python None is SQL NULL, not the JSON value null, so `IS NULL` finds it.
    shadow_scores: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))


class ReviewItem(Base):
    """A message waiting for (or given) a person's decision."""

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(String(20))  # flagged | audit | failure
    priority: Mapped[float] = mapped_column(Float, default=0.0)  # higher first
    state: Mapped[str] = mapped_column(String(20), default="pending", index=True)  # pending | leased | decided
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    violation: Mapped[bool | None] = mapped_column(Boolean)
    decided_category: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # The queue's order (oldest first): created_at moved earlier by the priority (finesieve.serve.queue.due_at).
    # Set on enqueue; NULL only on rows written before migration 0002, which backfills it.
    due_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)


class AuditEntry(Base):
    """Who did what to the service, and when (keys created and revoked, texts purged, start-ups)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    details: Mapped[dict] = mapped_column(JSON, default=dict)


class ApiKey(Base):
    """A client's key: only its sha256 is stored; `models` are the model names it may call ("*": all)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    models: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)


class User(Base):
    """A person who reviews (role `reviewer`) or also manages users and reads the audit log (role `admin`)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))  # argon2id, with its parameters and salt
    role: Mapped[str] = mapped_column(String(20))  # reviewer | admin
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime)


class UserSession(Base):
    """A logged-in browser: only the sha256 of its cookie token is stored, beside the CSRF token it must echo."""

    __tablename__ = "sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("users.username", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


def create_db_engine(url: str, sqlite_synchronous: str = "full", sqlite_autocheckpoint: bool = True) -> Engine:
    """An engine for `url`; SQLite files get WAL mode, a busy timeout, foreign keys, and `sqlite_synchronous`:
    "full" syncs the WAL to disk at every commit (a decision answered survives a power loss), "normal" only at
    checkpoints (it survives the process being killed, not the machine losing power; commits cost no fsync).
    `sqlite_autocheckpoint=False` leaves the WAL's checkpoints to a `WalCheckpointer` thread (the service's)."""
    if sqlite_synchronous not in ("full", "normal"):
        raise ValueError(f"sqlite_synchronous {sqlite_synchronous!r}: use 'full' or 'normal'")
    is_sqlite = url.startswith("sqlite")
    engine = create_engine(url, pool_pre_ping=not is_sqlite, future=True)
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # every new connection: pragmas are per connection
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA synchronous={sqlite_synchronous.upper()}")
            if not sqlite_autocheckpoint:
                cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.close()

    return engine


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ConfigParser interpolates '%'
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the migration scripts up to `revision` on the engine's database (idempotent)."""
    from alembic import command

    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def connect(url: str, sqlite_synchronous: str = "full", sqlite_autocheckpoint: bool = True) -> Engine:
    """The engine for `url`, with its schema migrated to the newest version."""
    engine = create_db_engine(url, sqlite_synchronous, sqlite_autocheckpoint)
    upgrade(engine)
    return engine


class WalCheckpointer:
    """Copies a SQLite WAL back into the database file every `every_s` seconds, on a thread of its own.

    SQLite does this by itself inside the commit that grows the WAL past 1,000 pages, and that commit, with every
    request waiting on it, then takes a few hundred milliseconds (measured: 16 requests in flight stalled ~250 ms
    about every 2,000 messages). With `sqlite_autocheckpoint=False` on the engine, this thread runs PASSIVE
    checkpoints instead, which never block a writer or a reader. Does nothing on other databases."""

    def __init__(self, engine: Engine, every_s: float = 1.0):
        self.engine, self.every_s = engine, every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if engine.dialect.name == "sqlite":
            self._thread = threading.Thread(target=self._work, name="wal-checkpoint", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while not self._stop.wait(self.every_s):
            self.checkpoint()

    def checkpoint(self) -> None:
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:  # noqa: BLE001 - retried on the next tick; a failed checkpoint loses nothing
            logging.getLogger(__name__).warning("WAL checkpoint failed", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self.checkpoint()  # the last one: the WAL holds nothing the database file lacks
