"""Loss weights for rare classes, one formula for every trained scorer (the fine-tune and the char-CNN).

    weights = class_weights(y, k=3, mode="balanced", multilabel=False)   # (k,) float32 tensor, or None
    nn.CrossEntropyLoss(weight=weights)                 # single-label: y (n,) class ids
    nn.BCEWithLogitsLoss(pos_weight=weights)            # multi-label: y (n, k) 0/1 indicators

  "balanced"  single-label: n / (k * n_c) per class c (scikit-learn's formula: a class's total weight is n / k
              whatever its size); multi-label: a pos_weight per category, negatives / positives.
  "sqrt"      the square root of "balanced": half-way on a log scale, less skew of the probabilities.
  "none"      no weights (None is accepted as a synonym).

A class or category absent from `targets` counts as one example, so no weight is infinite.
Defaults differ by model and are kept where they were tuned: the fine-tune uses "sqrt", the char-CNN "balanced".
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

ClassWeight = Literal["balanced", "sqrt", "none"]
MODES = ("balanced", "sqrt", "none")


def class_weights(targets: np.ndarray, k: int, mode: ClassWeight | None, multilabel: bool) -> torch.Tensor | None:
    """Loss weights (k,) float32 for targets (n,) class ids (single-label) or (n, k) 0/1 (multi-label); None for
    mode "none"/None."""
    if mode is None or mode == "none":
        return None
    if mode not in MODES:
        raise ValueError(f"class weight mode must be one of {list(MODES)} or None, got {mode!r}")
    targets = np.asarray(targets)
    n = len(targets)
    if multilabel:
        pos = targets.sum(axis=0)
        w = (n - pos) / np.maximum(pos, 1)  # negatives / positives, per category
    else:
        counts = np.bincount(targets, minlength=k)
        w = n / (k * np.maximum(counts, 1))
    if mode == "sqrt":
        w = np.sqrt(w)
    return torch.as_tensor(w, dtype=torch.float32)
