"""`finesieve demo`: the whole path on real data with the embedded defaults, start to finish.

On the Davidson et al. tweets (hate speech / offensive / neither), for the production-like target hate_speech
vs the rest, it does what the production case did, each step measured by the same harness:
  1. review the data and split it reproducibly (train / validation / held-out test);
  2. the prompt baseline: zero-shot label descriptions against message embeddings (packaged MiniLM, offline),
     plus its price on a hosted LLM API;
  3. the legacy system: a keyword lexicon and a character-CNN pre-filter, each flagging for review;
  4. fine-tune the packaged all-MiniLM-L6-v2 (LoRA, the defaults) within a bounded number of steps, so the
     demo fits in minutes on 2 CPU cores (`bench/models_davidson.sh` trains it fully);
  5. fit the cascade (rules -> pre-filter -> fine-tuned model) to the traffic budget on validation;
  6. print the side-by-side table (AUC, precision, recall, share routed to the model, msgs/s, cost per million)
     and write the HTML report;
  7. start the moderation service (`finesieve serve`) on the cascade, send a few test messages through its API
     with the Python client (one of them twice: the retry gets the stored decision), take one flagged message
     through the review queue as a reviewer, print what came back and the command to start it yourself, and stop
     it again (the demo never blocks).
Thresholds are always chosen on the validation split; every figure in the table is on the test split.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from finesieve.cascade.build import fit_cascade, legacy_cascade, summary_row, summary_rows
from finesieve.cascade.cost import PriceTable, StageCost, api_per_million, count_prompt_tokens
from finesieve.cascade.fit import CascadeConfig
from finesieve.cascade.report import cascade_sections
from finesieve.data.errors import ConfigError
from finesieve.data.evasion import EvasionConfig
from finesieve.data.load import load_dataset
from finesieve.data.review import review, summary_lines, write_review
from finesieve.data.sources import find_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import SplitConfig, make_splits
from finesieve.evals.compare import compare, ratio_sentence
from finesieve.evals.harness import evaluate
from finesieve.evals.operating_points import matched_operating_points
from finesieve.evals.report import operating_points_section, write_eval_report
from finesieve.models.char_cnn import CharCNNConfig, CharCNNScorer
from finesieve.models.embedding_zero_shot import EmbeddingZeroShot
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.models.rules import RulesScorer
from finesieve.tables import operating_points_table, production_table
from finesieve.train.recipe import fit_and_save

POSITIVE = ["hate_speech"]
PROMPT = "builtin:davidson"
POLICY = "builtin:hate_speech"
FINETUNE_STEPS = 250
MARKER = ".finesieve-demo"
LEGACY, BASELINE, FINETUNED, CASCADE = "legacy (rules + pre-filter)", "prompt baseline", "fine-tuned", "cascade"


def find_data_dir(explicit: str | Path | None = None) -> Path:
    """The data folder holding the demo's data set (Davidson et al.): `explicit` (--data-dir), $FINESIEVE_DATA,
    the repository's data/, a `shared/data` above the working directory, or the download cache (fetched there on
    first use by an installed wheel). See finesieve.data.sources.find_dataset."""
    return find_dataset("davidson", explicit).parents[1]


def run_demo(
    out: str | Path = "finesieve-demo",
    data_dir: str | Path | None = None,
    max_rows: int | None = None,
    n_boot: int = 1000,
    finetune_steps: int = FINETUNE_STEPS,
    model_run: str | Path | None = None,
    prices: PriceTable | None = None,
    console: Console | None = None,
    overwrite: bool = False,
) -> dict:
    """`out` may be an earlier demo's folder (its runs and reports are replaced); any other non-empty folder is
    refused unless `overwrite`."""
    console, prices = console or Console(), prices or PriceTable()
    out = _claim_output(Path(out), overwrite)
    started = time.perf_counter()
    data_file = find_dataset("davidson", data_dir)
    step = _Steps(console, started)

    step("1. Data review and split")
    dataset = load_dataset(
        data_file,
        ColumnSpec(text_col="text", label_cols=("label",)),
        max_rows=max_rows,
        rejects_path=_mkdir(out) / "rejected_rows.jsonl",
    )
    splits = make_splits(dataset, SplitConfig(test_frac=0.1, val_frac=0.1, seed=0))
    reviewed = review(dataset, split=splits.assignment)
    for line in summary_lines(reviewed):
        console.print(line)
    review_path = write_review(reviewed, dataset, out / "data_review.html")
    console.print(f"split: {splits.sizes()} (split hash {splits.split_hash[:12]}); review written to {review_path}")
    train, test = splits.dataset("train"), splits.dataset("test")
    runs = out / "runs"

    step("2. Prompt baseline: zero-shot, label descriptions vs message embeddings (packaged MiniLM)")
    baseline = fit_and_save(
        EmbeddingZeroShot(prompt=PROMPT, progress=False),
        "embedding_zero_shot",
        splits,
        positive=POSITIVE,
        out=runs / "baseline",
        n_boot=n_boot,
        name=BASELINE,
        overwrite=True,
    )
    tokens = count_prompt_tokens(PROMPT, test.texts[:500])
    api_cost = api_per_million(tokens, prices)
    console.print(
        f"baseline test ROC AUC {baseline.test_result.summary['roc_auc']:.3f}; the same prompt on a hosted "
        f"LLM ({prices.api_model}) would take ~{tokens:.0f} tokens per message: "
        f"{api_cost:,.2f} {prices.currency} per million messages"
    )

    step("3. Legacy system: keyword lexicon + character-CNN pre-filter")
    val = splits.dataset("val")
    # A lighter CNN than the default (64 filters per width, at most 4 epochs): a minute instead of five, within
    # 0.01 ROC AUC of the default on this split, and twice as fast at scoring, which is the pre-filter's job.
    cnn = fit_and_save(
        CharCNNScorer.from_config(CharCNNConfig(channels=64, max_epochs=4)),
        "char_cnn",
        splits,
        positive=POSITIVE,
        out=runs / "prefilter",
        fit_kwargs={"val_texts": val.texts, "val_labels": val.labels},
        n_boot=n_boot,
        name="pre-filter",
        overwrite=True,
    )
    rules = RulesScorer(policy=POLICY).fit(train.texts, train.labels)
    legacy = legacy_cascade(rules, cnn.scorer, positive=POSITIVE, threshold=cnn.threshold)
    legacy_result = evaluate(
        legacy,
        test,
        positive=POSITIVE,
        threshold=cnn.threshold,
        threshold_source="pre-filter run (validation)",
        n_boot=n_boot,
        name=LEGACY,
        evasion=EvasionConfig(),
    )
    console.print(
        f"pre-filter test ROC AUC {cnn.test_result.summary['roc_auc']:.3f} at "
        f"{cnn.test_result.summary['n'] / cnn.test_result.seconds:,.0f} msgs/s; legacy flags "
        f"{legacy_result.summary['flag_rate']:.1%} of messages"
    )

    if model_run is None:
        step(f"4. Fine-tune the packaged all-MiniLM-L6-v2 (LoRA defaults, at most {finetune_steps} steps)")
        from finesieve.train.finetune import train_finetune

        # Validate once, at the end: each validation pass costs as much as ~20 training steps here.
        config = FinetuneConfig(max_steps=finetune_steps, eval_every=finetune_steps, checkpoint_every=finetune_steps)
        fitted = train_finetune(
            config,
            dataset,
            positive=POSITIVE,
            out=runs / "finetuned",
            splits=splits,
            n_boot=n_boot,
            name=FINETUNED,
            overwrite=True,
        )
        model_run = runs / "finetuned"
        t = fitted.scorer.training_
        console.print(f"{t['steps']} steps in {t['seconds']:.0f} s; run written to {model_run}")
    else:
        step(f"4. Fine-tuned model: reusing {model_run}")

    step("5. Cascade: rules -> pre-filter -> fine-tuned model, fitted to the traffic budget on validation")
    config = CascadeConfig()
    cascade = fit_cascade(
        dataset,
        model_run=model_run,
        prefilter_run=runs / "prefilter",
        rules=POLICY,
        config=config,
        prices=prices,
        out=runs / "cascade",
        n_boot=n_boot,
        overwrite=True,
        reference_embeddings=True,  # the served run: the monitor's embedding distance needs them
    )
    for message in cascade.fit.messages:
        console.print(f"[yellow]warning:[/yellow] {message}")
    c = cascade.fit.chosen
    console.print(
        f"validation: {c['route']:.1%} routed to the model, {c['recall_retention']:.1%} of its recall kept, "
        f"queue precision {c['precision']:.3f} (model alone {cascade.fit.model_alone['precision']:.3f})"
    )

    step("6. Side by side on the held-out test split (hate_speech vs the rest)")
    model_result, cascade_result = cascade.results["fine-tuned model"], cascade.results["cascade"]
    model_result.name, cascade_result.name = FINETUNED, CASCADE
    rows = [
        summary_row(LEGACY, legacy_result, {"route": 0.0, "cost_per_million": _measured_cost(legacy_result, prices)}),
        summary_row(
            BASELINE,
            baseline.test_result,
            {
                "route": None,
                "cost_per_million": _measured_cost(baseline.test_result, prices),
                "note": "embedding zero-shot, local CPU",
            },
        ),
        {
            "system": f"{BASELINE} on a hosted LLM",
            "cost_per_million": api_cost,
            "route": None,
            "note": f"{prices.api_model} list price, ~{tokens:.0f} tokens/msg; quality not measured offline",
        },
        *[{**r, "system": n} for r, n in zip(summary_rows(cascade), (FINETUNED, CASCADE))],
    ]
    console.print(
        production_table(
            rows,
            title=f"held-out test split of {data_file.name} (n={len(test):,}); thresholds from validation",
            currency=prices.currency,
        )
    )
    results = [legacy_result, baseline.test_result, model_result, cascade_result]
    comparison = compare(results, baseline=LEGACY, n_boot=n_boot)
    comparison["evaluated_on"] = f"held-out test split of {data_file.name} (n={len(test):,})"
    for name in (FINETUNED, CASCADE):
        console.print(ratio_sentence(comparison, name))
    # As a review team compares systems: at the legacy queue's size, and at the legacy system's catch.
    points = matched_operating_points(
        legacy_result.y,
        {r.name: r.scores for r in (baseline.test_result, model_result, cascade_result)},
        reference_flagged=legacy.decide(test.texts).flagged,
        reference=LEGACY,
    )
    console.print(operating_points_table(points))
    report_path = write_eval_report(
        out / "eval_report.html",
        results,
        comparison,
        "finesieve demo: hate_speech vs the rest",
        subtitle=comparison["evaluated_on"],
        lead_sections=[operating_points_section(points), *cascade_sections(cascade, rows, prices)],
        extra={
            "systems": rows,
            "operating_points": points,
            "cascade_fit": cascade.fit.to_dict(),
            "costs": cascade.costs,
        },
    )
    console.print(
        f"evaluation report: {report_path} (and {report_path.with_suffix('.json').name}); "
        f"data review: {review_path}; {time.perf_counter() - started:.0f} s so far"
    )

    step("7. The moderation service: the cascade behind an API, and one message through the review queue")
    service = service_tour(runs / "cascade", out, test, console)
    console.print(f"total {time.perf_counter() - started:.0f} s")
    return {
        "service": service,
        "review": reviewed,
        "comparison": comparison,
        "systems": rows,
        "operating_points": points,
        "cascade": cascade,
        "report": str(report_path),
        "review_report": str(review_path),
    }


SERVICE_START_S = 180.0  # loading the cascade's three stages takes ~10-30 s on 2 cores; give up well after that


def service_tour(cascade_run: Path, out: Path, test, console: Console) -> dict:
    """Start `finesieve serve` on the cascade (SQLite in `out`), moderate a few test messages through the API with
    the Python client, review one flagged message as a reviewer would, then stop the service. Returns what came
    back. The server is a real subprocess on a free loopback port, stopped in every case."""
    import httpx2 as httpx

    from finesieve.client import ModerationClient
    from finesieve.serve.accounts import add_user
    from finesieve.serve.service import create_key

    db_file = out / "service.db"
    for stale in (db_file, db_file.with_name(db_file.name + "-wal"), db_file.with_name(db_file.name + "-shm")):
        stale.unlink(missing_ok=True)  # an earlier demo's service database: this demo's queue starts empty
    db = f"sqlite:///{db_file}"
    key = create_key(db, "demo", ["*"])
    password = secrets.token_urlsafe(16)
    add_user(db, "demo-reviewer", password, "reviewer", actor="demo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    log_path = out / "service.log"
    command = ["finesieve", "serve", str(cascade_run), "--name", "cascade", "--db", db, "--port", str(port)]
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "finesieve.cli", *command[1:]], stdout=log, stderr=subprocess.STDOUT, env=os.environ
        )
    try:
        _wait_until_up(server, base, log_path)
        positives = [t for t, y in zip(test.texts, test.labels) if y == POSITIVE[0]][:2]
        others = [t for t, y in zip(test.texts, test.labels) if y != POSITIVE[0]][:3]
        messages = [{"id": f"demo-{i}", "text": t} for i, t in enumerate(positives + others)]
        with ModerationClient(base, api_key=key, timeout=60) as client:
            decisions = client.moderate(messages)
            retry = client.moderate(messages[0])  # the same id again: the stored decision, no second row
        labels = [POSITIVE[0]] * len(positives) + ["other"] * len(others)
        console.print(_decisions_table(decisions, labels))
        console.print(f"sent {messages[0]['id']} again: duplicate={retry.duplicate}, action {retry.action} (stored)")
        reviewed = _review_one(httpx, base, password)
        if reviewed is None:
            console.print("review queue: empty (no test message was flagged)")
        else:
            console.print(
                f"review queue: took item {reviewed['item_id']} (message {reviewed['message_id']}, "
                f"{reviewed['reason']}, score {reviewed['message']['score']:.3f}) and judged it a violation; "
                f"queue precision so far {reviewed['stats']['queue_precision']}"
            )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    console.print(
        f"service stopped; its decisions are in {db_file} (log {log_path}). Start it yourself with\n"
        f"  {' '.join(command[:-2])}\n"
        f"then create a key (`finesieve serve-key create NAME --models cascade --db {db}`) and a reviewer "
        f"(`finesieve serve-user create NAME --role reviewer --db {db}`); the review UI is at /ui/",
        highlight=False,
    )
    return {"decisions": [d.model_dump() for d in decisions], "reviewed": reviewed}


def _wait_until_up(server: subprocess.Popen, base: str, log_path: Path) -> None:
    import httpx2 as httpx

    deadline = time.monotonic() + SERVICE_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ConfigError(f"the demo's service exited with code {server.returncode}: see {log_path}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise ConfigError(f"the demo's service did not answer within {SERVICE_START_S:.0f} s: see {log_path}")


def _review_one(httpx, base: str, password: str) -> dict | None:
    """Log in as the demo reviewer, take the next item and judge it a violation; None when the queue is empty."""
    with httpx.Client(base_url=base, timeout=30) as http:
        me = http.post("/v1/auth/login", json={"username": "demo-reviewer", "password": password})
        me.raise_for_status()
        csrf = {"X-CSRF-Token": me.json()["csrf_token"]}
        taken = http.post("/v1/review/next", headers=csrf)
        taken.raise_for_status()
        if taken.status_code == 204:
            return None
        item = taken.json()["item"]
        body = {"violation": True, "category": (item["categories"] or [None])[0], "note": "finesieve demo"}
        http.post(f"/v1/review/items/{item['item_id']}/decision", json=body, headers=csrf).raise_for_status()
        stats = http.get("/v1/review/stats").json()
    return {**item, "stats": stats}


def _decisions_table(decisions, labels: list[str]) -> Table:
    table = Table(title="POST /v1/moderate through the Python client (test messages)", title_justify="left")
    for column in ("id", "true label", "action", "decided by", "score", "stages run", "latency ms"):
        table.add_column(column)
    for d, label in zip(decisions, labels):
        score = "" if d.score is None else f"{d.score:.3f}"
        table.add_row(d.id, label, d.action, d.decided_by, score, ", ".join(d.stage_scores), f"{d.latency_ms:.0f}")
    return table


class _Steps:
    """Section headers with the elapsed time, so a slow step shows where the minutes went."""

    def __init__(self, console: Console, started: float):
        self.console, self.started = console, started

    def __call__(self, title: str) -> None:
        self.console.rule(f"[bold]{title}[/bold] [dim](at {time.perf_counter() - self.started:.0f} s)[/dim]")


def _measured_cost(result, prices: PriceTable) -> float | None:
    """Cost per million of a system measured end to end on the test split (all its stages together)."""
    if result.seconds <= 0:
        return None
    return StageCost.measured(result.name, result.seconds, result.summary["n"]).per_million(prices)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _claim_output(out: Path, overwrite: bool) -> Path:
    """The demo writes into its own folder: a new one, an empty one or an earlier demo's (marked by MARKER)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; the demo writes a folder. Fix: choose a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists() and not overwrite:
        raise ConfigError(
            f"--out {out} holds files that no earlier demo wrote. Fix: choose another --out, or pass "
            "--overwrite to let the demo replace what it writes there"
        )
    _mkdir(out)
    (out / MARKER).write_text("written by `finesieve demo`; a later demo may replace this folder's runs and reports\n")
    return out
