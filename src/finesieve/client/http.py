"""The moderation service's Python client, sync and async: typed decisions, idempotent retries, clear errors.

    from finesieve.client import ModerationClient, AsyncModerationClient
    with ModerationClient("http://127.0.0.1:8000", api_key="fsk_...") as client:
        decision = client.moderate("WINNER!! Claim your prize now")           # one Decision
        decisions = client.moderate(["hi mum", {"id": "m-42", "text": "..."}])  # one Decision per message, in order
        client.get_message("m-42")                                              # the stored decision (StoredMessage)
        client.health(), client.ready()                                         # bool, Readiness
    async with AsyncModerationClient("http://127.0.0.1:8000", api_key="fsk_...") as client:
        decision = await client.moderate("hi mum")

Every message gets its id before the first attempt (yours, or a uuid4), so a retry after a timeout, a dropped
connection or a 502/503/504 cannot create a second decision: the service answers the stored one with
`duplicate=True`. Retries back off exponentially with jitter and honour Retry-After (finesieve.client.retry); any
other 4xx raises at once (finesieve.client.errors), a 422 naming the refused field. Lists longer than `batch_size`
go in several requests. Each retry is logged (logger `finesieve.client`) with its reason, never the message text.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload
from urllib.parse import quote

import httpx2 as httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from finesieve.client.errors import (
    AuthenticationError,
    InvalidRequestError,
    ModerationAPIError,
    NotFoundError,
    PermissionDeniedError,
    RequestTooLargeError,
    ServerError,
    ServiceUnreachableError,
)
from finesieve.client.results import Decision, Readiness, StoredMessage
from finesieve.client.retry import RETRY_STATUSES, wait_before_retry
from finesieve.data.errors import ConfigError

log = logging.getLogger("finesieve.client")

Message = str | Mapping[str, Any]  # a text, or {"text": ..., "id": ...} (id optional)


class ClientConfig(BaseModel):
    """How the client reaches the service and how hard it tries; the keyword arguments of both clients."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="The service's address, e.g. http://127.0.0.1:8000.")
    timeout: float = Field(10.0, gt=0, description="Seconds to connect, and again to send and to read, per attempt.")
    retries: int = Field(3, ge=0, description="Attempts after the first on retryable failures (0: no retry).")
    backoff: float = Field(0.5, ge=0, description="Seconds before the first retry; doubled each retry, jittered.")
    max_backoff: float = Field(8.0, ge=0, description="Longest wait between attempts (Retry-After aside).")
    batch_size: int = Field(256, ge=1, description="Most messages per request (the service's max_batch).")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL: give e.g. http://127.0.0.1:8000")
        return value.rstrip("/")


def _config(owner: str, **values: Any) -> ClientConfig:
    try:
        return ClientConfig(**values)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"{owner}: {problems}") from None


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


# ----------------------------------------------------------------------------------- requests and answers


def message_batch(messages: Message | Sequence[Message], message_id: str | None) -> tuple[list[dict], bool]:
    """The messages as [{id, text}], each with an id (a uuid4 when not given), and whether one message came."""
    if isinstance(messages, str | Mapping):
        single = messages if isinstance(messages, Mapping) else {"text": messages}
        if message_id is not None:
            single = {**single, "id": message_id}
        return [_checked_message(single, "message")], True
    if message_id is not None:
        raise ConfigError("moderate(id=...) goes with one text; in a list give each its id: [{'id': ..., 'text': ...}]")
    if isinstance(messages, bytes) or not isinstance(messages, Sequence):
        raise ConfigError(
            f"moderate() takes a text, a {{'id', 'text'}} dict or a list of them; got {type(messages).__name__}"
        )
    if not messages:
        raise ConfigError("moderate() got an empty list: give at least one message")
    batch = []
    for i, message in enumerate(messages):
        if not isinstance(message, str | Mapping):
            raise ConfigError(f"messages[{i}] is a {type(message).__name__}: give a text or a {{'id', 'text'}} dict")
        batch.append(_checked_message({"text": message} if isinstance(message, str) else message, f"messages[{i}]"))
    return batch, False


def _checked_message(message: Mapping[str, Any], where: str) -> dict:
    unknown = sorted(set(message) - {"id", "text"})
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}: give 'text' and optionally 'id'")
    text, message_id = message.get("text"), message.get("id")
    if not isinstance(text, str):
        raise ConfigError(f"{where}['text'] must be a string, got {type(text).__name__}")
    if message_id is not None and not isinstance(message_id, str):
        raise ConfigError(f"{where}['id'] must be a string, got {type(message_id).__name__}")
    # The idempotency key, fixed here before any attempt: every retry of this request carries the same id.
    return {"id": message_id if message_id is not None else str(uuid.uuid4()), "text": text}


