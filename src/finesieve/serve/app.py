"""The moderation service: a FastAPI app that decides messages with trained runs and stores every decision.

    from finesieve.serve.app import create_app
    from finesieve.serve.settings import ServiceSettings
    app = create_app(ServiceSettings(runs={"spam": "runs/cascade"}))   # then: uvicorn, or `finesieve serve`

Routes (every one but /healthz needs `Authorization: Bearer KEY`, a key made by `finesieve serve-key create`):

    POST /v1/moderate         {model?, messages: [{id?, text}]} or {model?, id?, text} -> {model, results: [...]}
    POST /v1/moderations      the OpenAI moderation API: {input: str | [str], model?} -> {id, model, results}
    GET  /v1/messages/{id}    a stored decision (the text itself is never returned)
    GET  /healthz             the process answers (no key needed)
    GET  /readyz              models loaded and the database reachable (503 otherwise)
    GET  /metrics             Prometheus text format
    GET  /ui/                 the reviewer's web pages (login, queue, dashboard; no key: they log in)
    /v1/auth/*, /v1/review/*, /v1/admin/*   reviewers and admins, with a login session and not a key
                              (finesieve.serve.review_routes; users made by `finesieve serve-user create`)
    POST /v1/admin/models/{name}/reload   an admin switches a model to the run its registry alias names now
                              (and its shadow), without dropping a request (finesieve.serve.moderation)

A key may call only the models it was created for (403 otherwise), at most `rate_limit_per_s` requests a second
(429 with Retry-After; finesieve.serve.ratelimit). Bodies over `max_request_bytes` get 413, and
every 422 names the field (`body.messages.3.text: ...`). Decisions are stored before they are answered
(`finesieve.serve.moderation`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders

from finesieve.data.errors import FinesieveError
from finesieve.serve import logs, store
from finesieve.serve.callers import CallerCache
from finesieve.serve.db import WalCheckpointer, connect
from finesieve.serve.metrics import ServiceMetrics
from finesieve.serve.moderation import MessageIn, Moderator, Outcome, Reload, ServedModel, load_models, load_shadows
from finesieve.serve.monitor_task import start_monitor, stop_monitor
from finesieve.serve.ratelimit import retry_after
from finesieve.serve.review_routes import AdminDep
from finesieve.serve.review_routes import install as install_review_routes
from finesieve.serve.schemas import (
    Decision,
    ModerateRequest,
    ModerateResponse,
    OpenAIModerationRequest,
    OpenAIModerationResponse,
    OpenAIModerationResult,
    StoredMessage,
)
from finesieve.serve.settings import ServiceSettings
from finesieve.serve.ui_routes import ui_router

RETENTION_EVERY_S = 3600.0  # how often stored texts past the retention period are deleted


def create_app(settings: ServiceSettings, *, models: dict[str, ServedModel] | None = None) -> FastAPI:
    """The app for `settings`: loads its runs (refusing any that cannot be served) and migrates its database."""
    models = models if models is not None else load_models(settings.runs, settings.registry_uri)
    shadows = load_shadows(settings.shadow, settings.registry_uri)  # one that fails is logged, never fatal
    engine = connect(settings.database_url, settings.sqlite_synchronous, sqlite_autocheckpoint=False)
    metrics = ServiceMetrics()
    moderator = Moderator(models, engine, settings, metrics, shadows=shadows)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with Session(engine) as session, session.begin():
            store.audit(
                session,
                "service",
                "start",
                {
                    "models": {n: m.version for n, m in models.items()},
                    "shadows": {n: m.version for n, m in shadows.items()},
                },
            )
        # The models and libraries loaded by now are the bulk of the heap and live as long as the process: moved out of
        # the collector's generations, a full collection no longer walks them (it paused requests for tens of ms).
        gc.freeze()
        checkpointer = WalCheckpointer(engine)  # SQLite: the WAL is checkpointed off the requests' commits
        days = settings.retention_days
        purge = asyncio.create_task(_purge_periodically(engine, days)) if days else None
        poll = (
            asyncio.create_task(_poll_registry(moderator, settings.registry_poll_s))
            if settings.registry_poll_s
            else None
        )
        monitor = start_monitor(settings, moderator, metrics)  # finesieve_monitor_* gauges, off the event loop
        try:
            yield
        finally:
            if purge is not None:
                purge.cancel()
            if poll is not None:
                poll.cancel()
            await stop_monitor(monitor)
            moderator.close()
            checkpointer.close()
            engine.dispose()

    # The OpenAPI document is served to key holders only (nothing but /healthz and the login answers without
    # credentials); the interactive /docs and /redoc pages are off: they load scripts from a CDN.
    app = FastAPI(
        title="finesieve moderation service", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None
    )

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_document(caller: CallerDep) -> JSONResponse:
        return JSONResponse(app.openapi())

    app.state.settings, app.state.moderator, app.state.metrics, app.state.engine = settings, moderator, metrics, engine
    app.include_router(health_router)
    app.include_router(moderation_router)
    app.include_router(messages_router)
    app.include_router(admin_models_router)  # POST /v1/admin/models/{name}/reload: the hot switch (admin session)
    install_review_routes(app, settings)  # /v1/auth, /v1/review, /v1/admin: reviewer sessions, not API keys
    app.include_router(ui_router)  # the reviewer's web pages (/ui); they call the review API
    app.add_exception_handler(RequestValidationError, _validation_error)

    app.state.callers = CallerCache(engine, settings.key_cache_s)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)  # before anything reads the body
    app.add_middleware(RequestLog, metrics=metrics)  # outermost: a 413 is counted and logged too
    return app


def _route(request: Request) -> str:
    return getattr(request.scope.get("route"), "path", "unmatched")  # the template: no ids in logs or labels


async def _poll_registry(moderator: Moderator, every_s: float) -> None:
    """Every `every_s`: switch each model whose registry alias moved (loaded on a thread; requests go on)."""
    while True:
        await asyncio.sleep(every_s)
        for done in await asyncio.to_thread(moderator.reload_registry_refs):
            if done.changed or done.shadow != done.shadow_previous:
                await asyncio.to_thread(_audit_reload, moderator, "registry-poll", done)


def _audit_reload(moderator: Moderator, actor: str, done: Reload) -> None:
    with Session(moderator.engine) as session, session.begin():
        store.audit(session, actor, "reload", done.as_dict())


async def _purge_periodically(engine, days: int) -> None:
    while True:
        await asyncio.to_thread(_purge, engine, days)
        await asyncio.sleep(RETENTION_EVERY_S)


def _purge(engine, days: int) -> None:
    with Session(engine) as session, session.begin():
        store.purge_texts(session, days)


# --------------------------------------------------------------------------------------------- dependencies


async def get_moderator(request: Request) -> Moderator:  # async: a sync dependency costs a thread hop
    return request.app.state.moderator


async def get_caller(
    request: Request, authorization: Annotated[str | None, Header(description="Bearer KEY")] = None
) -> store.Caller:
    """The caller behind the request's key: 401 when it is missing, malformed, unknown or revoked."""
    settings: ServiceSettings = request.app.state.settings
    if not settings.require_auth:
        return store.Caller(name="anonymous", models=(store.ALL_MODELS,))
    challenge = {"WWW-Authenticate": "Bearer"}
    if not authorization:
        raise HTTPException(401, "missing Authorization header: send `Authorization: Bearer KEY`", headers=challenge)
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise HTTPException(
            401, "the Authorization header is not `Bearer KEY`: send the key after 'Bearer '", headers=challenge
        )
    callers: CallerCache = request.app.state.callers
    caller = callers.cached(key.strip()) or await run_in_threadpool(callers.lookup, key.strip())
    if caller is None:
        raise HTTPException(
            401, "unknown or revoked API key: create one with `finesieve serve-key create`", headers=challenge
        )
    wait = request.app.state.key_buckets.take(caller.name)  # in-process: see finesieve.serve.ratelimit
    if wait:
        raise HTTPException(
            429,
            f"API key {caller.name!r} is over its rate limit ({settings.rate_limit_per_s:g}/s, burst "
            f"{settings.rate_limit_burst:g}): retry after {retry_after(wait)} s",
            headers={"Retry-After": retry_after(wait)},
        )
    return caller


