"""Logs of the moderation service: one line per request and per server event, as JSON objects or as plain text.

    from finesieve.serve.logs import log_config
    uvicorn.run(app, log_config=log_config("json"))   # uvicorn applies it in every worker process

    {"time": "2026-12-01T23:59:01.123Z", "level": "info", "logger": "finesieve.serve", "event": "request",
     "request_id": "5f0c...", "method": "POST", "route": "/v1/moderate", "status": 200, "latency_ms": 3.1,
     "model": "spam", "n_messages": 64}

A request line carries the route template, never the path (`/v1/messages/{message_id}`, not the id) and never
message text: the app sets `request.state.model` and `request.state.n_messages`, and that is all it learns about
the body. Tracebacks keep their frames but drop the exception's message, which may quote a request's text.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.requests import Request

LOGGER_NAME = "finesieve.serve"
LOG_FORMATS = ("text", "json")
LogFormat = Literal["text", "json"]
REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")  # echo a caller's id only when it is short and plain

logger = logging.getLogger(LOGGER_NAME)


class LogFormatter(logging.Formatter):
    """Formats a record as one JSON object (`json_lines=True`) or one readable line; extra fields come from
    `extra={"fields": {...}}`."""

    def __init__(self, json_lines: bool = True) -> None:
        super().__init__()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "fields", None) or {})
        if record.exc_info and record.exc_info[0] is not None:
            kind, _, tb = record.exc_info
            # The frames say where it failed; the message is left out because it may quote the request's text.
            fields["error"] = kind.__name__
            fields["traceback"] = "".join(traceback.format_tb(tb))
        if self.json_lines:
            line = {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "pid": record.process,  # which worker process, under `--workers N`
                "event": record.getMessage(),
                **fields,
            }
            return json.dumps(line, default=str)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.created))
        rest = " ".join(f"{k}={v}" for k, v in fields.items() if k != "traceback")
        text = f"{stamp} {record.levelname:<7} {record.getMessage()} {rest}".rstrip()
        return text + ("\n" + fields["traceback"] if "traceback" in fields else "")


def log_config(log_format: LogFormat = "text", level: str = "INFO") -> dict:
    """A `logging.config.dictConfig` for uvicorn and the service: everything to stderr in one format; uvicorn's
    access log is off because the service's own request line says more (route, model, batch size)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: use one of {LOG_FORMATS}")
    handler = {"class": "logging.StreamHandler", "formatter": "finesieve", "stream": "ext://sys.stderr"}
    quiet = {"handlers": [], "level": "WARNING", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"finesieve": {"()": f"{__name__}.LogFormatter", "json_lines": log_format == "json"}},
        "handlers": {"finesieve": handler},
        "loggers": {
            "uvicorn": {"handlers": ["finesieve"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": quiet,
            LOGGER_NAME: {"handlers": ["finesieve"], "level": level, "propagate": False},
        },
    }


def request_id(request: Request) -> str:
    """The caller's X-Request-ID when it is short and plain, else a new one; kept on `request.state`."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    rid = given if _CLIENT_REQUEST_ID.match(given) else uuid.uuid4().hex
    request.state.request_id = rid
    return rid


def log_request(request: Request, route: str, status: int, seconds: float) -> None:
    """The request's one log line: what was called, how it ended, how long it took, which model and batch size."""
    state = request.state
    fields = {
        "request_id": getattr(state, "request_id", None),
        "method": request.method,
        "route": route,
        "status": status,
        "latency_ms": round(seconds * 1000.0, 3),
        "model": getattr(state, "model", None),
        "n_messages": getattr(state, "n_messages", None),
    }
    level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
    logger.log(level, "request", extra={"fields": fields})


def log_failed_request(request: Request, route: str, seconds: float) -> None:
    """The line for a request whose handler raised (the client gets a 500); call inside the `except`."""
    fields = {
        "request_id": getattr(request.state, "request_id", None),
        "method": request.method,
        "route": route,
        "status": 500,
        "latency_ms": round(seconds * 1000.0, 3),
    }
    logger.error("request_failed", exc_info=True, extra={"fields": fields})
