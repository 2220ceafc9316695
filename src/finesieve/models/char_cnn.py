"""Character-level CNN: the cheap pre-filter that sits in front of the fine-tuned model.

Each message is normalised (`normalize_for_scoring`: look-alike letters folded, `ph0ne` -> `phone`,
`p h o n e` -> `phone`, case folded), encoded as UTF-8 bytes (ids 1..256, 0 = padding: no vocabulary to
learn, and placeholders such as `<PHONE>` are just characters), embedded, and read by parallel 1-D
convolutions of widths 3, 4 and 5 whose outputs are max-pooled over the message and fed to one linear layer.

Training runs through the shared `finesieve.models.training_loop.train_loop` (the fine-tune's loop): Adam at a
constant rate, one validation per epoch, checkpoints and resume with `fit(..., out_dir=..., resume=True)`.
Single-label tasks use a softmax and cross-entropy, multi-label tasks one logit per category and BCE with a
per-category `pos_weight`, both weighted by `finesieve.models.class_weights` ("balanced"). Early stopping
watches validation PR AUC (not loss: on a 6% class the loss keeps falling while the ranking stalls) and keeps
the best epoch's weights. The weighting skews the probabilities towards the rare classes, so the scores are
then calibrated on the validation split by a `finesieve.models.calibration.Calibrator` (its `fit_scaling`,
finesieve's one temperature fitter); the default, "temperature_bias", fits logits / T + b with T (one
temperature) and b (one bias per class, the prior correction that undoes `class_weight`) by LBFGS on
validation NLL; for multi-label this is per-category Platt scaling. `temperature_` and `bias_` are read from it.

Distillation: with `distill_weight` w > 0 and `fit(..., teacher_proba=P)` (a stronger scorer's probabilities on the
same training texts, (n, n_classes) in this scorer's class order), the network learns from the target
(1 - w) x one-hot label + w x P (multi-label: (1 - w) x the 0/1 indicators + w x P, per category) instead of the
label alone. Cross-entropy (and BCE) is linear in its target, so this one loss is (1 - w) x the label loss +
w x the loss towards the teacher: the usual loss mix of distillation, written once as a target mix (and the same
way the fine-tune's `soft_labels` mixes in annotator vote shares). The teacher's probabilities are used as they
are (temperature 1): they are calibrated scores, not logits to soften, and they carry what a one-hot label cannot
(this tweet is 30% likely hate speech, not 0 or 1). Class weights apply per class to the mixed target as to the
hard one, and the loss is normalised by the targets' total class weight as torch normalises class ids
(`WeightedCrossEntropy`; without class weights that is the batch size, and the mix is exactly (1 - w) : w), so a
one-hot target gives exactly the plain loss and a weight near 0 gives back the plain network. Early stopping and
calibration still use the validation labels alone.

    from finesieve.models.char_cnn import CharCNNScorer
    scorer = CharCNNScorer(max_epochs=8).fit(train_texts, train_labels)   # holds out 10% for validation
    student = CharCNNScorer(distill_weight=0.5).fit(train_texts, train_labels, teacher_proba=teacher_train_proba)
    proba = scorer.predict_proba(["text me on wh@tsapp"])                  # (1, n_classes), classes_ order
    scorer.save("runs/x/prefilter"); CharCNNScorer.load("runs/x/prefilter")

Throughput (scoring only, one CPU core) is measured by `bench/prefilter_throughput.py`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

import finesieve
from finesieve.data.errors import ConfigError, DataError, config_error
from finesieve.data.normalize import normalize_for_scoring
from finesieve.models.base import check_fit_inputs, check_is_fitted, check_texts, label_tuples, prepare_inputs
from finesieve.models.calibration import Calibrator
from finesieve.models.class_weights import class_weights
from finesieve.models.training_loop import CHECKPOINTS, LoopSettings, pr_auc, train_loop

log = logging.getLogger(__name__)

VOCAB_SIZE = 257  # byte b -> id b + 1; id 0 is padding
PREDICT_BATCH = 512
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_FILE_TORCH = "model.pt"  # used when safetensors is not installed
STATE_FILE = "char_cnn_state.json"


class CharCNNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_chars: int = Field(256, gt=0, description="UTF-8 bytes kept per message after normalisation; the rest is cut.")
    embed_dim: int = Field(32, gt=0, description="Size of each byte's embedding.")
    channels: int = Field(128, gt=0, description="Filters per convolution width.")
    kernel_sizes: tuple[int, ...] = Field(
        (3, 4, 5), description="Convolution widths in bytes, one parallel branch each."
    )
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout on the pooled features during training.")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate.")
    batch_size: int = Field(64, gt=0, description="Training messages per step.")
    max_epochs: int = Field(8, gt=0, description="Upper bound on passes over the training data.")
    patience: int = Field(2, gt=0, description="Stop after this many epochs without a better validation PR AUC.")
    class_weight: Literal["balanced"] | None = Field(
        "balanced", description="'balanced' weights the loss by inverse class frequency (pos_weight for multi-label)."
    )
    val_frac: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description=(
            "Share of the training data held out (stratified) for early stopping and calibration when fit() gets no "
            "validation set; 0 trains every epoch and skips calibration."
        ),
    )
    calibration: Literal["temperature_bias", "temperature", "none"] = Field(
        "temperature_bias",
        description=(
            "Fitted on the validation split: 'temperature' one T on the logits; 'temperature_bias' adds one bias per "
            "class (per-category Platt scaling for multi-label), which also undoes the prior shift of class_weight."
        ),
    )
    normalize: bool = Field(
        True, description="Score normalize_for_scoring(text) (de-obfuscated, case-folded) instead of the raw text."
    )
    seed: int = Field(0, description="Seeds the weights, the shuffling, dropout and the validation split.")
    distill_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description=(
            "Share of the training target taken from a teacher's probabilities (fit(..., teacher_proba=...)): the "
            "target is (1 - w) x one-hot label + w x teacher probability; 0 learns from the labels alone."
        ),
    )

    @field_validator("kernel_sizes")
    @classmethod
    def _kernels(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if not sizes or any(k < 1 for k in sizes):
            raise ValueError(f"kernel_sizes must be one or more positive widths, e.g. (3, 4, 5); got {sizes}")
        return sizes


# --------------------------------------------------------------------------------------------- the network


class CharCNN(nn.Module):
    """Byte embedding -> parallel Conv1d (one per width) -> ReLU -> max over the message -> dropout -> linear."""

    def __init__(
        self,
        n_outputs: int,
        embed_dim: int = 32,
        channels: int = 128,
        kernel_sizes: Sequence[int] = (3, 4, 5),
        dropout: float = 0.2,
    ):
        super().__init__()
        self.kernel_sizes = tuple(kernel_sizes)
        self.embed = nn.Embedding(VOCAB_SIZE, embed_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, k) for k in self.kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels * len(self.kernel_sizes), n_outputs)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (B, L) int64 with L >= max(kernel_sizes), lengths (B,) -> logits (B, n_outputs)."""
        x = self.embed(ids).transpose(1, 2)  # (B, E, L)
        positions = torch.arange(ids.shape[1], device=ids.device)
        pooled = []
        for conv, k in zip(self.convs, self.kernel_sizes):
            h = torch.relu(conv(x))  # (B, C, L - k + 1)
            # Pool only over windows that start inside the message (at least one, for messages shorter than
            # k), so a score does not depend on how long the other messages of its batch are. ReLU outputs
            # are >= 0, so zeroing the other windows cannot change the max.
            n_windows = (lengths - k + 1).clamp(min=1)  # (B,)
            keep = positions[: h.shape[-1]] < n_windows[:, None]  # (B, L - k + 1)
            pooled.append((h * keep[:, None, :]).amax(dim=-1))  # (B, C)
        return self.head(self.dropout(torch.cat(pooled, dim=1)))


