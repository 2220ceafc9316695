"""Running the service: JSON logs without message text, graceful shutdown on SIGTERM, several worker processes,
and the review queue's gauges in /metrics.

Each test but the last runs the real `finesieve serve` in a subprocess (uvicorn) on the small SMS cascade run of
tests/serve/conftest.py; its log goes to a file so a chatty server never blocks on a full pipe.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from finesieve.cli import app as cli_app
from finesieve.serve.app import create_app
from finesieve.serve.db import Message, ReviewItem
from finesieve.serve.service import create_key
from finesieve.serve.settings import ServiceSettings

PHONE = "07781 482 378"  # the redactor replaces it with <PHONE>: it must appear in no log and no stored column
MARKER = "zebracorn7731"  # a word the redactor keeps: stored (redacted text), but never logged


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`finesieve serve RUN` in a subprocess on a free port, its output in `log`. Start-up imports torch (through
    the model modules): seconds on an idle machine, a minute or more on a loaded one, hence the long bound."""

    def __init__(self, run: Path, db: str, log: Path, *flags: str):
        self.port, self.log = free_port(), log
        command = [sys.executable, "-m", "finesieve.cli", "serve", str(run), "--name", "spam", "--db", db]
        with open(log, "ab") as out:
            self.child = subprocess.Popen(
                [*command, "--port", str(self.port), *flags],
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.child.poll() is None, f"the server exited early:\n{self.output()[-3000:]}"
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"the server did not answer /healthz within {timeout_s:g} s:\n{self.output()[-3000:]}")

    def stop(self) -> int:
        if self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
        try:
            return self.child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.child.kill()
            return self.child.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start(service_cascade_run, tmp_path):
    servers: list[Server] = []

    def start_server(db: str, *flags: str) -> Server:
        server = Server(service_cascade_run, db, tmp_path / f"server{len(servers)}.log", *flags)
        servers.append(server)
        server.wait_ready()
        return server

    yield start_server
    for server in servers:
        server.stop()


