"""The reviewers' HTTP API: log in, take the next item, decide, undo, release, read the numbers; admins add users.

    from finesieve.serve.review_routes import install
    install(app, settings)       # create_app does this: the routers below, the login guard and the key buckets

Routes (JSON; datetimes ISO 8601 UTC; the reviewer web UI calls exactly these):

    POST /v1/auth/login                      {username, password} -> 200 {username, role, csrf_token} + cookie; 401
    GET  /v1/auth/me                         -> 200 {username, role, csrf_token}; 401
    POST /v1/auth/logout                     -> 204, session deleted and cookie cleared
    POST /v1/review/next                     -> 200 {item: ITEM}, or 204 when the queue is empty
    POST /v1/review/items/{id}/decision      {violation, category?, note?} -> 200 {item}; 409 without the lease; 404;
                                             422 for a category not in the item's `categories`
    POST /v1/review/items/{id}/undo          -> 200 {item} (leased to the caller again); 409 past the window
    POST /v1/review/items/{id}/release       -> 200 {item} (pending again); 409 unless the caller holds it
    GET  /v1/review/stats                    -> 200 the queue's numbers (finesieve.serve.queue.stats)
    POST /v1/admin/users                     {username, password, role} -> 201 {username, role}   (admin only)
    GET  /v1/admin/audit?limit=N&before=ID   -> 200 {entries: [{id, actor, action, at, details}]}, newest first

These routes take the `finesieve_session` cookie (HttpOnly, SameSite=Strict), never an API key; every request
other than GET that the cookie authenticates must also carry `X-CSRF-Token` equal to the session's token (403
otherwise), so a page on another site cannot make a logged-in browser act. ITEM is `finesieve.serve.queue.item_view`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Cookie, Depends, FastAPI, Header, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from finesieve.data.errors import ConfigError
from finesieve.serve import accounts, queue, store
from finesieve.serve.db import AuditEntry, ReviewItem
from finesieve.serve.ratelimit import KeyBuckets, LoginGuard, retry_after
from finesieve.serve.settings import ServiceSettings

SESSION_COOKIE = "finesieve_session"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_WINDOW_S = 60.0
NOTE_MAX = 2000


def install(app: FastAPI, settings: ServiceSettings) -> None:
    """Add the review, auth and admin routers and the in-process limits they (and the API key routes) use."""
    app.state.key_buckets = KeyBuckets(settings.rate_limit_per_s, settings.rate_limit_burst)
    app.state.login_guard = LoginGuard(settings.login_failures_per_minute, LOGIN_WINDOW_S)
    app.include_router(auth_router)
    app.include_router(review_router)
    app.include_router(admin_router)


# --------------------------------------------------------------------------------------------- schemas


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=accounts.USERNAME_MAX)
    password: str = Field(min_length=1, max_length=1000)


class Me(BaseModel):
    username: str
    role: str
    csrf_token: str = Field(description=f"Send it back in the {CSRF_HEADER} header of every POST.")


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    violation: bool = Field(description="True: the message breaks the policy; False: the model was wrong to flag it.")
    category: str | None = Field(None, max_length=100, description="The violated category (one of `categories`).")
    note: str | None = Field(None, max_length=NOTE_MAX, description="Free text for the record (no personal data).")


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=accounts.USERNAME_MAX)
    password: str = Field(min_length=1, max_length=1000)
    role: accounts.Role


class UserOut(BaseModel):
    username: str
    role: str


# ------------------------------------------------------------------------------------------ dependencies


def _engine(request: Request):
    return request.app.state.engine


def current_user(
    request: Request,
    session_token: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None,
    csrf: Annotated[str | None, Header(alias=CSRF_HEADER)] = None,
) -> accounts.SessionUser:
    """The logged-in user behind the session cookie: 401 without a live session, 403 on a missing or wrong CSRF."""
    if not session_token:
        hint = (
            " (an API key does not open the review routes: API keys call /v1/moderate)"
            if request.headers.get("authorization")
            else ""
        )
        raise HTTPException(401, f"not logged in: POST /v1/auth/login first{hint}")
    with Session(_engine(request)) as session:
        user = accounts.find_session(session, session_token)
    if user is None:
        raise HTTPException(401, "the session expired or was ended: log in again with POST /v1/auth/login")
    if request.method not in ("GET", "HEAD", "OPTIONS") and csrf != user.csrf_token:
        raise HTTPException(
            403, f"missing or wrong {CSRF_HEADER} header: send the csrf_token from /v1/auth/login or /v1/auth/me"
        )
    return user


def admin_user(user: Annotated[accounts.SessionUser, Depends(current_user)]) -> accounts.SessionUser:
    if user.role != "admin":
        raise HTTPException(403, f"user {user.username!r} is a {user.role}; this route needs the admin role")
    return user


UserDep = Annotated[accounts.SessionUser, Depends(current_user)]
AdminDep = Annotated[accounts.SessionUser, Depends(admin_user)]


def _categories(request: Request, model: str, fallback: dict) -> list[str]:
    """The positive classes of the item's model, for the decision form; the stored scores' keys if not served."""
    served = getattr(request.app.state, "moderator", None)
    if served is not None and model in served.models:
        return [str(p) for p in served.models[model].cascade.positive]
    return sorted(fallback)


def _item_json(request: Request, session: Session, item: ReviewItem) -> dict:
    message = store.get_message(session, item.message_id)
    categories = _categories(request, message.model, message.category_scores or {}) if message is not None else []
    return {"item": queue.item_view(item, message, categories)}


def _queue_error(err: Exception) -> HTTPException:
    if isinstance(err, queue.ItemNotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(err))
    return HTTPException(status.HTTP_409_CONFLICT, str(err))


# -------------------------------------------------------------------------------------------------- auth

auth_router = APIRouter(prefix="/v1/auth", tags=["auth"])


@auth_router.post("/login", response_model=Me)
def login(body: LoginRequest, request: Request, response: Response) -> Me:
    settings: ServiceSettings = request.app.state.settings
    guard: LoginGuard = request.app.state.login_guard
    client = request.client.host if request.client else "unknown"
    wait = guard.blocked(body.username, client)
    if wait:
        raise HTTPException(
            429,
            f"too many failed logins for {body.username!r} or from {client} "
            f"(at most {guard.failures} a minute): wait {retry_after(wait)} s",
            headers={"Retry-After": retry_after(wait)},
        )
    with Session(_engine(request)) as session, session.begin():
        result = accounts.login(session, body.username, body.password, ttl_s=settings.session_ttl_s, client=client)
    if result is None:
        guard.failed(body.username, client)
        raise HTTPException(401, "wrong username or password")
    response.set_cookie(
        SESSION_COOKIE,
        result.token,
        max_age=int(settings.session_ttl_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return Me(username=result.user.username, role=result.user.role, csrf_token=result.user.csrf_token)


@auth_router.get("/me", response_model=Me)
def me(user: UserDep) -> Me:
    return Me(username=user.username, role=user.role, csrf_token=user.csrf_token)


@auth_router.post("/logout", status_code=204)
def logout(
    request: Request, user: UserDep, session_token: Annotated[str | None, Cookie(alias=SESSION_COOKIE)] = None
) -> Response:
    with Session(_engine(request)) as session, session.begin():
        accounts.logout(session, session_token or "")
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# ------------------------------------------------------------------------------------------------ review

review_router = APIRouter(prefix="/v1/review", tags=["review"])


@review_router.post("/next", responses={204: {"description": "The queue is empty."}})
def next_item(request: Request, user: UserDep):
    settings: ServiceSettings = request.app.state.settings
    with Session(_engine(request)) as session, session.begin():
        try:
            item = queue.lease_next(session, user.username, settings.review_lease_s)
        except queue.LeaseConflict as err:
            raise _queue_error(err) from err
        if item is None:
            return Response(status_code=204)
        return _item_json(request, session, item)


def _check_category(request: Request, session: Session, item_id: int, category: str | None) -> None:
    """422 for a category the item's model does not have: the export could not label such a review."""
    item = session.get(ReviewItem, item_id)
    message = store.get_message(session, item.message_id) if item is not None else None
    if category is None or message is None:
        return
    categories = _categories(request, message.model, message.category_scores or {})
    if categories and category not in categories:
        raise HTTPException(422, f"category {category!r} is not one of model {message.model!r}'s {categories}")


