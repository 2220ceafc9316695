"""Load test of the moderation service: the real `finesieve serve` in a subprocess on loopback, driven by an async
httpx client with real SMS texts; bounded in requests and in time.

    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_load.py --run finesieve-demo/runs/cascade \\
        --pg-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres --out bench-serve.json
    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_load.py --kill --kill-messages 5000

Per database (SQLite always; PostgreSQL with --pg-url, a fresh database created and dropped on that server):
    single   one message per request at --concurrency requests in flight: requests/s, p50/p95/p99 latency (ms)
    batch    --batch messages per request, 4 requests in flight: messages/s
    model    the same single-request load on --model-run (every message through the fine-tuned model), for the
             ratio to the cascade; skipped when no such run is found
--kill: the crash scenario of tests/serve/test_kill_restart.py at scale: client tasks send batches with their own
ids and retry them on errors; the server is SIGKILLed a third of the way in and restarted on the same database and
port; reports the ids lost (sent, never stored) and duplicated (stored twice: impossible with the primary key,
counted anyway) and answers that disagree with the stored decision.

Targets from issue 15: >= 300 single requests/s with p99 <= 100 ms on 2 cores, >= 1,000 messages/s in batches.
The numbers depend on what else the machine runs: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pandas as pd
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from finesieve.serve.db import Message
from finesieve.serve.service import create_key

ROOT = Path(__file__).resolve().parent.parent
DEMO_CASCADES = [Path("finesieve-demo/runs/cascade"), Path("/tmp/demo-run/finesieve-demo/runs/cascade")]
DEMO_MODELS = [Path("finesieve-demo/runs/finetuned"), Path("/tmp/demo-run/finesieve-demo/runs/finetuned")]
SMS_CSV = [ROOT / "data/sms_spam/sms_spam.csv", Path("/work/shared/data/sms_spam/sms_spam.csv")]
START_TIMEOUT_S = 300.0


def first_existing(paths: list[Path]) -> Path | None:
    return next((p for p in paths if (p / "manifest.json").exists() or p.is_file()), None)


def sms_texts(path: Path | None) -> list[str]:
    path = path or first_existing(SMS_CSV)
    if path is None:
        sys.exit(f"no SMS data found in {[str(p) for p in SMS_CSV]}: pass --data CSV (a `text` column)")
    return pd.read_csv(path, dtype=str, keep_default_na=False)["text"].tolist()


def quick_cascade(workdir: Path, data: Path | None) -> Path:
    """A small cascade (spam rules -> small TF-IDF -> TF-IDF) on SMS data, for when no demo run is at hand."""
    from finesieve.data.load import load_dataset
    from finesieve.data.spec import ColumnSpec
    from finesieve.models.cascade import Cascade, CascadeThresholds
    from finesieve.models.rules import RulesScorer
    from finesieve.models.tfidf import TfidfLogReg
    from finesieve.runs import save_run

    csv = data or first_existing(SMS_CSV)
    ds = load_dataset(csv, ColumnSpec(text_col="text", label_cols=("label",)), max_rows=2000)
    model = TfidfLogReg().fit(ds.texts, ds.labels)
    prefilter = TfidfLogReg(word_ngrams=(1, 1), char_ngrams=(3, 3), max_features=2000).fit(ds.texts, ds.labels)
    rules = RulesScorer(policy="builtin:spam").fit(ds.texts, ds.labels)
    thresholds = CascadeThresholds(escalate=0.2, review=0.5, block={"spam": 0.9})
    cascade = Cascade(model, positive=["spam"], thresholds=thresholds, prefilter=prefilter, rules=rules)
    task = {"classes": ["ham", "spam"], "multilabel": False, "positive": ["spam"], "threshold": 0.5}
    return save_run(workdir / "cascade", cascade, kind="cascade", task=task, data={}, metrics={})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`finesieve serve RUN` on loopback (JSON logs to a file); `start` waits for /healthz."""

    def __init__(
        self, run: Path, db: str, log: Path, port: int | None = None, workers: int = 1, extra: Sequence[str] = ()
    ):
        self.run, self.db, self.log, self.port, self.workers = run, db, log, port or free_port(), workers
        self.extra = list(extra)  # more `finesieve serve` flags, e.g. --batch-wait-ms 2
        self.child: subprocess.Popen | None = None

    def start(self) -> Server:
        command = [sys.executable, "-m", "finesieve.cli", "serve", str(self.run), "--name", "m", "--db", self.db]
        with open(self.log, "ab") as out:
            self.child = subprocess.Popen(
                [
                    *command,
                    *("--port", str(self.port), "--log-format", "json", "--workers", str(self.workers)),
                    *self.extra,
                ],
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.child.poll() is not None:
                sys.exit(f"the server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        self.kill()
        sys.exit(f"the server did not start within {START_TIMEOUT_S:g} s:\n{self.log.read_text()[-3000:]}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGKILL)
            self.child.wait(timeout=30)

    def stop(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
            try:
                self.child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


class Database:
    """A fresh database for one measurement: a SQLite file, or a new database on --pg-url's server (dropped)."""

    def __init__(self, kind: str, workdir: Path, pg_url: str | None):
        self.kind, self.pg_url = kind, pg_url
        self.name = f"finesieve_bench_{uuid.uuid4().hex[:10]}"
        if kind == "sqlite":
            self.url = f"sqlite:///{workdir / (self.name + '.db')}"
        else:
            server = make_url(pg_url or "")
            self.admin = create_engine(server, isolation_level="AUTOCOMMIT")
            with self.admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{self.name}"'))
            self.url = server.set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        if self.kind == "postgresql":
            with self.admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self.admin.dispose()


def percentiles_ms(latencies: list[float]) -> dict[str, float]:
    values = np.asarray(latencies) * 1000.0
    return {f"p{q}_ms": round(float(np.percentile(values, q)), 2) for q in (50, 95, 99)}


async def single_load(base: str, key: str, texts: list[str], requests: int, concurrency: int, limit_s: float):
    """`requests` one-message requests (fresh ids), `concurrency` in flight, stopping early at `limit_s`."""
    gc.collect()
    gc.freeze()  # the client's own heap (pandas, torch) out of the collector: its pauses are not the server's latency
    latencies: list[float] = []
    errors: Counter = Counter()
    queue = iter(range(requests))
    deadline = time.monotonic() + limit_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=auth(key), timeout=30, limits=limits) as client:

        async def worker() -> None:
            for i in queue:
                if time.monotonic() > deadline:
                    return
                body = {"id": f"s-{uuid.uuid4().hex}", "text": texts[i % len(texts)]}
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/moderate", json=body)
                    ok = response.status_code == 200
                    errors.update([] if ok else [str(response.status_code)])
                except httpx.TransportError as err:
                    ok = False
                    errors.update([type(err).__name__])
                if ok:
                    latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        **percentiles_ms(latencies or [0.0]),
        "errors": dict(errors),
    }


async def batch_load(base: str, key: str, texts: list[str], batches: int, size: int, limit_s: float):
    """`batches` requests of `size` messages each, 4 in flight."""
    done, errors = 0, Counter()
    queue = iter(range(batches))
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(base_url=base, headers=auth(key), timeout=60) as client:

        async def worker() -> None:
            nonlocal done
            for b in queue:
                if time.monotonic() > deadline:
                    return
                messages = [{"id": uuid.uuid4().hex, "text": texts[(b * size + j) % len(texts)]} for j in range(size)]
                response = await client.post("/v1/moderate", json={"messages": messages})
                if response.status_code == 200:
                    done += size
                else:
                    errors.update([str(response.status_code)])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(4)))
        elapsed = time.perf_counter() - start
    return {
        "messages": done,
        "seconds": round(elapsed, 2),
        "messages_per_s": round(done / elapsed, 1),
        "errors": dict(errors),
    }


