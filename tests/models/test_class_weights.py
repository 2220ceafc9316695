"""The one class-weight formula (`finesieve.models.class_weights`) against values worked out by hand, and its
use by both trained scorers with their own defaults (fine-tune 'sqrt', char-CNN 'balanced')."""

import numpy as np
import pytest
import torch

from finesieve.models.char_cnn import CharCNNConfig
from finesieve.models.class_weights import class_weights
from finesieve.models.finetune_config import FinetuneConfig


def test_single_label_balanced_and_sqrt_by_hand():
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])  # n = 10, k = 3, counts 6, 2, 2
    balanced = class_weights(y, 3, "balanced", multilabel=False)
    # n / (k n_c): 10 / 18, 10 / 6, 10 / 6
    np.testing.assert_allclose(balanced.numpy(), [10 / 18, 10 / 6, 10 / 6], rtol=1e-6)
    assert balanced.dtype == torch.float32
    np.testing.assert_allclose(
        class_weights(y, 3, "sqrt", False).numpy(), np.sqrt([10 / 18, 10 / 6, 10 / 6]), rtol=1e-6
    )
    # A class absent from training counts as one example: 10 / (4 x 1), never infinite.
    np.testing.assert_allclose(
        class_weights(y, 4, "balanced", False).numpy(), [10 / 24, 10 / 8, 10 / 8, 10 / 4], rtol=1e-6
    )


def test_multilabel_pos_weight_by_hand():
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 0], [1, 0]], dtype=np.float32)  # positives 3 and 1 of 5
    np.testing.assert_allclose(class_weights(y, 2, "balanced", True).numpy(), [2 / 3, 4 / 1], rtol=1e-6)
    np.testing.assert_allclose(class_weights(y, 2, "sqrt", True).numpy(), np.sqrt([2 / 3, 4.0]), rtol=1e-6)
    never = np.zeros((4, 1), dtype=np.float32)
    np.testing.assert_allclose(class_weights(never, 1, "balanced", True).numpy(), [4.0])  # negatives / max(pos, 1)


def test_none_and_bad_modes():
    y = np.array([0, 1, 1])
    assert class_weights(y, 2, "none", False) is None
    assert class_weights(y, 2, None, False) is None  # the char-CNN's class_weight=None
    with pytest.raises(ValueError, match="balanced"):
        class_weights(y, 2, "inverse", False)


def test_each_scorer_keeps_its_default():
    assert FinetuneConfig().class_weight == "sqrt"
    assert CharCNNConfig().class_weight == "balanced"