def encode(texts: Sequence[str], max_chars: int) -> list[np.ndarray]:
    """UTF-8 byte ids (1..256) per text, cut to max_chars bytes; uint8 would overflow at 256, so int16."""
    out = []
    for t in texts:
        b = t.encode("utf-8")[:max_chars]
        out.append(np.frombuffer(b, dtype=np.uint8).astype(np.int16) + 1)
    return out


def pad_batch(encoded: Sequence[np.ndarray], min_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with 0 to the longest in the batch (at least min_len): ids (B, L) int64, lengths (B,) int64."""
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    ids = np.zeros((len(encoded), max(int(lengths.max(initial=0)), min_len)), dtype=np.int64)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = e
    return torch.from_numpy(ids), torch.from_numpy(lengths)


# --------------------------------------------------------------------------------------------- helpers


class WeightedCrossEntropy(nn.Module):
    """Class-weighted cross-entropy to class ids (B,) or to target distributions (B, k) (distillation).

    Class ids: `nn.CrossEntropyLoss(weight)`, the mean normalised by the total weight of the batch's labels.
    Distributions: sum_i sum_c w_c t_ic (-log p_ic) / sum_i sum_c w_c t_ic, the same normalisation (torch's own
    soft-target loss divides by the batch size instead), so a one-hot target gives exactly the loss of its class id
    and distill_weight -> 0 gives back the plain network."""

    def __init__(self, weight: torch.Tensor | None):
        super().__init__()
        self.weight = weight  # (k,) or None

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not targets.is_floating_point():
            return nn.functional.cross_entropy(logits, targets, weight=self.weight)
        weighted = targets if self.weight is None else targets * self.weight  # (B, k)
        return -(weighted * torch.log_softmax(logits, dim=1)).sum() / weighted.sum()


class CharBatches:
    """Byte-encoded training messages as `train_loop` reads them (a `BatchSource`): inputs are (ids, lengths).

    Each epoch's order is the epoch-th permutation drawn from one stream seeded with `seed`, so it is
    deterministic in (seed, epoch) (a resumed run sees the same batches) and the same order the pre-filter
    trained on before it moved to the shared loop.
    """

    def __init__(self, encoded: list[np.ndarray], targets: np.ndarray, min_len: int):
        self.encoded = encoded
        self.targets = targets  # (n,) class ids or (n, k) 0/1 floats
        self.min_len = min_len  # the widest convolution: shorter batches are padded to it

    def __len__(self) -> int:
        return len(self.encoded)

    def epoch_batches(self, epoch: int, seed: int, batch_size: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        for _ in range(epoch + 1):
            order = rng.permutation(len(self.encoded))
        return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]

    def collate(self, rows: np.ndarray, device) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        ids, lengths = pad_batch([self.encoded[i] for i in rows], self.min_len)
        return (ids.to(device), lengths.to(device)), torch.as_tensor(self.targets[rows]).to(device)


def stratified_split(keys: Sequence[str], frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): round(frac * count) of each key's rows go to val, at least one when a key has 2+."""
    rng = np.random.default_rng(seed)
    keys = np.asarray(keys, dtype=object)
    val = []
    for key in sorted(set(keys.tolist())):
        idx = np.flatnonzero(keys == key)
        n_val = int(round(frac * len(idx)))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        else:
            n_val = 0
        val.extend(rng.permutation(idx)[:n_val].tolist())
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(keys)), val_idx)
    return train_idx, val_idx