def _chunks(batch: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(batch), size):
        yield batch[start : start + size]


def _body(chunk: list[dict], single: bool, model: str | None) -> dict:
    body: dict[str, Any] = {**chunk[0]} if single else {"messages": chunk}  # one text: 422s then name `body.text`
    if model is not None:
        body["model"] = model
    return body


def _decisions(response: httpx.Response) -> list[Decision]:
    return [Decision.model_validate(result) for result in response.json()["results"]]


def _readiness(response: httpx.Response) -> Readiness:
    try:
        return Readiness.model_validate(response.json())
    except (ValueError, ValidationError):  # e.g. a proxy's 503 page: not the service's answer, still not ready
        return Readiness(status="not ready", problems=[f"HTTP {response.status_code} without a readiness body"])


def api_error(response: httpx.Response) -> ModerationAPIError:
    """The error for a response the client does not retry, carrying the server's detail (and fields for a 422)."""
    status, where = response.status_code, f"{response.request.method} {response.request.url.path}"
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else response.text[:500]
    if status == 422:
        errors = [e for e in detail if isinstance(e, dict)] if isinstance(detail, list) else []
        fields = [".".join(str(p) for p in e.get("loc", ())) for e in errors]
        # loc and msg only: pydantic's `input` may hold the message text, which never goes into logs or messages
        summary = "; ".join(f"{f}: {e.get('msg')}" for f, e in zip(fields, errors)) or str(detail)
        return InvalidRequestError(
            f"{where}: the service refused the request (422): {summary}", status_code=422, detail=detail, fields=fields
        )
    kinds: dict[int, tuple[type[ModerationAPIError], str]] = {
        401: (AuthenticationError, " Fix: pass api_key=, a key made by `finesieve serve-key create`."),
        403: (PermissionDeniedError, " Fix: use a key created for this model, or another model."),
        404: (NotFoundError, ""),
        413: (RequestTooLargeError, " Fix: lower batch_size."),
    }
    kind, fix = kinds.get(status, (ServerError if status >= 500 else ModerationAPIError, ""))
    return kind(f"{where}: {status} {detail}.{fix}", status_code=status, detail=detail)


class _Attempts:
    """One request's attempts: says after each failure whether to try again and how long to wait first."""

    def __init__(self, config: ClientConfig, method: str, path: str):
        self.config, self.method, self.path = config, method, path
        self.attempt, self.failure = 0, ""
        self.status: int | None = None

    def __iter__(self) -> Iterator[int]:
        for attempt in range(self.config.retries + 1):
            self.attempt = attempt
            yield attempt

    def failed(self, failure: str, status: int | None = None, retry_after: str | None = None) -> float | None:
        """Record a retryable failure; returns the seconds to wait before the next attempt, None when none is left."""
        self.failure, self.status = failure, status
        if self.attempt >= self.config.retries:
            return None
        wait = wait_before_retry(self.attempt, self.config.backoff, self.config.max_backoff, retry_after=retry_after)
        log.warning(
            "finesieve client: %s %s failed (%s); retry %d of %d in %.2f s",
            self.method,
            self.path,
            failure,
            self.attempt + 1,
            self.config.retries,
            wait,
        )
        return wait

    def give_up(self) -> ServiceUnreachableError:
        return ServiceUnreachableError(
            f"{self.method} {self.config.base_url}{self.path}: no answer after {self.attempt + 1} attempt(s), the "
            f"last {self.failure}. Fix: check that the service is up at {self.config.base_url}, or raise "
            "retries=/timeout=",
            attempts=self.attempt + 1,
            status_code=self.status,
        )


def _retryable(response: httpx.Response, accept: Sequence[int]) -> bool:
    return response.status_code in RETRY_STATUSES and response.status_code not in accept


def _result(response: httpx.Response, accept: Sequence[int]) -> httpx.Response:
    if response.status_code in accept:
        return response
    raise api_error(response)


# ------------------------------------------------------------------------------------------------ clients


