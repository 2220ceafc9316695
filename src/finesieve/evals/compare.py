"""Side-by-side comparison of several scorers evaluated on the same messages, with ratios to a baseline.

    table = compare([legacy, tfidf, finetuned], baseline="legacy")
    table["ratios"]["finetuned"]["precision"]   # e.g. 3.7: precision 3.7x the legacy system's

Differences in ROC AUC and PR AUC come with a paired bootstrap (the same resampled messages for both
scorers), so "better" is said with a confidence interval, not from one number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from finesieve.evals import metrics as M
from finesieve.evals.bootstrap import paired_bootstrap_diff
from finesieve.evals.harness import EvalResult

RATIO_KEYS = ("precision", "recall", "f1", "roc_auc", "pr_auc", "flag_rate")


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def compare(results: Sequence[EvalResult], baseline: str | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Metrics of each scorer, and each one's ratios and AUC differences against the baseline scorer."""
    if not results:
        raise ValueError("nothing to compare: evaluate at least one scorer")
    names = [r.name for r in results]
    if len(set(names)) != len(names):
        raise ValueError(f"scorer names must be unique to compare them, got {names}")
    base = next((r for r in results if r.name == baseline), None) if baseline else results[0]
    if base is None:
        raise ValueError(f"baseline '{baseline}' is not among the scorers {names}")
    for r in results:
        if len(r.y) != len(base.y) or not np.array_equal(r.y, base.y):
            raise ValueError(
                f"'{r.name}' and '{base.name}' were not evaluated on the same messages: compare on one split"
            )

    out = {"baseline": base.name, "scorers": {r.name: r.to_dict() for r in results}, "ratios": {}, "differences": {}}
    both_classes = 0 < base.y.sum() < len(base.y)
    for r in results:
        if r is base:
            continue
        a, b = r.to_dict(), base.to_dict()
        out["ratios"][r.name] = {k: _ratio(a[k], b[k]) for k in RATIO_KEYS}
        if both_classes and n_boot:
            out["differences"][r.name] = {
                metric: paired_bootstrap_diff(fn, r.y, r.scores, base.scores, n_boot=n_boot, seed=seed)
                for metric, fn in (("roc_auc", M.roc_auc), ("pr_auc", M.pr_auc))
            }
    return out


def ratio_sentence(comparison: dict, name: str) -> str:
    """'precision 3.7x, recall 1.5x vs legacy' for one scorer."""
    ratios = comparison["ratios"].get(name)
    if not ratios:
        return f"{name} is the baseline"
    parts = [f"{k} {v:.2f}x" for k, v in ratios.items() if v is not None and k in ("precision", "recall", "f1")]
    return f"{name}: " + ", ".join(parts) + f" vs {comparison['baseline']}"
