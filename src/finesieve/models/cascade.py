"""The cascade: rules -> pre-filter -> fine-tuned model, deciding deliver / review / block per message.

    cascade = Cascade(model, positive=["hate_speech"], thresholds=CascadeThresholds(escalate=0.07, review=0.45),
                      prefilter=cnn, rules=lexicon)
    decisions = cascade.decide(texts)        # action, category, deciding stage and per-stage scores per message
    proba = cascade.predict_proba(texts)     # the Scorer interface: the same harness evaluates it
    screened = cascade.screen(texts)         # decide in two phases: rules and pre-filter, then
    decisions = cascade.finish(screened)     # the model on `screened.open_texts` (or on probabilities scored elsewhere)

How one message travels:
  1. rules      every rule runs; the strictest *active* rule decides (block > review > clear). Which rules are
                active, and as what, is in `thresholds.rule_modes` (set by `cascade fit` from each rule's
                precision on validation data); a rule set to "off" is only reported as a signal.
  2. prefilter  messages no rule decided are scored by the cheap model; below `escalate` they are delivered.
  3. model      the rest reach the fine-tuned model: at or above `review` they go to the human review queue,
                and at or above `block[category]` they are blocked outright (only for categories that have
                a block threshold).
The category of a flagged message is the positive class with the highest probability (or the rule's category).

`decide` is `finish(screen(texts))`. The split lets a caller score the model stage of several cascades together:
`finesieve.models.mixed` runs the open texts of cascades whose models are LoRA adapters on one base in one pass.

`predict_proba` returns the calibrated probabilities of the stage that decided each message, so the
cascade's ROC curve is real; precision and recall of the cascade are computed from its actions
(`decisions.flagged`), which the harness takes when given, since a rule can decide against its probability.

It lives in the models layer because it is a scorer composed of scorers; what fits and measures a cascade
(thresholds, cost, the run directory it is saved in) is in `finesieve.cascade`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from finesieve.data.errors import ConfigError
from finesieve.models.adapters import load_sharing_bases
from finesieve.models.base import check_is_fitted, positive_scores, prepare_inputs
from finesieve.models.finetuned import FineTunedScorer
from finesieve.models.kinds import MODEL_KINDS, kind_of
from finesieve.models.rules import deciding_rule

ACTIONS = ("deliver", "review", "block")
STAGES = ("rules", "prefilter", "model")
RuleMode = Literal["block", "review", "clear", "off"]


class CascadeThresholds(BaseModel):
    """Every number the cascade decides with; `cascade fit` chooses them on validation data."""

    model_config = ConfigDict(extra="forbid")

    escalate: float | None = Field(
        None,
        description=(
            "Pre-filter positive score at or above which a message goes on to the model; None: no pre-filter stage."
        ),
    )
    review: float = Field(description="Model positive score at or above which a message goes to the review queue.")
    block: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Per positive category: model probability of that category at or above which the message is blocked."
        ),
    )
    rule_modes: dict[str, RuleMode] = Field(
        default_factory=dict,
        description=("Per rule name: what the rule does in the cascade (block, review, clear) or 'off' (signal only)."),
    )

    @model_validator(mode="after")
    def _check(self) -> CascadeThresholds:
        for name, t in self.block.items():
            if t < self.review:
                raise ValueError(
                    f"block threshold of '{name}' ({t:.3f}) is below the review threshold "
                    f"({self.review:.3f}): blocking must be stricter than reviewing"
                )
        return self


@dataclass
class Decisions:
    """What the cascade did with each of n messages."""

    action: np.ndarray  # (n,) "deliver" | "review" | "block"
    category: np.ndarray  # (n,) the positive category behind a review/block, "" for deliveries
    decided_by: np.ndarray  # (n,) "rules" | "prefilter" | "model"
    stage_scores: dict[str, np.ndarray]  # stage -> (n,) positive score, NaN where the stage did not run
    rules_fired: list[list[str]]
    proba: np.ndarray  # (n, n_classes) calibrated probabilities of the deciding stage
    seconds: dict[str, float] = field(default_factory=dict)  # wall time spent in each stage

    @property
    def flagged(self) -> np.ndarray:
        return self.action != "deliver"

    def reach(self) -> dict[str, float]:
        """Share of messages each stage scored."""
        return {stage: float(np.mean(~np.isnan(s))) if len(s) else 0.0 for stage, s in self.stage_scores.items()}

    def route_fraction(self) -> float:
        """Share of messages that reached the fine-tuned model."""
        return self.reach().get("model", 0.0)

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame({"action": self.action, "category": self.category, "decided_by": self.decided_by})
        for stage, scores in self.stage_scores.items():
            frame[f"score_{stage}"] = scores
        frame["rules_fired"] = ["|".join(f) for f in self.rules_fired]
        return frame


@dataclass
class Screened:
    """n messages after a cascade's rules and pre-filter (`Cascade.screen`), the model stage still to run
    (`Cascade.finish`). The arrays are those of `Decisions`, filled in for the messages decided so far."""

    texts: list[str]  # (n,) as the cascade prepared them
    action: np.ndarray
    category: np.ndarray
    decided_by: np.ndarray
    stage_scores: dict[str, np.ndarray]
    rules_fired: list[list[str]]
    proba: np.ndarray
    open: np.ndarray  # (n,) bool: no stage decided the message yet, so the model will
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def open_texts(self) -> list[str]:
        """The prepared texts the model stage scores, in message order: what `finish`'s `model_proba` must score.
        A plain list, as `decide` hands it to the model (whose `predict_proba` then applies its own preprocessing)."""
        return [self.texts[i] for i in np.flatnonzero(self.open)]


class Cascade:
    """A scorer made of scorers. `model` is required; `prefilter` and `rules` are optional tiers in front."""

    kind = "cascade"  # the run kind written in manifest.json (finesieve.models.kinds)

    def __init__(self, model, *, positive: Sequence[str], thresholds: CascadeThresholds, prefilter=None, rules=None):
        self.model = model
        self.positive = positive
        self.thresholds = thresholds
        self.prefilter = prefilter
        self.rules = rules
        self._check()

    def _check(self) -> None:
        for name, scorer in self.stages().items():
            check_is_fitted(scorer)
            if set(map(str, scorer.classes_)) != set(map(str, self.model.classes_)):
                raise ConfigError(
                    f"the {name} stage has classes {list(scorer.classes_)} but the model has "
                    f"{list(self.model.classes_)}: train every stage on the same labels"
                )
        missing = [p for p in self.positive if p not in set(map(str, self.model.classes_))]
        if missing:
            raise ConfigError(
                f"positive class(es) {missing} are not among the model's classes "
                f"{list(self.model.classes_)}: pass one of those"
            )
        if self.prefilter is not None and self.thresholds.escalate is None:
            raise ConfigError("a pre-filter needs thresholds.escalate: run `finesieve cascade fit` to choose it")
        unknown = sorted(set(self.thresholds.block) - set(self.positive))
        if unknown:
            raise ConfigError(f"block thresholds for {unknown}, which are not positive classes {list(self.positive)}")
        self.classes_ = np.array([str(c) for c in self.model.classes_])
        self.multilabel_ = bool(self.model.multilabel_)

    def stages(self) -> dict[str, object]:
        out = {"rules": self.rules, "prefilter": self.prefilter, "model": self.model}
        return {k: v for k, v in out.items() if v is not None}

    def fit(self, texts: Sequence[str], labels: Sequence, multilabel: bool | None = None) -> Cascade:
        raise NotImplementedError(
            "a Cascade is assembled from fitted stages: use `finesieve cascade fit` "
            "(finesieve.cascade.build.fit_cascade), not Cascade.fit"
        )

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.decide(texts).proba

    # --------------------------------------------------------------------------------------------- deciding

    def _stage_proba(self, scorer, texts: list[str], proba: np.ndarray | None = None) -> np.ndarray:
        """Probabilities of one stage (computed unless given), columns reordered to the cascade's classes_."""
        proba = np.asarray(scorer.predict_proba(texts) if proba is None else proba, dtype=float)
        order = [list(map(str, scorer.classes_)).index(c) for c in self.classes_]
        return proba[:, order]

    def decide(self, texts: Sequence[str]) -> Decisions:
        """What the cascade does with each message: `finish(screen(texts))`."""
        return self.finish(self.screen(texts))

    def screen(self, texts: Sequence[str]) -> Screened:
        """The texts prepared and run through the rules and the pre-filter; the messages neither decided are left
        open for the model stage (`Screened.open_texts`), which `finish` runs."""
        texts = prepare_inputs(self, texts)
        n, t = len(texts), self.thresholds
        action = np.full(n, "deliver", dtype=object)
        category = np.full(n, "", dtype=object)
        decided_by = np.full(n, "model", dtype=object)
        proba = np.zeros((n, len(self.classes_)))
        scores = {stage: np.full(n, np.nan) for stage in self.stages()}
        seconds = {}
        open_ = np.ones(n, dtype=bool)  # not decided yet
        fired: list[list[str]] = [[] for _ in range(n)]

        if self.rules is not None:
            start = time.perf_counter()
            fired = self.rules.fired(texts)
            rule_proba = self._stage_proba(self.rules, texts, self.rules.proba_from_fired(fired))
            scores["rules"] = self._positive(rule_proba)
            category_of = {r.name: r.category for r in self.rules.policy_.rules}
            for i, names in enumerate(fired):
                if (decision := deciding_rule(names, t.rule_modes)) is None:
                    continue
                mode, name = decision
                open_[i], decided_by[i], proba[i] = False, "rules", rule_proba[i]
                if mode != "clear":
                    action[i], category[i] = mode, category_of[name]
            seconds["rules"] = time.perf_counter() - start

        if self.prefilter is not None and open_.any():
            start = time.perf_counter()
            idx = np.flatnonzero(open_)
            pre = self._stage_proba(self.prefilter, [texts[i] for i in idx])
            pre_pos = self._positive(pre)
            scores["prefilter"][idx] = pre_pos
            stop = idx[pre_pos < t.escalate]
            proba[stop] = pre[pre_pos < t.escalate]
            decided_by[stop], open_[stop] = "prefilter", False
            seconds["prefilter"] = time.perf_counter() - start
        return Screened(
            texts=texts,
            action=action,
            category=category,
            decided_by=decided_by,
            stage_scores=scores,
            rules_fired=fired,
            proba=proba,
            open=open_,
            seconds=seconds,
        )

    def finish(
        self, screened: Screened, model_proba: np.ndarray | None = None, model_seconds: float | None = None
    ) -> Decisions:
        """The decisions for screened messages: the model stage scores `screened.open_texts` and decides them.

        `model_proba`, when given, is the model's own `predict_proba(screened.open_texts)` (columns in the model's
        `classes_` order), scored elsewhere, e.g. with other cascades' texts in one pass (`finesieve.models.mixed`);
        it is used instead of calling the model. `model_seconds`, when given (that scoring's wall time), is recorded
        as the model stage's. `screened` is left as it was."""
        t = self.thresholds
        # Copies: `screened` stays reusable, and several `finish` calls on it give the same decisions.
        action, category, decided_by = screened.action.copy(), screened.category.copy(), screened.decided_by.copy()
        proba = screened.proba.copy()
        scores = {stage: s.copy() for stage, s in screened.stage_scores.items()}
        seconds = dict(screened.seconds)
        idx = np.flatnonzero(screened.open)
        if model_proba is not None:
            shape = np.shape(model_proba)
            if shape != (len(idx), len(self.model.classes_)):
                raise ValueError(
                    f"model_proba has shape {shape} but the model stage scores {len(idx)} open texts over "
                    f"{len(self.model.classes_)} classes: pass model.predict_proba(screened.open_texts)"
                )

        if len(idx):
            start = time.perf_counter()
            p = self._stage_proba(self.model, screened.open_texts, model_proba)
            pos = self._positive(p)
            scores["model"][idx], proba[idx] = pos, p
            pos_cols = [list(self.classes_).index(c) for c in self.positive]
            top = np.array(self.positive, dtype=object)[p[:, pos_cols].argmax(axis=1)]
            review = pos >= t.review
            action[idx[review]] = "review"
            category[idx[review]] = top[review]
            for c, threshold in t.block.items():
                hit = review & (p[:, list(self.classes_).index(c)] >= threshold)
                action[idx[hit]], category[idx[hit]] = "block", c
            seconds["model"] = time.perf_counter() - start if model_seconds is None else model_seconds
        return Decisions(
            action=action,
            category=category,
            decided_by=decided_by,
            stage_scores=scores,
            rules_fired=list(screened.rules_fired),
            proba=proba,
            seconds=seconds,
        )

    def _positive(self, proba: np.ndarray) -> np.ndarray:
        return positive_scores(proba, self.classes_, self.positive, self.multilabel_)

    # --------------------------------------------------------------------------------------------- persistence

    def save(self, directory: str | Path) -> None:
        """cascade.json plus one sub-folder per stage holding that stage's own saved files."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        kinds = {}
        for name, scorer in self.stages().items():
            target = directory / name
            if target.exists():
                shutil.rmtree(target)
            scorer.save(target)
            kinds[name] = kind_of(scorer, _stage_kinds())
        state = {"positive": list(self.positive), "thresholds": self.thresholds.model_dump(), "stage_kinds": kinds}
        (directory / "cascade.json").write_text(json.dumps(state, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path, share_base: bool = True, loaded: dict | None = None) -> Cascade:
        """The saved cascade. LoRA stages trained on one base (a LoRA model and a LoRA pre-filter) share that base in
        memory, their adapters unmerged (`finesieve.models.adapters`); a LoRA stage alone on its base loads merged,
        the faster path for one model. `share_base=False` loads every stage on its own (merged). `loaded` (stage
        name -> scorer) gives stages already in memory, e.g. loaded on a base shared with other runs by the
        service: they are used as given, not read again."""
        directory = Path(directory)
        state = json.loads((directory / "cascade.json").read_text())
        kinds = state["stage_kinds"]
        loaded = dict(loaded or {})
        finetuned = {
            name: directory / name
            for name, kind in kinds.items()
            if kind == FineTunedScorer.kind and name not in loaded
        }
        shared = {**(load_sharing_bases(finetuned) if share_base else {}), **loaded}
        stages = {
            name: shared[name] if name in shared else _stage_kinds()[kind].load(directory / name)
            for name, kind in kinds.items()
        }
        return cls(
            stages["model"],
            positive=state["positive"],
            thresholds=CascadeThresholds.model_validate(state["thresholds"]),
            prefilter=stages.get("prefilter"),
            rules=stages.get("rules"),
        )

    def get_config(self) -> CascadeThresholds:
        return self.thresholds


def _stage_kinds() -> dict[str, type]:
    """The kinds a stage can be: every plain scorer, a stacked ensemble, and a cascade (as `runs.SCORER_KINDS`)."""
    from finesieve.models.ensemble import StackedEnsemble

    return {**MODEL_KINDS, StackedEnsemble.kind: StackedEnsemble, Cascade.kind: Cascade}
