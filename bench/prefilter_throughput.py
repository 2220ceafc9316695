"""Pre-filter throughput: messages per second per CPU core of the character CNN and of TF-IDF + logistic
regression, scoring the real Davidson tweets, with their hate_speech AUCs so the speed is not bought blind.

Run from the repository root:
    .venv/bin/python bench/prefilter_throughput.py
    .venv/bin/python bench/prefilter_throughput.py --train-frac 0.4 --epochs 3 --repeats 3
    .venv/bin/python bench/prefilter_throughput.py --channels 64      # a smaller, faster pre-filter

The Davidson file is read from $FINESIEVE_SHARED_DATA/davidson_hate_offensive/davidson_hate_offensive.csv,
else /work/shared/data/... . Both scorers are trained on a stratified part of it (a short training: enough for
honest AUCs, not a tuned model) and then score every remaining tweet. Each throughput figure is the best of
--repeats passes of `predict_proba` over those tweets, in one process with torch, BLAS and OpenMP held to one
thread; it includes `normalize_for_scoring`, which both scorers run per message, and whose own rate is shown
as a ceiling. The ratio column compares the two scorers measured in this same process.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy and torch load their thread pools

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from finesieve.data.normalize import normalize_for_scoring
from finesieve.evals.metrics import pr_auc, roc_auc
from finesieve.models.base import positive_scores
from finesieve.models.char_cnn import CharCNNScorer
from finesieve.models.tfidf import TfidfLogReg


def davidson_path() -> Path:
    root = Path(os.environ.get("FINESIEVE_SHARED_DATA", "/work/shared/data"))
    return root / "davidson_hate_offensive" / "davidson_hate_offensive.csv"


def stratified_halves(df: pd.DataFrame, train_frac: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    train = df.groupby("label", group_keys=False).sample(frac=train_frac, random_state=seed)
    return train, df.drop(train.index)


def best_rate(fn, texts: list[str], repeats: int) -> float:
    """Messages per second: the best of `repeats` full passes (the least disturbed by other processes)."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-frac", type=float, default=0.4, help="Share of the tweets to train on (stratified).")
    parser.add_argument("--epochs", type=int, default=3, help="max_epochs of the char-CNN.")
    parser.add_argument("--channels", type=int, default=128, help="Filters per convolution width of the char-CNN.")
    parser.add_argument("--embed-dim", type=int, default=32, help="Byte embedding size of the char-CNN.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed scoring passes per scorer; the best counts.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    df = pd.read_csv(davidson_path(), dtype=str, keep_default_na=False)
    train, test = stratified_halves(df, args.train_frac, args.seed)
    texts = test["text"].tolist()
    y = (test["label"] == "hate_speech").to_numpy()
    print(
        f"Davidson: {len(df)} tweets, train {len(train)}, scored {len(test)} "
        f"({y.mean():.1%} hate_speech); torch threads {torch.get_num_threads()}"
    )

    scorers = {
        "char-cnn": CharCNNScorer(
            max_epochs=args.epochs, channels=args.channels, embed_dim=args.embed_dim, seed=args.seed
        ),
        "tfidf+lr": TfidfLogReg(),
    }
    rows = []
    for name, scorer in scorers.items():
        start = time.perf_counter()
        scorer.fit(train["text"].tolist(), train["label"].tolist())
        train_s = time.perf_counter() - start
        proba = scorer.predict_proba(texts)  # also a warm-up pass
        s = positive_scores(proba, scorer.classes_, ["hate_speech"], scorer.multilabel_)
        rows.append(
            {
                "scorer": name,
                "train_s": train_s,
                "roc_auc": roc_auc(y, s),
                "pr_auc": pr_auc(y, s),
                "msgs_per_s": best_rate(scorer.predict_proba, texts, args.repeats),
            }
        )
        if name == "char-cnn":
            print(
                f"char-cnn: best epoch {scorer.best_epoch_} of {len(scorer.history_)}, "
                f"temperature {scorer.temperature_.round(3).tolist()}, bias {scorer.bias_.round(3).tolist()}"
            )
    norm_rate = best_rate(lambda ts: [normalize_for_scoring(t) for t in ts], texts, args.repeats)

    other = {rows[0]["scorer"]: rows[1]["msgs_per_s"], rows[1]["scorer"]: rows[0]["msgs_per_s"]}
    print(f"\n{'scorer':<10} {'train s':>8} {'ROC AUC':>8} {'PR AUC':>7} {'msgs/s/core':>12} {'x other':>8}")
    for r in rows:
        print(
            f"{r['scorer']:<10} {r['train_s']:>8.1f} {r['roc_auc']:>8.3f} {r['pr_auc']:>7.3f} "
            f"{r['msgs_per_s']:>12,.0f} {r['msgs_per_s'] / other[r['scorer']]:>8.2f}"
        )
    print(f"{'normalize':<10} {'':>8} {'':>8} {'':>7} {norm_rate:>12,.0f}   (normalize_for_scoring alone: the ceiling)")
    print("AUCs: hate_speech vs the rest on the scored tweets (P(hate_speech) from the 3-class model).")


if __name__ == "__main__":
    main()
