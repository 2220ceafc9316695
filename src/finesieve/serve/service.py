"""Start the moderation service, and manage its API keys: what `finesieve serve` and `serve-key` call.

    from finesieve.serve.service import create_key, run_service
    key = create_key("sqlite:///./finesieve.db", "billing-app", ["spam"])   # shown once; only its hash is stored
    run_service(ServiceSettings(runs={"spam": "runs/cascade"}, host="127.0.0.1", port=8000))   # blocks (uvicorn)

A service on a loopback address with no API keys answers without one (a local trial); on any other address it
refuses to start until a key exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session

from finesieve.data.errors import ConfigError
from finesieve.serve import store
from finesieve.serve.db import connect
from finesieve.serve.settings import ServiceSettings, is_loopback


def create_key(database_url: str, name: str, models: Sequence[str]) -> str:
    """Create an API key for `models` in the service's database (migrating it first) and return the key."""
    engine = connect(database_url)
    try:
        with Session(engine) as session, session.begin():
            return store.create_api_key(session, name, models)
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
    """Decide auth, build the app (loading every run, refusing any that cannot be served) and serve it with uvicorn."""
    import uvicorn

    from finesieve.serve.app import create_app

    settings, warning = with_auth_decided(settings)
    if warning:
        warn(warning)
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)
