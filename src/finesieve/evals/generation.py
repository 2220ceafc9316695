"""Reference-based metrics for generated text, offline and in pure Python: exact match, token F1, chrF, ROUGE-L.

    from finesieve.evals.generation import evaluate_generation
    result = evaluate_generation(references, outputs, metrics=("exact_match", "token_f1", "chrf"))
    result.summary["token_f1"], result.ci["token_f1"], result.per_example

Each metric scores one (output, reference) pair in [0, 1]; the summary is the mean over examples and the
interval a percentile bootstrap over resampled examples (`evals.bootstrap.mean_cis`).

- exact_match: 1 when the two texts are equal once normalised (`normalize`: casefolded, punctuation removed,
  whitespace collapsed), else 0.
- token_f1: F1 of the bags of normalised words (SQuAD's answer F1): overlap / output words and overlap /
  reference words. Two empty texts score 1; one empty text scores 0.
- chrf: character n-gram F-score (Popovic 2015) as sacrebleu computes a sentence's chrF by default: n-grams of
  1 to 6 characters with whitespace removed and case kept; precision and recall averaged over the orders both
  texts have n-grams of; F-beta with beta = 2 (recall weighs more). On a 0-1 scale (sacrebleu prints 0-100).
  Two texts without characters score 1; one without scores 0.
- rouge_l: F1 of the longest common subsequence of normalised words (ROUGE-L F-measure, beta = 1).

These measure overlap with one reference, not whether feedback is right or useful: a correct answer worded
differently scores low. They are the cheap, reproducible floor under the judged evaluations of issue 18.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from finesieve.evals.bootstrap import mean_cis

CHRF_ORDER = 6
CHRF_BETA = 2.0
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Casefolded, every punctuation character (Unicode category P*) replaced by a space, whitespace collapsed."""
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.casefold())
    return _SPACE.sub(" ", text).strip()


def words(text: str) -> list[str]:
    return normalize(text).split()


def exact_match(output: str, reference: str) -> float:
    return float(normalize(output) == normalize(reference))


def token_f1(output: str, reference: str) -> float:
    out, ref = words(output), words(reference)
    if not out or not ref:
        return float(out == ref)
    overlap = sum((Counter(out) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(out), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def _char_ngrams(text: str, n: int) -> Counter:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(output: str, reference: str, *, order: int = CHRF_ORDER, beta: float = CHRF_BETA) -> float:
    out, ref = _SPACE.sub("", output), _SPACE.sub("", reference)
    if not out or not ref:
        return float(out == ref)
    precisions, recalls = [], []
    for n in range(1, order + 1):
        out_grams, ref_grams = _char_ngrams(out, n), _char_ngrams(ref, n)
        if not out_grams or not ref_grams:  # a text shorter than n: this order says nothing
            continue
        common = sum((out_grams & ref_grams).values())
        precisions.append(common / sum(out_grams.values()))
        recalls.append(common / sum(ref_grams.values()))
    precision, recall = float(np.mean(precisions)), float(np.mean(recalls))
    if precision + recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (beta**2 * precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence; O(len(a) * len(b)) time, O(len(b)) memory."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(output: str, reference: str) -> float:
    out, ref = words(output), words(reference)
    if not out or not ref:
        return float(out == ref)
    lcs = _lcs_length(out, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(out), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


# The implementations of `data.task.GenerationMetric`, by name.
METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "token_f1": token_f1,
    "chrf": chrf,
    "rouge_l": rouge_l,
}


@dataclass
class GenerationResult:
    """Reference-based metrics of one system's outputs: per example, their means and bootstrap intervals."""

    name: str
    metrics: tuple[str, ...]
    per_example: pd.DataFrame = field(repr=False)  # id + one column per metric
    summary: dict[str, float]
    ci: dict[str, tuple[float, float] | None]
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "scorer": self.name,
            "task": "generation",
            "n": len(self.per_example),
            **{m: self.summary[m] for m in self.metrics},
            "ci95": {m: (list(v) if v is not None else None) for m, v in self.ci.items()},
            "examples_per_second": round(len(self.per_example) / self.seconds, 1) if self.seconds > 0 else None,
        }


def evaluate_generation(
    references: Sequence[str],
    outputs: Sequence[str],
    *,
    metrics: Sequence[str] = tuple(METRICS),
    ids: Sequence[str] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    name: str = "system",
    seconds: float = 0.0,
) -> GenerationResult:
    """Score each output against its reference with every metric in `metrics`; mean and percentile CI over
    resampled examples (`n_boot=0` skips the intervals)."""
    if isinstance(outputs, str) or isinstance(references, str):
        raise TypeError(
            "outputs and references are sequences of texts, one per example, not one string: wrap a "
            "single text in a list"
        )
    if len(outputs) != len(references):
        raise ValueError(
            f"{len(outputs)} outputs for {len(references)} references: pass one output per example, "
            "in the dataset's order"
        )
    if unknown := [m for m in metrics if m not in METRICS]:
        raise ValueError(f"unknown metric(s) {unknown}: choose from {list(METRICS)}")
    if bad := [i for i, o in enumerate(outputs) if not isinstance(o, str)]:
        raise TypeError(
            f"output {bad[0]} is a {type(outputs[bad[0]]).__name__}, not a text ({len(bad)} such): "
            "pass '' for an example the system gave no answer to"
        )
    table = pd.DataFrame({"id": list(ids) if ids is not None else [str(i + 1) for i in range(len(outputs))]})
    for m in metrics:
        table[m] = [METRICS[m](o, r) for o, r in zip(outputs, references)]
    values = table[list(metrics)].to_numpy(dtype=float)  # (n, n_metrics)
    cis = mean_cis(values, n_boot=n_boot, alpha=alpha, seed=seed)
    return GenerationResult(
        name=name,
        metrics=tuple(metrics),
        per_example=table,
        summary={m: float(values[:, j].mean()) if len(values) else float("nan") for j, m in enumerate(metrics)},
        ci=dict(zip(metrics, cis)),
        seconds=seconds,
    )
