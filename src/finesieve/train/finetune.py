"""Fine-tune a transformer classifier (LoRA, QLoRA or full) and write a run directory.

    finesieve train --data messages.csv --text-col text --label-col label --positive hate_speech --out runs/ft

`train_finetune` is the recipe: split, mix in replayed rows from an earlier run, fine-tune with early
stopping on the validation split, calibrate on it, pick the threshold on it, evaluate on the held-out test
split and the corner-case sets, track the run in MLflow, save everything. The fit itself (build the model,
tokenise, run `train_loop`, calibrate) is `FineTunedScorer.fit`, in `finesieve.models.finetuned`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from finesieve.data.dataset import Dataset
from finesieve.data.errors import ConfigError
from finesieve.data.split import SplitConfig, Splits, make_splits
from finesieve.manifest import BaseWeights
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.models.finetuned import FineTunedScorer
from finesieve.models.text_classifier import weights_hash
from finesieve.models.training_loop import CHECKPOINT, CHECKPOINTS
from finesieve.outputs import partial_path, start_run_dir
from finesieve.train.recipe import FittedRun, fit_and_save
from finesieve.train.replay import replay_rows
from finesieve.train.tracking import Tracker


def train_finetune(
    config: FinetuneConfig,
    dataset: Dataset,
    *,
    positive: Sequence[str],
    out: str | Path,
    split_config: SplitConfig | None = None,
    splits: Splits | None = None,
    corner_sets: dict[str, Dataset] | None = None,
    resume: bool = False,
    n_boot: int = 1000,
    name: str = "fine-tuned",
    overwrite: bool = False,
    parent_run: str | None = None,
    extra: Callable[[object], dict] | None = None,
    reference_embeddings: bool = False,
) -> FittedRun:
    """Checkpoints are written into the run's staging folder `OUT.partial`, which becomes OUT when the run is
    complete; `resume` continues from the checkpoint an interrupted run left there. `parent_run` is recorded as
    the run this one continues (default: `config.replay_from`); `extra(scorer)`, called once the scorer is fitted
    and before the run is saved, adds manifest sections (`finesieve retrain` runs its gate there).
    `reference_embeddings` saves sentence embeddings of a validation sample with the run for the monitor's
    embedding distance (seconds; `finesieve train` asks for it, tests do not)."""
    out = Path(out)
    checkpoint = partial_path(out) / CHECKPOINTS / CHECKPOINT
    if checkpoint.exists() and not (resume or overwrite):
        raise ConfigError(
            f"{checkpoint} holds the checkpoint of an interrupted run: pass --resume to continue it, "
            "or --overwrite to start afresh"
        )
    staging = start_run_dir(out, overwrite=overwrite, keep_partial=resume)
    splits = splits or make_splits(dataset, split_config or SplitConfig())
    train, val = splits.dataset("train"), splits.dataset("val")
    replay_info, parent = None, None
    if config.replay_from:
        train, replay_info = replay_rows(
            config.replay_from,
            train,
            exclude=[val, splits.dataset("test")],
            fraction=config.replay_fraction,
            seed=config.seed,
        )
        parent = str(config.replay_from)
    parent = parent_run or parent
    tracker = Tracker(config, out)
    scorer = FineTunedScorer(config)
    shares = train.vote_shares()
    vote_shares = pd.DataFrame(shares, columns=train.classes) if shares is not None and config.soft_labels > 0 else None
    with tracker:
        tracker.log_params(
            {
                **config.model_dump(),
                "n_train": len(train),
                "data_hash": dataset.content_hash,
                "split_hash": splits.split_hash,
            }
        )
        fitted = fit_and_save(
            scorer,
            "finetuned",
            splits,
            positive=positive,
            out=out,
            train=train,
            fit_kwargs={
                "val_texts": val.texts,
                "val_labels": val.labels,
                "out_dir": staging,
                "resume": resume,
                "positive": positive,
                "tracker": tracker,
                "vote_shares": vote_shares,
            },
            corner_sets=corner_sets,
            n_boot=n_boot,
            name=name,
            parent_run=parent,
            overwrite=overwrite,
            staging=staging,
            reference_embeddings=reference_embeddings,
            extra=lambda s: {
                "training": s.training_,
                "replay": replay_info,
                "tracking": tracker.info(),
                **(extra(s) if extra is not None else {}),
            },
            base_model=BaseWeights(name=config.model, content_hash=weights_hash(config.model)),
        )
        m = fitted.test_result.to_dict()
        tracker.log_metrics(
            {f"test_{k}": m[k] for k in ("roc_auc", "pr_auc", "precision", "recall", "f1") if m[k] is not None}
        )
        tracker.log_artifact(out / "manifest.json")
    return fitted
