"""Benchmark: the cascade against the fine-tuned model on every message, on the held-out Davidson test split.

Checks the issue's figures in one process: the cascade routes <= 20% of messages to the fine-tuned model, keeps
>= 98% of its recall, and scores messages end to end >= 4x faster than running the model on every message.
Thresholds come from `cascade fit` on the validation split; everything below is measured on the test split.
Throughput is timed in alternating rounds (model, cascade, model, cascade, ...) in the same process and the
ratio is taken per round, since timings on shared machines drift; the median round is reported.

Usage, after `bash bench/models_davidson.sh runs/davidson` has trained the stages (same split, seed 0):
    .venv/bin/python bench/cascade_davidson.py --model runs/davidson/finetuned --prefilter runs/davidson/char_cnn
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from finesieve.cascade.build import fit_cascade
from finesieve.cascade.fit import CascadeConfig
from finesieve.data.load import load_dataset
from finesieve.data.sources import find_dataset
from finesieve.data.spec import ColumnSpec

TARGETS = {"route_max": 0.20, "recall_kept_min": 0.98, "speedup_min": 4.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="fine-tuned run directory")
    parser.add_argument("--prefilter", required=True, type=Path, help="pre-filter run directory (same split)")
    parser.add_argument("--rules", default="builtin:hate_speech", help="policy for the rules stage ('' for none)")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding the shared data sets")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--method", default="conformal", choices=["conformal", "empirical"])
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    data = load_dataset(find_dataset("davidson", args.data_dir), ColumnSpec(text_col="text", label_cols=("label",)))
    run = fit_cascade(
        data,
        model_run=args.model,
        prefilter_run=args.prefilter,
        rules=args.rules or None,
        config=CascadeConfig(method=args.method),
        n_boot=200,
    )
    test = run.splits.dataset("test")
    texts, y = test.texts, test.violation(list(run.cascade.positive))
    model, cascade = run.cascade.model, run.cascade

    model_flags = run.results["fine-tuned model"].scores >= run.results["fine-tuned model"].threshold
    decisions = run.decisions
    recall_model = float((model_flags & (y == 1)).sum() / y.sum())
    recall_cascade = float((decisions.flagged & (y == 1)).sum() / y.sum())

    rounds = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        model.predict_proba(texts)
        t_model = time.perf_counter() - start
        start = time.perf_counter()
        cascade.decide(texts)
        t_cascade = time.perf_counter() - start
        rounds.append(
            {
                "model_msgs_per_s": len(texts) / t_model,
                "cascade_msgs_per_s": len(texts) / t_cascade,
                "speedup": t_model / t_cascade,
            }
        )
    speedup = statistics.median(r["speedup"] for r in rounds)
    route = decisions.route_fraction()
    result = {
        "n_test": len(texts),
        "n_violations": int(y.sum()),
        "route_fraction": route,
        "recall_model": recall_model,
        "recall_cascade": recall_cascade,
        "recall_kept": recall_cascade / recall_model if recall_model else None,
        "precision_model": run.results["fine-tuned model"].summary["precision"],
        "precision_cascade": run.results["cascade"].summary["precision"],
        "roc_auc_model": run.results["fine-tuned model"].summary["roc_auc"],
        "roc_auc_cascade": run.results["cascade"].summary["roc_auc"],
        "speedup_median": speedup,
        "rounds": rounds,
        "cost_per_million": {k: v["cost_per_million"] for k, v in run.costs.items()},
        "validation_fit": {
            k: run.fit.chosen[k] for k in ("route", "recall_retention", "precision", "escalate", "review")
        },
        "feasible_on_validation": run.fit.feasible,
        "thresholds": run.fit.thresholds.model_dump(),
    }
    checks = {
        "route <= 20%": route <= TARGETS["route_max"],
        "recall kept >= 98%": result["recall_kept"] is not None and result["recall_kept"] >= TARGETS["recall_kept_min"],
        "speed-up >= 4x": speedup >= TARGETS["speedup_min"],
    }
    print(f"held-out test split: n={len(texts):,}, {int(y.sum())} violations")
    print(f"  routed to the fine-tuned model: {route:.1%} (validation fit: {run.fit.chosen['route']:.1%})")
    print(f"  recall: model alone {recall_model:.3f}, cascade {recall_cascade:.3f} -> {result['recall_kept']:.1%} kept")
    print(f"  precision: model alone {result['precision_model']:.3f}, cascade {result['precision_cascade']:.3f}")
    print(f"  ROC AUC: model alone {result['roc_auc_model']:.3f}, cascade {result['roc_auc_cascade']:.3f}")
    for i, r in enumerate(rounds, 1):
        print(
            f"  round {i}: model {r['model_msgs_per_s']:,.0f} msgs/s, cascade {r['cascade_msgs_per_s']:,.0f} msgs/s, "
            f"speed-up {r['speedup']:.2f}x"
        )
    print(f"  end-to-end speed-up (median of {len(rounds)} rounds): {speedup:.2f}x")
    print("  cost per million messages: " + ", ".join(f"{k} {v:.4f}" for k, v in result["cost_per_million"].items()))
    for name, ok in checks.items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")
    if args.json:
        args.json.write_text(json.dumps({**result, "checks": checks}, indent=2, default=float))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