Moder = Annotated[Moderator, Depends(get_moderator)]
CallerDep = Annotated[store.Caller, Depends(get_caller)]


def resolve_model(moderator: Moderator, caller: store.Caller, requested: str | None) -> str:
    """The model a request names (or the default), checked against the service's models and the key's scope."""
    model = requested or moderator.settings.fallback_model or ""
    if model not in moderator.models:
        _invalid(("body", "model"), f"unknown model {model!r}: this service serves {sorted(moderator.models)}", "model")
    if not caller.may_use(model):
        raise HTTPException(
            403, f"API key {caller.name!r} may not use model {model!r}; it may use {sorted(caller.models)}"
        )
    return model


def check_limits(settings: ServiceSettings, texts: list[str], batch_loc: tuple, text_locs: list[tuple]) -> None:
    """Batch size and text length limits, as 422s naming the field (`text_locs`: each text's location)."""
    if len(texts) > settings.max_batch:
        _invalid(
            batch_loc,
            f"{len(texts)} messages in one request; at most {settings.max_batch}: split the batch",
            "too_long",
        )
    for text, loc in zip(texts, text_locs):
        if len(text) > settings.max_text_chars:
            _invalid(loc, f"text of {len(text):,} characters; at most {settings.max_text_chars:,}", "too_long")


