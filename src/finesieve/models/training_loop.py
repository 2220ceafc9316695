"""The training loop of every trained scorer, in one place: batches, loss, optimiser, validation, checkpoints.

    settings = LoopSettings(learning_rate=2e-3, batch_size=64, max_epochs=8, patience=2)
    state = train_loop(model, batches, validate, loss_fn, settings, checkpoint_dir)

The fine-tune (`FineTunedScorer`, settings from `FinetuneConfig.loop_settings()`) and the char-CNN pre-filter
(`CharCNNScorer`) both train here. What the loop owns, step by step: each epoch's batch order from the batches
(deterministic in seed and epoch, so a resumed run sees the same batches), the loss on one logit per class
(never on vocabulary logits), gradient accumulation, mixed precision where the hardware has it, AdamW with a
linear warm-up and decay (or a constant rate), gradient clipping, validation every `eval_every` steps and at
each epoch end with early stopping on the validation metric (PR AUC by default: loss hides a rare class), the
best weights kept, a resumable checkpoint every `checkpoint_every` steps (or each epoch end) and on Ctrl-C,
and progress (a bar on a terminal, one line per validation in logs). What the caller owns: the model (called as
`model(*inputs)`), the batches (`epoch_batches` and `collate`, see `BatchSource`), the loss and `validate()`.

It sits in the models layer, beside the scorers whose `fit` runs it; the recipes that wrap a fit into a run
directory are in `finesieve.train`. `pr_auc` is the validation metric scorers stop on.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from finesieve.data.errors import FinesieveError

CHECKPOINTS = "checkpoints"  # the folder of a run's checkpoints, inside its staging folder while it trains
CHECKPOINT = "checkpoint.pt"


class TrainingInterrupted(FinesieveError):
    """Ctrl-C during training: a checkpoint was written and the run can be resumed."""


@dataclass(frozen=True)
class LoopSettings:
    """How `train_loop` trains: optimiser, schedule, batching, validation, checkpoints. Built by each scorer from
    its own config (`FinetuneConfig.loop_settings()`, `CharCNNScorer`), not a user-facing config."""

    learning_rate: float  # peak rate of AdamW
    batch_size: int  # messages per micro-batch
    max_epochs: float  # upper bound on passes over the training data (may be fractional)
    max_steps: int | None = None  # upper bound on optimiser steps, when smaller
    grad_accum: int = 1  # micro-batches per optimiser step
    weight_decay: float = 0.0  # AdamW decoupled weight decay (0: plain Adam)
    schedule: Literal["linear", "constant"] = "linear"  # linear: warm-up then linear decay to 0
    warmup_ratio: float = 0.0  # share of steps warming up (linear schedule only)
    max_grad_norm: float | None = 1.0  # gradient clipping; None: none
    eval_every: int | None = None  # validate every N steps, and at every epoch end; None: at epoch ends only
    patience: int = 3  # stop after this many validations without improvement
    ties_to_lower_loss: bool = True  # a validation equal on the metric but lower in loss counts as better
    checkpoint_every: int | None = None  # write a checkpoint every N steps; None: at every epoch end
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    seed: int = 0  # batch order (passed to `epoch_batches`)
    desc: str = "training"  # the progress bar's label
    # What must match for a checkpoint to be resumed (the caller's resolved config); stored in the checkpoint.
    resume_key: dict = field(default_factory=dict)


class BatchSource(Protocol):
    """Training data as the loop reads it: the number of rows, each epoch's batches of row indices
    (deterministic in (seed, epoch), so a resumed run skips exactly the batches it saw), and a collate function
    turning rows into the model's inputs and the loss targets on `device`."""

    def __len__(self) -> int: ...

    def epoch_batches(self, epoch: int, seed: int, batch_size: int) -> list[np.ndarray]: ...

    def collate(self, rows: np.ndarray, device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]: ...


