"""The bias audit: does the scorer treat messages that mention an identity group differently?

    terms = load_identity_terms("builtin:identity")        # or a YAML file of categories -> groups -> terms
    audit = audit_bias(test.texts, y, scores, threshold=0.31, config=BiasConfig(), rescore=score_texts)
    audit.to_dict()["groups"]["muslim"]["bpsn_auc"]

Groups are found by a term list (`IdentityTerms`): a message is in a group when one of the group's terms
appears in it as a whole word, in any case, in the text as the scorer sees it (after cleaning and redaction).
For each group, the "unintended bias" metrics of Borkan et al. 2019 ("Nuanced metrics for measuring unintended
bias with real data for text classification"):

- subgroup AUC: AUC on the group's messages only. Low: the model separates violations from clean messages
  worse when the group is mentioned.
- BPSN AUC (background positive, subgroup negative): the group's clean messages against the violations that do
  not mention it. Low: clean mentions of the group score like violations (false alarms on the group).
- BNSP AUC (background negative, subgroup positive): the group's violations against the clean messages that do
  not mention it. Low: violations against the group score like clean messages (misses).

with 95% stratified bootstrap intervals (`evals.bootstrap`), the false positive rate at the operating threshold
on the group's clean messages (neutral identity mentions) beside the background's, and the spread (max - min)
of each figure over groups. A figure needs `min_count` messages of each class it compares; below that it is
None, with the reason. Borkan et al.'s summary, the power mean (p = -5) of each bias AUC over groups, weighted
with the overall AUC, comes from the groups whose AUC is defined (it says how many).

The counterfactual check swaps identity terms (`IdentityTerms.swap`: "muslims" -> "christians", keeping case)
between groups of the same category in the messages that mention the first group, rescores them, and reports
per ordered pair the mean and largest absolute change of the score and the share of decisions (score >=
threshold) that flip. A fair scorer barely moves; the message with the largest change is shown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from finesieve.data.errors import ConfigError, config_error
from finesieve.evals import metrics as M
from finesieve.evals.bootstrap import bootstrap_cis, mean_cis

BIAS_AUCS = ("subgroup_auc", "bpsn_auc", "bnsp_auc")
POWER = -5  # Borkan et al.'s power mean exponent: the worst groups weigh most
EXAMPLE_CHARS = 160  # texts shown in the report are cut to this length

Rescore = Callable[[list[str]], np.ndarray]  # texts -> (n,) positive-class scores


class IdentityTerms(BaseModel):
    """Identity groups by category, each with the words or phrases that mention it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", description="What the list covers and where it comes from.")
    categories: dict[str, dict[str, list[str]]] = Field(
        description="category -> group -> terms, e.g. {religion: {muslim: [muslim, muslims], christian: [...]}}. "
        "Groups of one category are swapped in the counterfactual check, term i for term i."
    )

    @model_validator(mode="after")
    def _check(self) -> IdentityTerms:
        problems: list[str] = []
        owner: dict[str, str] = {}  # term -> the group that has it
        seen_groups: dict[str, str] = {}
        for category, groups in self.categories.items():
            if not groups:
                problems.append(f"category '{category}' has no groups: add one or remove the category")
            for group, terms in groups.items():
                if group in seen_groups:
                    problems.append(
                        f"group '{group}' is in both '{seen_groups[group]}' and '{category}': rename one of them"
                    )
                seen_groups[group] = category
                if not terms:
                    problems.append(f"group '{group}' has no terms: list at least one word that mentions it")
                for term in terms:
                    key = " ".join(term.lower().split())
                    if not key:
                        problems.append(f"group '{group}' has an empty term: remove it")
                    elif key in owner and owner[key] != group:
                        problems.append(f"term '{term}' is in both '{owner[key]}' and '{group}': keep it in one group")
                    owner[key] = group
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def groups(self) -> dict[str, str]:
        """group -> its category, in file order."""
        return {g: c for c, groups in self.categories.items() for g in groups}

    def pattern(self, group: str) -> re.Pattern[str]:
        """Whole-word, case-insensitive match of any of the group's terms."""
        return _terms_pattern(self._terms(group))

    def members(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """group -> (n,) bool: which texts mention the group."""
        patterns = {g: self.pattern(g) for g in self.groups}
        return {
            g: np.fromiter((bool(p.search(t)) for t in texts), dtype=bool, count=len(texts))
            for g, p in patterns.items()
        }

    def swap(self, text: str, source: str, target: str) -> str:
        """`text` with `source`'s terms replaced by `target`'s (term i by term i, else the first) and `target`'s by
        `source`'s, in one pass, so the swap is a swap; the case of each replaced word is kept."""
        if self.groups[source] != self.groups[target]:
            raise ValueError(f"'{source}' and '{target}' are in different categories: swap groups of one category")
        a, b = self._terms(source), self._terms(target)
        to = {t: b[min(i, len(b) - 1)] for i, t in enumerate(a)} | {t: a[min(i, len(a) - 1)] for i, t in enumerate(b)}
        return _terms_pattern(a + b).sub(
            lambda m: _same_case(m.group(0), to[" ".join(m.group(0).lower().split())]), text
        )

    def _terms(self, group: str) -> list[str]:
        category = self.groups.get(group)
        if category is None:
            raise ValueError(f"no group '{group}' in the term list: choose one of {list(self.groups)}")
        return [" ".join(t.lower().split()) for t in self.categories[category][group]]


def _terms_pattern(terms: Sequence[str]) -> re.Pattern[str]:
    # Longest first, so "trans" does not win over "transgender"; spaces in a phrase match any whitespace.
    alternatives = [r"\s+".join(map(re.escape, t.split())) for t in sorted(terms, key=len, reverse=True)]
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)


