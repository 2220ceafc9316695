"""Reviewer and admin accounts: argon2 password hashes, login sessions with a CSRF token, and their audit trail.

    from sqlalchemy.orm import Session
    from finesieve.serve import accounts
    with Session(engine) as session, session.begin():
        accounts.create_user(session, "ana", "a long passphrase", "reviewer", actor="cli")
    with Session(engine) as session, session.begin():
        login = accounts.login(session, "ana", "a long passphrase", ttl_s=43200)   # None on bad credentials
        # login.token goes into the `finesieve_session` cookie; login.csrf_token into the X-CSRF-Token header
    with Session(engine) as session:
        user = accounts.find_session(session, token)      # SessionUser or None (unknown, expired, disabled)

Passwords are hashed with argon2id (argon2-cffi's defaults, which carry their own salt and parameters in the hash),
so a leaked table does not give them away. A session token is 32 random bytes; like an API key it is stored as its
sha256 only, which is enough for a random secret and keeps lookup one indexed query. `finesieve serve-user create`
and `POST /v1/admin/users` both call `create_user`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from finesieve.data.errors import ConfigError
from finesieve.serve import store
from finesieve.serve.db import User, UserSession, connect, utcnow

Role = Literal["reviewer", "admin"]
ROLES: tuple[str, ...] = ("reviewer", "admin")
MIN_PASSWORD_CHARS = 10
USERNAME_MAX = 200
# argon2-cffi's defaults (RFC 9106's second recommendation: 64 MiB, 3 passes), about 50 ms on an idle core.
# Tests swap in a cheaper PasswordHasher (the same algorithm) through this name.
_hasher = PasswordHasher()


class UserExists(ConfigError):
    """The username is taken (HTTP 409)."""


@dataclass(frozen=True)
class SessionUser:
    """A logged-in person, as the routes see them."""

    username: str
    role: str
    csrf_token: str


@dataclass(frozen=True)
class Login:
    token: str  # the cookie's value: shown once, stored as its sha256
    user: SessionUser


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConfigError(
            f"the password has {len(password)} characters; at least {MIN_PASSWORD_CHARS} are required: "
            "choose a longer one (a passphrase of several words is easiest)"
        )


def create_user(session: Session, username: str, password: str, role: str, *, actor: str) -> User:
    """Store a new user with an argon2 hash of `password`; refuses a taken name, an unknown role, a short password."""
    username = username.strip()
    if not username or len(username) > USERNAME_MAX:
        raise ConfigError(f"username {username!r}: give a name of 1 to {USERNAME_MAX} characters")
    if role not in ROLES:
        raise ConfigError(f"role {role!r} is not one of {list(ROLES)}: use --role reviewer or --role admin")
    check_password(password)
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise UserExists(f"a user named {username!r} exists already: choose another name")
    user = User(username=username, password_hash=_hasher.hash(password), role=role, created_at=utcnow())
    session.add(user)
    store.audit(session, actor, "create_user", {"username": username, "role": role})
    return user


def add_user(database_url: str, username: str, password: str, role: str, *, actor: str = "cli") -> None:
    """Create a user in the service's database (migrating it first): what `finesieve serve-user create` calls."""
    engine = connect(database_url)
    try:
        with Session(engine) as session, session.begin():
            create_user(session, username, password, role, actor=actor)
    finally:
        engine.dispose()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def verify(session: Session, username: str, password: str) -> User | None:
    """The active user whose password this is; None otherwise (taking about the same time either way)."""
    user = session.scalar(select(User).where(User.username == username, User.disabled_at.is_(None)))
    if user is None:
        _hasher.hash(password)  # as slow as a verify: a wrong name is not told apart from a wrong password by time
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


def login(session: Session, username: str, password: str, *, ttl_s: float, client: str = "") -> Login | None:
    """A new session for good credentials (audited as `login`); None and a `login_failed` entry otherwise."""
    user = verify(session, username, password)
    if user is None:
        store.audit(session, username[:USERNAME_MAX], "login_failed", {"client": client})
        return None
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        UserSession(
            token_sha256=_token_hash(token),
            username=user.username,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
        )
    )
    # Expired sessions of this user go now: the table holds live sessions only, without a sweeper.
    session.execute(delete(UserSession).where(UserSession.username == user.username, UserSession.expires_at <= now))
    store.audit(session, user.username, "login", {"client": client})
    return Login(token=token, user=SessionUser(username=user.username, role=user.role, csrf_token=csrf))


def find_session(session: Session, token: str) -> SessionUser | None:
    """The user behind a session cookie; None when it is unknown, expired, or its user is disabled."""
    row = session.execute(
        select(UserSession, User)
        .join(User, User.username == UserSession.username)
        .where(
            UserSession.token_sha256 == _token_hash(token),
            UserSession.expires_at > utcnow(),
            User.disabled_at.is_(None),
        )
    ).first()
    if row is None:
        return None
    user_session, user = row
    return SessionUser(username=user.username, role=user.role, csrf_token=user_session.csrf_token)


def logout(session: Session, token: str) -> None:
    row = session.get(UserSession, _token_hash(token))
    if row is not None:
        store.audit(session, row.username, "logout", {})
        session.delete(row)


def disable_user(session: Session, username: str, *, actor: str) -> None:
    """Stop a user from logging in; their open sessions end at once."""
    user = session.scalar(select(User).where(User.username == username, User.disabled_at.is_(None)))
    if user is None:
        raise ConfigError(f"no active user named {username!r}: check the name")
    user.disabled_at = utcnow()
    session.execute(delete(UserSession).where(UserSession.username == username))
    store.audit(session, actor, "disable_user", {"username": username})
