"""Zero loss across a crash: SIGKILL the real `finesieve serve` mid-run, restart it on the same database and port,
and check that every message the clients sent is stored exactly once, with the decision the clients were given.

Client threads send SMS texts in small batches with their own ids and, like a well-behaved client, retry a batch
with the same ids on any connection error or 5xx until it is answered. The service stores a decision before it
answers (and a known id returns its stored decision), so a retry of a batch the dead server had already stored must
come back as duplicates with the same decisions. Runs on SQLite and on PostgreSQL (`db_url`).
`bench/serve_load.py --kill` runs the same scenario at a larger scale.
"""

from __future__ import annotations

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
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from finesieve.serve.db import Message, ReviewItem
from finesieve.serve.service import create_key

N_MESSAGES, N_CLIENTS, BATCH = 300, 4, 3
KILL_AFTER = 100  # messages answered before the SIGKILL: the crash lands mid-run
START_TIMEOUT_S = 240.0  # start-up imports torch: seconds when idle, a minute or more on a loaded machine
CLIENT_DEADLINE_S = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, db: str, port: int, log: Path) -> subprocess.Popen:
    """`finesieve serve` on `port`, answering /healthz (its output appended to `log`)."""
    command = [sys.executable, "-m", "finesieve.cli", "serve", str(run), "--name", "spam", "--db", db]
    with open(log, "ab") as out:
        child = subprocess.Popen(
            [*command, "--port", str(port)],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert child.poll() is None, f"the server exited early:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return child
        except httpx.TransportError:
            time.sleep(0.1)
    child.kill()
    raise AssertionError(f"the server did not answer within {START_TIMEOUT_S:g} s:\n{log.read_text()[-3000:]}")


class Clients:
    """Client threads sending `messages` (id -> text) in batches, retrying each batch until it is answered."""

    def __init__(self, base: str, key: str, messages: dict[str, str]):
        self.base, self.key, self.messages = base, key, messages
        self.answers: dict[str, list[dict]] = {i: [] for i in messages}
        self.answered, self.retries, self.errors = 0, 0, []
        self.lock = threading.Lock()
        ids = list(messages)
        self.threads = [
            threading.Thread(target=self._send, args=(ids[k::N_CLIENTS],), daemon=True) for k in range(N_CLIENTS)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=CLIENT_DEADLINE_S)
        assert not any(t.is_alive() for t in self.threads), "a client thread did not finish"

    def _send(self, ids: list[str]) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as http:
            for start in range(0, len(ids), BATCH):
                batch = [{"id": i, "text": self.messages[i]} for i in ids[start : start + BATCH]]
                while True:
                    if time.monotonic() > deadline:
                        self.errors.append(f"gave up on {batch[0]['id']}")
                        return
                    try:
                        response = http.post("/v1/moderate", json={"messages": batch})
                    except httpx.TransportError:  # the server is down or restarting: same ids again
                        response = None
                    if response is not None and response.status_code == 200:
                        break
                    if response is not None and response.status_code < 500:
                        self.errors.append(f"{response.status_code}: {response.text[:300]}")
                        return
                    with self.lock:
                        self.retries += 1
                    time.sleep(0.1)
                with self.lock:
                    for result in response.json()["results"]:
                        self.answers[result["id"]].append(result)
                    self.answered += len(batch)


def run_kill_restart(run: Path, db_url: str, messages: dict[str, str], log: Path) -> Clients:
    """Start, send, SIGKILL once KILL_AFTER messages are answered, restart on the same port, let the clients end."""
    key = create_key(db_url, "kill-test", ["*"])
    port = free_port()
    server = start_server(run, db_url, port, log)
    clients = Clients(f"http://127.0.0.1:{port}", key, messages)
    try:
        clients.start()
        deadline = time.monotonic() + CLIENT_DEADLINE_S
        while clients.answered < KILL_AFTER and time.monotonic() < deadline and not clients.errors:
            time.sleep(0.005)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        killed_at = clients.answered
        server = start_server(run, db_url, port, log)
        clients.join()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert KILL_AFTER <= killed_at < len(messages), f"the kill did not land mid-run ({killed_at} answered)"
    return clients


def test_sigkill_mid_run_loses_and_duplicates_nothing(service_cascade_run, db_url, sms_unseen, tmp_path):
    rows = sms_unseen.head(N_MESSAGES)
    messages = {f"k{i}": text for i, text in enumerate(rows["text"])}
    clients = run_kill_restart(service_cascade_run, db_url, messages, tmp_path / "server.log")
    assert not clients.errors, clients.errors
    assert clients.retries > 0  # the crash was felt: some batch had to be sent again
    engine = create_engine(db_url)
    with Session(engine) as session:
        stored = {m.id: m for m in session.scalars(select(Message))}
        stored_ids = Counter(session.scalars(select(Message.id)))
        queued = Counter(session.scalars(select(ReviewItem.message_id)))
    engine.dispose()
    assert stored_ids == Counter(list(messages))  # every id once: nothing lost, nothing doubled, nothing else
    assert all(n == 1 for n in queued.values()), "a message was queued for review twice"
    for message_id, answers in clients.answers.items():
        row = stored[message_id]
        assert row.action in ("deliver", "review", "block") and row.decided_by != "failure"
        assert len(answers) == 1  # each batch was answered once (a retry happens only when no answer came)
        got = answers[0]
        assert (got["action"], got["score"], got["decided_by"], got["category"]) == (
            row.action,
            row.score,
            row.decided_by,
            row.category,
        )
    actions = Counter(row.action for row in stored.values())
    assert actions["deliver"] and actions["block"] + actions["review"]  # real decisions, not one constant