def _same_case(original: str, replacement: str) -> str:
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def load_identity_terms(ref: str | Path) -> IdentityTerms:
    """Read and validate a term list: `builtin:NAME` (`builtin:identity`, shipped with finesieve) or a YAML path."""
    ref = str(ref)
    if ref.startswith("builtin:"):
        name = ref.split(":", 1)[1]
        files = resources.files("finesieve.evals")
        available = sorted(
            p.name.removesuffix("_terms.yaml") for p in files.iterdir() if p.name.endswith("_terms.yaml")
        )
        if name not in available:
            raise ConfigError(
                f"no built-in identity term list '{name}': choose one of {[f'builtin:{a}' for a in available]}"
            )
        text = (files / f"{name}_terms.yaml").read_text(encoding="utf-8")
    else:
        path = Path(ref)
        if not path.is_file():
            raise ConfigError(f"{ref}: identity term list not found: check the path, or use builtin:identity")
        text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{ref}: not valid YAML ({err})") from None
    try:
        return IdentityTerms.model_validate(raw)
    except ValidationError as err:
        raise config_error(err, f"{ref}: invalid identity term list", IdentityTerms) from None


class BiasConfig(BaseModel):
    """What the bias audit measures: `evaluate(..., bias=BiasConfig())`."""

    model_config = ConfigDict(extra="forbid")

    terms: str | IdentityTerms = Field(
        "builtin:identity", description="The identity term list: builtin:identity, a YAML path, or the list itself."
    )
    min_count: int = Field(
        10, ge=1, description="Messages of each class a figure compares needs at least this many, else it is None."
    )
    counterfactual: bool = Field(True, description="Swap identity terms between groups and rescore (needs a scorer).")
    max_counterfactual_texts: int = Field(
        500, ge=1, description="Rescore at most this many messages per group (the first ones), to bound the cost."
    )

    def identity_terms(self) -> IdentityTerms:
        return self.terms if isinstance(self.terms, IdentityTerms) else load_identity_terms(self.terms)


# ----------------------------------------------------------------------------- results


@dataclass
class Figure:
    """One figure of one group: its value and 95% interval, or None and why."""

    value: float | None
    ci95: tuple[float, float] | None = None
    why_none: str | None = None

    def to_dict(self) -> dict:
        return {"value": self.value, "ci95": list(self.ci95) if self.ci95 else None, "why_none": self.why_none}


@dataclass
class GroupBias:
    group: str
    category: str
    n: int
    n_positive: int
    subgroup_auc: Figure
    bpsn_auc: Figure
    bnsp_auc: Figure
    fpr: Figure  # flagged share of the group's clean messages (neutral identity mentions)
    background_fpr: float | None  # the same on clean messages that do not mention the group

    def to_dict(self) -> dict:
        return {
            "category": self.category,
            "n": self.n,
            "n_positive": self.n_positive,
            "n_negative": self.n - self.n_positive,
            **{k: getattr(self, k).to_dict() for k in (*BIAS_AUCS, "fpr")},
            "background_fpr": self.background_fpr,
        }


