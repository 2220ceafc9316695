"""Benchmark: the stacked ensemble against its parts, and the char-CNN distilled from the ensemble against the plain
CNN, on the Davidson data (hate_speech vs the rest), over several seeds of the CNN.

For each seed: a TF-IDF run (once) and a char-CNN run, stacked into an ensemble on their validation split; then a
char-CNN of that seed distilled from the first seed's ensemble (`prefilter train --teacher`), so the teacher is
fixed and only the student's seed varies. Printed per seed and on average: test ROC AUC
and PR AUC of TF-IDF, the CNN and the ensemble, and the recall each pre-filter keeps when it sends 20% of the
validation messages on to the model (the cascade's default route), plain against distilled.

Usage (about 10 minutes per seed on 2 cores; runs are kept in OUT and reused):
    .venv/bin/python bench/ensemble_distill.py --seeds 0 1 2 [--out runs/ensemble_bench]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from finesieve.data.load import load_dataset
from finesieve.data.sources import find_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.evals import metrics as M
from finesieve.models.base import positive_scores
from finesieve.runs import load_run
from finesieve.train.ensemble import fit_ensemble
from finesieve.train.prefilter import fit_prefilter, prefilter_scorer
from finesieve.train.recipe import train_reference
from finesieve.train.replay import run_data_splits

POSITIVE = ["hate_speech"]
CNN = ["channels=64", "max_epochs=5"]  # the demo's lighter CNN
ROUTE = 0.2


def recall_at_route(y: np.ndarray, scores: np.ndarray, route: float = ROUTE) -> float:
    sent = np.argsort(-scores, kind="stable")[: int(round(route * len(scores)))]
    return float(y[sent].sum() / y.sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/ensemble_bench"))
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()

    data = load_dataset(find_dataset("davidson", args.data_dir), ColumnSpec(text_col="text", label_cols=("label",)))
    root = args.out
    if not (root / "tfidf").exists():
        train_reference("tfidf", data, positive=POSITIVE, out=root / "tfidf", n_boot=0)
    splits = run_data_splits(root / "tfidf")
    val, test = splits.dataset("val"), splits.dataset("test")
    rows = {}
    for seed in args.seeds:
        cnn, ens, student = root / f"cnn{seed}", root / f"ensemble{seed}", root / f"distilled{seed}"
        if not cnn.exists():
            fit_prefilter(
                prefilter_scorer("char_cnn", [*CNN, f"seed={seed}"]), "char_cnn", data, positive=POSITIVE, out=cnn
            )
        if not ens.exists():
            fit_ensemble([root / "tfidf", cnn], ens, n_boot=0)
        if not student.exists():  # one teacher for every seed: the first seed's ensemble
            fit_prefilter(
                prefilter_scorer("char_cnn", [*CNN, f"seed={seed}"]),
                "char_cnn",
                data,
                positive=POSITIVE,
                out=student,
                teacher=root / f"ensemble{args.seeds[0]}",
            )
        row = {}
        for name, path in (("tfidf", root / "tfidf"), ("cnn", cnn), ("ensemble", ens), ("distilled cnn", student)):
            scorer = load_run(path).scorer
            for split, ds in (("val", val), ("test", test)):
                y = ds.violation(POSITIVE)
                s = positive_scores(scorer.predict_proba(ds.texts), list(scorer.classes_), POSITIVE, False)
                row[f"{name} {split} roc_auc"] = M.roc_auc(y, s)
                row[f"{name} {split} pr_auc"] = M.pr_auc(y, s)
                row[f"{name} {split} recall@{ROUTE:.0%}"] = recall_at_route(y, s)
        rows[seed] = row
        print(
            f"seed {seed}: test ROC AUC tfidf {row['tfidf test roc_auc']:.3f}, cnn {row['cnn test roc_auc']:.3f}, "
            f"ensemble {row['ensemble test roc_auc']:.3f}; val recall@{ROUTE:.0%} cnn {row['cnn val recall@20%']:.3f}, "
            f"distilled {row['distilled cnn val recall@20%']:.3f}",
            flush=True,
        )
    means = {k: float(np.mean([r[k] for r in rows.values()])) for k in next(iter(rows.values()))}
    print(json.dumps({"seeds": args.seeds, "mean": means}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
