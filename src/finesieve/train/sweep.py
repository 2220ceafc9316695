"""A short hyper-parameter sweep for fine-tuning, judged on the validation split only.

    finesieve sweep --data FILE --positive hate_speech --learning-rate 1e-4,3e-4,1e-3 --batch-size 16,32 --max-steps 300

Every combination fine-tunes from the same base on the same training split and is scored on the validation
split (the metric early stopping uses: PR AUC of the positive classes, with ROC AUC beside it). The test
split is never touched, so the winner can then be trained with `finesieve train` and evaluated honestly.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path

from finesieve.data.dataset import Dataset
from finesieve.data.split import SplitConfig, make_splits
from finesieve.evals import metrics as M
from finesieve.evals.harness import score_positive
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.models.finetuned import FineTunedScorer
from finesieve.outputs import write_text


def run_sweep(
    base: FinetuneConfig,
    dataset: Dataset,
    grid: dict[str, Sequence],
    *,
    positive: Sequence[str],
    out: str | Path,
    split_config: SplitConfig | None = None,
) -> list[dict]:
    """Fine-tune once per combination of `grid` values; returns the trials, best validation PR AUC first."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = make_splits(dataset, split_config or SplitConfig())
    train, val = splits.dataset("train"), splits.dataset("val")
    y_val = val.violation(positive)
    keys = list(grid)
    trials = []
    for values in itertools.product(*(grid[k] for k in keys)):
        settings = dict(zip(keys, values))
        config = base.model_copy(update={**settings, "tracking_uri": base.tracking_uri or "none"})
        config = FinetuneConfig.model_validate(config.model_dump())  # re-validate the combination
        started = time.perf_counter()
        scorer = FineTunedScorer(config).fit(
            train.texts,
            train.labels,
            multilabel=train.multilabel,
            val_texts=val.texts,
            val_labels=val.labels,
            positive=positive,
            out_dir=out / "_checkpoints",
        )
        scores, _, _ = score_positive(scorer, val.texts, positive)
        trials.append(
            {
                **settings,
                "val_pr_auc": M.pr_auc(y_val, scores),
                "val_roc_auc": M.roc_auc(y_val, scores),
                "steps": scorer.training_["steps"],
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        write_text(
            out / "sweep.json",
            json.dumps({"base": base.model_dump(), "split_hash": splits.split_hash, "trials": trials}, indent=2),
        )
    return sorted(trials, key=lambda t: -t["val_pr_auc"])
