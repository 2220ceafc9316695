"""The fine-tuning configuration: every knob of `FineTunedScorer`, typed, documented and checked at the edge.

    config = FinetuneConfig(model="packaged:all-MiniLM-L6-v2", method="lora", lora_r=8)
    FineTunedScorer(config).fit(texts, labels)

Defaults follow the literature for LoRA classifiers (learning rate 1e-4, batch 32; Hu et al. 2021,
Dettmers et al. 2023); full fine-tuning resolves to 5e-5, the usual BERT-family range. The config is
saved, resolved, in every run directory. Reading it from YAML, flags and `--set key=value` is
`finesieve.train.config.load_finetune_config`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from finesieve.models.training_loop import LoopSettings

DEFAULT_MODEL = "packaged:all-MiniLM-L6-v2"


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(
        DEFAULT_MODEL,
        description="Base model: a Hugging Face id, a local path, packaged:all-MiniLM-L6-v2 (default) or "
        "packaged:all-mpnet-base-v2 (110M, ~5x slower on CPU; its five part packages must be installed).",
    )
    architecture: Literal["auto", "encoder", "decoder"] = Field(
        "auto", description="encoder (mean pooling) or decoder (last-token pooling); auto reads the model config."
    )
    head_init: Literal["random", "label_tokens"] = Field(
        "random", description="Decoders only: start the head from the LM-head rows of the label words."
    )
    label_words: dict[str, str] | None = Field(None, description="Class -> answer word, for head_init=label_tokens.")
    method: Literal["lora", "qlora", "full"] = Field(
        "lora", description="LoRA adapters, 4-bit QLoRA (GPU), or full tuning."
    )
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Modules that get adapters; all-linear wraps every linear layer of the body."
    )
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate; default 1e-4 (LoRA) or 5e-5 (full)."
    )
    batch_size: int = Field(32, ge=1, description="Messages per optimiser step (before accumulation).")
    grad_accum: int = Field(
        1, ge=1, description="Gradient accumulation steps (effective batch = batch_size x grad_accum)."
    )
    max_epochs: float = Field(3.0, gt=0, description="Upper bound on passes over the training data.")
    max_steps: int | None = Field(
        None, ge=1, description="Upper bound on optimiser steps (overrides max_epochs when smaller)."
    )
    max_length: int = Field(128, ge=8, description="Tokens per message (per window with max_chunks > 1).")
    max_chunks: int = Field(
        1,
        ge=1,
        le=64,
        description="Long documents (resumes): read up to this many windows of max_length tokens, spread evenly "
        "over the text, and average their vectors before the head (models.chunking). 1 (messages): cut each text "
        "at max_length.",
    )
    chunk_overlap: int = Field(32, ge=0, description="Tokens that neighbouring windows share (max_chunks > 1).")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of steps spent warming the learning rate up.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    eval_every: int = Field(200, ge=1, description="Validate every N optimiser steps (and at each epoch end).")
    patience: int = Field(3, ge=1, description="Stop after this many validations without improvement.")
    class_weight: Literal["balanced", "sqrt", "none"] = Field(
        "sqrt", description="Loss weights for rare classes: balanced (n / (k n_c)), its square root, or none."
    )
    soft_labels: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Weight of the annotators' vote shares in the training target (needs vote "
        "columns): 0 trains on the majority label alone, 1 on the vote shares alone, between mixes the two.",
    )
    deobfuscate: bool = Field(
        False,
        description="Read each message as the rules, TF-IDF and char-CNN do: data.normalize.normalize_for_scoring "
        "(case folded, leet, spaced-out letters and look-alikes undone). Off by default: on the Davidson "
        "validation split it raised evaded ROC AUC (0.831 vs 0.827) but lowered PR AUC (0.339 vs 0.351), "
        "bench/evasion_recipe.py, 400 steps, one seed.",
    )
    augment_evasion: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Add evaded copies (data.evasion: swapped, dropped and doubled letters, joined and split "
        "words, leet, look-alikes, separators) of this share of the training messages, with their labels.",
    )
    resample: bool = Field(False, description="Oversample rare classes instead of (or as well as) weighting the loss.")
    replay_from: str | None = Field(
        None, description="An earlier run directory (or data file) whose training data is replayed."
    )
    replay_fraction: float = Field(0.2, ge=0, le=1, description="Replayed rows as a fraction of the new training rows.")
    calibration: Literal["temperature", "temperature_bias", "isotonic", "none"] = Field(
        "temperature",
        description="Calibration on the validation split; temperature_bias also undoes the prior shift of class weights.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Mixed precision; auto: bf16 on a capable GPU, fp32 on CPU."
    )
    checkpoint_every: int = Field(200, ge=1, description="Write a resumable checkpoint every N optimiser steps.")
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: all cores).")
    seed: int = Field(0, description="Seed for initialisation, batching and replay sampling.")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default a local store beside the run.")
    experiment: str = Field("finesieve", description="MLflow experiment name.")

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if self.head_init == "label_tokens" and self.architecture == "encoder":
            raise ValueError(
                "head_init=label_tokens needs a decoder (architecture=decoder or auto on a causal LM); "
                "use head_init=random for encoders"
            )
        if self.max_chunks > 1 and self.chunk_overlap >= self.max_length // 2:
            raise ValueError(
                f"chunk_overlap {self.chunk_overlap} must be under half of max_length {self.max_length}, or "
                "neighbouring windows would read mostly the same tokens"
            )
        if self.head_init == "label_tokens" and not self.label_words:
            raise ValueError("head_init=label_tokens needs label_words (class -> answer word)")
        return self

    @property
    def resolved_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 5e-5 if self.method == "full" else 1e-4

    def loop_settings(self) -> LoopSettings:
        """The settings of the shared `train_loop`. A checkpoint resumes only under the same config, bar the
        budget (max_epochs, max_steps) and the machine (num_threads, tracking_uri)."""
        return LoopSettings(
            learning_rate=self.resolved_learning_rate,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            max_steps=self.max_steps,
            grad_accum=self.grad_accum,
            weight_decay=self.weight_decay,
            schedule="linear",
            warmup_ratio=self.warmup_ratio,
            max_grad_norm=1.0,
            eval_every=self.eval_every,
            patience=self.patience,
            ties_to_lower_loss=True,
            checkpoint_every=self.checkpoint_every,
            precision=self.precision,
            seed=self.seed,
            desc="fine-tuning",
            resume_key=self.model_dump(exclude={"max_epochs", "max_steps", "num_threads", "tracking_uri"}),
        )