def _invalid(loc: tuple, msg: str, kind: str) -> None:
    raise RequestValidationError([{"loc": loc, "msg": msg, "type": kind}])


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = jsonable_encoder(exc.errors() if isinstance(exc, RequestValidationError) else [])
    summary = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors)
    return JSONResponse(status_code=422, content={"detail": errors, "message": summary})


class RequestLog:
    """Count, time and log every request (one line, never its text) and answer with its X-Request-ID.

    Pure ASGI: Starlette's `@app.middleware("http")` (BaseHTTPMiddleware) runs each request through a task and a
    memory stream, a measurable share of a one-message request's time under load."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        request = Request(scope)
        request_id = logs.request_id(request)
        status, done = 500, False  # 500 unless the app starts a response

        def observe() -> None:
            nonlocal done
            route, seconds = _route(request), time.perf_counter() - start
            self.metrics.observe_request(route, request.method, status, seconds)
            logs.log_request(request, route, status, seconds)  # one line per request, never its text
            done = True

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(logs.REQUEST_ID_HEADER, request_id)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                observe()  # before the last byte goes out: a client that got its answer finds it counted
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logs.log_failed_request(request, _route(request), time.perf_counter() - start)
            raise
        if not done:
            observe()


class BodyLimit:
    """Answer 413 to a body over `max_bytes`: by its Content-Length at once, or while a chunked body streams in."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(scope, receive, send, int(length))
        messages, size = [], 0
        while True:  # read the body here (at most max_bytes + one chunk), then hand it on
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send, size)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send, size: int) -> None:
        detail = f"request body of {size:,}+ bytes; at most {self.max_bytes:,}: send smaller batches"
        await JSONResponse(status_code=413, content={"detail": detail})(scope, receive, send)


# ---------------------------------------------------------------------------------------------------- routes

health_router = APIRouter(tags=["health"])
moderation_router = APIRouter(prefix="/v1", tags=["moderation"])
messages_router = APIRouter(prefix="/v1", tags=["messages"])


@health_router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@health_router.get("/readyz")
def readyz(request: Request, caller: CallerDep, moderator: Moder) -> JSONResponse:
    problems = [] if moderator.models else ["no model loaded"]
    try:
        store.ping(moderator.engine)
    except Exception as err:  # noqa: BLE001 - any database failure means not ready
        problems.append(f"database unreachable: {type(err).__name__}")
    body = {"status": "not ready" if problems else "ready", "models": sorted(moderator.models), "problems": problems}
    return JSONResponse(status_code=503 if problems else 200, content=body)


@health_router.get("/metrics", response_class=PlainTextResponse)  # documented as text, as Prometheus serves it
def metrics_route(request: Request, caller: CallerDep) -> Response:
    request.app.state.metrics.refresh_queue(request.app.state.engine)  # queue gauges are read at scrape time
    payload, content_type = request.app.state.metrics.render()
    return Response(payload, media_type=content_type)


