"""Systems compared as a review team compares them: at the same workload, or at the same catch.

    points = matched_operating_points(y, {"fine-tuned": s1, "cascade": s2}, reference_flagged=legacy_flags)
    points["systems"]["cascade"]["at_volume"]["caught"]     # violations in its top-k, k = the legacy queue size
    points["systems"]["cascade"]["at_recall"]["flagged"]    # messages it must flag to catch what the legacy catches

A table of precision and recall at each system's own threshold mixes two things: how well a system ranks and
where its threshold sits. A review team asks instead: with the queue we staff today (the reference system's
review volume), how many more violations does each system put in front of reviewers; and to catch what we
catch today (the reference's recall), how much less do reviewers have to read. Both are ranking figures (each
system's messages ranked by its score, the top k taken), so no threshold is tuned on the evaluated data.
Ties at the cut are broken by message order, which is fixed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _ranked(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")


def at_volume(y: np.ndarray, scores: np.ndarray, k: int) -> dict:
    """The top `k` messages by score: how many are violations (caught), precision and recall."""
    y = np.asarray(y, dtype=int)
    caught = int(y[_ranked(scores)[:k]].sum())
    return {
        "flagged": int(k),
        "caught": caught,
        "precision": caught / k if k else None,
        "recall": caught / int(y.sum()) if y.sum() else None,
    }


def at_recall(y: np.ndarray, scores: np.ndarray, recall: float) -> dict:
    """The fewest top-scored messages that hold `recall` of the violations: how many must be flagged."""
    y = np.asarray(y, dtype=int)
    need = int(np.ceil(recall * y.sum() - 1e-9))
    hits = np.cumsum(y[_ranked(scores)])
    k = int(np.searchsorted(hits, need) + 1) if need > 0 else 0
    return {
        "flagged": k,
        "flag_rate": k / len(y) if len(y) else None,
        "caught": int(hits[k - 1]) if k else 0,
        "precision": float(hits[k - 1] / k) if k else None,
    }


def matched_operating_points(
    y: np.ndarray, systems: Mapping[str, np.ndarray], *, reference_flagged: np.ndarray, reference: str = "reference"
) -> dict:
    """Each system (name -> scores over the same messages) at the reference's review volume and at its recall.

    `reference_flagged` (n,) bool: what the reference system sends to review, by its own decisions."""
    y = np.asarray(y, dtype=int)
    flagged = np.asarray(reference_flagged, dtype=bool)
    k = int(flagged.sum())
    caught = int(y[flagged].sum())
    recall = caught / int(y.sum()) if y.sum() else 0.0
    out: dict = {
        "reference": {
            "name": reference,
            "flagged": k,
            "flag_rate": k / len(y) if len(y) else None,
            "caught": caught,
            "precision": caught / k if k else None,
            "recall": recall,
        },
        "systems": {},
    }
    for name, scores in systems.items():
        v, r = at_volume(y, scores, k), at_recall(y, scores, recall)
        out["systems"][name] = {
            "at_volume": {
                **v,
                "more_caught": v["caught"] - caught,
                "caught_ratio": v["caught"] / caught if caught else None,
            },
            "at_recall": {**r, "review_saved": 1 - r["flagged"] / k if k else None},
        }
    return out
