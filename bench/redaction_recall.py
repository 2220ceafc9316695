"""Redaction benchmark: recall per entity type and false positives on the hand-labelled PII cases, and the
throughput of clean + redact on the real Davidson tweets.

Run from the repository root:
    .venv/bin/python bench/redaction_recall.py
    .venv/bin/python bench/redaction_recall.py --cases tests/data/pii_cases.jsonl --repeats 5 --show-misses

The Davidson file is read from $FINESIEVE_SHARED_DATA/davidson_hate_offensive/davidson_hate_offensive.csv,
else /work/shared/data/... . Throughput is the best of --repeats passes over every tweet, in one process on
one core; it includes `normalize.clean` so it matches what the loader and the service do per message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from finesieve.data.normalize import clean, normalize_for_scoring
from finesieve.data.redact import ENTITY_TYPES, Redactor

REPO = Path(__file__).resolve().parents[1]


def evaluate(cases: list[dict], redactor: Redactor) -> tuple[dict, dict, list[str]]:
    """Per-entity recall rows, the negatives row, and the misses/false positives as readable lines."""
    found, total, wrong_type = Counter(), Counter(), Counter()
    negatives = false_pos = 0
    notes: list[str] = []
    for case in cases:
        text = clean(case["text"])
        result = redactor.redact(text)
        expected = Counter(case["entities"])
        if not expected:
            negatives += 1
            if result.counts:
                false_pos += 1
                notes.append(f"false positive: {case['text']!r} -> {result.text!r}")
            continue
        for entity, n in expected.items():
            total[entity] += 1
            if result.counts.get(entity, 0) >= n:
                found[entity] += 1
            else:
                notes.append(f"missed {entity}: {case['text']!r} -> {result.text!r}")
        for entity in set(result.counts) - set(expected):
            wrong_type[entity] += 1  # redacted, but as a type the case does not list
    rows = {
        e: (total[e], found[e], found[e] / total[e] if total[e] else float("nan"), wrong_type[e]) for e in ENTITY_TYPES
    }
    return rows, {"negatives": negatives, "redacted": false_pos, "rate": false_pos / max(negatives, 1)}, notes


def throughput(texts: list[str], repeats: int) -> dict[str, float]:
    """Messages per second (best of `repeats`) for clean, normalize_for_scoring and clean + redact."""
    redactor = Redactor()
    jobs = {
        "clean": lambda t: clean(t),
        "normalize_for_scoring": lambda t: normalize_for_scoring(t),
        "clean + redact": lambda t: redactor.redact(clean(t)),
    }
    rates = {}
    for name, job in jobs.items():
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for text in texts:
                job(text)
            best = min(best, time.perf_counter() - start)
        rates[name] = len(texts) / best
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=REPO / "tests" / "data" / "pii_cases.jsonl")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the tweets; the fastest is reported")
    parser.add_argument("--show-misses", action="store_true", help="list every miss and false positive")
    args = parser.parse_args()

    cases = [json.loads(line) for line in args.cases.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows, neg, notes = evaluate(cases, Redactor())
    print(f"PII cases: {args.cases} ({len(cases)} messages)\n")
    print(f"{'entity':<9}{'cases':>7}{'found':>7}{'recall':>9}{'wrong-type hits':>17}")
    for entity, (n, hit, recall, wrong) in rows.items():
        print(f"{entity:<9}{n:>7}{hit:>7}{recall:>9.3f}{wrong:>17}")
    print(f"\n{'negatives':<11}{'cases':>7}{'redacted':>10}{'FP rate':>9}")
    print(f"{'':<11}{neg['negatives']:>7}{neg['redacted']:>10}{neg['rate']:>9.3f}")
    if notes and args.show_misses:
        print("\n" + "\n".join(notes))
    elif notes:
        print(f"\n{len(notes)} misses/false positives (--show-misses lists them)")

    shared = Path(os.environ.get("FINESIEVE_SHARED_DATA", "/work/shared/data"))
    davidson = shared / "davidson_hate_offensive" / "davidson_hate_offensive.csv"
    if not davidson.is_file():
        print(f"\nthroughput skipped: {davidson} not found; set FINESIEVE_SHARED_DATA to the shared data folder")
        return 0
    texts = pd.read_csv(davidson, dtype=str, keep_default_na=False)["text"].tolist()
    rates = throughput(texts, args.repeats)
    print(f"\nthroughput on {davidson.name} ({len(texts)} tweets, best of {args.repeats}, one core)")
    print(f"{'step':<24}{'msgs/s':>10}{'us/msg':>9}")
    for name, rate in rates.items():
        print(f"{name:<24}{rate:>10,.0f}{1e6 / rate:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