@review_router.post("/items/{item_id}/decision")
def decision(item_id: int, body: DecisionRequest, request: Request, user: UserDep) -> dict:
    with Session(_engine(request)) as session, session.begin():
        _check_category(request, session, item_id, body.category)
        try:
            item = queue.decide(session, item_id, user.username, body.violation, body.category, body.note)
        except (queue.ItemNotFound, queue.LeaseConflict) as err:
            raise _queue_error(err) from err
        return _item_json(request, session, item)


@review_router.post("/items/{item_id}/undo")
def undo(item_id: int, request: Request, user: UserDep) -> dict:
    settings: ServiceSettings = request.app.state.settings
    with Session(_engine(request)) as session, session.begin():
        try:
            item = queue.undo(
                session, item_id, user.username, window_s=settings.undo_window_s, lease_s=settings.review_lease_s
            )
        except (queue.ItemNotFound, queue.LeaseConflict) as err:
            raise _queue_error(err) from err
        return _item_json(request, session, item)


@review_router.post("/items/{item_id}/release")
def release(item_id: int, request: Request, user: UserDep) -> dict:
    with Session(_engine(request)) as session, session.begin():
        try:
            item = queue.release(session, item_id, user.username)
        except (queue.ItemNotFound, queue.LeaseConflict) as err:
            raise _queue_error(err) from err
        return _item_json(request, session, item)


@review_router.get("/stats")
def review_stats(request: Request, user: UserDep) -> dict:
    with Session(_engine(request)) as session:
        return queue.stats(session)


# ------------------------------------------------------------------------------------------------- admin

admin_router = APIRouter(prefix="/v1/admin", tags=["admin"])


@admin_router.post("/users", status_code=201, response_model=UserOut)
def create_user(body: NewUser, request: Request, admin: AdminDep) -> UserOut:
    try:
        with Session(_engine(request)) as session, session.begin():
            accounts.create_user(session, body.username, body.password, body.role, actor=admin.username)
    except accounts.UserExists as err:
        raise HTTPException(409, str(err)) from err
    except ConfigError as err:
        raise HTTPException(422, str(err)) from err
    return UserOut(username=body.username.strip(), role=body.role)


@admin_router.get("/audit")
def audit_log(
    request: Request,
    admin: AdminDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most entries returned.")] = 100,
    before: Annotated[int | None, Query(description="Only entries with a smaller id (the next page).")] = None,
) -> dict:
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    with Session(_engine(request)) as session:
        entries = list(session.scalars(query))
    return {
        "entries": [
            {"id": e.id, "actor": e.actor, "action": e.action, "at": e.at.isoformat(), "details": e.details}
            for e in entries
        ]
    }