def raw_columns(db_url: str) -> str:
    """Every value of every row of the tables that hold messages, as one string (what a database dump shows)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return " ".join(
                str(row)
                for table in ("messages", "review_items", "audit_log")
                for row in connection.execute(text(f"SELECT * FROM {table}"))
            )
    finally:
        engine.dispose()


def test_json_logs_carry_each_request_but_never_its_text(start, db_url):
    key = create_key(db_url, "ops", ["*"])
    server = start(db_url, "--log-format", "json")
    headers = {"Authorization": f"Bearer {key}", "X-Request-ID": "trace-42"}
    with httpx.Client(base_url=server.base, timeout=30) as http:
        single = http.post(
            "/v1/moderate", json={"id": "pii-1", "text": f"{MARKER} call me on {PHONE}"}, headers=headers
        )
        assert single.status_code == 200 and single.headers["X-Request-ID"] == "trace-42"
        batch = {"messages": [{"id": f"b{i}", "text": f"{MARKER} {i} ring {PHONE}"} for i in range(3)]}
        assert http.post("/v1/moderate", json=batch, headers={"Authorization": headers["Authorization"]}).is_success
        bad = {"messages": [{"id": "x", "text": f"{MARKER} {PHONE}", "oops": PHONE}]}  # 422 echoes the input
        assert http.post("/v1/moderate", json=bad, headers=headers).status_code == 422
        assert http.get(f"/v1/messages/{MARKER}", headers=headers).status_code == 404
    assert server.stop() in (0, -signal.SIGTERM)
    output = server.output()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    other = [line for line in output.splitlines() if line.strip() and not line.startswith("{")]
    assert not any("INFO" in line or "request" in line for line in other), other  # only the CLI's banner
    assert all({"time", "level", "event", "pid"} <= set(line) for line in lines)
    assert any(line["event"] == "Application startup complete." for line in lines)  # uvicorn's own lines too
    requests = [line for line in lines if line["event"] == "request"]
    moderated = [line for line in requests if line["route"] == "/v1/moderate"]
    assert [(r["status"], r["n_messages"], r["model"]) for r in moderated] == [
        (200, 1, "spam"),
        (200, 3, "spam"),
        (422, None, None),
    ]
    assert moderated[0]["request_id"] == "trace-42" and len(moderated[1]["request_id"]) == 32
    assert all(r["latency_ms"] > 0 for r in moderated)
    assert any(r["route"] == "/v1/messages/{message_id}" and r["status"] == 404 for r in requests)
    # Pieces of the number with their spaces: a bare "482" also turns up in random request ids and latencies.
    assert PHONE not in output and "482 378" not in output and "07781 482" not in output and MARKER not in output
    stored = raw_columns(db_url)
    assert MARKER in stored and "<PHONE>" in stored  # the redacted texts are there ...
    assert PHONE not in stored and "482 378" not in stored  # ... and the number is not


def test_log_format_is_checked():
    result = CliRunner().invoke(cli_app, ["serve", "runs/none", "--log-format", "xml"])
    assert result.exit_code == 2 and "log_format" in result.output


def _server_side_unread_bytes(server_port: int, client_port: int) -> int | None:
    """Bytes the server has not read yet on one TCP connection (Linux /proc/net/tcp), None when not found."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return int(queues.split(":")[1], 16)
    return None


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the server's socket queue from /proc/net/tcp")
def test_sigterm_lets_an_in_flight_request_finish(start, tmp_path):
    db = f"sqlite:///{tmp_path / 'svc.db'}"
    server = start(db)
    body = json.dumps({"id": "in-flight", "text": "WINNER!! Claim your prize now"}).encode()
    head = (
        f"POST /v1/moderate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + body[:10])  # the request has begun: headers and a part of its body
        client_port = sock.getsockname()[1]
        deadline = time.monotonic() + 20
        while _server_side_unread_bytes(server.port, client_port) != 0:  # until uvicorn has read (and parsed) it
            assert time.monotonic() < deadline, "the server never read the request's first bytes"
            time.sleep(0.02)
        server.child.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # let the server begin its shutdown while the body is still unfinished
        assert server.child.poll() is None, "the server exited with a request in flight"
        sock.sendall(body[10:])
        response = b""
        while chunk := sock.recv(65536):  # the server closes the connection after answering: it is shutting down
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", response[:500]
    answer = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert answer["results"][0]["id"] == "in-flight" and answer["results"][0]["action"] == "block"
    assert server.child.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "Waiting for connections to close" in server.output()
    engine = create_engine(db)
    with Session(engine) as session:
        stored = session.get(Message, "in-flight")
        assert stored is not None and stored.action == "block"
    engine.dispose()


def log_lines(server: Server) -> list[dict]:
    return [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]


def started_workers(server: Server) -> set[int]:
    return {line["pid"] for line in log_lines(server) if line["event"] == "Application startup complete."}


def test_two_workers_store_each_id_exactly_once_under_concurrent_retries(start, db_url):
    key = create_key(db_url, "ops", ["*"])
    server = start(db_url, "--workers", "2", "--log-format", "json")
    deadline = time.monotonic() + 240  # /healthz answers once one worker is up; wait for the second too
    while len(started_workers(server)) < 2:
        assert time.monotonic() < deadline and server.child.poll() is None, server.output()[-3000:]
        time.sleep(0.2)
    ids = [f"w{i}" for i in range(40)]
    answers: dict[str, list[tuple]] = {i: [] for i in ids}
    lock, errors = threading.Lock(), []

    def client(seed: int) -> None:
        order = ids[seed:] + ids[:seed]  # every thread sends every id, starting at a different one
        try:
            with httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
                for start_at in range(0, len(order), 5):
                    chunk = order[start_at : start_at + 5]
                    messages = [{"id": i, "text": f"FREE prize msg {i}, reply now"} for i in chunk]
                    response = http.post("/v1/moderate", json={"messages": messages}, headers={"Connection": "close"})
                    response.raise_for_status()
                    with lock:
                        for r in response.json()["results"]:
                            answers[r["id"]].append((r["action"], r["score"], r["duplicate"]))
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(err))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in (0, 7, 13, 21, 33, 38)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    engine = create_engine(db_url)
    with Session(engine) as session:
        stored_ids = Counter(session.scalars(select(Message.id)))
        stored = {m.id: m for m in session.scalars(select(Message))}
        queued = Counter(session.scalars(select(ReviewItem.message_id)))
    engine.dispose()
    assert stored_ids == Counter(ids)  # each id once, none missing, none extra
    assert all(n == 1 for n in queued.values())  # and queued for review at most once
    for message_id, got in answers.items():
        assert len(got) == 6 and sum(not duplicate for _, _, duplicate in got) <= 1
        assert {(action, score) for action, score, _ in got} == {(stored[message_id].action, stored[message_id].score)}
    served_by = {line["pid"] for line in log_lines(server) if line["event"] == "request"}
    assert served_by <= started_workers(server)  # only the two workers answered (one, if the kernel so chose)


def test_queue_gauges_are_read_from_the_database_at_scrape_time(service_cascade_run, tmp_path):
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp_path / 'q.db'}", runs={"spam": service_cascade_run}, require_auth=False
    )
    with TestClient(create_app(settings)) as client:
        empty = client.get("/metrics").text
        assert 'finesieve_queue_items{reason="flagged",state="pending"} 0.0' in empty
        assert "finesieve_queue_oldest_seconds 0.0" in empty
        texts = ["WINNER!! Claim your prize now", "URGENT! You have won a 1 week FREE membership", "lunch at 1?"]
        client.post("/v1/moderate", json={"messages": [{"id": f"q{i}", "text": t} for i, t in enumerate(texts)]})
        time.sleep(0.05)  # so the oldest item is measurably old; not a timing assertion
        scraped = client.get("/metrics").text
        with Session(client.app.state.engine) as session:
            flagged = session.scalar(
                select(func.count()).where(ReviewItem.reason == "flagged", ReviewItem.state == "pending")
            )
    assert flagged >= 2
    assert f'finesieve_queue_items{{reason="flagged",state="pending"}} {float(flagged)}' in scraped
    oldest = next(line for line in scraped.splitlines() if line.startswith("finesieve_queue_oldest_seconds "))
    assert float(oldest.split()[1]) > 0
