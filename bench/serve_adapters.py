"""Serving N LoRA runs of one base: N merged models against one base with N adapters and mixed batches.

Run from the repository root (a few minutes on 2 busy CPU cores; OMP_NUM_THREADS keeps BLAS to one thread too):
    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_adapters.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_adapters.py --runs 3 --messages 384 --threads 2

The runs are real but quick: N LoRA fine-tunes of the packaged MiniLM (`packaged:all-MiniLM-L6-v2`), each trained
for a few steps (different seeds) on 200 SMS spam rows with `train_finetune`, so every adapter, head and
calibrator is its own; their scores are not meant to be good. Training runs in a child process, so memory it
freed cannot make a way's RSS growth look smaller here. Traffic is the next SMS rows, each message sent to
one of the N runs in turn (round robin), as requests for several models arrive at a service together.

Measured in this one process, each way loaded after the other:
  merged   N x `FineTunedScorer.load` (the adapter merged into a copy of the base each): memory is N bases; each
           run scores its own messages (grouped per run, the best case for this way)
  shared   `load_shared`: one base, N unmerged adapters; `predict_proba_mixed` scores all messages together, every
           base pass mixing runs (PEFT `adapter_names`)
  switched the shared scorers, each run scoring its own messages (one adapter active per pass)
Memory is the RSS growth while loading (after one warm-up load kept aside, so one-time costs count for neither
way; allocator noise: a few MB) and the parameters held, each tensor once.
Throughput is the best of --repeats passes, in messages per second; the ratios compare ways in this process. The
mixed scores are checked against the merged ones (max absolute difference printed).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch

from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import SplitConfig, make_splits
from finesieve.models.adapters import load_shared, predict_proba_mixed
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.models.finetuned import FineTunedScorer
from finesieve.train.finetune import train_finetune

MODEL = "packaged:all-MiniLM-L6-v2"
TRAIN_ROWS = 200


def sms_path() -> Path:
    root = Path(os.environ.get("FINESIEVE_SHARED_DATA", "/work/shared/data"))
    path = root / "sms_spam" / "sms_spam.csv"
    if not path.is_file():
        raise SystemExit(f"no SMS spam file at {path}: set FINESIEVE_SHARED_DATA to the shared data folder")
    return path


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def unique_parameters(scorers) -> int:
    """Parameters held in memory by the scorers together, each tensor counted once (by its storage)."""
    seen = {}
    for scorer in scorers:
        for p in scorer.model_.parameters():
            seen[p.untyped_storage().data_ptr()] = p.numel()
    return sum(seen.values())


def train_runs(root: Path, n: int, steps: int, threads: int) -> list[Path]:
    torch.set_num_threads(threads)
    dataset = load_dataset(sms_path(), ColumnSpec(text_col="text", label_cols=("label",)), max_rows=TRAIN_ROWS)
    splits = make_splits(dataset, SplitConfig(seed=0))
    dirs = []
    for i in range(n):
        config = FinetuneConfig(
            model=MODEL,
            method="lora",
            max_steps=steps,
            batch_size=16,
            eval_every=steps,
            learning_rate=1e-3,
            max_length=64,
            tracking_uri="none",
            num_threads=threads,
            seed=i,
        )
        start = time.perf_counter()
        result = train_finetune(config, dataset, positive=["spam"], splits=splits, out=root / f"lora_{i}", n_boot=0)
        print(f"  trained run {i} ({steps} steps) in {time.perf_counter() - start:.1f} s", flush=True)
        dirs.append(result.run_dir / "model")
    return dirs


def best_rate(fn, n_messages: int, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return n_messages / best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="LoRA runs on the one base")
    parser.add_argument("--messages", type=int, default=192, help="messages scored per pass, spread over the runs")
    parser.add_argument("--steps", type=int, default=2, help="training steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="passes per way; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    texts_all = pd.read_csv(sms_path(), dtype=str, keep_default_na=False)["text"]
    texts = texts_all.iloc[TRAIN_ROWS : TRAIN_ROWS + args.messages].tolist()
    owner = np.arange(len(texts)) % args.runs  # round robin: message i goes to run i mod N
    per_run = [[t for t, o in zip(texts, owner) if o == r] for r in range(args.runs)]

    with tempfile.TemporaryDirectory(prefix="serve_adapters_") as tmp:
        print(f"training {args.runs} LoRA runs of {MODEL} ...", flush=True)
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=spawn) as child:
            dirs = child.submit(train_runs, Path(tmp), args.runs, args.steps, args.threads).result()

        # One scorer loaded first and kept: the one-time costs (lazy imports, tokenizer and PEFT set-up) are paid
        # before either way is measured, and nothing it allocated is freed for a measured way to reuse.
        warm = FineTunedScorer.load(dirs[0])
        before = rss_mb()
        shared = load_shared(dirs, names=[f"run_{i}" for i in range(args.runs)])
        shared_mb, shared_params = rss_mb() - before, unique_parameters(shared)
        before = rss_mb()
        merged = [FineTunedScorer.load(d) for d in dirs]
        merged_mb, merged_params = rss_mb() - before, unique_parameters(merged)

        n = len(texts)
        merged_rate, merged_out = best_rate(
            lambda: [s.predict_proba(t) for s, t in zip(merged, per_run)], n, args.repeats
        )
        mixed_rate, mixed_out = best_rate(
            lambda: predict_proba_mixed(list(zip(shared, per_run)), batch_size=64), n, args.repeats
        )
        switched_rate, _ = best_rate(lambda: [s.predict_proba(t) for s, t in zip(shared, per_run)], n, args.repeats)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(mixed_out, merged_out))

    print(f"\n{args.runs} LoRA runs of {MODEL}, {n} messages round robin, {args.threads} torch thread(s)")
    print(f"{'way':<10}{'RSS delta MB':>14}{'parameters':>14}{'msgs/s':>10}")
    print(f"{'merged':<10}{merged_mb:>14.1f}{merged_params:>14,}{merged_rate:>10.1f}")
    print(f"{'shared':<10}{shared_mb:>14.1f}{shared_params:>14,}{mixed_rate:>10.1f}  (mixed batches)")
    print(f"{'switched':<10}{'(same)':>14}{'(same)':>14}{switched_rate:>10.1f}  (shared, one adapter per pass)")
    print(
        f"ratios shared/merged: memory {shared_mb / merged_mb:.2f} (RSS), {shared_params / merged_params:.2f} "
        f"(parameters); throughput mixed {mixed_rate / merged_rate:.2f}, switched {switched_rate / merged_rate:.2f}"
    )
    print(f"max |mixed - merged| probability: {diff:.2e}")
    del warm


if __name__ == "__main__":
    main()
