"""Benchmark: the drift scenario on the whole SMS Spam Collection (finesieve.drift_scenario).

A prize-and-cash spam campaign is held back from the parent model and arrives later as part of the traffic. The
run prints and writes (OUT/figures.json, OUT/monitor.html, OUT/runs/retrained/gate.html) the issue's figures:
  detection      messages after the shift until the first alerting window, alerts before the shift;
  false alarms   share of random unshifted windows that alert, and detection rate on random shifted windows;
  recovery       ROC AUC on held-out new traffic: retrained (reviewer labels) vs oracle (every label), target
                 within 0.02;
  forgetting     ROC AUC lost on the parent's fixed test split with replay of the parent's data (target <= 0.01)
                 and without it (a model trained on the reviewed messages alone).

Usage (about a minute with tfidf; --kind finetuned fine-tunes the packaged MiniLM, much longer on a CPU):
    .venv/bin/python bench/drift_scenario.py --out bench-out/drift
    .venv/bin/python bench/drift_scenario.py --out bench-out/drift-leet --evasion leet
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from finesieve.data.sources import find_dataset
from finesieve.drift_scenario import ScenarioConfig, run_scenario

TARGETS = {"recovery_gap_max": 0.02, "replay_loss_max": 0.01}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/drift"))
    parser.add_argument("--data", type=Path, default=None, help="sms_spam.csv (default: the shared data folder)")
    parser.add_argument("--kind", choices=("tfidf", "finetuned"), default="tfidf")
    parser.add_argument("--max-steps", type=int, default=300, help="Fine-tuning steps (--kind finetuned).")
    parser.add_argument("--evasion", choices=("none", "leet"), default="none")
    parser.add_argument("--campaign-share", type=float, default=0.3)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--embeddings", action="store_true", help="Embedding distance per window (slow).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = ScenarioConfig(
        data=args.data or find_dataset("sms_spam", None),
        kind=args.kind,
        finetune={"max_steps": args.max_steps} if args.kind == "finetuned" else {},
        evasion=args.evasion,
        campaign_share=args.campaign_share,
        window=args.window,
        repeats=args.repeats,
        embeddings=args.embeddings,
        n_boot=1000,
        seed=args.seed,
    )
    figures = run_scenario(config, args.out)
    d, r = figures["detection"], figures["repeated_windows"]
    print(f"\nstream: {figures['stream']}; reviews: {figures['reviews']}")
    print(
        f"detection: first alert {d['messages_to_detection']} messages after the shift "
        f"({d['alerting_before']} of {d['windows_before']} windows before it alerted): {d['alerts']}"
    )
    print(
        f"random windows of {r['window']} ({r['repeats']} each): false-alarm rate {r['false_alarm_rate']:.3f} "
        f"{r['alerts_in_unshifted_windows']}, "
        f"detection rate {r['detection_rate']:.3f}; alerts in shifted windows {r['alerts_in_shifted_windows']}"
    )
    print(
        "detection rate by campaign share: "
        + ", ".join(f"{k:g}: {v:.3f}" for k, v in r["detection_rate_by_share"].items())
    )
    print(f"{'model':<24} {'old test AUC':>12} {'new AUC':>8} {'campaign recall':>16}")
    for name, q in figures["quality"].items():
        print(f"{name:<24} {q['old_auc']:>12.4f} {q['new_auc']:>8.4f} {q['campaign_recall']:>16.3f}")
    print(
        f"recovery gap (oracle - retrained, new traffic): {figures['recovery_gap_auc']:+.4f} "
        f"(target <= {TARGETS['recovery_gap_max']}); old test AUC lost with replay "
        f"{figures['replay_old_loss_auc']:+.4f} (target <= {TARGETS['replay_loss_max']}), without "
        f"{figures['no_replay_old_loss_auc']:+.4f}"
    )
    print(f"gate: {figures['gate']['decision']}: {'; '.join(figures['gate']['reasons'])}")
    print(f"{figures['seconds']:.0f} s; figures in {args.out / 'figures.json'}")
    print(
        json.dumps(
            {
                "targets_met": {
                    "recovery": figures["recovery_gap_auc"] <= TARGETS["recovery_gap_max"],
                    "replay": figures["replay_old_loss_auc"] <= TARGETS["replay_loss_max"],
                }
            }
        )
    )


if __name__ == "__main__":
    main()