def server_p99_ms(log: Path, offset: int) -> float | None:
    """p99 of the latencies the server itself logged for /v1/moderate after byte `offset` of its JSON log: the
    client's figure minus the client's own queueing and parsing (both share the 2 cores)."""
    with open(log, "rb") as lines:
        lines.seek(offset)
        latencies = []
        for line in lines:
            try:
                fields = json.loads(line)
            except ValueError:
                continue
            if fields.get("route") == "/v1/moderate" and "latency_ms" in fields:
                latencies.append(fields["latency_ms"])
    return round(float(np.percentile(latencies, 99)), 2) if latencies else None


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def measure(run: Path, kind: str, args, texts: list[str], workdir: Path, label: str) -> dict:
    db = Database(kind, workdir, args.pg_url)
    server = Server(
        run, db.url, workdir / f"{label}-{kind}.log", workers=args.workers, extra=shlex.split(args.serve_args)
    )
    try:
        key = create_key(db.url, "bench", ["*"])
        server.start()
        warm = asyncio.run(single_load(server.base, key, texts, 50, 4, 30))  # first requests pay lazy set-ups
        before = server.log.stat().st_size
        single = asyncio.run(single_load(server.base, key, texts, args.requests, args.concurrency, args.time_limit_s))
        single["server_p99_ms"] = server_p99_ms(server.log, before)
        batch = asyncio.run(batch_load(server.base, key, texts, args.batches, args.batch, args.time_limit_s))
        return {
            "model": label,
            "database": kind,
            "workers": args.workers,
            "serve_args": args.serve_args,
            "warmup_errors": warm["errors"],
            "single": single,
            "batch": batch,
        }
    finally:
        server.stop()
        db.drop()