def mean_pr_auc(targets: np.ndarray, proba: np.ndarray, multilabel: bool) -> float | None:
    """Validation metric for early stopping: mean one-vs-rest PR AUC over classes with both outcomes present.

    Binary single-label tasks use the rarer class only: the two columns are complements, and the majority
    class's PR AUC is near 1 whatever the model does. None when no class is defined (one outcome only).
    targets: (n, k) 0/1 indicators; proba: (n, k).
    """
    k = targets.shape[1]
    cols = range(k)
    if not multilabel and k == 2:
        cols = [int(np.argmin(targets.sum(axis=0)))]
    scores = [pr_auc(targets[:, j], proba[:, j]) for j in cols if 0 < targets[:, j].sum() < len(targets)]
    return float(np.mean(scores)) if scores else None


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    return np.exp(-np.logaddexp(0.0, -z))


def distill_targets(
    y: np.ndarray,
    classes: list[str],
    multilabel: bool,
    weight: float,
    teacher_proba: np.ndarray | None,
    teacher_classes: Sequence[str] | None = None,
) -> np.ndarray | None:
    """The training targets (n, k) float32 (1 - weight) x labels + weight x teacher, or None without a teacher.

    y: (n,) class ids or (n, k) 0/1 indicators in `classes` order; teacher_proba: (n, k) in `classes` order, or in
    `teacher_classes` order when given. A teacher without a weight (or a weight without a teacher) is refused,
    as is one with other classes, another shape, or values that are not probabilities."""
    if teacher_proba is None:
        if weight > 0:
            raise ConfigError(
                f"distill_weight={weight} but no teacher_proba was given: pass the teacher's probabilities on the "
                "training texts (fit(..., teacher_proba=...)), or set distill_weight=0"
            )
        return None
    if weight == 0:
        raise ConfigError(
            "teacher_proba was given but distill_weight is 0, so the teacher would be ignored: set distill_weight "
            "in (0, 1] (e.g. 0.5), or leave the teacher out"
        )
    proba = np.asarray(teacher_proba, dtype=np.float64)
    if teacher_classes is not None:
        theirs = [str(c) for c in teacher_classes]
        if sorted(theirs) != classes or len(set(theirs)) != len(theirs):
            raise DataError(
                f"the teacher's classes {theirs} differ from the training labels' classes {classes}: distil from a "
                "teacher trained on the same labels"
            )
        if proba.ndim == 2 and proba.shape[1] == len(theirs):
            proba = proba[:, [theirs.index(c) for c in classes]]
    n, k = len(y), len(classes)
    if proba.shape != (n, k):
        raise DataError(
            f"teacher_proba has shape {proba.shape}, expected ({n}, {k}): one row per training text and one column "
            f"per class, in the order {classes}"
        )
    if not np.isfinite(proba).all() or proba.min(initial=0.0) < 0 or proba.max(initial=0.0) > 1:
        raise DataError("teacher_proba holds values outside [0, 1] (or NaN): pass the teacher's predict_proba output")
    if not multilabel and n and np.abs(proba.sum(axis=1) - 1.0).max() > 1e-4:
        worst = int(np.abs(proba.sum(axis=1) - 1.0).argmax())
        raise DataError(
            f"teacher_proba row {worst} sums to {proba[worst].sum():.6f}, not 1: a single-label teacher gives one "
            "probability per class, summing to 1 (its predict_proba)"
        )
    hard = y.astype(np.float64) if multilabel else np.eye(k)[y]
    return ((1.0 - weight) * hard + weight * proba).astype(np.float32)


