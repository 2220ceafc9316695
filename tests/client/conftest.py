"""Fixtures for the client tests: the real moderation service on a loopback port, one per module or per database.

The service is `finesieve.serve.app.create_app` served by uvicorn in a background thread (on a socket bound to a
free port first, so there is no port race), with the small SMS spam runs of tests/serve/conftest.py, whose fixtures
are loaded here under another module name. The proxy that spoils connections is in flaky_proxy.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.orm import Session

from finesieve.serve import store
from finesieve.serve.app import create_app
from finesieve.serve.settings import ServiceSettings

_spec = importlib.util.spec_from_file_location("serve_fixtures", Path(__file__).parents[1] / "serve" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_serve_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_serve_fixtures)
service_stages = _serve_fixtures.service_stages
service_cascade = _serve_fixtures.service_cascade
service_cascade_run = _serve_fixtures.service_cascade_run
service_tfidf_run = _serve_fixtures.service_tfidf_run
sms_unseen = _serve_fixtures.sms_unseen
db_url = _serve_fixtures.db_url

STARTUP_S = 60.0  # bound on waiting for uvicorn to start (a stuck start fails the test instead of hanging it)


@dataclass
class LiveService:
    """A running service: its app (for its database and metrics), its URL and API keys by scope."""

    app: FastAPI
    url: str
    keys: dict[str, str]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def requests(self, route: str, status: int, method: str = "POST") -> float:
        """Requests the service answered on `route` with `status` so far (its own Prometheus counter)."""
        labels = {"route": route, "method": method, "status": str(status)}
        return self.app.state.metrics.registry.get_sample_value("finesieve_requests_total", labels) or 0.0

    def session(self) -> Session:
        return Session(self.app.state.engine)


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yields its URL, stops it afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(int(STARTUP_S / 0.02)):
        if server.started or not thread.is_alive():
            break
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        raise RuntimeError("uvicorn did not start: see the log above")
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_S)
        sock.close()


@contextlib.contextmanager
def live_service(database_url: str, cascade_run: Path, tfidf_run: Path) -> Iterator[LiveService]:
    settings = ServiceSettings(database_url=database_url, runs={"spam": cascade_run, "tfidf": tfidf_run})
    app = create_app(settings)
    with Session(app.state.engine) as session, session.begin():
        keys = {
            "all": store.create_api_key(session, "all", ["*"]),
            "tfidf": store.create_api_key(session, "tfidf-only", ["tfidf"]),
        }
    with serving(app) as url:
        yield LiveService(app=app, url=url, keys=keys)


@pytest.fixture(scope="module")
def service(tmp_path_factory, service_cascade_run, service_tfidf_run) -> Iterator[LiveService]:
    """One service per test module, on SQLite: models "spam" (the cascade) and "tfidf"; keys "all" and "tfidf"."""
    database = tmp_path_factory.mktemp("client") / "service.db"
    with live_service(f"sqlite:///{database}", service_cascade_run, service_tfidf_run) as live:
        yield live


@pytest.fixture
def service_on_db(db_url, service_cascade_run, service_tfidf_run) -> Iterator[LiveService]:
    """A service of its own on `db_url`: SQLite, and PostgreSQL too (tests/serve/conftest.py's db_url)."""
    with live_service(db_url, service_cascade_run, service_tfidf_run) as live:
        yield live
