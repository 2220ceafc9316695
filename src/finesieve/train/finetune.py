"""Fine-tune a transformer classifier (LoRA, QLoRA or full) and write a run directory.

    finesieve train --data messages.csv --text-col text --label-col label --positive hate_speech --out runs/ft

`train_finetune` is the recipe: split, mix in replayed rows from an earlier run, fine-tune with early
stopping on the validation split, calibrate on it, pick the threshold on it, evaluate on the held-out test
split and the corner-case sets, track the run in MLflow, save everything. `fit_classifier` is the part
behind `FineTunedScorer.fit`: build the model, tokenise, run `train_loop`, calibrate.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from finesieve.data.dataset import Dataset
from finesieve.data.errors import ConfigError, DataError
from finesieve.data.split import SplitConfig, Splits, make_splits
from finesieve.evals import metrics as M
from finesieve.models.base import check_fit_inputs, label_tuples
from finesieve.models.calibration import Calibrator
from finesieve.models.finetuned import FineTunedScorer
from finesieve.models.text_classifier import (
    TextClassifier,
    detect_architecture,
    init_head_from_label_tokens,
    load_body,
    resolve_model,
)
from finesieve.outputs import partial_path, start_run_dir
from finesieve.runs import CHECKPOINTS
from finesieve.train.config import FinetuneConfig
from finesieve.train.loop import CHECKPOINT, Batches, train_loop
from finesieve.train.recipe import FittedRun, fit_and_save
from finesieve.train.replay import replay_rows
from finesieve.train.tracking import Tracker


def class_weights(targets: np.ndarray, k: int, mode: str, multilabel: bool) -> torch.Tensor | None:
    """Loss weights: single-label per class; multi-label a pos_weight per category (negatives / positives)."""
    if mode == "none":
        return None
    if multilabel:
        pos = targets.sum(axis=0).clip(min=1)
        w = (len(targets) - pos) / pos
    else:
        counts = np.bincount(targets, minlength=k).clip(min=1)
        w = len(targets) / (k * counts)
    if mode == "sqrt":
        w = np.sqrt(w)
    return torch.tensor(w, dtype=torch.float32)


def check_method(config: FinetuneConfig) -> None:
    if config.method != "qlora":
        return
    if not torch.cuda.is_available():
        raise ConfigError("QLoRA quantises the base model to 4 bits with bitsandbytes, which needs a CUDA GPU; "
                          "none is available here: use --method lora (or full) on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("QLoRA needs the bitsandbytes package: pip install bitsandbytes (GPU machines only)") from None


def build_model(config: FinetuneConfig, n_labels: int, classes: Sequence[str]):
    """(model, tokenizer, architecture) with LoRA adapters on the body unless method is full."""
    from transformers import AutoTokenizer

    check_method(config)
    path = resolve_model(config.model)
    arch = detect_architecture(path) if config.architecture == "auto" else config.architecture
    if config.head_init == "label_tokens" and arch != "decoder":
        raise ConfigError(f"head_init=label_tokens needs a decoder, but {config.model} is an encoder: use head_init=random")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # safe: pooling reads the attention mask, not pad ids
    body = load_body(path, arch, quantize_4bit=config.method == "qlora")
    if config.method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        if config.method == "qlora":
            from peft import prepare_model_for_kbit_training

            body = prepare_model_for_kbit_training(body)
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=config.target_modules, bias="none")
        body = get_peft_model(body, lora)
    model = TextClassifier(body, body.config.hidden_size, n_labels, pooling="last" if arch == "decoder" else "mean")
    if config.head_init == "label_tokens":
        missing = [c for c in classes if c not in (config.label_words or {})]
        if missing:
            raise ConfigError(f"label_words has no answer word for {missing}: give one per class")
        init_head_from_label_tokens(model, path, tokenizer, [config.label_words[c] for c in classes])
    return model, tokenizer, arch


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


def fit_classifier(scorer: FineTunedScorer, texts, labels, *, multilabel=None, val_texts=None, val_labels=None,
                   out_dir=None, resume=False, positive: Sequence[str] | None = None, tracker: Tracker | None = None,
                   vote_shares=None):
    """`vote_shares`: optional DataFrame (one row per text, one column per class) of annotators' vote shares,
    NaN where a row has none; used when `config.soft_labels` > 0."""
    config = scorer.config = scorer.config or FinetuneConfig()
    torch.manual_seed(config.seed)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    texts, tuples, multilabel = check_fit_inputs(texts, labels, multilabel)
    if config.soft_labels > 0 and vote_shares is None:
        raise ConfigError(f"soft_labels={config.soft_labels} needs annotator votes: map them with --vote-col CLASS=COLUMN "
                          "(one per class), or set soft_labels=0")
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

    model, tokenizer, arch = build_model(config, len(classes), classes)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    y = _targets(tuples, classes, multilabel)
    y_val = _targets(val_tuples, classes, multilabel)
    weights = class_weights(y, len(classes), config.class_weight, multilabel)
    train_targets, soft_label_rows = y, 0
    if config.soft_labels > 0:
        if multilabel:
            raise ConfigError("soft_labels needs a single-label task; set soft_labels=0 for multi-label data")
        shares = vote_shares.reindex(columns=classes, fill_value=0.0).to_numpy(dtype=np.float32)
        train_targets = soft_targets(y, shares, config.soft_labels)
        soft_label_rows = int((~np.isnan(shares).any(axis=1)).sum())
    weights = weights.to(device) if weights is not None else None
    loss_fn = (torch.nn.BCEWithLogitsLoss(pos_weight=weights) if multilabel else torch.nn.CrossEntropyLoss(weight=weights))
    sample_weights = None
    if config.resample:
        per_row = y.sum(axis=1) if multilabel else None
        if multilabel:
            freq = y.mean(axis=0).clip(min=1e-6)
            sample_weights = np.where(per_row > 0, (y / freq).max(axis=1), 1.0)
        else:
            sample_weights = 1.0 / np.bincount(y, minlength=len(classes))[y]
    ids = tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]
    batches = Batches(ids, train_targets, tokenizer.pad_token_id, sample_weights)

    scorer.model_, scorer.tokenizer_, scorer.architecture_ = model, tokenizer, arch
    scorer.classes_, scorer.multilabel_ = np.array(classes), multilabel
    pos_idx = [classes.index(p) for p in positive or [] if p in classes]

    def validate() -> tuple[float, float]:
        logits = scorer.logits(val_texts)
        loss = float(loss_fn(torch.tensor(logits, device=device), torch.as_tensor(y_val, device=device)))
        y_ind = y_val if multilabel else np.eye(len(classes))[y_val]
        if pos_idx:
            proba = 1 / (1 + np.exp(-logits)) if multilabel else torch.softmax(torch.tensor(logits), 1).numpy()
            scores = proba[:, pos_idx].max(axis=1) if multilabel else proba[:, pos_idx].sum(axis=1)
            yb = y_ind[:, pos_idx].max(axis=1)
            return (M.pr_auc(yb, scores) if 0 < yb.sum() < len(yb) else 0.0), loss
        # No positive class named: mean PR AUC over the classes present in validation.
        values = [M.pr_auc(y_ind[:, j], logits[:, j]) for j in range(len(classes)) if 0 < y_ind[:, j].sum() < len(y_ind)]
        return (float(np.mean(values)) if values else 0.0), loss

    def on_eval(state, metric):
        if tracker:
            tracker.log_metrics({"val_pr_auc": metric}, step=state.step)

    checkpoint_dir = Path(out_dir) / CHECKPOINTS if out_dir else Path(os.environ.get("TMPDIR", "/tmp")) / f"finesieve-ckpt-{os.getpid()}"
    state = train_loop(model, batches, validate, loss_fn, config, checkpoint_dir, resume=resume, on_eval=on_eval, device=device)
    scorer.calibrator_ = Calibrator(config.calibration, multilabel).fit(scorer.logits(val_texts), y_val)
    scorer.training_ = {"steps": state.step, "epochs_started": state.epoch + (1 if state.batch_in_epoch else 0),
                        "best_step": state.best_step, "best_val_metric": state.best_metric,
                        "stopped_early": state.stopped_early, "history": state.history, "seconds": round(state.seconds, 1),
                        "train_messages_per_second": round(state.messages_seen / max(state.seconds, 1e-9), 1),
                        "n_train": len(texts), "n_val": len(val_texts), "device": str(device),
                        "soft_label_rows": soft_label_rows,
                        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                        "total_parameters": sum(p.numel() for p in model.parameters()),
                        "temperature": scorer.calibrator_.temperature_.tolist()}
    return scorer


def train_finetune(config: FinetuneConfig, dataset: Dataset, *, positive: Sequence[str], out: str | Path,
                   split_config: SplitConfig | None = None, splits: Splits | None = None,
                   corner_sets: dict[str, Dataset] | None = None, resume: bool = False, n_boot: int = 1000,
                   name: str = "fine-tuned", overwrite: bool = False) -> FittedRun:
    """Checkpoints are written into the run's staging folder `OUT.partial`, which becomes OUT when the run is
    complete; `resume` continues from the checkpoint an interrupted run left there."""
    out = Path(out)
    checkpoint = partial_path(out) / CHECKPOINTS / CHECKPOINT
    if checkpoint.exists() and not (resume or overwrite):
        raise ConfigError(f"{checkpoint} holds the checkpoint of an interrupted run: pass --resume to continue it, "
                          "or --overwrite to start afresh")
    staging = start_run_dir(out, overwrite=overwrite, keep_partial=resume)
    splits = splits or make_splits(dataset, split_config or SplitConfig())
    train, val = splits.dataset("train"), splits.dataset("val")
    replay_info, parent = None, None
    if config.replay_from:
        train, replay_info = replay_rows(config.replay_from, train, exclude=[val, splits.dataset("test")],
                                         fraction=config.replay_fraction, seed=config.seed)
        parent = str(config.replay_from)
    tracker = Tracker(config, out)
    scorer = FineTunedScorer(config)
    shares = train.vote_shares()
    vote_shares = pd.DataFrame(shares, columns=train.classes) if shares is not None and config.soft_labels > 0 else None
    with tracker:
        tracker.log_params({**config.model_dump(), "n_train": len(train), "data_hash": dataset.content_hash,
                            "split_hash": splits.split_hash})
        fitted = fit_and_save(
            scorer, "finetuned", splits, positive=positive, out=out, train=train,
            fit_kwargs={"val_texts": val.texts, "val_labels": val.labels, "out_dir": staging, "resume": resume,
                        "positive": positive, "tracker": tracker, "vote_shares": vote_shares},
            corner_sets=corner_sets, n_boot=n_boot, name=name, parent_run=parent, overwrite=overwrite, staging=staging,
            extra=lambda s: {"training": s.training_, "replay": replay_info, "tracking": tracker.info()},
        )
        m = fitted.test_result.to_dict()
        tracker.log_metrics({f"test_{k}": m[k] for k in ("roc_auc", "pr_auc", "precision", "recall", "f1") if m[k] is not None})
        tracker.log_artifact(out / "manifest.json")
    return fitted