class ModerationClient:
    """The service's sync client; see the module docstring. Close it (or use `with`) to free its connections."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        batch_size: int = 256,
    ):
        self.config = _config(
            type(self).__name__,
            base_url=base_url,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            batch_size=batch_size,
        )
        self._http = httpx.Client(base_url=self.config.base_url, headers=_headers(api_key), timeout=timeout)

    @overload  # a str is also a Sequence: this overload, listed first, wins for it
    def moderate(  # type: ignore[overload-overlap]
        self, messages: Message, model: str | None = None, *, id: str | None = None
    ) -> Decision: ...
    @overload
    def moderate(self, messages: Sequence[Message], model: str | None = None) -> list[Decision]: ...
    def moderate(
        self, messages: Message | Sequence[Message], model: str | None = None, *, id: str | None = None
    ) -> Decision | list[Decision]:
        """Decide one message (a text or an {id, text} dict) or a list of them; `model`: the service's default."""
        batch, single = message_batch(messages, id)
        decisions: list[Decision] = []
        for chunk in _chunks(batch, self.config.batch_size):
            decisions += _decisions(self._send("POST", "/v1/moderate", _body(chunk, single, model)))
        return decisions[0] if single else decisions

    def get_message(self, message_id: str) -> StoredMessage:
        """The decision stored for `message_id` (NotFoundError when there is none this key may see)."""
        response = self._send("GET", f"/v1/messages/{quote(message_id, safe='')}")
        return StoredMessage.model_validate(response.json())

    def health(self) -> bool:
        """Whether the service process answers (one attempt, no key needed)."""
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def ready(self) -> Readiness:
        """Whether the models are loaded and the database reachable (a 503 is an answer here, not retried)."""
        return _readiness(self._send("GET", "/readyz", accept=(200, 503)))

    def _send(self, method: str, path: str, body: dict | None = None, accept: Sequence[int] = (200,)) -> httpx.Response:
        attempts = _Attempts(self.config, method, path)
        for _ in attempts:
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TransportError as err:
                wait = attempts.failed(f"{type(err).__name__}: {err}")
            else:
                if not _retryable(response, accept):
                    return _result(response, accept)
                wait = attempts.failed(
                    f"HTTP {response.status_code}", response.status_code, response.headers.get("Retry-After")
                )
            if wait is None:
                break
            time.sleep(wait)
        raise attempts.give_up()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ModerationClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncModerationClient:
    """The service's async client: ModerationClient's methods, awaited. Close it (`await aclose()`, `async with`)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        batch_size: int = 256,
    ):
        self.config = _config(
            type(self).__name__,
            base_url=base_url,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            batch_size=batch_size,
        )
        self._http = httpx.AsyncClient(base_url=self.config.base_url, headers=_headers(api_key), timeout=timeout)

    @overload  # a str is also a Sequence: this overload, listed first, wins for it
    async def moderate(  # type: ignore[overload-overlap]
        self, messages: Message, model: str | None = None, *, id: str | None = None
    ) -> Decision: ...
    @overload
    async def moderate(self, messages: Sequence[Message], model: str | None = None) -> list[Decision]: ...
    async def moderate(
        self, messages: Message | Sequence[Message], model: str | None = None, *, id: str | None = None
    ) -> Decision | list[Decision]:
        """Decide one message (a text or an {id, text} dict) or a list of them; `model`: the service's default."""
        batch, single = message_batch(messages, id)
        decisions: list[Decision] = []
        for chunk in _chunks(batch, self.config.batch_size):
            decisions += _decisions(await self._send("POST", "/v1/moderate", _body(chunk, single, model)))
        return decisions[0] if single else decisions

    async def get_message(self, message_id: str) -> StoredMessage:
        """The decision stored for `message_id` (NotFoundError when there is none this key may see)."""
        response = await self._send("GET", f"/v1/messages/{quote(message_id, safe='')}")
        return StoredMessage.model_validate(response.json())

    async def health(self) -> bool:
        """Whether the service process answers (one attempt, no key needed)."""
        try:
            return (await self._http.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    async def ready(self) -> Readiness:
        """Whether the models are loaded and the database reachable (a 503 is an answer here, not retried)."""
        return _readiness(await self._send("GET", "/readyz", accept=(200, 503)))

    async def _send(
        self, method: str, path: str, body: dict | None = None, accept: Sequence[int] = (200,)
    ) -> httpx.Response:
        attempts = _Attempts(self.config, method, path)
        for _ in attempts:
            try:
                response = await self._http.request(method, path, json=body)
            except httpx.TransportError as err:
                wait = attempts.failed(f"{type(err).__name__}: {err}")
            else:
                if not _retryable(response, accept):
                    return _result(response, accept)
                wait = attempts.failed(
                    f"HTTP {response.status_code}", response.status_code, response.headers.get("Retry-After")
                )
            if wait is None:
                break
            await asyncio.sleep(wait)
        raise attempts.give_up()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncModerationClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
