"""A stacked ensemble: fitted scorers combined by a logistic regression fitted on held-out data.

    from finesieve.models.ensemble import StackedEnsemble
    ensemble = StackedEnsemble({"tfidf": tfidf, "cnn": cnn})   # members already fitted, on the training split
    ensemble.fit(val_texts, val_labels)     # fits the STACKER only, on held-out texts the members never trained on
    ensemble.predict_proba(texts)           # (n, n_classes) in classes_ order: the stacker's calibrated probability
    ensemble.weights_                       # {"tfidf": 0.7, "cnn": 0.3}: which member the stacker leans on
    ensemble.save("runs/ens/model"); StackedEnsemble.load("runs/ens/model")

`fit(texts, labels)` fits the stacker and nothing else: the members are used as they are and are never refitted.
Pass it data the members did not train on (the validation split; `finesieve.train.ensemble.fit_ensemble` does so
from run directories). A member scores its own training texts too well (TF-IDF all but memorises them), and a
stacker fitted on those scores learns to trust the most overfitted member.

How a message is scored, for m members and k classes:
  1. Each member's probabilities (n, k), columns put in the ensemble's `classes_` order, clipped to
     [clip, 1 - clip] so a confident 0 or 1 gives a finite feature.
  2. Single-label: the features are the log-probabilities, (n, m * k), and the stacker is a multinomial logistic
     regression (for k = 2 the binary one, the same model) whose softmax is the output. A stacker that puts
     weight w_j on member j's own column of each class returns prod_j p_j^w_j / Z, a weighted geometric mean of
     the members ("product of experts", the natural pooling of calibrated probabilities); the full model also
     lets one member's score for a class move another class.
     Multi-label: the features are the clipped logits log p - log(1 - p) of every member and category, and one
     binary logistic regression per category gives that category's probability.
  3. The stacker is fitted by log loss on held-out data, so its probabilities are calibrated as they come; L2
     regularisation with strength 1 / C. With `cv_folds` >= 2, C is chosen among `Cs` by the mean out-of-fold
     log loss over stratified folds of that held-out data (per category for multi-label); `report_` keeps the
     loss per C and each member's own held-out log loss beside the stacker's.
The features are log-probabilities on one scale and are not standardised, so the coefficients are exponents.
`weights_` is each member's share of what moves the stacker's output: the spread, over the held-out rows, of the
part of the logits that member contributes (coefficients alone would mislead, as a member whose scores barely
move gets large coefficients for a small effect).

Saved as `ensemble.json` (config, classes, members' names and kinds in feature order, the coefficients and
intercepts, the report: JSON only, no pickle) plus `members/NAME/`, each member's own files, loaded back by its
kind (`finesieve.models.kinds`). The ensemble's run kind, "ensemble", is registered in `finesieve.runs` beside the
cascade: like the cascade, it is a scorer made of the plain scorers of `models.kinds`.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

import finesieve
from finesieve.data.errors import ConfigError, DataError, config_error
from finesieve.models.base import Scorer, check_fit_inputs, check_is_fitted, prepare_inputs
from finesieve.models.kinds import MODEL_KINDS, kind_of

STATE_FILE = "ensemble.json"
MEMBERS = "members"
MEMBER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # each member is saved in a folder of its name


class EnsembleConfig(BaseModel):
    """How the stacker is fitted; the members are not part of the config (they are fitted scorers)."""

    model_config = ConfigDict(extra="forbid")

    C: float = Field(1.0, gt=0, description="Inverse L2 strength of the stacker when cv_folds is 0 (or CV cannot run).")
    cv_folds: int = Field(
        5,
        ge=0,
        description=(
            "Stratified folds of the held-out data over which C is chosen among Cs by out-of-fold log loss; 0 uses C "
            "as given. Fewer folds are used when a class has fewer examples; below 2, C is used as given."
        ),
    )
    Cs: tuple[float, ...] = Field(
        (0.01, 0.1, 1.0, 10.0, 100.0), description="The C values cross-validation chooses among."
    )
    clip: float = Field(
        1e-6, gt=0, lt=0.5, description="Member probabilities are clipped to [clip, 1 - clip] before the log."
    )
    max_iter: int = Field(1000, gt=0, description="Iterations of the stacker's LBFGS solver.")
    seed: int = Field(0, description="Shuffles the cross-validation folds.")

    @model_validator(mode="after")
    def _check(self) -> EnsembleConfig:
        if self.cv_folds == 1:
            raise ValueError("cv_folds is 1: use 0 to take C as given, or 2 or more folds to choose C among Cs")
        if self.cv_folds >= 2 and (not self.Cs or any(c <= 0 for c in self.Cs)):
            raise ValueError(f"Cs must hold one or more positive values for cv_folds={self.cv_folds}; got {self.Cs}")
        return self


class StackedEnsemble:
    """Scorer: member scorers (name -> fitted scorer, same classes) and a stacker fitted on held-out data.

    Learned attributes: classes_, multilabel_, member_names_ (feature order), coef_ ((k, m * k): one row per class
    or category, one column per member and class), intercept_ ((k,)), C_ (the stacker's C: (1,) single-label, (k,)
    multi-label), weights_ (member name -> its share of the spread of the stacker's logits on the held-out rows,
    summing to 1), report_ (the cross-validation losses per C, each member's held-out log loss and the stacker's).
    """

    kind = "ensemble"  # the run kind written in manifest.json (registered in finesieve.runs.SCORER_KINDS)

    def __init__(
        self,
        members: Mapping[str, Scorer],
        C=1.0,
        cv_folds=5,
        Cs=(0.01, 0.1, 1.0, 10.0, 100.0),
        clip=1e-6,
        max_iter=1000,
        seed=0,
    ):
        self.members = members
        self.C = C
        self.cv_folds = cv_folds
        self.Cs = Cs
        self.clip = clip
        self.max_iter = max_iter
        self.seed = seed

    @classmethod
    def from_config(cls, config: EnsembleConfig, members: Mapping[str, Scorer]) -> StackedEnsemble:
        return cls(members, **config.model_dump())

    def get_config(self) -> EnsembleConfig:
        try:
            return EnsembleConfig(**{name: getattr(self, name) for name in EnsembleConfig.model_fields})
        except ValidationError as err:
            raise config_error(err, f"{type(self).__name__} settings", EnsembleConfig) from None

    # ----------------------------------------------------------------------------------------- members

    def _checked_members(self) -> tuple[list[str], list[str], bool]:
        """(member names in feature order, the classes sorted, multilabel): every member fitted, on one label set."""
        if not isinstance(self.members, Mapping) or not self.members:
            raise ConfigError(
                f"{type(self).__name__} needs members as a dict of name -> fitted scorer, got {self.members!r:.80}: "
                "pass e.g. {'tfidf': tfidf, 'cnn': cnn}"
            )
        names = [str(n) for n in self.members]
        bad = [n for n in names if not MEMBER_NAME.match(n)]
        if bad:
            raise ConfigError(
                f"member name(s) {bad} cannot name a folder: use letters, digits, '_', '.' or '-' (each member is "
                f"saved in {MEMBERS}/NAME)"
            )
        first_name, first = next(iter(self.members.items()))
        for member in self.members.values():
            check_is_fitted(member)
        classes = sorted(str(c) for c in first.classes_)
        for name, member in self.members.items():
            theirs = sorted(str(c) for c in member.classes_)
            if theirs != classes:
                raise ConfigError(
                    f"member '{name}' has classes {theirs} but member '{first_name}' has {classes}: "
                    "ensemble scorers trained on the same labels"
                )
            if bool(member.multilabel_) != bool(first.multilabel_):
                raise ConfigError(
                    f"member '{name}' is {'multi' if member.multilabel_ else 'single'}-label but member "
                    f"'{first_name}' is not: ensemble scorers of one task"
                )
        return names, classes, bool(first.multilabel_)

    def _features(self, texts: list[str], names: Sequence[str], classes: list[str], multilabel: bool) -> np.ndarray:
        """The stacker's inputs (n, m * k): per member, its clipped log-probabilities (single-label) or logits
        (multi-label) in `classes` order."""
        blocks = []
        for name in names:
            member = self.members[name]
            proba = np.asarray(member.predict_proba(texts), dtype=float)
            if proba.shape != (len(texts), len(classes)):
                raise ValueError(
                    f"member '{name}' returned probabilities of shape {proba.shape} for {len(texts)} texts, expected "
                    f"({len(texts)}, {len(classes)}): a scorer's predict_proba gives one column per class"
                )
            order = [list(map(str, member.classes_)).index(c) for c in classes]
            p = np.clip(proba[:, order], self.clip, 1.0 - self.clip)
            blocks.append(np.log(p) - np.log1p(-p) if multilabel else np.log(p))
        return np.hstack(blocks) if blocks else np.zeros((len(texts), 0))

    # ----------------------------------------------------------------------------------------- fit

    def fit(self, texts: Sequence[str], labels: Sequence, multilabel: bool | None = None) -> StackedEnsemble:
        """Fit the stacker on held-out (texts, labels); the members stay as they are (they are already fitted).

        Pass data the members never trained on (their validation split): see the module docstring for why."""
        config = self.get_config()
        texts, tuples, multilabel = check_fit_inputs(texts, labels, multilabel)
        names, classes, members_multilabel = self._checked_members()
        if multilabel != members_multilabel:
            raise DataError(
                f"the labels are {'multi' if multilabel else 'single'}-label but the members are "
                f"{'multi' if members_multilabel else 'single'}-label: fit the stacker on labels of the members' task"
            )
        unknown = sorted({c for t in tuples for c in t} - set(classes))
        if unknown:
            raise DataError(
                f"the held-out labels hold class(es) {unknown[:5]} that the members do not know ({classes}): fit the "
                "stacker on data of the members' label set"
            )
        y = _indicator(tuples, classes)  # (n, k) 0/1
        counts = y.sum(axis=0)
        missing = [c for c, n in zip(classes, counts) if n == 0 or (multilabel and n == len(y))]
        if missing:
            raise DataError(
                f"the held-out data ({len(y)} rows) has {'one outcome only' if multilabel else 'no example'} for "
                f"class(es) {missing}: the stacker cannot learn them. Fix: a larger validation split (val_frac) or "
                "data holding every class"
            )
        x = self._features(texts, names, classes, multilabel)
        if multilabel:
            fits = [_fit_binary(x, y[:, j].astype(int), config) for j in range(len(classes))]
            coef = np.vstack([f[0] for f in fits])
            intercept = np.array([f[1] for f in fits])
            self.C_ = np.array([f[2] for f in fits])
            cv = {c: f[3] for c, f in zip(classes, fits)}
        else:
            coef, intercept, c_value, cv = _fit_multinomial(x, y.argmax(axis=1), len(classes), config)
            self.C_ = np.array([c_value])
        self.classes_ = np.array(classes)
        self.multilabel_ = multilabel
        self.member_names_ = names
        self.coef_ = coef
        self.intercept_ = intercept
        self.weights_ = _member_weights(x, coef, names, multilabel)
        self.report_ = {
            "n": len(y),
            "cv": cv,
            # Each member alone and the stacker on the same held-out rows (the stacker's in-sample: its
            # out-of-fold figure is in "cv"), so a user sees what stacking bought.
            "member_log_loss": {
                n: _log_loss(_block_proba(x, i, len(classes), multilabel), y, multilabel) for i, n in enumerate(names)
            },
            "stacker_log_loss_in_sample": _log_loss(self._stack(x), y, multilabel),
        }
        return self

    # ----------------------------------------------------------------------------------------- scoring

    def _stack(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.coef_.T + self.intercept_  # (n, k)
        if self.multilabel_:
            return np.exp(-np.logaddexp(0.0, -z))  # sigmoid without overflow
        e = np.exp(z - z.max(axis=1, keepdims=True))  # shifted: no overflow
        return e / e.sum(axis=1, keepdims=True)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """The stacker's probabilities (n, n_classes) in classes_ order: rows sum to 1 (single-label) or one
        probability per category (multi-label). Each member scores the texts; raw text is prepared once, as the
        ensemble's run recorded (`preprocessing_`)."""
        check_is_fitted(self)
        texts = prepare_inputs(self, texts)
        x = self._features(texts, self.member_names_, list(self.classes_), self.multilabel_)
        return self._stack(x)

    # ----------------------------------------------------------------------------------------- persistence

    def save(self, directory: str | Path) -> None:
        """ensemble.json plus members/NAME/ per member (its own files). A member loaded from a run directory is
        saved without that run's preprocessing: the ensemble's run records the one preprocessing it applies."""
        check_is_fitted(self)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        kinds = [kind_of(self.members[name]) for name in self.member_names_]  # refuses a kind that cannot be loaded
        folder = directory / MEMBERS
        if folder.exists():
            shutil.rmtree(folder)  # saving over an earlier ensemble: no stale member folders
        for name in self.member_names_:
            self.members[name].save(folder / name)
        state = {
            "finesieve_version": finesieve.__version__,
            "config": self.get_config().model_dump(mode="json"),
            "classes": self.classes_.tolist(),
            "multilabel": bool(self.multilabel_),
            "members": [{"name": n, "kind": k} for n, k in zip(self.member_names_, kinds)],
            "coef": self.coef_.tolist(),  # floats round-trip exactly through JSON
            "intercept": self.intercept_.tolist(),
            "C": self.C_.tolist(),
            "weights": self.weights_,
            "report": self.report_,
        }
        (directory / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> StackedEnsemble:
        directory = Path(directory)
        state = json.loads((directory / STATE_FILE).read_text())
        members = {}
        for member in state["members"]:
            kind = member["kind"]
            if kind not in MODEL_KINDS:
                raise ConfigError(
                    f"{directory / STATE_FILE}: member '{member['name']}' is of unknown kind {kind!r}; this "
                    f"finesieve knows {sorted(MODEL_KINDS)}. Fix: upgrade finesieve"
                )
            members[member["name"]] = MODEL_KINDS[kind].load(directory / MEMBERS / member["name"])
        scorer = cls.from_config(EnsembleConfig.model_validate(state["config"]), members)
        scorer.classes_ = np.array(state["classes"])
        scorer.multilabel_ = bool(state["multilabel"])
        scorer.member_names_ = [m["name"] for m in state["members"]]
        scorer.coef_ = np.array(state["coef"], dtype=float).reshape(len(scorer.classes_), -1)
        scorer.intercept_ = np.array(state["intercept"], dtype=float)
        scorer.C_ = np.array(state["C"], dtype=float)
        scorer.weights_ = {str(k): float(v) for k, v in state["weights"].items()}
        scorer.report_ = state["report"]
        return scorer


# --------------------------------------------------------------------------------------------- the stacker


def _indicator(tuples: list[tuple[str, ...]], classes: list[str]) -> np.ndarray:
    index = {c: j for j, c in enumerate(classes)}
    y = np.zeros((len(tuples), len(classes)), dtype=np.int64)
    for i, t in enumerate(tuples):
        y[i, [index[c] for c in t]] = 1
    return y


def _log_loss(proba: np.ndarray, y: np.ndarray, multilabel: bool) -> float:
    """Mean log loss of probabilities (n, k) against 0/1 indicators (n, k): per message for single-label, summed
    over categories (each a binary loss) for multi-label."""
    p = np.clip(proba, 1e-15, 1 - 1e-15)
    if multilabel:
        return float(-np.mean(np.sum(y * np.log(p) + (1 - y) * np.log1p(-p), axis=1)))
    return float(-np.mean(np.log(p[np.arange(len(y)), y.argmax(axis=1)])))


def _logistic(x: np.ndarray, y: np.ndarray, C: float, config: EnsembleConfig) -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=config.max_iter).fit(x, y)


