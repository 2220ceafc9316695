"""Choosing a scorer's operating threshold on validation data, the same way for every recipe.

    threshold, source = choose_threshold(scorer, splits.dataset("val"), positive=["hate_speech"])

The threshold is the one with the best F1 for the positive classes on the validation split; `source` says
how it was chosen, for the report and the run manifest. Training recipes (`finesieve.train.recipe`) and the
side-by-side evaluation of reference scorers (`finesieve.evals.side_by_side`) both call it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from finesieve.data.dataset import Dataset
from finesieve.evals import metrics as M
from finesieve.evals.harness import score_positive
from finesieve.models.base import positive_scores


def choose_threshold(
    scorer, val: Dataset, positive: Sequence[str], proba: np.ndarray | None = None
) -> tuple[float, str]:
    """The validation threshold with the best F1 for the positive classes (0.5 when val has no positives).
    `proba` is the scorer's `predict_proba` on `val` when the caller already has it."""
    y = val.violation(positive)
    if not 0 < y.sum() < len(y):
        return 0.5, "default 0.5 (validation split has one class only)"
    if proba is None:
        scores, _, _ = score_positive(scorer, val.texts, positive)
    else:
        scores = positive_scores(proba, [str(c) for c in scorer.classes_], positive, scorer.multilabel_)
    return float(M.threshold_for_best_f1(y, scores)), "best F1 on the validation split"
