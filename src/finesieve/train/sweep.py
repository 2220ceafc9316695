"""A hyper-parameter sweep for fine-tuning, judged on the validation split only: how the default recipe is chosen.

    finesieve sweep --data FILE --positive hate_speech --learning-rate 1e-4,3e-4,1e-3 --batch-size 16,32 --max-steps 300
    finesieve sweep --data FILE --positive hate_speech --grid method=lora,full --grid soft_labels=0,0.5 --vote-col ...

Every combination fine-tunes from the same base on the same training split and is scored on the validation
split (the metric early stopping uses: PR AUC of the positive classes, with ROC AUC beside it, each with a 95%
bootstrap interval) and on the validation split evaded (`data.evasion`), so a recipe that only holds on clean
spelling shows it. Any `FinetuneConfig` setting can be a grid axis. The test split is never touched, so the
winner can then be trained with `finesieve train` and evaluated honestly. A search of hours can be stopped: run
the same command again and the trials already in `sweep.json` are kept, the rest run.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from finesieve.data.dataset import Dataset
from finesieve.data.errors import ConfigError
from finesieve.data.evasion import EvasionConfig, evade_texts
from finesieve.data.split import SplitConfig, make_splits
from finesieve.evals import metrics as M
from finesieve.evals.bootstrap import bootstrap_ci
from finesieve.evals.harness import score_positive
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.models.finetuned import FineTunedScorer
from finesieve.outputs import write_text

DEFAULT_EVASION = EvasionConfig()  # every kind, seed 0: the same evaded validation texts for every trial


def run_sweep(
    base: FinetuneConfig,
    dataset: Dataset,
    grid: dict[str, Sequence],
    *,
    positive: Sequence[str],
    out: str | Path,
    split_config: SplitConfig | None = None,
    evasion: EvasionConfig | None = DEFAULT_EVASION,
    n_boot: int = 500,
) -> list[dict]:
    """Fine-tune once per combination of `grid` values; returns the trials, best validation PR AUC first.
    Annotators' votes reach the trials that set `soft_labels` > 0, as in `finesieve train`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = make_splits(dataset, split_config or SplitConfig())
    train, val = splits.dataset("train"), splits.dataset("val")
    y_val = val.violation(positive)
    evaded = evade_texts(val.texts, evasion)[0] if evasion is not None else None
    shares = train.vote_shares()
    keys = list(grid)
    trials = _finished_trials(out / "sweep.json", base, splits.split_hash, keys)
    done = [{k: t[k] for k in keys} for t in trials]
    if trials:
        print(f"resuming {out / 'sweep.json'}: {len(trials)} trial(s) already done are kept, not re-run")
    for values in itertools.product(*(grid[k] for k in keys)):
        settings = dict(zip(keys, values))
        if settings in done:
            continue
        # Validated as a whole: each combination must make a valid config.
        config = FinetuneConfig.model_validate(
            {**base.model_dump(), **settings, "tracking_uri": base.tracking_uri or "none"}
        )
        started = time.perf_counter()
        scorer = FineTunedScorer(config).fit(
            train.texts,
            train.labels,
            multilabel=train.multilabel,
            val_texts=val.texts,
            val_labels=val.labels,
            positive=positive,
            out_dir=out / "_checkpoints",
            vote_shares=(
                pd.DataFrame(shares, columns=train.classes) if shares is not None and config.soft_labels > 0 else None
            ),
        )
        seconds = round(time.perf_counter() - started, 1)
        scores, _, _ = score_positive(scorer, val.texts, positive)
        trial = {
            **settings,
            "val_pr_auc": M.pr_auc(y_val, scores),
            "val_roc_auc": M.roc_auc(y_val, scores),
            "steps": scorer.training_["steps"],
            "seconds": seconds,
        }
        if n_boot:
            trial["val_pr_auc_ci95"] = list(bootstrap_ci(M.pr_auc, y_val, scores, n_boot=n_boot))
            trial["val_roc_auc_ci95"] = list(bootstrap_ci(M.roc_auc, y_val, scores, n_boot=n_boot))
        if evaded is not None:
            evaded_scores, _, _ = score_positive(scorer, evaded, positive)
            trial["val_evaded_roc_auc"] = M.roc_auc(y_val, evaded_scores)
            trial["val_evaded_pr_auc"] = M.pr_auc(y_val, evaded_scores)
        trials.append(trial)
        write_text(
            out / "sweep.json",
            json.dumps({"base": base.model_dump(), "split_hash": splits.split_hash, "trials": trials}, indent=2),
        )
    wanted = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    return sorted((t for t in trials if {k: t[k] for k in keys} in wanted), key=lambda t: -t["val_pr_auc"])


def _finished_trials(path: Path, base: FinetuneConfig, split_hash: str, keys: list[str]) -> list[dict]:
    """The trials an interrupted sweep into the same folder already finished, so that a search of hours can be
    stopped and continued. Only a sweep of the same base settings, split and axes continues; anything else
    would mix recipes judged differently, so it stops with the fix instead of overwriting those results."""
    if not path.exists():
        return []
    try:
        saved = json.loads(path.read_text())
        saved_base, saved_hash, trials = saved["base"], saved["split_hash"], list(saved["trials"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a sweep.json this version can continue ({err}); use another --out") from None
    current = json.loads(json.dumps(base.model_dump()))
    changed = sorted(k for k in set(current) | set(saved_base) if current.get(k) != saved_base.get(k))
    saved_axes = set(trials[0]) & set(current) if trials else set(keys)  # a trial holds its settings and metrics
    if changed:
        problem = f"its fixed settings differ ({', '.join(changed)})"
    elif saved_hash != split_hash:
        problem = "it was judged on another split (data, rows or seed differ)"
    elif saved_axes != set(keys):
        problem = f"its axes differ ({', '.join(sorted(saved_axes))} vs {', '.join(keys)})"
    else:
        return trials
    raise ConfigError(
        f"{path} holds another sweep: {problem}. Give another --out, or delete that sweep.json to start over"
    )
