"""The fine-tuned scorer: a transformer classifier plus its calibration, loaded from a run directory.

    scorer = FineTunedScorer.load("runs/minilm/model")
    scorer.predict_proba(["text me on whatsapp"])        # (1, n_classes), calibrated
    scorer.save("copy/model")                             # LoRA: the very adapter files it was loaded from
    FineTunedScorer.load("runs/minilm/model", merge=False)   # LoRA kept unmerged (several adapters on one base)

    FineTunedScorer(FinetuneConfig(method="lora")).fit(texts, labels, positive=["spam"])

`fit` does its own work, as named steps: split off a validation set (10% of the training data when none is
given), build the model (LoRA by default), tokenise, run `train_loop` with early stopping on validation PR
AUC, calibrate on the validation logits. Scoring sorts messages by length so each batch pads little. The
recipe that wraps a fit into a run directory is `finesieve.train.finetune.train_finetune`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from finesieve.data.errors import ConfigError, DataError
from finesieve.data.evasion import augment_with_evasion
from finesieve.data.normalize import normalize_for_scoring
from finesieve.models.base import check_fit_inputs, check_is_fitted, check_texts, label_tuples, prepare_inputs
from finesieve.models.calibration import Calibrator
from finesieve.models.chunking import ChunkedBatches, collate_windows, token_windows
from finesieve.models.class_weights import class_weights
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.models.text_classifier import (
    ADAPTER_DIR,
    ADAPTER_METHODS,
    TextClassifier,
    detect_architecture,
    init_head_from_label_tokens,
    is_peft_model,
    load_body,
    load_classifier,
    read_adapter_files,
    resolve_model,
    save_classifier,
)
from finesieve.models.training_loop import CHECKPOINTS, Batches, LoopState, pr_auc, train_loop


class FineTunedScorer:
    kind = "finetuned"  # the run kind written in manifest.json (finesieve.models.kinds)

    def __init__(self, config: FinetuneConfig | None = None, batch_size: int = 64):
        self.config = config
        self.batch_size = batch_size

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence,
        multilabel: bool | None = None,
        val_texts: Sequence[str] | None = None,
        val_labels: Sequence | None = None,
        out_dir: str | Path | None = None,
        resume: bool = False,
        positive: Sequence[str] | None = None,
        tracker=None,
        vote_shares=None,
    ) -> FineTunedScorer:
        """Fine-tune on (texts, labels); early stopping and calibration use the validation texts when given,
        else a 10% split of the training data. `positive` makes early stopping watch their PR AUC.
        `vote_shares` (a DataFrame, one row per text, one column per class, NaN where a row has none) adds
        annotators' votes to the target when `config.soft_labels` > 0. Checkpoints go to `out_dir/checkpoints`
        (a temporary folder without `out_dir`); `resume` continues from one. `tracker` (optional) gets
        `log_metrics({"val_pr_auc": ...}, step=...)` at each validation."""
        self.adapter_files_ = None  # a new model saves its own adapter; files kept from a load would be stale
        config = self.get_config()
        torch.manual_seed(config.seed)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        texts, tuples, multilabel = check_fit_inputs(texts, labels, multilabel)
        if config.soft_labels > 0 and vote_shares is None:
            raise ConfigError(
                f"soft_labels={config.soft_labels} needs annotator votes: map them with --vote-col "
                "CLASS=COLUMN (one per class), or set soft_labels=0"
            )
        if vote_shares is not None and len(vote_shares) != len(texts):
            raise ValueError(f"vote_shares has {len(vote_shares)} rows for {len(texts)} texts: give one row per text")
        if val_texts is None:
            train_idx, val_idx = _internal_val_split(texts, tuples, multilabel, config.seed)
            texts, val_texts = [texts[i] for i in train_idx], [texts[i] for i in val_idx]
            tuples, val_tuples = [tuples[i] for i in train_idx], [tuples[i] for i in val_idx]
            vote_shares = vote_shares.iloc[train_idx] if vote_shares is not None else None
        else:
            val_tuples = label_tuples(val_labels, multilabel)
        classes = sorted({c for t in tuples for c in t} | {c for t in val_tuples for c in t})
        if len(classes) < 2 and not multilabel:
            raise DataError(f"labels hold one class only ({classes}): a classifier needs at least two")

        augmented_rows = 0
        if config.augment_evasion > 0:
            rows, copies = augment_with_evasion(texts, config.augment_evasion, config.seed)
            texts, tuples = texts + copies, tuples + [tuples[i] for i in rows]
            if vote_shares is not None:
                vote_shares = pd.concat([vote_shares, vote_shares.iloc[rows]], ignore_index=True)
            augmented_rows = len(rows)

        model, tokenizer, arch = build_model(config, len(classes), classes)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device)
        y = _targets(tuples, classes, multilabel)
        y_val = _targets(val_tuples, classes, multilabel)
        train_targets, soft_label_rows, loss_fn = _loss(config, y, classes, multilabel, vote_shares, device)
        sample_weights = _resample_weights(y, len(classes), multilabel) if config.resample else None
        if config.max_chunks > 1:  # long documents: a row is every window of one document
            windows = token_windows(
                tokenizer, self.model_texts(texts), config.max_length, config.max_chunks, config.chunk_overlap
            )
            batches: Batches = ChunkedBatches(windows, train_targets, tokenizer.pad_token_id, sample_weights)
        else:
            ids = tokenizer(self.model_texts(texts), truncation=True, max_length=config.max_length)["input_ids"]
            batches = Batches(ids, train_targets, tokenizer.pad_token_id, sample_weights)

        # Learned state set before the loop: validation scores with `self.logits`.
        self.model_, self.tokenizer_, self.architecture_ = model, tokenizer, arch
        self.classes_, self.multilabel_ = np.array(classes), multilabel
        pos_idx = [classes.index(p) for p in positive or [] if p in classes]

        def validate() -> tuple[float, float]:
            return _validation_metric(self.logits(val_texts), y_val, pos_idx, multilabel, loss_fn, device)

        def on_eval(state: LoopState, metric: float) -> None:
            if tracker:
                tracker.log_metrics({"val_pr_auc": metric}, step=state.step)

        checkpoint_dir = (
            Path(out_dir) / CHECKPOINTS
            if out_dir
            else Path(os.environ.get("TMPDIR", "/tmp")) / f"finesieve-ckpt-{os.getpid()}"
        )
        state = train_loop(
            model,
            batches,
            validate,
            loss_fn,
            config.loop_settings(),
            checkpoint_dir,
            resume=resume,
            on_eval=on_eval,
            device=device,
        )
        self.calibrator_ = Calibrator(config.calibration, multilabel).fit(self.logits(val_texts), y_val)
        self.training_ = _training_summary(
            state,
            model,
            self.calibrator_,
            n_train=len(texts) - augmented_rows,
            n_val=len(val_texts),
            device=device,
            soft_label_rows=soft_label_rows,
            augmented_rows=augmented_rows,
        )
        return self

    def get_config(self) -> FinetuneConfig:
        return self.config or FinetuneConfig()

    @property
    def device(self) -> torch.device:
        return next(self.model_.parameters()).device

    def model_texts(self, texts: Sequence[str]) -> list[str]:
        """The texts as the model reads them: de-obfuscated when the config says so, else as given (the default)."""
        if self.get_config().deobfuscate:
            return [normalize_for_scoring(t) for t in texts]
        return list(texts)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits (n, n_classes), batched by length."""
        check_is_fitted(self, "model_")
        texts = check_texts(texts)
        out = np.zeros((len(texts), len(self.classes_)), dtype=np.float32)
        if not texts:
            return out
        config = self.get_config()
        max_length = config.max_length
        texts = self.model_texts(texts)
        order = np.argsort([len(t) for t in texts], kind="stable")
        self.model_.eval()
        if config.max_chunks > 1:
            return self._document_logits(texts, order, out)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                rows = order[start : start + self.batch_size]
                enc = self.tokenizer_(
                    [texts[i] for i in rows], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
                )
                logits = self.model_(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
                out[rows] = logits.float().cpu().numpy()
        return out

    def _document_logits(self, texts: list[str], order: np.ndarray, out: np.ndarray) -> np.ndarray:
        """`logits` for long documents: every window of a batch of documents in one pass, averaged per document;
        about `batch_size` windows a pass, whatever the documents' lengths."""
        config = self.get_config()
        windows = token_windows(self.tokenizer_, texts, config.max_length, config.max_chunks, config.chunk_overlap)
        pad_id = self.tokenizer_.pad_token_id or 0  # masked out: its value changes nothing
        docs_per_pass = max(1, self.batch_size // config.max_chunks)
        with torch.inference_mode():
            for start in range(0, len(texts), docs_per_pass):
                rows = order[start : start + docs_per_pass]
                ids, mask, doc_index = collate_windows([windows[i] for i in rows], pad_id)
                logits = self.model_(ids.to(self.device), mask.to(self.device), doc_index.to(self.device))
                out[rows] = logits.float().cpu().numpy()
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        check_is_fitted(self)
        return self.calibrator_.transform(self.logits(prepare_inputs(self, texts)))

    def save(self, directory: str | Path) -> None:
        """Model files plus `scorer.json`. LoRA/QLoRA writes the adapter only: an unmerged body saves it, a body
        merged at load writes back the adapter files it was loaded from, byte for byte."""
        check_is_fitted(self)
        directory = Path(directory)
        adapter_files = None if is_peft_model(self.model_.body) else getattr(self, "adapter_files_", None)
        config = self.get_config()
        save_classifier(self.model_, self.tokenizer_, directory, config.method, adapter_files=adapter_files)
        meta = {
            "classes": self.classes_.tolist(),
            "multilabel": self.multilabel_,
            "architecture": self.architecture_,
            "pooling": self.model_.pooling,
            "calibration": self.calibrator_.state_dict(),
            "config": config.model_dump(),
            "batch_size": self.batch_size,
        }
        (directory / "scorer.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path, merge: bool = True) -> FineTunedScorer:
        """A saved scorer. LoRA/QLoRA: `merge=True` merges the adapter into the base (faster for one model) and keeps
        the adapter's files in memory (`adapter_files_`) so `save` writes the same adapter back; `merge=False` keeps
        the PeftModel unmerged, as serving several adapters on one base needs. Full fine-tunes ignore `merge`."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        meta = json.loads((directory / "scorer.json").read_text())
        config = _saved_config(meta)
        scorer = cls(config=config, batch_size=meta.get("batch_size", 64))
        scorer.classes_ = np.array(meta["classes"])
        scorer.multilabel_ = meta["multilabel"]
        scorer.architecture_ = meta["architecture"]
        scorer.tokenizer_ = AutoTokenizer.from_pretrained(directory / "tokenizer")
        # Read before loading: these are the bytes the merged weights come from.
        adapter_files = read_adapter_files(directory / ADAPTER_DIR) if config.method in ADAPTER_METHODS else None
        scorer.model_ = load_classifier(
            directory,
            config.model,
            meta["architecture"],
            config.method,
            len(scorer.classes_),
            meta["pooling"],
            merge=merge,
        )
        scorer.adapter_files_ = None if is_peft_model(scorer.model_.body) else adapter_files
        scorer.calibrator_ = Calibrator.from_state_dict(meta["calibration"])
        return scorer

    @classmethod
    def load_with_body(cls, directory: str | Path, body: torch.nn.Module, hidden_size: int) -> FineTunedScorer:
        """A saved LoRA/QLoRA scorer on a body given by the caller, which loads no base weights: a base shared with
        other adapters that switches to this run's adapter when it runs (`finesieve.models.adapters.load_shared`).
        Its own head, calibrator and tokenizer come from `directory`; its adapter's files are kept (`adapter_files_`)
        so `save` writes them back byte for byte."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        meta = json.loads((directory / "scorer.json").read_text())
        config = _saved_config(meta)
        if config.method not in ADAPTER_METHODS:
            raise ConfigError(
                f"{directory} is a {config.method} fine-tune, not an adapter: it cannot share a base; "
                "load it with FineTunedScorer.load"
            )
        scorer = cls(config=config, batch_size=meta.get("batch_size", 64))
        scorer.classes_ = np.array(meta["classes"])
        scorer.multilabel_ = meta["multilabel"]
        scorer.architecture_ = meta["architecture"]
        scorer.tokenizer_ = AutoTokenizer.from_pretrained(directory / "tokenizer")
        scorer.adapter_files_ = read_adapter_files(directory / ADAPTER_DIR)
        scorer.model_ = TextClassifier(body, hidden_size, len(scorer.classes_), meta["pooling"])
        scorer.model_.score.load_state_dict(torch.load(directory / "head.pt", map_location="cpu"))
        scorer.model_.eval()
        scorer.calibrator_ = Calibrator.from_state_dict(meta["calibration"])
        return scorer


def _saved_config(meta: dict) -> FinetuneConfig:
    """The config a scorer was saved with; one saved before `deobfuscate` existed read the prepared text as given."""
    return FinetuneConfig.model_validate({"deobfuscate": False, **meta["config"]})


# --------------------------------------------------------------------------------------------- building the model


def check_method(config: FinetuneConfig) -> None:
    """Refuse QLoRA where it cannot run: it needs a CUDA GPU and bitsandbytes."""
    if config.method != "qlora":
        return
    if not torch.cuda.is_available():
        raise ConfigError(
            "QLoRA quantises the base model to 4 bits with bitsandbytes, which needs a CUDA GPU; "
            "none is available here: use --method lora (or full) on CPU"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(
            "QLoRA needs the bitsandbytes package: pip install bitsandbytes (GPU machines only)"
        ) from None


def build_model(config: FinetuneConfig, n_labels: int, classes: Sequence[str]):
    """(model, tokenizer, architecture) with LoRA adapters on the body unless method is full."""
    from transformers import AutoTokenizer

    check_method(config)
    path = resolve_model(config.model)
    arch = detect_architecture(path) if config.architecture == "auto" else config.architecture
    if config.head_init == "label_tokens" and arch != "decoder":
        raise ConfigError(
            f"head_init=label_tokens needs a decoder, but {config.model} is an encoder: use head_init=random"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # safe: pooling reads the attention mask, not pad ids
    body = load_body(path, arch, quantize_4bit=config.method == "qlora")
    if config.method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        if config.method == "qlora":
            from peft import prepare_model_for_kbit_training

            body = prepare_model_for_kbit_training(body)
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.target_modules,
            bias="none",
        )
        body = get_peft_model(body, lora)
    model = TextClassifier(body, body.config.hidden_size, n_labels, pooling="last" if arch == "decoder" else "mean")
    if config.head_init == "label_tokens":
        missing = [c for c in classes if c not in (config.label_words or {})]
        if missing:
            raise ConfigError(f"label_words has no answer word for {missing}: give one per class")
        init_head_from_label_tokens(model, path, tokenizer, [config.label_words[c] for c in classes])
    return model, tokenizer, arch


# --------------------------------------------------------------------------------------------- targets and loss


def _targets(tuples: list[tuple[str, ...]], classes: list[str], multilabel: bool) -> np.ndarray:
    if multilabel:
        return np.array([[c in t for c in classes] for t in tuples], dtype=np.float32)
    return np.array([classes.index(t[0]) for t in tuples], dtype=np.int64)


def _internal_val_split(texts, tuples, multilabel, seed):
    """Indices (train, val) of a 10% validation split, stratified by class where every class allows it."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(texts))
    strat = None if multilabel else [t[0] for t in tuples]
    try:
        return train_test_split(index, test_size=0.1, random_state=seed, stratify=strat)
    except ValueError:  # a class too rare to stratify
        return train_test_split(index, test_size=0.1, random_state=seed)


def soft_targets(y: np.ndarray, shares: np.ndarray, weight: float) -> np.ndarray:
    """Per-row class distributions: (1 - weight) x the majority label + weight x the annotators' vote shares.

    Votes say how sure people were: a message two of three reviewers called hate teaches the model less
    certainty than a unanimous one. Rows without votes (NaN) keep their one-hot label.
    """
    onehot = np.eye(shares.shape[1], dtype=np.float32)[y]
    has_votes = ~np.isnan(shares).any(axis=1)
    mixed = onehot.copy()
    mixed[has_votes] = (1 - weight) * onehot[has_votes] + weight * shares[has_votes]
    return mixed


def _loss(
    config: FinetuneConfig, y: np.ndarray, classes: list[str], multilabel: bool, vote_shares, device: torch.device
) -> tuple[np.ndarray, int, torch.nn.Module]:
    """(training targets, rows with vote shares mixed in, class-weighted loss) for targets `y` ((n,) or (n, k))."""
    weights = class_weights(y, len(classes), config.class_weight, multilabel)
    train_targets, soft_label_rows = y, 0
    if config.soft_labels > 0:
        if multilabel:
            raise ConfigError("soft_labels needs a single-label task; set soft_labels=0 for multi-label data")
        shares = vote_shares.reindex(columns=classes, fill_value=0.0).to_numpy(dtype=np.float32)
        train_targets = soft_targets(y, shares, config.soft_labels)
        soft_label_rows = int((~np.isnan(shares).any(axis=1)).sum())
    weights = weights.to(device) if weights is not None else None
    loss_fn = (
        torch.nn.BCEWithLogitsLoss(pos_weight=weights) if multilabel else torch.nn.CrossEntropyLoss(weight=weights)
    )
    return train_targets, soft_label_rows, loss_fn


def _resample_weights(y: np.ndarray, k: int, multilabel: bool) -> np.ndarray:
    """Probability weight of drawing each row (n,) so rare classes are drawn as often as common ones."""
    if multilabel:
        per_row = y.sum(axis=1)
        freq = y.mean(axis=0).clip(min=1e-6)
        return np.where(per_row > 0, (y / freq).max(axis=1), 1.0)
    return 1.0 / np.bincount(y, minlength=k)[y]


# --------------------------------------------------------------------------------------------- validation


def _validation_metric(
    logits: np.ndarray,
    y_val: np.ndarray,
    pos_idx: list[int],
    multilabel: bool,
    loss_fn: torch.nn.Module,
    device: torch.device,
) -> tuple[float, float]:
    """(metric, loss) on the validation split from its logits (n, k): PR AUC of the positive classes' score,
    or, with no positive class named, the mean PR AUC over the classes present in validation."""
    k = logits.shape[1]
    loss = float(loss_fn(torch.tensor(logits, device=device), torch.as_tensor(y_val, device=device)))
    y_ind = y_val if multilabel else np.eye(k)[y_val]
    if pos_idx:
        proba = 1 / (1 + np.exp(-logits)) if multilabel else torch.softmax(torch.tensor(logits), 1).numpy()
        scores = proba[:, pos_idx].max(axis=1) if multilabel else proba[:, pos_idx].sum(axis=1)
        yb = y_ind[:, pos_idx].max(axis=1)
        return (pr_auc(yb, scores) if 0 < yb.sum() < len(yb) else 0.0), loss
    values = [pr_auc(y_ind[:, j], logits[:, j]) for j in range(k) if 0 < y_ind[:, j].sum() < len(y_ind)]
    return (float(np.mean(values)) if values else 0.0), loss


def _training_summary(
    state: LoopState,
    model: torch.nn.Module,
    calibrator: Calibrator,
    *,
    n_train: int,
    n_val: int,
    device: torch.device,
    soft_label_rows: int,
    augmented_rows: int,
) -> dict:
    """What the run manifest records about training (`training_`)."""
    return {
        "steps": state.step,
        "epochs_started": state.epoch + (1 if state.batch_in_epoch else 0),
        "best_step": state.best_step,
        "best_val_metric": state.best_metric,
        "stopped_early": state.stopped_early,
        "history": state.history,
        "seconds": round(state.seconds, 1),
        "train_messages_per_second": round(state.messages_seen / max(state.seconds, 1e-9), 1),
        "n_train": n_train,
        "n_val": n_val,
        "device": str(device),
        "soft_label_rows": soft_label_rows,
        "augmented_rows": augmented_rows,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "temperature": calibrator.temperature_.tolist(),
    }