# --------------------------------------------------------------------------------------------- the scorer


class CharCNNScorer:
    """Scorer: `fit(texts, labels)`, `predict_proba(texts)` in `classes_` order, calibrated.

    Learned attributes: classes_, multilabel_, model_ (CharCNN, eval mode), calibrator_ (Calibrator fitted on the
    validation logits; temperature_ ((1,) or (k,)) and bias_ ((k,)) read from it), calibration_ (its report:
    validation NLL before/after, plus val_pr_auc), history_ (per epoch: train_loss, val_pr_auc), best_epoch_
    (1-based; the weights kept).
    """

    kind = "char_cnn"  # the run kind written in manifest.json (finesieve.models.kinds)

    def __init__(
        self,
        max_chars=256,
        embed_dim=32,
        channels=128,
        kernel_sizes=(3, 4, 5),
        dropout=0.2,
        lr=2e-3,
        batch_size=64,
        max_epochs=8,
        patience=2,
        class_weight="balanced",
        val_frac=0.1,
        calibration="temperature_bias",
        normalize=True,
        seed=0,
        distill_weight=0.0,
    ):
        self.max_chars = max_chars
        self.embed_dim = embed_dim
        self.channels = channels
        self.kernel_sizes = kernel_sizes
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.class_weight = class_weight
        self.val_frac = val_frac
        self.calibration = calibration
        self.normalize = normalize
        self.seed = seed
        self.distill_weight = distill_weight

    @classmethod
    def from_config(cls, config: CharCNNConfig) -> CharCNNScorer:
        return cls(**config.model_dump())

    def get_config(self) -> CharCNNConfig:
        try:
            return CharCNNConfig(**{name: getattr(self, name) for name in CharCNNConfig.model_fields})
        except ValidationError as err:
            raise config_error(err, f"{type(self).__name__} settings", CharCNNConfig) from None

    # ----------------------------------------------------------------------------------------- inputs

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        if self.normalize:
            texts = [normalize_for_scoring(t) for t in texts]
        return encode(texts, self.max_chars)

    def _targets(self, tuples: list[tuple[str, ...]], classes: list[str], multilabel: bool, what: str) -> np.ndarray:
        """Class indices (n,) for single-label, 0/1 indicators (n, k) for multi-label."""
        index = {c: j for j, c in enumerate(classes)}
        unknown = sorted({c for t in tuples for c in t if c not in index})
        if unknown:
            raise DataError(
                f"{what} hold class(es) {unknown[:5]} not among the training classes {classes}: "
                "validate on the same label set you train on"
            )
        if multilabel:
            y = np.zeros((len(tuples), len(classes)), dtype=np.float32)
            for i, t in enumerate(tuples):
                y[i, [index[c] for c in t]] = 1.0
            return y
        return np.array([index[t[0]] for t in tuples], dtype=np.int64)

    def _logits(self, encoded: list[np.ndarray], model: CharCNN) -> np.ndarray:
        """Raw logits (n, k) float32; messages are sorted by length so each batch pads little."""
        order = np.argsort([len(e) for e in encoded], kind="stable")
        out = np.zeros((len(encoded), model.head.out_features), dtype=np.float32)
        min_len = max(model.kernel_sizes)
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), PREDICT_BATCH):
                idx = order[start : start + PREDICT_BATCH]
                ids, lengths = pad_batch([encoded[i] for i in idx], min_len)
                out[idx] = model(ids, lengths).numpy()
        model.train(was_training)
        return out

    # ----------------------------------------------------------------------------------------- fit

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence,
        multilabel: bool | None = None,
        val_texts: Sequence[str] | None = None,
        val_labels: Sequence | None = None,
        out_dir: str | Path | None = None,
        resume: bool = False,
        teacher_proba: np.ndarray | None = None,
        teacher_classes: Sequence[str] | None = None,
    ) -> CharCNNScorer:
        """Train on (texts, labels); early stopping and calibration use the validation texts when given, else a
        stratified `val_frac` of the training data. With `out_dir`, a checkpoint is written to
        `out_dir/checkpoints` at each epoch end (and on Ctrl-C), and `resume=True` continues from it.

        `teacher_proba` (n_texts, n_classes): a teacher's probabilities on these training texts, used with
        `distill_weight` > 0 (see the module docstring). Its columns are in this scorer's class order (the sorted
        classes of `labels`), or in `teacher_classes` order when given (the teacher's `classes_`: reordered, and a
        teacher with other classes is refused)."""
        config = self.get_config()
        texts, tuples, multilabel = check_fit_inputs(texts, labels, multilabel)
        if (val_texts is None) != (val_labels is None):
            raise ValueError(
                "val_texts and val_labels go together: pass both, or neither to hold out val_frac of the data"
            )
        classes = sorted({c for t in tuples for c in t})
        if len(classes) < (1 if multilabel else 2):
            raise DataError(
                f"labels hold {len(classes)} class(es) ({classes}): a classifier needs at least "
                f"{1 if multilabel else 2}"
            )
        y = self._targets(tuples, classes, multilabel, "labels")
        # (n, k) float32 mixed targets with a teacher, else None (the labels alone, as class ids or 0/1 indicators).
        soft = distill_targets(y, classes, multilabel, config.distill_weight, teacher_proba, teacher_classes)

        if val_texts is not None:
            val_texts = check_texts(val_texts)
            if len(val_texts) != len(val_labels):
                raise ValueError(f"val_texts and val_labels differ in length ({len(val_texts)} vs {len(val_labels)})")
            train_x, train_y, train_soft = self._encode(texts), y, soft
            val_x = self._encode(val_texts)
            val_y = self._targets(label_tuples(val_labels, multilabel), classes, multilabel, "val_labels")
        elif config.val_frac > 0:
            keys = ["\x1f".join(sorted(t)) for t in tuples]
            train_idx, val_idx = stratified_split(keys, config.val_frac, config.seed)
            encoded = self._encode(texts)
            train_x, train_y = [encoded[i] for i in train_idx], y[train_idx]
            train_soft = soft[train_idx] if soft is not None else None
            val_x, val_y = [encoded[i] for i in val_idx], y[val_idx]
        else:
            train_x, train_y, train_soft, val_x, val_y = self._encode(texts), y, soft, [], y[:0]
        if not train_x:
            raise DataError("no training messages left after holding out the validation split: pass more data")

        # Fork the global RNG so the seed fixes weights and dropout without changing the caller's random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = CharCNN(len(classes), config.embed_dim, config.channels, config.kernel_sizes, config.dropout)
            self._train(model, config, train_x, train_y, val_x, val_y, multilabel, out_dir, resume, train_soft)

        self.model_ = model.eval()
        self.classes_ = np.array(classes)
        self.multilabel_ = multilabel
        val_logits = self._logits(val_x, model)  # (n_val, k); n_val = 0 without a validation split
        # Without a validation split there is nothing to calibrate on: the identity.
        method = config.calibration if len(val_x) else "none"
        self.calibrator_ = Calibrator(method, multilabel).fit(val_logits, val_y)
        self.calibration_ = dict(self.calibrator_.report_)
        if len(val_x):
            targets_1hot = val_y if multilabel else np.eye(len(classes), dtype=np.float32)[val_y]
            self.calibration_["val_pr_auc"] = mean_pr_auc(
                targets_1hot, self.calibrator_.transform(val_logits), multilabel
            )
        return self

    @property
    def temperature_(self) -> np.ndarray:
        """The calibrator's temperature: (1,) single-label, (k,) multi-label."""
        return self.calibrator_.temperature_

    @property
    def bias_(self) -> np.ndarray:
        """The calibrator's bias per class, (k,)."""
        return self.calibrator_.bias_

    def _train(
        self,
        model: CharCNN,
        config: CharCNNConfig,
        train_x: list[np.ndarray],
        train_y: np.ndarray,
        val_x: list[np.ndarray],
        val_y: np.ndarray,
        multilabel: bool,
        out_dir: str | Path | None,
        resume: bool,
        train_soft: np.ndarray | None = None,
    ) -> None:
        """Adam (constant rate, no clipping) through the shared `train_loop`, validating at each epoch end with
        early stopping on validation PR AUC; leaves `model` holding the best epoch's weights. `train_soft` (n, k):
        distillation targets that replace the labels in the training loss (the class weights still come from the
        labels, so the rare class keeps its weight)."""
        k = model.head.out_features
        weights = class_weights(train_y, k, config.class_weight, multilabel)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=weights) if multilabel else WeightedCrossEntropy(weights)
        val_targets = val_y if multilabel else np.eye(k, dtype=np.float32)[val_y]

        def validate() -> tuple[float | None, float]:
            logits = self._logits(val_x, model)  # (n_val, k)
            proba = sigmoid(logits) if multilabel else torch.softmax(torch.from_numpy(logits), 1).numpy()
            loss = float(loss_fn(torch.from_numpy(logits), torch.as_tensor(val_y)))
            return mean_pr_auc(val_targets, proba, multilabel), loss

        settings = LoopSettings(
            learning_rate=config.lr,
            batch_size=config.batch_size,
            max_epochs=config.max_epochs,
            weight_decay=0.0,
            schedule="constant",
            max_grad_norm=None,
            eval_every=None,
            patience=config.patience,
            # Strictly better PR AUC only: on easy data it saturates at 1.0 and training should then stop.
            ties_to_lower_loss=False,
            checkpoint_every=None,
            precision="fp32",
            seed=config.seed,
            desc="char-cnn",
            resume_key=config.model_dump(mode="json", exclude={"max_epochs"}),
        )
        # Float (n, k) targets are read as class distributions (the mixed target; for BCE, per-category shares).
        batches = CharBatches(train_x, train_y if train_soft is None else train_soft, min_len=max(config.kernel_sizes))
        state = train_loop(
            model,
            batches,
            validate if len(val_x) else None,
            loss_fn,
            settings,
            Path(out_dir) / CHECKPOINTS if out_dir is not None else None,
            resume=resume,
            device=torch.device("cpu"),
        )
        # One validation per epoch: the loop's history is the per-epoch history.
        self.history_ = [
            {"epoch": h["epoch"], "train_loss": h["train_loss"], "val_pr_auc": h["val_metric"]} for h in state.history
        ]
        self.best_epoch_ = next(h["epoch"] for h in state.history if h["step"] == state.best_step)
        for h in self.history_:
            log.info(
                "char-cnn epoch %d: train loss %.4f, val PR AUC %s",
                h["epoch"],
                h["train_loss"],
                "n/a" if h["val_pr_auc"] is None else f"{h['val_pr_auc']:.4f}",
            )

    # ----------------------------------------------------------------------------------------- scoring

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """Raw, uncalibrated logits (n, n_classes) in classes_ order."""
        check_is_fitted(self)
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, len(self.classes_)))
        return self._logits(self._encode(texts), self.model_).astype(np.float64)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities (n, n_classes): rows sum to 1 (single-label) or one sigmoid per category."""
        check_is_fitted(self)
        logits = self.decision_function(prepare_inputs(self, texts))
        return self.calibrator_.transform(logits)

    # ----------------------------------------------------------------------------------------- persistence

    def save(self, directory: str | Path) -> None:
        check_is_fitted(self)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.model_.state_dict().items()}
        try:
            from safetensors.torch import save_file
        except ImportError:
            torch.save(state, directory / WEIGHTS_FILE_TORCH)
        else:
            save_file(state, str(directory / WEIGHTS_FILE))
        (directory / "scorer_config.json").write_text(
            json.dumps(self.get_config().model_dump(mode="json"), indent=2, sort_keys=True)
        )
        fitted = {
            "finesieve_version": finesieve.__version__,
            "classes": self.classes_.tolist(),
            "multilabel": self.multilabel_,
            "calibrator": self.calibrator_.state_dict(),
            "calibration": self.calibration_,
            "best_epoch": self.best_epoch_,
            "history": self.history_,
        }
        (directory / STATE_FILE).write_text(json.dumps(fitted, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> CharCNNScorer:
        directory = Path(directory)
        config = CharCNNConfig(**json.loads((directory / "scorer_config.json").read_text()))
        fitted = json.loads((directory / STATE_FILE).read_text())
        if (directory / WEIGHTS_FILE).exists():
            from safetensors.torch import load_file

            state = load_file(str(directory / WEIGHTS_FILE))
        elif (directory / WEIGHTS_FILE_TORCH).exists():
            state = torch.load(directory / WEIGHTS_FILE_TORCH, weights_only=True)
        else:
            raise FileNotFoundError(
                f"{directory} holds no {WEIGHTS_FILE} or {WEIGHTS_FILE_TORCH}: "
                "point load() at a directory written by CharCNNScorer.save"
            )
        scorer = cls.from_config(config)
        model = CharCNN(len(fitted["classes"]), config.embed_dim, config.channels, config.kernel_sizes, config.dropout)
        model.load_state_dict(state)
        scorer.model_ = model.eval()
        scorer.classes_ = np.array(fitted["classes"])
        scorer.multilabel_ = fitted["multilabel"]
        # Pre-filters saved before the Calibrator held their calibration stored T and b at the top level.
        calibrator = fitted.get("calibrator") or {
            "method": config.calibration,
            "multilabel": fitted["multilabel"],
            "temperature": fitted["temperature"],
            "bias": fitted["bias"],
        }
        scorer.calibrator_ = Calibrator.from_state_dict(calibrator)
        scorer.calibration_ = fitted["calibration"]
        scorer.best_epoch_ = fitted["best_epoch"]
        scorer.history_ = fitted["history"]
        return scorer
