"""Character-level CNN: the cheap pre-filter that sits in front of the fine-tuned model.

Each message is normalised (`normalize_for_scoring`: look-alike letters folded, `ph0ne` -> `phone`,
`p h o n e` -> `phone`, case folded), encoded as UTF-8 bytes (ids 1..256, 0 = padding: no vocabulary to
learn, and placeholders such as `<PHONE>` are just characters), embedded, and read by parallel 1-D
convolutions of widths 3, 4 and 5 whose outputs are max-pooled over the message and fed to one linear layer.

Training: single-label tasks use a softmax and class-weighted cross-entropy; multi-label tasks one logit per
category and BCE with a per-category `pos_weight`. Early stopping watches validation PR AUC (not loss: on a
6% class the loss keeps falling while the ranking stalls) and keeps the best epoch's weights. The weighting
skews the probabilities towards the rare classes, so the scores are then calibrated on the validation split
by a `finesieve.models.calibration.Calibrator`; the default, "temperature_bias", fits logits / T + b with T
(one temperature) and b (one bias per class, the prior correction that undoes `class_weight`) by LBFGS on
validation NLL; for multi-label this is per-category Platt scaling.

    from finesieve.models.char_cnn import CharCNNScorer
    scorer = CharCNNScorer(max_epochs=8).fit(train_texts, train_labels)   # holds out 10% for validation
    proba = scorer.predict_proba(["text me on wh@tsapp"])                  # (1, n_classes), classes_ order
    scorer.save("runs/x/prefilter"); CharCNNScorer.load("runs/x/prefilter")

Throughput (scoring only, one CPU core) is measured by `bench/prefilter_throughput.py`.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn
from tqdm.auto import tqdm

import finesieve
from finesieve.data.errors import DataError, config_error
from finesieve.data.normalize import normalize_for_scoring
from finesieve.models.base import check_fit_inputs, check_is_fitted, check_texts, label_tuples
from finesieve.models.calibration import Calibrator
from finesieve.models.training_loop import pr_auc

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
    kernel_sizes: tuple[int, ...] = Field((3, 4, 5), description="Convolution widths in bytes, one parallel branch each.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout on the pooled features during training.")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate.")
    batch_size: int = Field(64, gt=0, description="Training messages per step.")
    max_epochs: int = Field(8, gt=0, description="Upper bound on passes over the training data.")
    patience: int = Field(2, gt=0, description="Stop after this many epochs without a better validation PR AUC.")
    class_weight: Literal["balanced"] | None = Field(
        "balanced", description="'balanced' weights the loss by inverse class frequency (pos_weight for multi-label).")
    val_frac: float = Field(0.1, ge=0.0, lt=1.0, description=(
        "Share of the training data held out (stratified) for early stopping and calibration when fit() gets no "
        "validation set; 0 trains every epoch and skips calibration."))
    calibration: Literal["temperature_bias", "temperature", "none"] = Field("temperature_bias", description=(
        "Fitted on the validation split: 'temperature' one T on the logits; 'temperature_bias' adds one bias per "
        "class (per-category Platt scaling for multi-label), which also undoes the prior shift of class_weight."))
    normalize: bool = Field(True, description="Score normalize_for_scoring(text) (de-obfuscated, case-folded) instead of the raw text.")
    seed: int = Field(0, description="Seeds the weights, the shuffling, dropout and the validation split.")

    @field_validator("kernel_sizes")
    @classmethod
    def _kernels(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if not sizes or any(k < 1 for k in sizes):
            raise ValueError(f"kernel_sizes must be one or more positive widths, e.g. (3, 4, 5); got {sizes}")
        return sizes


# --------------------------------------------------------------------------------------------- the network


class CharCNN(nn.Module):
    """Byte embedding -> parallel Conv1d (one per width) -> ReLU -> max over the message -> dropout -> linear."""

    def __init__(self, n_outputs: int, embed_dim: int = 32, channels: int = 128,
                 kernel_sizes: Sequence[int] = (3, 4, 5), dropout: float = 0.2):
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


# --------------------------------------------------------------------------------------------- the scorer


class CharCNNScorer:
    """Scorer: `fit(texts, labels)`, `predict_proba(texts)` in `classes_` order, calibrated.

    Learned attributes: classes_, multilabel_, model_ (CharCNN, eval mode), calibrator_ (Calibrator fitted on the
    validation logits; temperature_ ((1,) or (k,)) and bias_ ((k,)) read from it), calibration_ (its report:
    validation NLL before/after, plus val_pr_auc), history_ (per epoch: train_loss, val_pr_auc), best_epoch_
    (1-based; the weights kept).
    """

    kind = "char_cnn"  # the run kind written in manifest.json (finesieve.models.kinds)

    def __init__(self, max_chars=256, embed_dim=32, channels=128, kernel_sizes=(3, 4, 5), dropout=0.2, lr=2e-3,
                 batch_size=64, max_epochs=8, patience=2, class_weight="balanced", val_frac=0.1,
                 calibration="temperature_bias", normalize=True, seed=0):
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

    @classmethod
    def from_config(cls, config: CharCNNConfig) -> "CharCNNScorer":
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
            raise DataError(f"{what} hold class(es) {unknown[:5]} not among the training classes {classes}: "
                             "validate on the same label set you train on")
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
                idx = order[start: start + PREDICT_BATCH]
                ids, lengths = pad_batch([encoded[i] for i in idx], min_len)
                out[idx] = model(ids, lengths).numpy()
        model.train(was_training)
        return out

    # ----------------------------------------------------------------------------------------- fit

    def fit(self, texts: Sequence[str], labels: Sequence, multilabel: bool | None = None,
            val_texts: Sequence[str] | None = None, val_labels: Sequence | None = None) -> "CharCNNScorer":
        config = self.get_config()
        texts, tuples, multilabel = check_fit_inputs(texts, labels, multilabel)
        if (val_texts is None) != (val_labels is None):
            raise ValueError("val_texts and val_labels go together: pass both, or neither to hold out val_frac of the data")
        classes = sorted({c for t in tuples for c in t})
        if len(classes) < (1 if multilabel else 2):
            raise DataError(f"labels hold {len(classes)} class(es) ({classes}): a classifier needs at least "
                             f"{1 if multilabel else 2}")
        y = self._targets(tuples, classes, multilabel, "labels")

        if val_texts is not None:
            val_texts = check_texts(val_texts)
            if len(val_texts) != len(val_labels):
                raise ValueError(f"val_texts and val_labels differ in length ({len(val_texts)} vs {len(val_labels)})")
            train_x, train_y = self._encode(texts), y
            val_x = self._encode(val_texts)
            val_y = self._targets(label_tuples(val_labels, multilabel), classes, multilabel, "val_labels")
        elif config.val_frac > 0:
            keys = ["\x1f".join(sorted(t)) for t in tuples]
            train_idx, val_idx = stratified_split(keys, config.val_frac, config.seed)
            encoded = self._encode(texts)
            train_x, train_y = [encoded[i] for i in train_idx], y[train_idx]
            val_x, val_y = [encoded[i] for i in val_idx], y[val_idx]
        else:
            train_x, train_y, val_x, val_y = self._encode(texts), y, [], y[:0]
        if not train_x:
            raise DataError("no training messages left after holding out the validation split: pass more data")

        # Fork the global RNG so the seed fixes weights and dropout without changing the caller's random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = CharCNN(len(classes), config.embed_dim, config.channels, config.kernel_sizes, config.dropout)
            self._train(model, config, train_x, train_y, val_x, val_y, multilabel)

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
            self.calibration_["val_pr_auc"] = mean_pr_auc(targets_1hot, self.calibrator_.transform(val_logits), multilabel)
        return self

    @property
    def temperature_(self) -> np.ndarray:
        """The calibrator's temperature: (1,) single-label, (k,) multi-label."""
        return self.calibrator_.temperature_

    @property
    def bias_(self) -> np.ndarray:
        """The calibrator's bias per class, (k,)."""
        return self.calibrator_.bias_

    def _train(self, model: CharCNN, config: CharCNNConfig, train_x: list[np.ndarray], train_y: np.ndarray,
               val_x: list[np.ndarray], val_y: np.ndarray, multilabel: bool) -> None:
        """Adam with early stopping on validation PR AUC; leaves `model` holding the best epoch's weights."""
        k = model.head.out_features
        if multilabel:
            pos = train_y.sum(axis=0)
            pos_weight = None
            if config.class_weight == "balanced":
                pos_weight = torch.as_tensor((len(train_y) - pos) / np.maximum(pos, 1), dtype=torch.float32)
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        else:
            weight = None
            if config.class_weight == "balanced":
                counts = np.bincount(train_y, minlength=k)
                weight = torch.as_tensor(len(train_y) / (k * np.maximum(counts, 1)), dtype=torch.float32)
            loss_fn = nn.CrossEntropyLoss(weight=weight)
        val_targets = val_y if multilabel else np.eye(k, dtype=np.float32)[val_y]

        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        rng = np.random.default_rng(config.seed)
        min_len = max(config.kernel_sizes)
        self.history_, self.best_epoch_ = [], 0
        best_score, best_state, stale = -np.inf, None, 0
        for epoch in range(1, config.max_epochs + 1):
            model.train()
            order = rng.permutation(len(train_x))
            total, seen, start = 0.0, 0, time.perf_counter()
            bar = tqdm(total=len(order), desc=f"char-cnn epoch {epoch}/{config.max_epochs}", unit="msg",
                       disable=None, leave=False)
            for b in range(0, len(order), config.batch_size):
                idx = order[b: b + config.batch_size]
                ids, lengths = pad_batch([train_x[i] for i in idx], min_len)
                target = torch.as_tensor(train_y[idx])
                loss = loss_fn(model(ids, lengths), target)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                seen += len(idx)
                bar.update(len(idx))
                bar.set_postfix(loss=f"{total / seen:.4f}", msgs_s=f"{seen / (time.perf_counter() - start):.0f}")
            bar.close()

            score = None
            if len(val_x):
                logits = self._logits(val_x, model)
                proba = sigmoid(logits) if multilabel else torch.softmax(torch.from_numpy(logits), 1).numpy()
                score = mean_pr_auc(val_targets, proba, multilabel)
            self.history_.append({"epoch": epoch, "train_loss": total / seen, "val_pr_auc": score})
            log.info("char-cnn epoch %d: train loss %.4f, val PR AUC %s", epoch, total / seen,
                     "n/a" if score is None else f"{score:.4f}")
            # Without a defined validation metric, keep the latest weights and train every epoch.
            if score is None or score > best_score:
                best_score = -np.inf if score is None else score
                best_state, self.best_epoch_, stale = copy.deepcopy(model.state_dict()), epoch, 0
            else:
                stale += 1
                if stale >= config.patience:
                    break
        model.load_state_dict(best_state)

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
        logits = self.decision_function(texts)  # first: it raises NotFittedError on an unfitted scorer
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
            json.dumps(self.get_config().model_dump(mode="json"), indent=2, sort_keys=True))
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
    def load(cls, directory: str | Path) -> "CharCNNScorer":
        directory = Path(directory)
        config = CharCNNConfig(**json.loads((directory / "scorer_config.json").read_text()))
        fitted = json.loads((directory / STATE_FILE).read_text())
        if (directory / WEIGHTS_FILE).exists():
            from safetensors.torch import load_file

            state = load_file(str(directory / WEIGHTS_FILE))
        elif (directory / WEIGHTS_FILE_TORCH).exists():
            state = torch.load(directory / WEIGHTS_FILE_TORCH, weights_only=True)
        else:
            raise FileNotFoundError(f"{directory} holds no {WEIGHTS_FILE} or {WEIGHTS_FILE_TORCH}: "
                                    "point load() at a directory written by CharCNNScorer.save")
        scorer = cls.from_config(config)
        model = CharCNN(len(fitted["classes"]), config.embed_dim, config.channels, config.kernel_sizes, config.dropout)
        model.load_state_dict(state)
        scorer.model_ = model.eval()
        scorer.classes_ = np.array(fitted["classes"])
        scorer.multilabel_ = fitted["multilabel"]
        # Pre-filters saved before the Calibrator held their calibration stored T and b at the top level.
        calibrator = fitted.get("calibrator") or {"method": config.calibration, "multilabel": fitted["multilabel"],
                                                  "temperature": fitted["temperature"], "bias": fitted["bias"]}
        scorer.calibrator_ = Calibrator.from_state_dict(calibrator)
        scorer.calibration_ = fitted["calibration"]
        scorer.best_epoch_ = fitted["best_epoch"]
        scorer.history_ = fitted["history"]
        return scorer