@dataclass
class Batches:
    """Tokenised training data (the fine-tune's `BatchSource`): ids per message and targets ((n,) class ids or
    (n, k) 0/1 floats); inputs are (ids, attention mask)."""

    input_ids: list[list[int]]
    targets: np.ndarray
    pad_id: int
    sample_weights: np.ndarray | None = None  # for resampling: probability of drawing each row

    def __len__(self) -> int:
        return len(self.input_ids)

    def epoch_batches(self, epoch: int, seed: int, batch_size: int, bucket: int = 50) -> list[np.ndarray]:
        """This epoch's batches of row indices: shuffled, then sorted by length within buckets of `bucket`
        batches so each batch pads little, then the batches shuffled. Deterministic in (seed, epoch), which is
        what lets a resumed run skip exactly the batches it already saw."""
        rng = np.random.default_rng([seed, epoch])
        if self.sample_weights is None:
            order = rng.permutation(len(self))
        else:
            p = self.sample_weights / self.sample_weights.sum()
            order = rng.choice(len(self), size=len(self), replace=True, p=p)
        lengths = np.array([len(self.input_ids[i]) for i in order])
        span = batch_size * bucket
        for start in range(0, len(order), span):
            part = slice(start, start + span)
            order[part] = order[part][np.argsort(lengths[part], kind="stable")]
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def collate(self, rows: np.ndarray, device) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """((ids (B, L), mask (B, L)), targets) for the rows, right-padded to the longest."""
        longest = max(len(self.input_ids[i]) for i in rows)
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for r, i in enumerate(rows):
            seq = self.input_ids[i]
            ids[r, : len(seq)] = torch.tensor(seq)
            mask[r, : len(seq)] = 1
        targets = torch.as_tensor(self.targets[rows])
        return (ids.to(device), mask.to(device)), targets.to(device)


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # optimiser steps done in the current epoch
    best_metric: float = -math.inf
    best_loss: float = math.inf
    best_step: int = 0
    bad_evals: int = 0
    history: list[dict] = field(default_factory=list)  # per validation: step, epoch, train_loss, val_metric, val_loss
    stopped_early: bool = False
    seconds: float = 0.0
    messages_seen: int = 0
    loss_sum: float = 0.0  # training loss x messages since the last validation (its mean goes in the history)
    loss_count: int = 0


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device))


def _autocast(precision: str, device: torch.device):
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return torch.autocast(device.type, enabled=False), None
    if precision == "fp16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")
    if precision in ("auto", "bf16") and (device.type == "cpu" or torch.cuda.is_bf16_supported()):
        return torch.autocast(device.type, dtype=torch.bfloat16), None
    return torch.autocast(device.type, enabled=False), None