def _block_proba(x: np.ndarray, i: int, k: int, multilabel: bool) -> np.ndarray:
    """Member i's clipped probabilities (n, k), read back from its block of the features."""
    block = x[:, i * k : (i + 1) * k]
    return np.exp(-np.logaddexp(0.0, -block)) if multilabel else np.exp(block)


def _choose_c(x: np.ndarray, y: np.ndarray, config: EnsembleConfig) -> tuple[float, dict]:
    """C by the mean out-of-fold log loss over stratified folds of (x, y) (y: (n,) class ids, every class present);
    ties go to the smaller C (the simpler stacker)."""
    smallest = int(np.bincount(y).min())
    folds = min(config.cv_folds, smallest)
    if config.cv_folds == 0:
        return config.C, {"method": "fixed C", "C": config.C}
    if folds < 2:
        return config.C, {"method": "fixed C", "C": config.C, "why": f"a class has {smallest} example(s): no folds"}
    k = int(y.max()) + 1
    onehot = np.eye(k, dtype=np.int64)[y]
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    losses = {}
    for c in sorted(config.Cs):
        out = np.zeros((len(y), k))
        for train, held in splitter.split(x, y):
            out[held] = _logistic(x[train], y[train], c, config).predict_proba(x[held])
        losses[c] = _log_loss(out, onehot, multilabel=False)
    best = min(losses, key=lambda c: (losses[c], c))
    return best, {
        "method": "cross-validation",
        "folds": folds,
        "log_loss": {str(c): v for c, v in losses.items()},
        "C": best,
    }


