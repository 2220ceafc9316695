"""Start the moderation service, and manage its API keys: what `finesieve serve` and `serve-key` call.

    from finesieve.serve.service import create_key, run_service
    key = create_key("sqlite:///./finesieve.db", "billing-app", ["spam"])   # shown once; only its hash is stored
    run_service(ServiceSettings(runs={"spam": "runs/cascade"}, host="127.0.0.1", port=8000))   # blocks (uvicorn)
    run_service(ServiceSettings(runs={"spam": "runs/cascade"}, workers=2, log_format="json"))  # two processes

A service on a loopback address with no API keys answers without one (a local trial); on any other address it
refuses to start until a key exists. SIGTERM stops accepting connections and lets requests in flight finish
(uvicorn's graceful shutdown, bounded by `shutdown_timeout_s`): their decisions are stored and answered.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from finesieve import registry
from finesieve.data.errors import ConfigError
from finesieve.serve import store
from finesieve.serve.db import connect
from finesieve.serve.logs import log_config
from finesieve.serve.moderation import load_models
from finesieve.serve.settings import ServiceSettings, is_loopback

if TYPE_CHECKING:
    from fastapi import FastAPI

# A worker answers uvicorn's health pings only once its interpreter has started and imported the app's modules
# (torch among them), which takes seconds on a busy machine; uvicorn's default of 5 s kills and restarts it forever.
WORKER_HEALTHCHECK_S = 120


def create_key(database_url: str, name: str, models: Sequence[str]) -> str:
    """Create an API key for `models` in the service's database (migrating it first) and return the key."""
    engine = connect(database_url)
    try:
        with Session(engine) as session, session.begin():
            return store.create_api_key(session, name, models)
    finally:
        engine.dispose()


def revoke_key(database_url: str, name: str) -> None:
    """Revoke the API key called `name` (ConfigError if there is no active one)."""
    engine = connect(database_url)
    try:
        with Session(engine) as session, session.begin():
            store.revoke_api_key(session, name)
    finally:
        engine.dispose()


def list_keys(database_url: str) -> list[dict]:
    """Every API key's name, models, creation and revocation times (never the key: only its hash is stored)."""
    engine = connect(database_url)
    try:
        with Session(engine) as session:
            return store.api_keys(session)
    finally:
        engine.dispose()


def with_auth_decided(settings: ServiceSettings) -> tuple[ServiceSettings, str | None]:
    """The settings with `require_auth` decided from the keys in the database, and a warning when it is off."""
    engine = connect(settings.database_url)
    try:
        with Session(engine) as session:
            keys = store.active_key_count(session)
    finally:
        engine.dispose()
    if keys:
        return settings.model_copy(update={"require_auth": True}), None
    if not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to listen on {settings.host} with no API key in {settings.database_url}: anyone who reaches "
            "the port could use the models. Fix: create a key first (`finesieve serve-key create NAME --models "
            f"{','.join(settings.runs) or 'MODEL'} --db {settings.database_url}`), or listen on --host 127.0.0.1"
        )
    warning = (
        f"no API key in {settings.database_url}: requests need no key while the service listens on loopback "
        f"({settings.host}) only; create one with `finesieve serve-key create NAME --models ...`"
    )
    return settings.model_copy(update={"require_auth": False}), warning


def run_service(settings: ServiceSettings, *, warn: Callable[[str], None] = print) -> None:
    """Decide auth, then serve with uvicorn until SIGTERM or Ctrl-C (in-flight requests get `shutdown_timeout_s`).

    One worker: the app is built here, so a run that cannot be served fails before the port opens. Several: each
    worker process builds its own app from FINESIEVE_* variables (`app_from_environment`); they share nothing but
    the database, which is what keeps idempotency and the review queue right across processes.
    """
    import uvicorn

    from finesieve.serve.app import create_app

    settings, warning = with_auth_decided(settings)
    if warning:
        warn(warning)
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_config": log_config(settings.log_format),
        "access_log": False,  # the app logs each request itself, with its route, model and batch size
        "timeout_graceful_shutdown": settings.shutdown_timeout_s,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    # Fail here, once, on a run that cannot be served, not in every worker (restarted by uvicorn over and over);
    # the copies are dropped at once, each worker loads its own.
    load_models(settings.runs, settings.registry_uri)
    os.environ.update(settings_environment(settings))
    uvicorn.run(
        f"{__name__}:app_from_environment",
        factory=True,
        workers=settings.workers,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        **options,
    )


def settings_environment(settings: ServiceSettings) -> dict[str, str]:
    """The FINESIEVE_* variables that rebuild `settings` in another process (run paths made absolute; registry
    references kept as they are: each worker resolves them, so a promote between two workers' start-ups can leave
    them on different versions until a reload or the registry poll)."""
    fields = settings.model_dump(mode="json", exclude_none=True)
    fields["runs"] = {name: _absolute(source) for name, source in settings.runs.items()}
    fields["shadow"] = {name: _absolute(source) for name, source in settings.shadow.items()}
    return {
        f"FINESIEVE_{name.upper()}": value if isinstance(value, str) else json.dumps(value)
        for name, value in fields.items()
    }


def _absolute(source: str | Path) -> str:
    return str(source) if registry.is_ref(str(source)) else str(Path(source).resolve())


def app_from_environment() -> FastAPI:
    """The app of one worker process, from the FINESIEVE_* variables `run_service` set (uvicorn's factory)."""
    from finesieve.serve.app import create_app

    return create_app(ServiceSettings())
