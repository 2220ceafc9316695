"""The one interface every scorer speaks: texts in, calibrated probabilities per class out.

Modelled on scikit-learn estimators: the constructor only stores its arguments, `fit` does the work and
returns `self`, learned state ends in `_`, and `predict_proba` returns (n_texts, n_classes) in `classes_`
order. Single-label scorers return rows that sum to 1; multi-label scorers return one independent
probability per category. The prompt baseline, pre-filter, fine-tuned model and cascade all follow it, so
`finesieve.evals` evaluates them with the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel

from finesieve.data.errors import ConfigError
from finesieve.data.preprocess import Preprocessing, prepare_for


@runtime_checkable
class Scorer(Protocol):
    """What every scorer (and the cascade) provides; `finesieve.models.checks.check_scorer` checks each rule."""

    kind: str  # a class attribute: the run kind written in manifest.json (finesieve.models.kinds)
    classes_: np.ndarray
    multilabel_: bool

    def fit(self, texts: Sequence[str], labels: Sequence, multilabel: bool | None = None) -> Scorer: ...

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...

    def save(self, directory: str | Path) -> None: ...

    @classmethod
    def load(cls, directory: str | Path) -> Scorer: ...

    def get_config(self) -> BaseModel: ...


class NotFittedError(RuntimeError):
    """A scorer was used before `fit` (or `load`)."""


def check_is_fitted(scorer, attribute: str = "classes_") -> None:
    if not hasattr(scorer, attribute):
        name = type(scorer).__name__
        raise NotFittedError(f"This {name} is not fitted yet: call {name}.fit(texts, labels) or load a run first.")


def check_texts(texts: Sequence[str]) -> list[str]:
    """Refuse a bare string (a common slip that would score each character) and non-text items."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, got one str: wrap it in a list, e.g. [text]")
    texts = texts if isinstance(texts, list) else list(texts)  # a list subclass (PreparedTexts) keeps its tag
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str: convert or drop it before scoring")
    return texts


def set_preprocessing(scorer: Scorer, preprocessing: Preprocessing | None) -> None:
    """Make `scorer` prepare the raw texts it is given as `preprocessing` says (None: take them as given); the
    run loader calls it with the run's recorded preprocessing (see `prepare_inputs`)."""
    scorer.preprocessing_ = preprocessing  # type: ignore[attr-defined]  # an optional attribute, not in the protocol


def prepare_inputs(scorer, texts: Sequence[str]) -> list[str]:
    """`check_texts`, then the preprocessing of the run the scorer was loaded from (`preprocessing_`, set by
    `finesieve.runs.load_run`), so that raw text is cleaned and redacted as the training texts were. A scorer
    fitted in memory has none: its caller prepared the training texts and prepares what it scores the same way.
    Every `predict_proba` starts here."""
    return prepare_for(check_texts(texts), getattr(scorer, "preprocessing_", None))


def infer_multilabel(labels: Sequence) -> bool:
    """Multi-label when labels come as collections of class names rather than one name each."""
    return bool(len(labels)) and not isinstance(labels[0], str)


def check_fit_inputs(
    texts: Sequence[str], labels: Sequence, multilabel: bool | None
) -> tuple[list[str], list[tuple[str, ...]], bool]:
    """The checks every `fit` starts with: (texts as a list, labels as tuples of class names, multilabel)."""
    texts = check_texts(texts)
    if len(texts) != len(labels):
        raise ValueError(f"texts and labels differ in length ({len(texts)} vs {len(labels)}): pass one label per text")
    if multilabel is None:
        multilabel = infer_multilabel(labels)
    return texts, label_tuples(labels, multilabel), multilabel


def label_tuples(labels: Sequence, multilabel: bool) -> list[tuple[str, ...]]:
    """Normalise labels to tuples of class names (one element for single-label tasks)."""
    if multilabel:
        return [tuple(str(c) for c in lbl) for lbl in labels]
    return [(str(lbl),) for lbl in labels]


def positive_scores(proba: np.ndarray, classes: Sequence[str], positive: Sequence[str], multilabel: bool) -> np.ndarray:
    """Score of "the message belongs to a positive class" from per-class probabilities.

    Single-label: P(y in positive) is the sum of their probabilities (exact, since classes exclude each
    other). Multi-label: the largest of them, a lower bound of P(any) that needs no independence assumption.
    """
    classes = [str(c) for c in classes]
    missing = [p for p in positive if p not in classes]
    if missing:
        raise ConfigError(
            f"positive class(es) {missing} not among the scorer's classes {classes}: pass one of those with --positive"
        )
    cols = [classes.index(p) for p in positive]
    part = proba[:, cols]
    return part.max(axis=1) if multilabel else part.sum(axis=1)