async def _moderate(request: Request, moderator: Moderator, model: str, messages: list[MessageIn]) -> list[Outcome]:
    request.state.model, request.state.n_messages = model, len(messages)  # for the request's log line
    outcomes = await moderator.moderate_async(model, messages)
    metrics: ServiceMetrics = request.app.state.metrics
    for outcome in outcomes:
        if not outcome.duplicate:
            metrics.decisions.labels(model=model, action=outcome.action).inc()
            metrics.deciding_stage.labels(model=model, stage=outcome.decided_by).inc()
            if outcome.failure is not None:
                metrics.model_errors.labels(model=model).inc()
    return outcomes


@moderation_router.post("/moderate", response_model=ModerateResponse)
async def moderate(body: ModerateRequest, request: Request, caller: CallerDep, moderator: Moder) -> ModerateResponse:
    model = resolve_model(moderator, caller, body.model)
    batch = body.batch()
    batch_loc = ("body", "messages")
    text_locs = [(*batch_loc, i, "text") for i in range(len(batch))] if body.messages else [("body", "text")]
    check_limits(moderator.settings, [m.text for m in batch], batch_loc, text_locs)
    seen: set[str] = set()
    for i, message in enumerate(batch):
        if message.id is None:
            continue
        if message.id in seen:
            _invalid(("body", "messages", i, "id"), f"id {message.id!r} appears twice in this batch", "value_error")
        seen.add(message.id)
    outcomes = await _moderate(request, moderator, model, [MessageIn(text=m.text, id=m.id) for m in batch])
    return ModerateResponse(model=model, results=[Decision(**vars(o)) for o in outcomes])


@moderation_router.post("/moderations", response_model=OpenAIModerationResponse)
async def moderations(
    body: OpenAIModerationRequest, request: Request, caller: CallerDep, moderator: Moder
) -> OpenAIModerationResponse:
    model = resolve_model(moderator, caller, body.model)
    texts = body.texts()
    if not texts:
        _invalid(("body", "input"), "no text: send a string or a non-empty list of strings", "too_short")
    text_locs = (
        [("body", "input", i) for i in range(len(texts))] if isinstance(body.input, list) else [("body", "input")]
    )
    check_limits(moderator.settings, texts, ("body", "input"), text_locs)
    outcomes = await _moderate(request, moderator, model, [MessageIn(text=t) for t in texts])
    positive = [str(p) for p in moderator.models[model].cascade.positive]
    results = [
        OpenAIModerationResult(
            flagged=o.action != "deliver",
            categories={c: o.action != "deliver" and o.category == c for c in positive},
            category_scores={c: o.category_scores.get(c, 0.0) for c in positive},
        )
        for o in outcomes
    ]
    return OpenAIModerationResponse(id=f"modr-{uuid.uuid4().hex}", model=model, results=results)


@messages_router.get("/messages/{message_id}", response_model=StoredMessage)
def get_message(message_id: str, caller: CallerDep, moderator: Moder) -> StoredMessage:
    with Session(moderator.engine) as session:
        row = store.get_message(session, message_id)
    if row is None or not caller.may_use(row.model):  # another scope's message is as good as absent
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no message with id {message_id!r} for this key")
    outcome = Outcome.from_row(row, duplicate=False)
    return StoredMessage(
        **vars(outcome), created_at=row.created_at, text_length=row.text_length, text_stored=row.text is not None
    )


admin_models_router = APIRouter(prefix="/v1/admin/models", tags=["admin"])


@admin_models_router.post("/{name}/reload")
async def reload_model(name: str, request: Request, admin: AdminDep) -> dict:
    """Resolve the model's run (e.g. registry:spam@champion) and its shadow's again, and switch to them when they
    moved: loaded off the event loop, swapped in at once; requests in flight finish on the old run, none fails.
    404 for an unknown model; 409 when the new run cannot be served (the old one keeps serving)."""
    moderator: Moderator = request.app.state.moderator
    if name not in moderator.models:
        raise HTTPException(404, f"unknown model {name!r}: this service serves {sorted(moderator.models)}")
    try:
        done = await asyncio.to_thread(moderator.reload, name)
    except FinesieveError as err:
        raise HTTPException(409, f"model {name!r} not switched, its current run keeps serving: {err}") from None
    await asyncio.to_thread(_audit_reload, moderator, admin.username, done)
    return done.as_dict()