# ------------------------------------------------------------------------------------------------ --kill


async def kill_scenario(run: Path, kind: str, args, texts: list[str], workdir: Path) -> dict:
    db = Database(kind, workdir, args.pg_url)
    server = Server(run, db.url, workdir / f"kill-{kind}.log")
    try:
        key = create_key(db.url, "bench", ["*"])
        server.start()
        ids = [f"k{i}" for i in range(args.kill_messages)]
        answers: dict[str, dict] = {}
        retries = 0
        batches = [ids[i : i + 8] for i in range(0, len(ids), 8)]
        pending = iter(batches)
        deadline = time.monotonic() + args.time_limit_s * 4
        async with httpx.AsyncClient(base_url=server.base, headers=auth(key), timeout=30) as client:

            async def worker() -> None:
                nonlocal retries
                for batch in pending:
                    body = {"messages": [{"id": i, "text": texts[int(i[1:]) % len(texts)]} for i in batch]}
                    while time.monotonic() < deadline:
                        try:
                            response = await client.post("/v1/moderate", json=body)
                            if response.status_code == 200:
                                answers.update({r["id"]: r for r in response.json()["results"]})
                                break
                        except httpx.TransportError:
                            pass
                        retries += 1
                        await asyncio.sleep(0.1)

            async def killer() -> None:
                while len(answers) < len(ids) // 3:
                    await asyncio.sleep(0.01)
                server.kill()
                await asyncio.to_thread(server.start)  # same database, same port

            await asyncio.gather(killer(), *(worker() for _ in range(8)))
        engine = create_engine(db.url)
        with engine.connect() as connection:
            stored_ids = Counter(connection.scalars(select(Message.id)))
            stored = {r.id: r for r in connection.execute(select(Message.id, Message.action, Message.score))}
        engine.dispose()
        return {
            "database": kind,
            "sent": len(ids),
            "answered": len(answers),
            "retries": retries,
            "lost": sum(1 for i in ids if i not in stored_ids),
            "duplicated": sum(1 for n in stored_ids.values() if n > 1),
            "answer_differs_from_stored": sum(
                1 for i, a in answers.items() if (a["action"], a["score"]) != (stored[i].action, stored[i].score)
            ),
        }
    finally:
        server.stop()
        db.drop()


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="cascade run to serve (default: the demo's, else a quick one)")
    parser.add_argument("--model-run", type=Path, help="fine-tuned run for the model-on-every-message ratio")
    parser.add_argument("--pg-url", default=os.environ.get("FINESIEVE_TEST_PG_URL"), help="PostgreSQL server")
    parser.add_argument("--data", type=Path, help="CSV with a `text` column (default: the SMS spam data)")
    parser.add_argument("--requests", type=int, default=3000, help="single-message requests per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="single-message requests in flight")
    parser.add_argument("--batches", type=int, default=60, help="batch requests per measurement")
    parser.add_argument("--batch", type=int, default=64, help="messages per batch request")
    parser.add_argument("--time-limit-s", type=float, default=60.0, help="bound on each measurement, seconds")
    parser.add_argument("--workers", type=int, default=1, help="server processes (`finesieve serve --workers`)")
    parser.add_argument("--serve-args", default="", help="more `finesieve serve` flags, e.g. '--batch-wait-ms 2'")
    parser.add_argument("--kill", action="store_true", help="run the kill/restart scenario instead")
    parser.add_argument("--kill-messages", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path("bench-serve-load.json"))
    args = parser.parse_args()

    texts = sms_texts(args.data)
    kinds = ["sqlite"] + (["postgresql"] if args.pg_url else [])
    with tempfile.TemporaryDirectory(prefix="finesieve-load-") as tmp:
        workdir = Path(tmp)
        run = args.run or first_existing(DEMO_CASCADES) or quick_cascade(workdir, args.data)
        load_before = os.getloadavg()
        print(f"serving {run}; load average before: {' '.join(f'{x:.2f}' for x in load_before)}; "
              f"{os.cpu_count()} CPUs")  # fmt: skip
        results: dict = {"run": str(run), "load_average_before": load_before, "cpus": os.cpu_count()}
        if args.kill:
            results["kill"] = [asyncio.run(kill_scenario(run, k, args, texts, workdir)) for k in kinds]
            for r in results["kill"]:
                print(
                    f"{r['database']:<10} sent {r['sent']}, answered {r['answered']}, retries {r['retries']}: "
                    f"lost {r['lost']}, duplicated {r['duplicated']}, answer != stored {r['answer_differs_from_stored']}"
                )
        else:
            model_run = args.model_run or first_existing(DEMO_MODELS)
            rows = [measure(run, k, args, texts, workdir, "cascade") for k in kinds]
            if model_run is not None:
                rows.append(measure(model_run, "sqlite", args, texts, workdir, "model-only"))
            results["measurements"] = rows
            print_table(rows)
        results["load_average_after"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in results['load_average_after'])}; wrote {args.out}")


def print_table(rows: list[dict]) -> None:
    header = f"{'model':<11}{'db':<11}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'server p99':>12}"
    print(f"{header}{'batch msg/s':>13}  errors")
    for r in rows:
        s, b = r["single"], r["batch"]
        print(
            f"{r['model']:<11}{r['database']:<11}{s['requests_per_s']:>8}{s['p50_ms']:>9}{s['p95_ms']:>9}"
            f"{s['p99_ms']:>9}{s.get('server_p99_ms') or '-':>12}{b['messages_per_s']:>13}  "
            f"{s['errors'] or ''}{b['errors'] or ''}"
        )
    cascade = next((r for r in rows if r["model"] == "cascade"), None)
    model = next((r for r in rows if r["model"] == "model-only"), None)
    if cascade and model and model["batch"]["messages_per_s"]:
        ratio = cascade["batch"]["messages_per_s"] / model["batch"]["messages_per_s"]
        print(f"cascade / model-only batch throughput: {ratio:.1f}x")
    print("targets: >= 300 req/s with p99 <= 100 ms; >= 1,000 messages/s in batches (2 cores, nothing else running)")


if __name__ == "__main__":
    main()