def _schedule(settings: LoopSettings, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier at step s."""
    if settings.schedule == "constant":
        return lambda s: 1.0
    warmup = int(total_steps * settings.warmup_ratio)
    return lambda s: (
        (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup))
    )


def train_loop(
    model: nn.Module,
    batches: BatchSource,
    validate: Callable[[], tuple[float | None, float]] | None,
    loss_fn: nn.Module,
    settings: LoopSettings,
    checkpoint_dir: Path | None,
    *,
    resume: bool = False,
    on_eval: Callable[[LoopState, float | None], None] | None = None,
    device: torch.device | None = None,
) -> LoopState:
    """Train `model` in place; on return it holds the best validated weights (eval mode).

    `validate()` returns (metric, loss) on the validation split: higher metric is better, loss breaks ties
    (`settings.ties_to_lower_loss`). A metric of None (undefined on this validation data) and `validate=None`
    (no validation data) keep the latest weights and never stop early. `checkpoint_dir=None` writes no
    checkpoints and leaves Ctrl-C to Python (KeyboardInterrupt).
    """
    device = device or next(model.parameters()).device
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(batches) / (settings.batch_size * settings.grad_accum)))
    total_steps = math.ceil(steps_per_epoch * settings.max_epochs)
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings, total_steps))
    autocast, scaler = _autocast(settings.precision, device)

    state = LoopState()
    best_weights = trainable_state(model)
    path = checkpoint_dir / CHECKPOINT if checkpoint_dir is not None else None
    if resume and path is not None and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved["config"] != settings.resume_key:
            raise FinesieveError(
                f"{path} was written with a different configuration: resume with the same settings, "
                "or start afresh without --resume"
            )
        load_trainable_state(model, saved["weights"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        best_weights = saved["best_weights"]
        state = LoopState(**saved["state"])
        torch.set_rng_state(saved["rng"])  # dropout masks continue as if never interrupted

    def save_checkpoint() -> None:
        if path is None:
            return
        tmp = path.with_suffix(".tmp")
        torch.save(
            {
                "weights": trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "best_weights": best_weights,
                "state": state.__dict__,
                "rng": torch.get_rng_state(),
                "config": settings.resume_key,
            },
            tmp,
        )
        tmp.replace(path)  # atomic: a crash mid-write never leaves a broken checkpoint

    interrupted = {"flag": False}
    previous_handler = None

    def on_sigint(signum, frame):
        interrupted["flag"] = True  # finish the current step, then checkpoint and stop

    if path is not None:
        try:
            previous_handler = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread: Ctrl-C handling is the caller's
            previous_handler = None

    def evaluate_now() -> bool:
        """Validate (or, without validation, record the training loss); returns True to stop early."""
        nonlocal best_weights
        metric = val_loss = None
        if validate is not None:
            model.eval()
            metric, val_loss = validate()
            model.train()
        train_loss = state.loss_sum / state.loss_count if state.loss_count else None
        state.loss_sum, state.loss_count = 0.0, 0
        state.history.append(
            {
                "step": state.step,
                "epoch": state.epoch,
                "train_loss": train_loss,
                "val_metric": metric,
                "val_loss": val_loss,
            }
        )
        if bar.disable:  # no terminal: one line per validation, so logs still show progress
            shown = "n/a" if metric is None else f"{metric:.4f} (best {max(metric, state.best_metric):.4f})"
            print(
                f"{settings.desc}: step {state.step}/{total_steps} epoch {state.epoch}: validation metric {shown}, "
                f"{state.messages_seen / max(state.seconds, 1e-9):.0f} msgs/s",
                file=sys.stderr,
                flush=True,
            )
        if on_eval:
            on_eval(state, metric)
        if metric is None:  # nothing to select on: keep the latest weights
            state.best_step, state.bad_evals = state.step, 0
            best_weights = trainable_state(model)
            return False
        # A better metric wins; on a tie (a ranking metric saturates at 1.0 on easy data) the lower loss may.
        tie = abs(metric - state.best_metric) <= 1e-9
        if metric > state.best_metric + 1e-9 or (tie and settings.ties_to_lower_loss and val_loss < state.best_loss):
            state.best_metric, state.best_loss, state.best_step, state.bad_evals = metric, val_loss, state.step, 0
            best_weights = trainable_state(model)
        else:
            state.bad_evals += 1
        return state.bad_evals >= settings.patience

    model.train()
    # disable=None: a bar on a terminal, silence in logs and CI.
    bar = tqdm(
        total=total_steps,
        initial=state.step,
        desc=settings.desc,
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
        disable=None,
    )
    started = time.perf_counter() - state.seconds
    try:
        while state.step < total_steps and not state.stopped_early:
            micro = batches.epoch_batches(state.epoch, settings.seed, settings.batch_size)
            groups = [micro[i : i + settings.grad_accum] for i in range(0, len(micro), settings.grad_accum)]
            for g in range(state.batch_in_epoch, len(groups)):
                optimizer.zero_grad(set_to_none=True)
                loss_value, n_rows = 0.0, sum(len(r) for r in groups[g])
                for rows in groups[g]:
                    inputs, targets = batches.collate(rows, device)
                    with autocast:
                        logits = model(*inputs)
                    loss = loss_fn(logits.float(), targets) * len(rows) / n_rows
                    (scaler.scale(loss) if scaler else loss).backward()
                    loss_value += float(loss.detach())
                    state.messages_seen += len(rows)
                if scaler:
                    scaler.unscale_(optimizer)
                if settings.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                state.step += 1
                state.batch_in_epoch = g + 1
                state.loss_sum += loss_value * n_rows
                state.loss_count += n_rows
                state.seconds = time.perf_counter() - started
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss_value:.4f}",
                    msgs_s=f"{state.messages_seen / max(state.seconds, 1e-9):.0f}",
                    best=f"{state.best_metric:.4f}" if state.best_metric > -math.inf else "-",
                )
                if settings.eval_every and state.step % settings.eval_every == 0 and evaluate_now():
                    state.stopped_early = True
                epoch_done = state.batch_in_epoch == len(groups)
                if epoch_done:
                    state.epoch += 1
                    state.batch_in_epoch = 0
                    if (not state.history or state.history[-1]["step"] != state.step) and evaluate_now():
                        state.stopped_early = True
                if state.step % settings.checkpoint_every == 0 if settings.checkpoint_every else epoch_done:
                    save_checkpoint()
                if interrupted["flag"]:
                    save_checkpoint()
                    raise TrainingInterrupted(
                        f"interrupted at step {state.step}: checkpoint written to {path}; run the same command "
                        "with --resume to continue"
                    )
                if state.stopped_early or state.step >= total_steps or epoch_done:
                    break
        if not state.history or state.history[-1]["step"] != state.step:
            evaluate_now()
        save_checkpoint()
    finally:
        bar.close()
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
    load_trainable_state(model, best_weights)
    model.eval()
    return state


def pr_auc(y_true, scores) -> float:
    """Average precision of 0/1 labels (n,) against scores (n,): the validation metric early stopping watches.

    The formula of `finesieve.evals.metrics.pr_auc`, step for step (so the figures are the same); it is here
    because the models layer may not import evals. Callers pass validation data holding both classes.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} must be 1-D and of one length: one score per label")
    if np.isnan(s).any():
        raise ValueError(
            f"scores contain {int(np.isnan(s).sum())} NaN value(s): the model diverged; lower the learning rate"
        )
    if not ((y == 0) | (y == 1)).all():
        raise ValueError(f"y_true must hold only 0/1 or booleans, got {np.unique(y)[:5].tolist()}")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError(
            f"PR AUC is undefined: y_true holds one class only among {len(y)} items; validate on "
            "data holding both classes"
        )
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]  # last index of each run of equal scores
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall_gain = np.diff(tp, prepend=0) / tp[-1]
    return float(np.sum(recall_gain * precision))
