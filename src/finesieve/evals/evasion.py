"""How much of a scorer's skill survives the spelling tricks people use to evade filters.

    gap = evasion_gap(texts, y, scores, threshold, EvasionConfig(), rescore=lambda t: (scorer_scores(t), None))
    gap.to_dict()["gap"]["roc_auc"]      # plain ROC AUC minus evaded ROC AUC, with a paired 95% interval

The evasion set is the evaluated messages themselves, each changed by one kind of trick drawn at random
(`data.evasion`: swapped, dropped and doubled letters, joined and split words, leet, look-alike letters,
separators), violations and clean messages alike, so its AUC compares with the plain AUC message for message.
The gap's interval comes from a paired bootstrap (the same resampled messages scored both ways). Per kind, the
figures are over the messages that kind was drawn for. `evals.harness.evaluate(..., evasion=EvasionConfig())`
adds this to every evaluation, and the HTML report shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from finesieve.data.evasion import EvasionConfig, evade_texts
from finesieve.evals import metrics as M
from finesieve.evals.bootstrap import paired_bootstrap_diff

# texts -> (positive scores (n,), the scorer's own decisions (n,) bool or None to use the threshold)
Rescore = Callable[[list[str]], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class EvasionGap:
    config: EvasionConfig
    summary: dict

    def to_dict(self) -> dict:
        return {"config": self.config.model_dump(mode="json"), **self.summary}


def _both(y: np.ndarray, s: np.ndarray, metric) -> float | None:
    return metric(y, s) if 0 < y.sum() < len(y) else None


def _recall(y: np.ndarray, flagged: np.ndarray) -> float | None:
    return float(flagged[y == 1].mean()) if y.sum() else None


def evasion_gap(
    texts: Sequence[str],
    y: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    config: EvasionConfig,
    rescore: Rescore,
    *,
    flagged: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    n_examples: int = 5,
) -> EvasionGap:
    """Evade `texts`, rescore them, and compare with the plain `scores` (and `flagged`, when the scorer decides
    by itself, as a cascade does; else `scores >= threshold`)."""
    y = np.asarray(y, dtype=int)
    scores = np.asarray(scores, dtype=float)
    plain_flagged = np.asarray(flagged, dtype=bool) if flagged is not None else scores >= threshold
    evaded, kinds = evade_texts(list(texts), config)
    evaded_scores, evaded_flagged = rescore(evaded)
    evaded_scores = np.asarray(evaded_scores, dtype=float)
    evaded_flagged = (
        np.asarray(evaded_flagged, dtype=bool) if evaded_flagged is not None else evaded_scores >= threshold
    )
    changed = np.array([a != b for a, b in zip(texts, evaded)], dtype=bool)

    def figures(s: np.ndarray, f: np.ndarray, mask: np.ndarray) -> dict:
        ym = y[mask]
        return {
            "roc_auc": _both(ym, s[mask], M.roc_auc),
            "pr_auc": _both(ym, s[mask], M.pr_auc),
            "recall": _recall(ym, f[mask]),
            "flag_rate": float(f[mask].mean()) if mask.any() else None,
        }

    everything = np.ones(len(y), dtype=bool)
    plain, after = figures(scores, plain_flagged, everything), figures(evaded_scores, evaded_flagged, everything)
    gap: dict[str, dict | None] = {}
    for name, metric in (("roc_auc", M.roc_auc), ("pr_auc", M.pr_auc)):
        if plain[name] is None or after[name] is None:
            gap[name] = None
            continue
        value = plain[name] - after[name]
        ci = None
        if n_boot:
            ci = paired_bootstrap_diff(metric, y, scores, evaded_scores, n_boot=n_boot, seed=seed)["ci"]
        gap[name] = {"value": value, "ci95": list(ci) if ci is not None else None}
    by_kind = {}
    kinds_arr = np.array(kinds)
    for kind in config.kinds:
        mask = kinds_arr == kind
        if not mask.any():
            continue
        p, e = figures(scores, plain_flagged, mask), figures(evaded_scores, evaded_flagged, mask)
        by_kind[kind] = {
            "n": int(mask.sum()),
            "n_violation": int(y[mask].sum()),
            "n_changed": int(changed[mask].sum()),
            "plain": p,
            "evaded": e,
            "gap_roc_auc": p["roc_auc"] - e["roc_auc"]
            if p["roc_auc"] is not None and e["roc_auc"] is not None
            else None,
        }
    # The violations the evasion hid best: largest score drops, for a reader to see what got through.
    drops = np.where(y == 1, scores - evaded_scores, -np.inf)
    examples = [
        {
            "text": str(texts[i]),
            "evaded": evaded[i],
            "kind": kinds[i],
            "before": float(scores[i]),
            "after": float(evaded_scores[i]),
        }
        for i in np.argsort(-drops, kind="stable")[:n_examples]
        if np.isfinite(drops[i]) and drops[i] > 0
    ]
    recall_kept = after["recall"] / plain["recall"] if plain["recall"] and after["recall"] is not None else None
    summary = {
        "n": len(y),
        "n_changed": int(changed.sum()),
        "plain": plain,
        "evaded": after,
        "gap": gap,
        "recall_kept": recall_kept,
        "by_kind": by_kind,
        "examples": examples,
    }
    return EvasionGap(config, summary)
