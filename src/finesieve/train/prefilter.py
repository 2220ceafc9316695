"""Train the pre-filter that sits in front of the fine-tuned model into a run directory: a character CNN
(robust to obfuscation; the default) or TF-IDF + logistic regression.

    scorer = prefilter_scorer("char_cnn", ["channels=32"])  # settings checked before any data is read
    fitted = fit_prefilter(scorer, "char_cnn", dataset, positive=["hate_speech"], out="runs/prefilter")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from finesieve.data.dataset import Dataset
from finesieve.data.split import SplitConfig, make_splits
from finesieve.models.char_cnn import CharCNNConfig, CharCNNScorer
from finesieve.models.tfidf import TfidfConfig, TfidfLogReg
from finesieve.train.config import parse_assignments, validate_settings
from finesieve.train.recipe import FittedRun, fit_and_save

# kind (the run's kind too) -> (its config, its scorer)
PREFILTER_KINDS = {"char_cnn": (CharCNNConfig, CharCNNScorer), "tfidf": (TfidfConfig, TfidfLogReg)}


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
) -> FittedRun:
    """Split, fit on train, choose the threshold on validation, evaluate on test and the corner-case sets, save.
    The character CNN also gets the validation split for early stopping and calibration."""
    splits = make_splits(dataset, split_config or SplitConfig())
    val = splits.dataset("val")
    fit_kwargs = {"val_texts": val.texts, "val_labels": val.labels} if kind == "char_cnn" else {}
    return fit_and_save(
        scorer,
        kind,
        splits,
        positive=positive,
        out=out,
        fit_kwargs=fit_kwargs,
        corner_sets=corner_sets,
        name=kind,
        overwrite=overwrite,
    )