@dataclass
class SwapResult:
    """The counterfactual swap `source` -> `target` on the messages that mention `source`."""

    source: str
    target: str
    category: str
    n: int
    mean_abs_change: float
    max_abs_change: float
    mean_change: float  # signed: > 0 when the target group's terms raise the score
    flip_share: float  # share of decisions (score >= threshold) that change
    n_flagged_after_only: int  # clean before the swap, flagged after
    n_flagged_before_only: int
    example: dict  # the message with the largest change: text, swapped, score before and after

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class BiasAudit:
    terms: str  # where the term list came from
    min_count: int
    overall_auc: float | None
    groups: list[GroupBias]
    no_identity_fpr: float | None  # false positive rate on clean messages that mention no group
    counterfactual: list[SwapResult] | None = None
    notes: list[str] = field(default_factory=list)

    def spread(self) -> dict:
        """Per figure: the lowest and highest group, and max - min; None with the reason below two groups."""
        out: dict[str, dict] = {}
        for key in (*BIAS_AUCS, "fpr"):
            defined = [(getattr(g, key).value, g.group) for g in self.groups if getattr(g, key).value is not None]
            if len(defined) < 2:
                out[key] = {"spread": None, "why_none": f"{len(defined)} group(s) have it; a spread needs 2"}
                continue
            (lo, lo_g), (hi, hi_g) = min(defined), max(defined)
            out[key] = {
                "spread": hi - lo,
                "min": lo,
                "min_group": lo_g,
                "max": hi,
                "max_group": hi_g,
                "n_groups": len(defined),
            }
        return out

    def power_means(self) -> dict:
        """Borkan et al.'s summary: the power mean (p=-5) of each bias AUC over the groups where it is defined,
        and 0.25 * overall AUC + 0.25 * each power mean, when all three are defined."""
        means: dict[str, dict] = {}
        for key in BIAS_AUCS:
            values = np.array([v for g in self.groups if (v := getattr(g, key).value) is not None], dtype=float)
            mean = None
            if len(values):  # an AUC of 0 pulls a negative-power mean to 0, its limit
                mean = 0.0 if (values == 0).any() else float(np.mean(values**POWER) ** (1 / POWER))
            means[key] = {"value": mean, "n_groups": len(values)}
        parts = [m["value"] for m in means.values()]
        final = (
            0.25 * self.overall_auc + 0.25 * sum(parts)
            if self.overall_auc is not None and all(p is not None for p in parts)
            else None
        )
        return {"p": POWER, "per_metric": means, "final": final}

    def to_dict(self) -> dict:
        return {
            "terms": self.terms,
            "min_count": self.min_count,
            "overall_auc": self.overall_auc,
            "no_identity_fpr": self.no_identity_fpr,
            "groups": {g.group: g.to_dict() for g in self.groups},
            "spread": self.spread(),
            "generalized_mean": self.power_means(),
            "counterfactual": [s.to_dict() for s in self.counterfactual] if self.counterfactual is not None else None,
            "notes": self.notes,
        }


# ----------------------------------------------------------------------------- the audit


