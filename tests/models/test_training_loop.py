"""The shared training loop on a tiny linear model: what it promises to every scorer that trains through it
(the fine-tune and the char-CNN). Scripted validation results make each rule visible."""

import numpy as np
import pytest
import torch
from torch import nn

from finesieve.models.training_loop import LoopSettings, train_loop


class TableBatches:
    """A BatchSource over a feature matrix: inputs are (x,)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def epoch_batches(self, epoch, seed, batch_size):
        order = np.random.default_rng([seed, epoch]).permutation(len(self.x))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def collate(self, rows, device):
        return (torch.as_tensor(self.x[rows]).to(device),), torch.as_tensor(self.y[rows]).to(device)


@pytest.fixture
def task():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    torch.manual_seed(0)
    return nn.Linear(2, 2), TableBatches(x, y)


def scripted(results):
    """validate() returning the given (metric, loss) pairs in turn."""
    it = iter(results)
    return lambda: next(it)


SETTINGS = dict(learning_rate=0.1, batch_size=16, max_epochs=10, schedule="constant", max_grad_norm=None, patience=2)


def test_early_stopping_keeps_the_best_validated_weights(task):
    model, batches = task
    seen = {}

    def validate():
        step = len(seen) + 1
        seen[step] = model.weight.detach().clone()
        return [0.5, 0.9, 0.7, 0.6, 0.95][step - 1], 1.0

    state = train_loop(model, batches, validate, nn.CrossEntropyLoss(), LoopSettings(**SETTINGS), None)
    assert state.stopped_early and len(state.history) == 4  # best at the 2nd, then `patience` worse ones
    assert state.best_step == 8 and [h["epoch"] for h in state.history] == [1, 2, 3, 4]  # 4 steps an epoch
    assert torch.equal(model.weight, seen[2]) and not model.training
    assert all(h["train_loss"] > 0 for h in state.history)


def test_ties_go_to_the_lower_loss_only_when_asked(task):
    model, batches = task
    results = [(1.0, 0.5), (1.0, 0.4), (1.0, 0.3), (1.0, 0.2)]
    loose = train_loop(
        model, batches, scripted(results), nn.CrossEntropyLoss(), LoopSettings(**{**SETTINGS, "max_epochs": 4}), None
    )
    assert loose.best_step == 16 and not loose.stopped_early
    strict = train_loop(
        model,
        batches,
        scripted(results),
        nn.CrossEntropyLoss(),
        LoopSettings(**{**SETTINGS, "max_epochs": 4}, ties_to_lower_loss=False),
        None,
    )
    assert strict.best_step == 4 and strict.stopped_early and len(strict.history) == 3


def test_without_validation_it_trains_every_epoch_and_keeps_the_last_weights(task, tmp_path):
    model, batches = task
    state = train_loop(
        model, batches, None, nn.CrossEntropyLoss(), LoopSettings(**{**SETTINGS, "max_epochs": 3}), tmp_path / "ckpt"
    )
    assert state.step == 12 and not state.stopped_early and state.best_step == 12
    assert [h["val_metric"] for h in state.history] == [None, None, None]
    assert (tmp_path / "ckpt" / "checkpoint.pt").exists()


def test_eval_every_validates_mid_epoch_and_at_epoch_ends(task):
    model, batches = task
    state = train_loop(
        model,
        batches,
        lambda: (0.5, 1.0),
        nn.CrossEntropyLoss(),
        LoopSettings(**{**SETTINGS, "max_epochs": 2, "patience": 100}, eval_every=3),
        None,
    )
    assert [h["step"] for h in state.history] == [3, 4, 6, 8]
