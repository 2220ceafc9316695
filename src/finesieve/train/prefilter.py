"""Train the pre-filter that sits in front of the fine-tuned model into a run directory: a character CNN
(robust to obfuscation; the default) or TF-IDF + logistic regression; the CNN can be distilled from a teacher run.

    scorer = prefilter_scorer("char_cnn", ["channels=32"])  # settings checked before any data is read
    fitted = fit_prefilter(scorer, "char_cnn", dataset, positive=["hate_speech"], out="runs/prefilter")
    # Distilled: the CNN also learns from the fine-tuned model's probabilities on the training split.
    fitted = fit_prefilter(scorer, "char_cnn", dataset, positive=["hate_speech"], out="runs/cnn-distilled",
                           teacher="runs/ft")

Distillation (`teacher=RUN_DIR`): the teacher run is loaded, checked to be trained on this very data (its content
hash) and on none of this split's validation or test rows, and scores the training split; the CNN is then fitted
on the mix (1 - w) x label + w x teacher probability (`CharCNNConfig.distill_weight`, 0.5 unless set). The
teacher's scores on the training split are in-sample (it trained on those rows too): that is the usual practice
of distillation (Hinton et al. 2015 distil on the teacher's own training set), since the student should copy the
function the teacher learned where the teacher knows it best, and the held-out rows must stay untouched for the
student's early stopping, threshold and test. A teacher overfitted to its training rows gives targets close to
the labels there, so little changes; a smoother teacher (a fine-tuned transformer, an ensemble) passes on more.
The run's manifest records the teacher run (path, kind, sha256 of its manifest.json) and the weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from finesieve.data.dataset import Dataset
from finesieve.data.errors import ConfigError
from finesieve.data.split import SplitConfig, Splits, make_splits
from finesieve.models.char_cnn import CharCNNConfig, CharCNNScorer
from finesieve.models.tfidf import TfidfConfig, TfidfLogReg
from finesieve.runs import Run, check_trained_apart, load_run
from finesieve.train.config import parse_assignments, validate_settings
from finesieve.train.ensemble import run_reference
from finesieve.train.recipe import FittedRun, fit_and_save

# kind (the run's kind too) -> (its config, its scorer)
PREFILTER_KINDS = {"char_cnn": (CharCNNConfig, CharCNNScorer), "tfidf": (TfidfConfig, TfidfLogReg)}
DEFAULT_DISTILL_WEIGHT = 0.5  # with a teacher and no weight set: half label, half teacher


def prefilter_scorer(kind: str, settings: Sequence[str] = ()):
    """An unfitted pre-filter of `kind` (a key of PREFILTER_KINDS) from `key=value` settings; a misspelt
    setting is refused with the closest valid name."""
    config_cls, scorer_cls = PREFILTER_KINDS[kind]
    config = validate_settings(config_cls, parse_assignments(list(settings)), f"--set ({kind} settings)")
    return scorer_cls.from_config(config)


def fit_prefilter(
    scorer,
    kind: str,
    dataset: Dataset,
    *,
    positive: Sequence[str],
    out: str | Path,
    split_config: SplitConfig | None = None,
    corner_sets: dict[str, Dataset] | None = None,
    overwrite: bool = False,
    teacher: str | Path | None = None,
    distill_weight: float | None = None,
) -> FittedRun:
    """Split, fit on train, choose the threshold on validation, evaluate on test and the corner-case sets, save.
    The character CNN also gets the validation split for early stopping and calibration.

    `teacher`: a run directory (any kind `runs.load_run` loads) trained on this dataset; the CNN distils from its
    probabilities on the training split, with `distill_weight` (default: the scorer's own `distill_weight` when it
    is above 0, else 0.5). The fitted scorer (`FittedRun.scorer`) is then a copy of `scorer` with that weight."""
    splits = make_splits(dataset, split_config or SplitConfig())
    val = splits.dataset("val")
    fit_kwargs = {"val_texts": val.texts, "val_labels": val.labels} if kind == "char_cnn" else {}
    extra = None
    if teacher is not None:
        scorer, teacher_kwargs, extra = _distillation(scorer, kind, teacher, distill_weight, splits)
        fit_kwargs.update(teacher_kwargs)
    elif distill_weight:
        raise ConfigError(
            f"distill_weight={distill_weight} needs a teacher: pass teacher=RUN_DIR (--teacher), or leave the "
            "weight out"
        )
    return fit_and_save(
        scorer,
        kind,
        splits,
        positive=positive,
        out=out,
        fit_kwargs=fit_kwargs,
        corner_sets=corner_sets,
        name=kind,
        extra=extra,
        overwrite=overwrite,
    )


def _distillation(
    scorer, kind: str, teacher: str | Path, weight: float | None, splits: Splits
) -> tuple[CharCNNScorer, dict, dict]:
    """(the CNN with its distill weight set, the fit arguments carrying the teacher's training-split probabilities,
    the manifest section naming the teacher)."""
    if kind != "char_cnn" or not isinstance(scorer, CharCNNScorer):
        raise ConfigError(
            f"--teacher {teacher}: distillation trains the char_cnn pre-filter only (this one is {kind}); a tfidf "
            "pre-filter learns from the labels alone: use --kind char_cnn or leave --teacher out"
        )
    run = load_run(teacher)
    check_teacher(run, splits)
    if weight is None:
        weight = scorer.distill_weight if scorer.distill_weight > 0 else DEFAULT_DISTILL_WEIGHT
    # A new scorer from the validated config, rather than setting the weight on the caller's scorer from outside.
    config = CharCNNConfig.model_validate({**scorer.get_config().model_dump(), "distill_weight": weight})
    train = splits.dataset("train")
    # In-sample: the teacher trained on these rows (see the module docstring for why that is the practice).
    teacher_proba = np.asarray(run.scorer.predict_proba(train.texts), dtype=float)
    section = {
        "distillation": {
            "teacher": run_reference(run),
            "weight": weight,
            "target": "(1 - weight) x one-hot label + weight x teacher probability",
            "teacher_scores": f"in-sample, on the training split ({len(train)} rows)",
        }
    }
    kwargs = {"teacher_proba": teacher_proba, "teacher_classes": [str(c) for c in run.scorer.classes_]}
    return CharCNNScorer.from_config(config), kwargs, section


def check_teacher(run: Run, splits: Splits) -> None:
    """Refuse a teacher run trained on other data, on other labels, or on rows this split holds out."""
    data = splits.source
    if not isinstance(data, Dataset):
        raise ConfigError(f"--teacher {run.path}: distillation trains a classifier; {data.source} is not labelled")
    data_hash = run.manifest.data.get("content_hash")
    if data_hash != data.content_hash:
        raise ConfigError(
            f"--teacher {run.path}: it was trained on data with content hash {str(data_hash)[:12]}…, but this data "
            f"hashes to {data.content_hash[:12]}…, so its scores on these training rows are not its own "
            "in-sample scores. Fix: pass the file the teacher was trained on, or train a teacher on this file"
        )
    theirs, ours = sorted(map(str, run.scorer.classes_)), sorted(map(str, data.classes))
    if theirs != ours or bool(run.scorer.multilabel_) != bool(data.multilabel):
        raise ConfigError(
            f"--teacher {run.path}: its classes {theirs} (multi-label: {bool(run.scorer.multilabel_)}) differ from "
            f"the data's {ours} (multi-label: {bool(data.multilabel)}): distil from a teacher of this task"
        )
    check_trained_apart(
        run,
        splits,
        what=f"--teacher {run.path}",
        why="the student would learn their labels through it",
        fix="train the teacher on this file with the same --seed as the pre-filter",
    )