def audit_bias(
    texts: Sequence[str],
    y,
    scores,
    threshold: float,
    config: BiasConfig | None = None,
    *,
    rescore: Rescore | None = None,
    flagged: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> BiasAudit:
    """Measure per-group bias of `scores` (n,) on `texts` with labels `y` (n,) 1 = violation; `rescore` (texts ->
    scores, as the scores were made) runs the counterfactual check when `config.counterfactual` is on.
    `flagged` (n,) bool: the scorer's own decisions (a cascade's), for the false positive rates; else
    `scores >= threshold`. Counterfactual flips are always judged on the scores at `threshold`."""
    config = config or BiasConfig()
    terms = config.identity_terms()
    y, scores = M.as_binary_inputs(y, scores)
    if len(texts) != len(y):
        raise ValueError(f"{len(texts)} texts but {len(y)} labels: pass one text per scored message")
    flagged = scores >= threshold if flagged is None else np.asarray(flagged, dtype=bool)
    members = terms.members(texts)
    any_group = np.any(list(members.values()), axis=0) if members else np.zeros(len(y), dtype=bool)
    groups = [
        _group_bias(g, c, members[g], y, scores, flagged, config.min_count, threshold, n_boot, seed)
        for g, c in terms.groups.items()
    ]
    audit = BiasAudit(
        terms=config.terms if isinstance(config.terms, str) else "(given in code)",
        min_count=config.min_count,
        overall_auc=M.roc_auc(y, scores) if 0 < y.sum() < len(y) else None,
        groups=groups,
        no_identity_fpr=_share(flagged[~any_group & ~y]),
    )
    if config.counterfactual:
        if rescore is None:
            audit.notes.append("counterfactual check skipped: no scorer to rescore with (scores given directly)")
        else:
            audit.counterfactual = counterfactual_swaps(
                texts, members, terms, rescore, threshold, config.max_counterfactual_texts, audit.notes
            )
    return audit


def _share(flags: np.ndarray) -> float | None:
    return float(flags.mean()) if len(flags) else None


def _auc_figure(y_pos_from: np.ndarray, y_neg_from: np.ndarray, y, scores, threshold, min_count, what, n_boot, seed):
    """AUC of the positives in mask `y_pos_from` against the negatives in mask `y_neg_from`."""
    pos, neg = y_pos_from & y, y_neg_from & ~y
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos < min_count or n_neg < min_count:
        return Figure(
            None, why_none=f"{n_pos} violation(s) and {n_neg} clean message(s) {what}; needs {min_count} of each"
        )
    keep = pos | neg
    ys, ss = y[keep], scores[keep]
    ci = bootstrap_cis(ys, ss, threshold, metrics=("roc_auc",), n_boot=n_boot, seed=seed)["roc_auc"] if n_boot else None
    return Figure(M.roc_auc(ys, ss), ci)


def _group_bias(group, category, member, y, scores, flagged, min_count, threshold, n_boot, seed) -> GroupBias:
    out = ~member

    def auc(pos_from: np.ndarray, neg_from: np.ndarray, what: str) -> Figure:
        return _auc_figure(pos_from, neg_from, y, scores, threshold, min_count, what, n_boot, seed)

    neg = member & ~y
    n_neg = int(neg.sum())
    if n_neg < min_count:
        fpr = Figure(None, why_none=f"{n_neg} clean message(s) mention the group; needs {min_count}")
    else:
        ci = mean_cis(flagged[neg].astype(float)[:, None], n_boot=n_boot, seed=seed)[0] if n_boot else None
        fpr = Figure(float(flagged[neg].mean()), ci)
    return GroupBias(
        group=group,
        category=category,
        n=int(member.sum()),
        n_positive=int((member & y).sum()),
        subgroup_auc=auc(member, member, "mention the group"),
        bpsn_auc=auc(out, member, "(violations without the group, clean messages with it)"),
        bnsp_auc=auc(member, out, "(violations with the group, clean messages without it)"),
        fpr=fpr,
        background_fpr=_share(flagged[out & ~y]),
    )


def counterfactual_swaps(
    texts: Sequence[str],
    members: dict[str, np.ndarray],
    terms: IdentityTerms,
    rescore: Rescore,
    threshold: float,
    max_texts: int,
    notes: list[str],
) -> list[SwapResult]:
    """Swap each group for every other group of its category in the texts that mention it, and rescore.

    The originals are rescored with the same `rescore` as the swapped texts, so a change is the swap's alone."""
    sources = {g: np.flatnonzero(m)[:max_texts] for g, m in members.items() if m.any()}
    capped = [g for g, m in members.items() if m.sum() > max_texts]
    if capped:
        notes.append(f"counterfactual check on the first {max_texts} messages of {', '.join(capped)}")
    rows = sorted({int(i) for idx in sources.values() for i in idx})
    base = dict(zip(rows, np.asarray(rescore([texts[i] for i in rows]), dtype=float))) if rows else {}
    results = []
    for source, idx in sources.items():
        category = terms.groups[source]
        for target in terms.categories[category]:
            if target == source:
                continue
            swapped = [terms.swap(texts[i], source, target) for i in idx]
            before = np.array([base[int(i)] for i in idx])
            after = np.asarray(rescore(swapped), dtype=float)
            change = after - before
            flips_up = (before < threshold) & (after >= threshold)
            flips_down = (before >= threshold) & (after < threshold)
            k = int(np.argmax(np.abs(change)))
            results.append(
                SwapResult(
                    source=source,
                    target=target,
                    category=category,
                    n=len(idx),
                    mean_abs_change=float(np.abs(change).mean()),
                    max_abs_change=float(np.abs(change).max()),
                    mean_change=float(change.mean()),
                    flip_share=float((flips_up | flips_down).mean()),
                    n_flagged_after_only=int(flips_up.sum()),
                    n_flagged_before_only=int(flips_down.sum()),
                    example={
                        "text": _cut(texts[idx[k]]),
                        "swapped": _cut(swapped[k]),
                        "before": float(before[k]),
                        "after": float(after[k]),
                    },
                )
            )
    return results


def _cut(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 3] + "..."
