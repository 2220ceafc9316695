"""Keyword and regex rules from a YAML policy file: the "legacy" scorer, and the first tier of a cascade.

A policy names categories and, for each rule, the category it signals, the action it suggests and its
patterns. Patterns are matched on the de-obfuscated text (`normalize_for_scoring`: case-folded, `ph0ne` ->
`phone`, `p h o n e` -> `phone`), and redaction placeholders such as `<PHONE>` can be matched as words.

    categories: [scam, off_platform]
    rules:
      - name: pay-outside
        category: off_platform
        action: review            # block | review | clear: what a cascade does when it fires
        keywords: [venmo, zelle, "pay me directly"]   # whole words or phrases
        patterns: ['text me (on|at) <PHONE>']          # regular expressions

Rules do not give probabilities by themselves, so `fit` calibrates them: for each category, the training
rows are grouped by the most precise rule of that category that fired on them (or by "no rule fired"),
and the category's probability for a new message is the smoothed share of positives in its group.

When several rules fire on one message the strictest action wins (block > review > clear, `ACTION_PRIORITY`);
`deciding_rule` is that choice, used by `RulesScorer.actions`, the cascade (`models.cascade.Cascade.decide`) and
its fit (`cascade.fit`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from finesieve.data.errors import ConfigError, config_error
from finesieve.data.normalize import normalize_for_scoring
from finesieve.models.base import check_fit_inputs, check_is_fitted, check_texts, prepare_inputs

NONE_KEY = "<none>"
# How strict each action a rule can take is; when several rules fire on a message the strictest one decides.
# A rule in mode "off" (kept as a signal only, `CascadeThresholds.rule_modes`) never decides.
ACTION_PRIORITY = {"block": 3, "review": 2, "clear": 1}


def deciding_rule(fired: Iterable[str], modes: Mapping[str, str]) -> tuple[str, str] | None:
    """The rule that decides a message on which the rules named in `fired` fired, as (mode, rule name): the one
    whose mode in `modes` is strictest (`ACTION_PRIORITY`: block > review > clear), and of equally strict ones
    the one whose name sorts last. Rules in mode "off", or absent from `modes`, never decide; None when none does.

        deciding_rule(["pay-outside", "greeting"], {"pay-outside": "review", "greeting": "clear"})
        # -> ("review", "pay-outside")
    """
    active = [(modes.get(name, "off"), name) for name in fired]
    return max(
        ((mode, name) for mode, name in active if mode != "off"),
        key=lambda a: (ACTION_PRIORITY[a[0]], a[1]),
        default=None,
    )


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique rule name, shown in reports and per-stage scores.")
    category: str = Field(description="The policy category (class) this rule signals.")
    action: Literal["block", "review", "clear"] = Field("review", description="What a cascade does when it fires.")
    keywords: list[str] = Field(default_factory=list, description="Whole words or phrases, matched case-insensitively.")
    patterns: list[str] = Field(default_factory=list, description="Regular expressions on the de-obfuscated text.")

    @field_validator("patterns")
    @classmethod
    def _compile(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as err:
                raise ValueError(f"pattern {p!r} is not a valid regular expression ({err})") from None
        return patterns

    @model_validator(mode="after")
    def _nonempty(self) -> Rule:
        if not self.keywords and not self.patterns:
            raise ValueError(f"rule '{self.name}' has neither keywords nor patterns: give it at least one")
        return self

    def regex(self) -> re.Pattern:
        parts = [r"(?<![\w<])" + re.escape(normalize_for_scoring(k)) + r"(?![\w>])" for k in self.keywords]
        parts += [f"(?:{p})" for p in self.patterns]
        return re.compile("|".join(parts))


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("policy", description="Policy name.")
    description: str = Field("", description="What the policy is for.")
    categories: list[str] = Field(description="The policy categories (class names) its rules signal.")
    rules: list[Rule] = Field(description="The rules, in any order.")

    @model_validator(mode="after")
    def _check(self) -> Policy:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names {dupes} are used more than once: give each rule a unique name")
        unknown = sorted({r.category for r in self.rules} - set(self.categories))
        if unknown:
            raise ValueError(
                f"rules use categories {unknown} that are not in 'categories' {self.categories}: add them or fix the rule"
            )
        return self


def load_policy(path: str | Path) -> Policy:
    """Read and validate a YAML policy; `builtin:NAME` reads one shipped with finesieve."""
    text = _read_policy_text(str(path))
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    try:
        return Policy.model_validate(raw)
    except ValidationError as err:
        raise config_error(err, f"{path}: invalid policy", Policy) from None


def _read_policy_text(path: str) -> str:
    if path.startswith("builtin:"):
        name = path.split(":", 1)[1]
        files = resources.files("finesieve") / "policies"
        available = sorted(p.name.removesuffix(".yaml") for p in files.iterdir() if p.name.endswith(".yaml"))
        if name not in available:
            raise ConfigError(f"no built-in policy '{name}': choose one of {available}")
        return (files / f"{name}.yaml").read_text(encoding="utf-8")
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{path}: policy file not found: check the path, or use builtin:NAME")
    return p.read_text(encoding="utf-8")


class RulesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str | Policy = Field(
        "builtin:marketplace", description="The policy: builtin:NAME, a YAML path, or the policy itself."
    )
    smoothing: float = Field(
        1.0, ge=0, description="Pseudo-count pulling each rule group's class shares towards the overall shares."
    )


class RulesScorer:
    """Scorer built from a policy: `fit` calibrates the rules on labelled data, `predict_proba` scores."""

    kind = "rules"  # the run kind written in manifest.json (finesieve.models.kinds)

    def __init__(self, policy: str | Policy = "builtin:marketplace", smoothing: float = 1.0):
        self.policy = policy
        self.smoothing = smoothing

    @classmethod
    def from_config(cls, config: RulesConfig) -> RulesScorer:
        return cls(policy=config.policy, smoothing=config.smoothing)

    def get_config(self) -> RulesConfig:
        try:
            return RulesConfig(policy=self.policy, smoothing=self.smoothing)
        except ValidationError as err:
            raise config_error(err, f"{type(self).__name__} settings", RulesConfig) from None

    def _compiled(self) -> list[tuple[Rule, re.Pattern]]:
        if not hasattr(self, "_rules_cache"):
            ignored = set(getattr(self, "ignored_rules_", []))
            self._rules_cache = [(r, r.regex()) for r in self.policy_.rules if r.name not in ignored]
        return self._rules_cache

    def fired(self, texts: Sequence[str]) -> list[list[str]]:
        """Names of the rules that fire on each text."""
        check_is_fitted(self, "policy_")
        rules = self._compiled()
        out = []
        for text in check_texts(texts):
            norm = normalize_for_scoring(text)
            out.append([rule.name for rule, rx in rules if rx.search(norm)])
        return out

    def fit(self, texts: Sequence[str], labels: Sequence, multilabel: bool | None = None) -> RulesScorer:
        texts, tuples, multilabel = check_fit_inputs(texts, labels, multilabel)
        self.policy_ = self.policy if isinstance(self.policy, Policy) else load_policy(self.policy)
        classes = sorted({c for t in tuples for c in t})
        # Rules for categories the data does not label cannot be calibrated: they are set aside, and listed.
        self.ignored_rules_ = [r.name for r in self.policy_.rules if r.category not in classes]
        if len(self.ignored_rules_) == len(self.policy_.rules):
            raise ConfigError(
                f"policy '{self.policy_.name}' has rules for {self.policy_.categories}, none of which is a class of "
                f"the data ({classes}): use a policy written for these labels"
            )
        self._rules_cache = [(r, r.regex()) for r in self.policy_.rules if r.category in classes]
        y = np.array([[c in t for c in classes] for t in tuples], dtype=float)  # (n, k)
        fired = self.fired(texts)
        a = self.smoothing
        usable = [r for r in self.policy_.rules if r.category in classes]
        # Precision of each rule for its own category: orders rules when several fire.
        self.rule_precision_ = {}
        for rule in usable:
            hits = np.array([rule.name in f for f in fired])
            pos = y[hits, classes.index(rule.category)].sum() if hits.any() else 0.0
            self.rule_precision_[rule.name] = float(
                (pos + a * y[:, classes.index(rule.category)].mean()) / (hits.sum() + a)
            )
        # Single-label: one table, keyed by the most precise fired rule, of class distributions (rows sum to 1).
        # Multi-label: one table per category, keyed by that category's most precise fired rule, since a
        # message can break several policies at once.
        category_of = {r.name: r.category for r in usable}
        if multilabel:
            self.table_ = {
                c: self._group_table([self._key([n for n in f if category_of[n] == c]) for f in fired], y[:, j])
                for j, c in enumerate(classes)
            }
        else:
            self.table_ = {"*": self._group_table([self._key(f) for f in fired], y)}
        self.classes_ = np.array(classes)
        self.multilabel_ = multilabel
        return self

    def _group_table(self, keys: list[str], y: np.ndarray) -> dict:
        """Smoothed mean of `y` ((n,) or (n, k)) per key, shrunk towards the overall mean."""
        a, prior = self.smoothing, y.mean(axis=0)
        keys_arr = np.array(keys)
        table = {}
        for key in set(keys) | {NONE_KEY}:
            rows = keys_arr == key
            mean = (y[rows].sum(axis=0) + a * prior) / (rows.sum() + a)
            table[key] = float(mean) if y.ndim == 1 else (mean / mean.sum()).tolist()
        return table

    def _key(self, fired: list[str]) -> str:
        if not fired:
            return NONE_KEY
        return max(fired, key=lambda name: (self.rule_precision_.get(name, 0.0), name))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        check_is_fitted(self)
        return self.proba_from_fired(self.fired(prepare_inputs(self, texts)))

    def proba_from_fired(self, fired: list[list[str]]) -> np.ndarray:
        """`predict_proba` from the output of `fired`, for callers (the cascade) that need both."""
        check_is_fitted(self)
        n = len(fired)
        if not self.multilabel_:
            table = self.table_["*"]
            # A rule never seen firing in training falls back to "no rule": it has no calibration yet.
            rows = [table.get(self._key(f), table[NONE_KEY]) for f in fired]
            return np.array(rows, dtype=float).reshape(n, len(self.classes_))
        category_of = {r.name: r.category for r in self.policy_.rules}
        out = np.zeros((n, len(self.classes_)))
        for j, c in enumerate(self.classes_):
            table = self.table_[c]
            for i, f in enumerate(fired):
                out[i, j] = table.get(self._key([n for n in f if category_of[n] == c]), table[NONE_KEY])
        return out

    def actions(self, texts: Sequence[str]) -> list[str | None]:
        """The strictest action among the rules that fire (block > review > clear, `deciding_rule`), or None."""
        by_name = {r.name: r.action for r in self.policy_.rules}
        return [d[0] if (d := deciding_rule(f, by_name)) is not None else None for f in self.fired(texts)]

    def policy_modes(self, positive: Sequence[str]) -> dict[str, str]:
        """Per rule that can act for the `positive` classes, its action as the policy writes it: every rule kept
        when fitting (not in `ignored_rules_`) that clears, or signals one of `positive`. The rule modes of a
        cascade that applies the policy as written."""
        check_is_fitted(self)
        ignored, positive = set(self.ignored_rules_), set(positive)
        return {
            r.name: r.action
            for r in self.policy_.rules
            if r.name not in ignored and (r.action == "clear" or r.category in positive)
        }

    def save(self, directory: str | Path) -> None:
        check_is_fitted(self)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "policy.yaml").write_text(
            yaml.safe_dump(self.policy_.model_dump(), sort_keys=False, allow_unicode=True)
        )
        state = {
            "smoothing": self.smoothing,
            "classes": self.classes_.tolist(),
            "multilabel": self.multilabel_,
            "ignored_rules": self.ignored_rules_,
            "rule_precision": self.rule_precision_,
            "table": self.table_,
        }
        (directory / "rules_calibration.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        (directory / "scorer_config.json").write_text(
            json.dumps(self.get_config().model_dump(mode="json"), indent=2, sort_keys=True)
        )

    @classmethod
    def load(cls, directory: str | Path) -> RulesScorer:
        """The scorer as saved. It scores with the copy of the policy in `policy.yaml`; its config still names the
        policy it was built from (rules saved before `scorer_config.json` was written name that copy)."""
        directory = Path(directory)
        state = json.loads((directory / "rules_calibration.json").read_text())
        config_path = directory / "scorer_config.json"
        if config_path.exists():
            scorer = cls.from_config(RulesConfig.model_validate_json(config_path.read_text()))
        else:
            scorer = cls(policy=str(directory / "policy.yaml"), smoothing=state["smoothing"])
        scorer.policy_ = load_policy(directory / "policy.yaml")
        scorer.classes_, scorer.multilabel_ = np.array(state["classes"]), state["multilabel"]
        scorer.rule_precision_, scorer.table_ = state["rule_precision"], state["table"]
        scorer.ignored_rules_ = state["ignored_rules"]
        return scorer
