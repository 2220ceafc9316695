"""TF-IDF + logistic regression: the cheap, strong reference scorer every new model must beat.

Word 1-2 grams and character 2-5 grams (inside word boundaries, so obfuscations like `ph0ne` or split
words still share n-grams) over the de-obfuscated text, then a logistic regression: multinomial for
single-label tasks, one binary model per category for multi-label ones. Logistic regression fitted by
log loss without class weights gives usable probabilities as they come; `class_weight="balanced"` trades
that calibration for recall on rare classes.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from finesieve.data.errors import DataError
from finesieve.data.normalize import normalize_for_scoring
from finesieve.models.base import check_fit_inputs, check_is_fitted, prepare_inputs


class TfidfConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    word_ngrams: tuple[int, int] = Field((1, 2), description="Word n-gram range.")
    char_ngrams: tuple[int, int] = Field((2, 5), description="Character n-gram range (within word boundaries).")
    max_features: int = Field(200_000, gt=0, description="Vocabulary cap per analyser.")
    min_df: int = Field(2, ge=1, description="Ignore n-grams seen in fewer documents.")
    C: float = Field(4.0, gt=0, description="Inverse regularisation strength of the logistic regression.")
    class_weight: Literal["balanced"] | None = Field(
        None, description="'balanced' up-weights rare classes (less calibrated)."
    )
    max_iter: int = Field(2000, gt=0, description="Solver iterations.")


class TfidfLogReg:
    """Scorer: `fit(texts, labels)`, `predict_proba(texts)` in `classes_` order."""

    kind = "tfidf"  # the run kind written in manifest.json (finesieve.models.kinds)

    def __init__(
        self,
        word_ngrams=(1, 2),
        char_ngrams=(2, 5),
        max_features=200_000,
        min_df=2,
        C=4.0,
        class_weight=None,
        max_iter=2000,
    ):
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.max_features = max_features
        self.min_df = min_df
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter

    @classmethod
    def from_config(cls, config: TfidfConfig) -> TfidfLogReg:
        return cls(**config.model_dump())

    def get_config(self) -> TfidfConfig:
        return TfidfConfig(
            word_ngrams=self.word_ngrams,
            char_ngrams=self.char_ngrams,
            max_features=self.max_features,
            min_df=self.min_df,
            C=self.C,
            class_weight=self.class_weight,
            max_iter=self.max_iter,
        )

    def _features(self, min_df: int):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        common = dict(
            preprocessor=normalize_for_scoring,
            lowercase=False,
            sublinear_tf=True,
            dtype=np.float32,
            max_features=self.max_features,
            min_df=min_df,
        )
        return FeatureUnion(
            [
                (
                    "word",
                    TfidfVectorizer(
                        analyzer="word", ngram_range=tuple(self.word_ngrams), token_pattern=r"(?u)<?\b\w+\b>?", **common
                    ),
                ),
                ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(self.char_ngrams), **common)),
            ]
        )

    def fit(self, texts: Sequence[str], labels: Sequence, multilabel: bool | None = None) -> TfidfLogReg:
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        texts, tuples, multilabel = check_fit_inputs(texts, labels, multilabel)
        classes = sorted({c for t in tuples for c in t})
        # min_df=2 cannot work on a handful of texts: keep every n-gram instead (min_df itself stays as given).
        self.min_df_ = 1 if len(texts) < 2 * max(1, len(classes)) else self.min_df
        self.features_ = self._features(self.min_df_)
        X = self.features_.fit_transform(texts)
        lr = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter)
        if multilabel:
            y = np.array([[c in t for c in classes] for t in tuples], dtype=int)
            self.model_ = OneVsRestClassifier(lr).fit(X, y)
        else:
            if len(classes) < 2:
                raise DataError(f"labels hold one class only ({classes}): a classifier needs at least two")
            self.model_ = lr.fit(X, [t[0] for t in tuples])
            classes = [str(c) for c in self.model_.classes_]
        self.classes_ = np.array(classes)
        self.multilabel_ = multilabel
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        check_is_fitted(self)
        texts = prepare_inputs(self, texts)
        if not texts:
            return np.zeros((0, len(self.classes_)))
        return self.model_.predict_proba(self.features_.transform(texts))

    def save(self, directory: str | Path) -> None:
        check_is_fitted(self)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Trusted, self-written artifact; the config beside it says how it was built.
        with open(directory / "tfidf_logreg.pkl", "wb") as fh:
            pickle.dump(
                {
                    "features": self.features_,
                    "model": self.model_,
                    "classes": self.classes_.tolist(),
                    "multilabel": self.multilabel_,
                    "min_df": self.min_df_,
                },
                fh,
            )
        (directory / "scorer_config.json").write_text(
            json.dumps(self.get_config().model_dump(), indent=2, sort_keys=True)
        )

    @classmethod
    def load(cls, directory: str | Path) -> TfidfLogReg:
        directory = Path(directory)
        config = TfidfConfig(**json.loads((directory / "scorer_config.json").read_text()))
        scorer = cls.from_config(config)
        with open(directory / "tfidf_logreg.pkl", "rb") as fh:
            state = pickle.load(fh)
        scorer.features_, scorer.model_ = state["features"], state["model"]
        scorer.classes_, scorer.multilabel_ = np.array(state["classes"]), state["multilabel"]
        scorer.min_df_ = state.get("min_df", config.min_df)  # older files: saved with min_df rewritten in the config
        return scorer
