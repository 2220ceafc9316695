"""The fine-tuned scorer: a transformer classifier plus its calibration, loaded from a run directory.

    scorer = FineTunedScorer.load("runs/minilm/model")
    scorer.predict_proba(["text me on whatsapp"])        # (1, n_classes), calibrated
    scorer.save("copy/model")                             # LoRA: the very adapter files it was loaded from
    FineTunedScorer.load("runs/minilm/model", merge=False)   # LoRA kept unmerged (several adapters on one base)

`fit` runs `finesieve.train.finetune.fit_classifier` (LoRA by default) with a validation split carved
from the training data when none is given. Scoring sorts messages by length so each batch pads little.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from finesieve.models.base import check_is_fitted, check_texts
from finesieve.models.calibration import Calibrator
from finesieve.models.text_classifier import (
    ADAPTER_DIR,
    ADAPTER_METHODS,
    is_peft_model,
    load_classifier,
    read_adapter_files,
    save_classifier,
)
from finesieve.train.config import FinetuneConfig


class FineTunedScorer:
    def __init__(self, config: FinetuneConfig | None = None, batch_size: int = 64):
        self.config = config
        self.batch_size = batch_size

    def fit(self, texts: Sequence[str], labels: Sequence, multilabel: bool | None = None,
            val_texts: Sequence[str] | None = None, val_labels: Sequence | None = None,
            out_dir: str | Path | None = None, resume: bool = False, positive: Sequence[str] | None = None,
            tracker=None, vote_shares=None) -> "FineTunedScorer":
        """Fine-tune on (texts, labels); early stopping and calibration use the validation texts when given,
        else a 10% split of the training data. `positive` makes early stopping watch their PR AUC.
        `vote_shares` (a DataFrame, one column per class) adds annotators' votes to the target when
        `config.soft_labels` > 0."""
        from finesieve.train.finetune import fit_classifier

        self.adapter_files_ = None  # a new model saves its own adapter; files kept from a load would be stale
        fit_classifier(self, texts, labels, multilabel=multilabel, val_texts=val_texts, val_labels=val_labels,
                       out_dir=out_dir, resume=resume, positive=positive, tracker=tracker, vote_shares=vote_shares)
        return self

    def get_config(self) -> FinetuneConfig:
        return self.config or FinetuneConfig()

    @property
    def device(self) -> torch.device:
        return next(self.model_.parameters()).device

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits (n, n_classes), batched by length."""
        check_is_fitted(self, "model_")
        texts = check_texts(texts)
        out = np.zeros((len(texts), len(self.classes_)), dtype=np.float32)
        if not texts:
            return out
        max_length = (self.config or FinetuneConfig()).max_length
        order = np.argsort([len(t) for t in texts], kind="stable")
        self.model_.eval()
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                rows = order[start: start + self.batch_size]
                enc = self.tokenizer_([texts[i] for i in rows], truncation=True, max_length=max_length,
                                      padding=True, return_tensors="pt")
                logits = self.model_(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
                out[rows] = logits.float().cpu().numpy()
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        check_is_fitted(self)
        return self.calibrator_.transform(self.logits(texts))

    def save(self, directory: str | Path) -> None:
        """Model files plus `scorer.json`. LoRA/QLoRA writes the adapter only: an unmerged body saves it, a body
        merged at load writes back the adapter files it was loaded from, byte for byte."""
        check_is_fitted(self)
        directory = Path(directory)
        adapter_files = None if is_peft_model(self.model_.body) else getattr(self, "adapter_files_", None)
        save_classifier(self.model_, self.tokenizer_, directory, self.config.method, adapter_files=adapter_files)
        meta = {"classes": self.classes_.tolist(), "multilabel": self.multilabel_, "architecture": self.architecture_,
                "pooling": self.model_.pooling, "calibration": self.calibrator_.state_dict(),
                "config": self.config.model_dump(), "batch_size": self.batch_size}
        (directory / "scorer.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path, merge: bool = True) -> "FineTunedScorer":
        """A saved scorer. LoRA/QLoRA: `merge=True` merges the adapter into the base (faster for one model) and keeps
        the adapter's files in memory (`adapter_files_`) so `save` writes the same adapter back; `merge=False` keeps
        the PeftModel unmerged, as serving several adapters on one base needs. Full fine-tunes ignore `merge`."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        meta = json.loads((directory / "scorer.json").read_text())
        config = FinetuneConfig.model_validate(meta["config"])
        scorer = cls(config=config, batch_size=meta.get("batch_size", 64))
        scorer.classes_ = np.array(meta["classes"])
        scorer.multilabel_ = meta["multilabel"]
        scorer.architecture_ = meta["architecture"]
        scorer.tokenizer_ = AutoTokenizer.from_pretrained(directory / "tokenizer")
        # Read before loading: these are the bytes the merged weights come from.
        adapter_files = read_adapter_files(directory / ADAPTER_DIR) if config.method in ADAPTER_METHODS else None
        scorer.model_ = load_classifier(directory, config.model, meta["architecture"], config.method,
                                        len(scorer.classes_), meta["pooling"], merge=merge)
        scorer.adapter_files_ = None if is_peft_model(scorer.model_.body) else adapter_files
        scorer.calibrator_ = Calibrator.from_state_dict(meta["calibration"])
        return scorer
