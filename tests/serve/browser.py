"""Browser test helpers: headless Debian Chromium driven by Playwright, the service live on a loopback port, and
the folder screenshots go to.

    from browser import launch_chromium, live_server, screenshots_folder     # in a test module of tests/serve/
    with launch_chromium() as chromium:          # a Playwright Browser; skips (or fails, see below) without one
        page = chromium.new_page()
    with live_server(app) as base_url: ...       # "http://127.0.0.1:PORT", stopped on exit
    shot = screenshots_folder() / "login.png"

Test modules wrap these in their own fixtures (a fixture imported by name reads as an unused import to ruff).
Chromium is the Debian package (/usr/bin/chromium, or FINESIEVE_CHROMIUM); `playwright install` is never needed.
Without playwright or the browser the tests skip with the reason, unless FINESIEVE_REQUIRE_BROWSER=1 (as `.ci/run`
sets), which makes them fail: CI that promises browser coverage cannot lose it silently.
Screenshots go to test-artifacts/ui/ at the repository root, or to $FINESIEVE_ARTIFACTS/ui/.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

CHROMIUM_ENV, REQUIRE_ENV, ARTIFACTS_ENV = "FINESIEVE_CHROMIUM", "FINESIEVE_REQUIRE_BROWSER", "FINESIEVE_ARTIFACTS"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # containers run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",  # nothing leaves the machine: no update checks, no safe-browsing lists
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0  # server start-up and browser launch; both take about a second here


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def launch_chromium() -> Iterator:
    """A headless Chromium (Playwright `Browser`), closed on exit."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: `.venv/bin/pip install -c constraints.txt playwright`")
    executable = Path(os.environ.get(CHROMIUM_ENV, "/usr/bin/chromium"))
    if not executable.is_file():
        _unavailable(f"no Chromium at {executable}: `apt-get install chromium`, or point {CHROMIUM_ENV} at one")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS, timeout=START_TIMEOUT_S * 1000
        )
        try:
            yield browser
        finally:
            browser.close()


def screenshots_folder() -> Path:
    """test-artifacts/ui/ at the repository root (git-ignored), or $FINESIEVE_ARTIFACTS/ui/; created if missing."""
    root = Path(os.environ[ARTIFACTS_ENV]) if os.environ.get(ARTIFACTS_ENV) else REPO / "test-artifacts"
    folder = root / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yields its base URL, stops it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # bound here and handed over, so no other process can take the port in between
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ui-test-server", daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(int(START_TIMEOUT_S / 0.05)):
        if server.started or not thread.is_alive():
            break
        started.wait(0.05)
    if not server.started:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
        sock.close()
        raise RuntimeError(f"the service did not start on 127.0.0.1:{port} within {START_TIMEOUT_S:g} s")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
        sock.close()