def _fit_multinomial(x: np.ndarray, y: np.ndarray, k: int, config: EnsembleConfig):
    """(coef (k, d), intercept (k,), C, cv report) of the multinomial stacker; y (n,) class ids, every class present.
    For two classes scikit-learn fits one logit w.x + b; it is written as rows -w/2, +w/2 (and -b/2, +b/2), whose
    softmax is the same sigmoid, so every single-label stacker is stored and applied the same way."""
    c, cv = _choose_c(x, y, config)
    model = _logistic(x, y, c, config)
    if k == 2:
        w, b = model.coef_[0], float(model.intercept_[0])
        return np.vstack([-w / 2, w / 2]), np.array([-b / 2, b / 2]), c, cv
    return model.coef_.copy(), model.intercept_.copy(), c, cv


def _fit_binary(x: np.ndarray, y: np.ndarray, config: EnsembleConfig):
    """(coef (d,), intercept, C, cv report) of one category's binary stacker; y (n,) 0/1 with both present."""
    c, cv = _choose_c(x, y, config)
    model = _logistic(x, y, c, config)
    return model.coef_[0].copy(), float(model.intercept_[0]), c, cv


def _member_weights(x: np.ndarray, coef: np.ndarray, names: Sequence[str], multilabel: bool) -> dict[str, float]:
    """Each member's share of the variation of the stacker's logits over the held-out rows: member j adds
    z_j = x_j @ coef_j.T (n, k) to the logits; its spread is the standard deviation over rows of z_j (single-label:
    centred per row first, since the softmax ignores what shifts every class alike), averaged over classes.
    Coefficients alone would mislead: a member whose scores barely move gets large coefficients for a small
    effect. All 0 when the stacker ignores every member."""
    k = coef.shape[0]
    spread = []
    for i in range(len(names)):
        z = x[:, i * k : (i + 1) * k] @ coef[:, i * k : (i + 1) * k].T
        if not multilabel:
            z = z - z.mean(axis=1, keepdims=True)
        spread.append(float(z.std(axis=0).mean()) if len(z) else 0.0)
    total = sum(spread)
    return {str(n): v / total if total > 0 else 0.0 for n, v in zip(names, spread)}
