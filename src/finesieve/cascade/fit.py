"""Choose a cascade's thresholds on validation data: a traffic budget, a recall floor, a queue precision target.

    fit = fit_thresholds(ValidationScores(...), model_threshold=0.59, config=CascadeConfig(budget=0.2))
    fit.thresholds        # CascadeThresholds for Cascade(...)
    fit.feasible          # False when the targets cannot all be met; fit.reachable says what can

The targets, all measured against the fine-tuned model alone at its own operating threshold:
  budget            at most this share of messages reaches the model (default 20%);
  recall floor      the cascade keeps at least this share of the model's recall (default 98%);
  review precision  the review queue is at least this precise (default 90% of the model's own precision).

The search walks the routing budget up from 0.5% in small steps. At each step the pre-filter threshold is a
quantile of the validation routing scores, and the review threshold is the largest one that still meets the
recall floor (which gives the most precise queue at that route). The first step that also meets the precision
target is chosen: the cheapest cascade that meets every target. Lowering the review threshold below the
model's own is what lets a cascade win back the violations the pre-filter lets through.

What `method="conformal"` guarantees (for new traffic exchangeable with the validation split):
  route   the escalation threshold is the ceil((n+1)(1-r))-th smallest of the n validation routing scores, so a
          new message reaches the model with probability at most r (a split-conformal quantile);
  recall  the review threshold is the largest t with (n_pos * miss(t) + 1) / (n_pos + 1) <= 1 - floor * R_model
          over the n_pos validation violations, so the expected share of new violations missed is at most
          1 - floor * R_model (conformal risk control, Angelopoulos et al. 2022): expected recall at least
          floor x the model's validation recall.
Both are marginal guarantees over the draw of the validation data. They do not hold under drift, and the
route level is itself picked on the same data (a selection effect left uncorrected). The queue precision is
checked on validation without a guarantee. Rules and auto-blocks act only where the 95% Clopper-Pearson lower
bound of their validation precision meets the target. `method="empirical"` uses the plain validation figures.

Without a pre-filter nothing holds messages back: every message no rule decides reaches the model, so the budget
cannot be enforced; it is reported (`targets["budget_applies"]` is False, with a message) and the recall and
precision targets are met at that one route.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.stats import beta

from finesieve.data.errors import ConfigError, FinesieveError
from finesieve.models.cascade import CascadeThresholds
from finesieve.models.rules import deciding_rule

CONFIDENCE = 0.95


class CascadeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget: float = Field(
        0.20, gt=0, le=1, description="Largest share of messages that may reach the fine-tuned model."
    )
    recall_floor: float = Field(
        0.98,
        gt=0,
        le=1,
        description=(
            "Least cascade recall, as a share of the fine-tuned model's own recall at its operating threshold."
        ),
    )
    review_precision: float | None = Field(
        None,
        gt=0,
        lt=1,
        description=(
            "Least precision of the review queue; default: 0.9 x the fine-tuned model's own validation precision."
        ),
    )
    block_precision: float = Field(
        0.95,
        gt=0,
        le=1,
        description=(
            "Least precision (95% lower confidence bound on validation) to block a category without human review."
        ),
    )
    block_categories: list[str] | None = Field(
        None,
        description=(
            "Positive categories that may be blocked outright; default all, [] for none (everything flagged is reviewed)."
        ),
    )
    clear_max_violation: float = Field(
        0.01,
        gt=0,
        lt=1,
        description=("Largest violation rate (95% upper bound) among the messages a 'clear' rule delivers."),
    )
    min_rule_support: int = Field(
        5, ge=1, description="Least validation messages a rule must fire on before it may act."
    )
    method: Literal["conformal", "empirical"] = Field(
        "conformal",
        description=(
            "conformal: thresholds with the finite-sample corrections above; empirical: plain validation figures."
        ),
    )
    on_infeasible: Literal["recall", "budget", "error"] = Field(
        "recall",
        description=(
            "When the targets conflict: keep the recall floor (route more), keep the budget (lose recall), or fail."
        ),
    )
    grid_step: float = Field(0.005, gt=0, lt=1, description="Step of the routing-budget search.")

    @model_validator(mode="after")
    def _check(self) -> CascadeConfig:
        if self.grid_step > self.budget:
            raise ValueError(f"grid_step ({self.grid_step}) is larger than budget ({self.budget}): lower grid_step")
        return self


class CascadeInfeasible(FinesieveError):
    """The targets cannot be met together on the validation data (raised only with on_infeasible='error')."""

    def __init__(self, message: str, fit: CascadeFit):
        super().__init__(message)
        self.fit = fit


@dataclass
class ValidationScores:
    """Everything the search needs, for the n validation messages."""

    y: np.ndarray  # (n,) 1 where the message is a violation (any positive class)
    model: np.ndarray  # (n,) model positive score
    prefilter: np.ndarray | None = None  # (n,) pre-filter positive score
    y_category: dict[str, np.ndarray] = field(default_factory=dict)  # positive class -> (n,) 0/1
    model_category: dict[str, np.ndarray] = field(default_factory=dict)  # positive class -> (n,) model probability
    rules_fired: list[list[str]] | None = None
    rule_action: dict[str, str] = field(default_factory=dict)  # rule -> action its policy asks for
    rule_category: dict[str, str] = field(default_factory=dict)  # rule -> category it signals


@dataclass
class CascadeFit:
    thresholds: CascadeThresholds
    feasible: bool
    chosen: dict  # route, recall, precision, recall_retention... on validation at the chosen thresholds
    model_alone: dict  # the model at its own threshold on validation
    targets: dict
    reachable: dict  # what can be met when not everything can
    tradeoff: list[dict]  # one row per searched routing level, for the report
    rules: dict  # rule -> {mode, support, precision, bound, reason}
    blocks: dict  # category -> {threshold or None, support, precision, bound, reason}
    method: str
    guarantee: str
    messages: list[str]

    def to_dict(self) -> dict:
        return {
            "thresholds": self.thresholds.model_dump(),
            "feasible": self.feasible,
            "chosen": self.chosen,
            "model_alone": self.model_alone,
            "targets": self.targets,
            "reachable": self.reachable,
            "tradeoff": [
                {**r, "escalate": r["escalate"] if math.isfinite(r["escalate"]) else None} for r in self.tradeoff
            ],
            "rules": self.rules,
            "blocks": self.blocks,
            "method": self.method,
            "guarantee": self.guarantee,
            "messages": self.messages,
        }


# ------------------------------------------------------------------------------------------- bounds


def precision_lower_bound(hits: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson lower bound of a proportion: hits successes out of n."""
    return 0.0 if hits == 0 or n == 0 else float(beta.ppf(1 - confidence, hits, n - hits + 1))


def rate_upper_bound(hits: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound of a proportion."""
    return 1.0 if n == 0 or hits == n else float(beta.ppf(confidence, hits + 1, n - hits))


def routing_threshold(g: np.ndarray, level: float, method: str) -> float:
    """Threshold t so that a share of at most `level` of messages has g >= t (g = -inf: never routed)."""
    n = len(g)
    s = np.sort(g)
    if method == "conformal":
        k = math.ceil((n + 1) * (1 - level))  # the k-th smallest; a new message exceeds it w.p. <= level
    else:
        k = math.ceil(n * (1 - level))
        k = max(k, 1)
    if k > n:
        return math.inf
    t = s[k - 1]
    if not np.isfinite(t):
        # Among the never-routed: route every routable message if that fits the level.
        finite = s[np.isfinite(s)]
        return float(finite.min()) if len(finite) and np.mean(np.isfinite(g)) <= level + 1e-12 else math.inf
    # Ties at t would all be routed; step above t when they overshoot the level.
    if np.mean(g >= t) > level + 1e-12:
        above = s[s > t]
        return float(above.min()) if len(above) else math.inf
    return float(t)


def review_threshold(
    y: np.ndarray, model: np.ndarray, routed: np.ndarray, forced: np.ndarray, target_recall: float, method: str
) -> float | None:
    """Largest t such that flagging forced | (routed & model >= t) meets the recall target, or None.

    conformal: (n_pos * miss(t) + 1) / (n_pos + 1) <= 1 - target_recall; empirical: miss(t) <= 1 - target_recall.
    """
    pos = y == 1
    n_pos = int(pos.sum())
    if n_pos == 0:
        return None
    alpha = 1 - target_recall
    allowed = math.floor(alpha * (n_pos + 1) - 1 + 1e-9) if method == "conformal" else math.floor(alpha * n_pos + 1e-9)
    if allowed < 0:
        return None
    base_missed = int((pos & ~forced & ~routed).sum())
    catchable = np.sort(model[pos & ~forced & routed])[::-1]
    need = len(catchable) - (allowed - base_missed)  # how many of them must be caught
    if need > len(catchable):
        return None
    if need <= 0:
        return 1.0  # the recall floor holds without the model flagging anything
    return float(catchable[need - 1])


def _pr(y: np.ndarray, flagged: np.ndarray) -> tuple[float, float]:
    tp = float((flagged & (y == 1)).sum())
    recall = tp / max(int((y == 1).sum()), 1)
    precision = tp / float(flagged.sum()) if flagged.sum() else 0.0
    return float(recall), float(precision)


# ------------------------------------------------------------------------------------------- rules


def _rule_modes(v: ValidationScores, precision_target: float, config: CascadeConfig) -> dict:
    out = {}
    if v.rules_fired is None:
        return out
    for name, action in v.rule_action.items():
        fires = np.array([name in f for f in v.rules_fired])
        support = int(fires.sum())
        entry = {"policy_action": action, "support": support}
        if support < config.min_rule_support:
            out[name] = {
                **entry,
                "mode": "off",
                "reason": f"fired on {support} validation messages (needs {config.min_rule_support})",
            }
            continue
        if action == "clear":
            violations = int(v.y[fires].sum())
            bound = rate_upper_bound(violations, support)
            ok = bound <= config.clear_max_violation
            out[name] = {
                **entry,
                "violation_rate": violations / support,
                "upper_bound": bound,
                "mode": "clear" if ok else "off",
                "reason": f"violation rate upper bound {bound:.3f} {'<=' if ok else '>'} {config.clear_max_violation}",
            }
            continue
        cat = v.rule_category[name]
        y_cat = v.y_category.get(cat, v.y)
        hits = int(y_cat[fires].sum())
        bound = precision_lower_bound(hits, support)
        entry.update(precision=hits / support, lower_bound=bound)
        if action == "block" and bound >= config.block_precision:
            mode, reason = "block", f"precision lower bound {bound:.3f} >= block target {config.block_precision}"
        elif bound >= precision_target:
            mode = "review"
            reason = f"precision lower bound {bound:.3f} >= queue target {precision_target:.3f}"
        else:
            mode = "off"
            reason = f"precision lower bound {bound:.3f} below the {'block' if action == 'block' else 'queue'} target"
        out[name] = {**entry, "mode": mode, "reason": reason}
    return out


# ------------------------------------------------------------------------------------------- search


def fit_thresholds(v: ValidationScores, *, model_threshold: float, config: CascadeConfig | None = None) -> CascadeFit:
    config = config or CascadeConfig()
    y = np.asarray(v.y).astype(int)
    n = len(y)
    if n == 0 or y.sum() == 0:
        raise ConfigError(
            "the validation split has no violations: the recall floor cannot be measured; "
            "use more data or a split with positives in validation"
        )
    messages = []
    model_flag = v.model >= model_threshold
    r_model, p_model = _pr(y, model_flag)
    target_recall = config.recall_floor * r_model
    target_precision = config.review_precision if config.review_precision is not None else 0.9 * p_model
    targets = {
        "budget": config.budget,
        "budget_applies": v.prefilter is not None,  # no pre-filter: nothing routes
        "recall_floor": config.recall_floor,
        "recall": target_recall,
        "review_precision": target_precision,
        "review_precision_source": "given" if config.review_precision is not None else "0.9 x model's own",
    }

    rules = _rule_modes(v, target_precision, config)
    modes = {name: r["mode"] for name, r in rules.items()}
    forced = np.zeros(n, dtype=bool)  # flagged by a rule
    decided = np.zeros(n, dtype=bool)  # decided by a rule (flagged or cleared)
    if v.rules_fired is not None:
        for i, names in enumerate(v.rules_fired):
            if (decision := deciding_rule(names, modes)) is not None:
                decided[i] = True
                forced[i] = decision[0] != "clear"

    g = np.where(decided, -np.inf, v.prefilter if v.prefilter is not None else np.inf)
    levels = np.round(np.arange(config.grid_step, 1.0 + 1e-9, config.grid_step), 6)
    if v.prefilter is None:
        levels = np.array([1.0])
    rows = []
    for level in levels:
        # Without a pre-filter every message no rule decided goes to the model (g = +inf >= +inf).
        t_pre = routing_threshold(g, level, config.method) if v.prefilter is not None else math.inf
        routed = g >= t_pre
        t_rev = review_threshold(y, v.model, routed, forced, target_recall, config.method)
        row = {"level": float(level), "escalate": t_pre, "route": float(routed.mean()), "review": t_rev}
        if t_rev is not None:
            recall, precision = _pr(y, forced | (routed & (v.model >= t_rev)))
            row.update(
                recall=recall,
                precision=precision,
                recall_retention=recall / r_model if r_model else None,
                meets_precision=precision >= target_precision,
            )
        rows.append(row)

    # The routing levels the budget allows. Without a pre-filter there is nothing to hold messages back with:
    # every message no rule decides reaches the model, so the one level there is stands and the budget is
    # reported, not enforced (filtering on it would leave no level at all).
    if v.prefilter is None:
        in_budget = rows
        messages.append(
            f"no pre-filter: every message no rule decides reaches the model (route "
            f"{rows[0]['route']:.1%}), so the budget of {config.budget:.0%} does not apply; "
            "pass a pre-filter run to route less"
        )
    else:
        in_budget = [r for r in rows if r["level"] <= config.budget + 1e-9]
    feasible_rows = [r for r in in_budget if r["review"] is not None and r["meets_precision"]]
    reachable = _reachable(rows, in_budget, y, v, forced, g, target_precision, r_model)
    feasible = bool(feasible_rows)
    if feasible:
        chosen = feasible_rows[0]
    else:
        messages.append(_infeasible_message(config, targets, reachable))
        chosen = _fallback(rows, in_budget, reachable, config, model_threshold)
    t_pre, t_rev = chosen["escalate"], chosen["review"]
    routed = g >= t_pre
    blocks = _block_thresholds(v, y, routed, t_rev, config)
    thresholds = CascadeThresholds(
        escalate=None if v.prefilter is None else _finite(t_pre),
        review=t_rev,
        block={c: b["threshold"] for c, b in blocks.items() if b["threshold"] is not None},
        rule_modes=modes,
    )
    flagged = forced | (routed & (v.model >= t_rev))
    recall, precision = _pr(y, flagged)
    chosen_summary = {
        "route": float(routed.mean()),
        "recall": recall,
        "precision": precision,
        "recall_retention": recall / r_model if r_model else None,
        "flag_rate": float(flagged.mean()),
        "escalate": thresholds.escalate,
        "review": t_rev,
        "level": chosen["level"],
        "decided_by_rules": float(decided.mean()),
    }
    fit = CascadeFit(
        thresholds=thresholds,
        feasible=feasible,
        chosen=chosen_summary,
        model_alone={
            "threshold": model_threshold,
            "recall": r_model,
            "precision": p_model,
            "flag_rate": float(model_flag.mean()),
            "route": 1.0,
        },
        targets=targets,
        reachable=reachable,
        tradeoff=rows,
        rules=rules,
        blocks=blocks,
        method=config.method,
        guarantee=guarantee_text(config, target_recall, r_model, thresholds, int(y.sum()), n),
        messages=messages,
    )
    if not feasible and config.on_infeasible == "error":
        raise CascadeInfeasible(messages[-1], fit)
    return fit


def _finite(t: float) -> float:
    return 1.0 + 1e-9 if t == math.inf else float(t)  # +inf (route nothing) as a JSON-safe threshold


def _best_recall_at_precision(y, model, routed, forced, target_precision) -> tuple[float | None, dict | None]:
    """Review threshold with the highest recall whose queue precision meets the target, at a fixed route."""
    candidates = np.unique(model[routed])[::-1]
    best = None
    for t in candidates:
        recall, precision = _pr(y, forced | (routed & (model >= t)))
        if precision >= target_precision and (best is None or recall > best[1]["recall"]):
            best = (float(t), {"recall": recall, "precision": precision})
    return best if best else (None, None)


def _reachable(rows, in_budget, y, v, forced, g, target_precision, r_model) -> dict:
    """What can be met: within the budget (the largest routing level in `in_budget`), and at any route."""
    at_budget = in_budget[-1]
    routed = g >= at_budget["escalate"]
    t, best = _best_recall_at_precision(y, v.model, routed, forced, target_precision)
    out = {
        "at_budget": {
            "route": at_budget["route"],
            "recall_floor_met_with_precision": at_budget.get("precision") if at_budget["review"] is not None else None,
            "best_recall_retention_at_precision_target": best["recall"] / r_model if best and r_model else None,
            "review_threshold_for_it": t,
        }
    }
    ok = [r for r in rows if r["review"] is not None and r["meets_precision"]]
    recall_only = [r for r in rows if r["review"] is not None]
    out["for_all_targets"] = {"route_needed": ok[0]["route"] if ok else None, "level": ok[0]["level"] if ok else None}
    out["for_recall_floor"] = {"route_needed": recall_only[0]["route"] if recall_only else None}
    return out


def _fallback(rows, in_budget, reachable, config, model_threshold) -> dict:
    if config.on_infeasible in ("recall", "error"):
        ok = [r for r in rows if r["review"] is not None and r["meets_precision"]]
        if ok:
            return ok[0]  # every target but the budget: route more
        within = [r for r in in_budget if r["review"] is not None]
        if within:
            return max(within, key=lambda r: r["precision"])  # recall and budget, queue less precise
        recall_rows = [r for r in rows if r["review"] is not None]
        if recall_rows:
            return recall_rows[0]
    # Keep the budget: the most recall the precision target allows (else the model's own threshold).
    row = dict(in_budget[-1])
    t = reachable["at_budget"]["review_threshold_for_it"]
    row["review"] = float(t) if t is not None else float(model_threshold)
    return row


def _infeasible_message(config: CascadeConfig, targets: dict, reachable: dict) -> str:
    ab, rf, al = reachable["at_budget"], reachable["for_recall_floor"], reachable["for_all_targets"]
    parts = [
        f"the targets cannot all be met on the validation split (budget {config.budget:.0%}, recall floor "
        f"{config.recall_floor:.0%} of the model's, queue precision >= {targets['review_precision']:.3f})."
    ]
    if ab["recall_floor_met_with_precision"] is not None:
        parts.append(
            f"Within the budget the recall floor holds with a queue precision of "
            f"{ab['recall_floor_met_with_precision']:.3f}."
        )
    if ab["best_recall_retention_at_precision_target"] is not None:
        parts.append(
            f"Within the budget and the precision target the cascade keeps "
            f"{ab['best_recall_retention_at_precision_target']:.1%} of the model's recall."
        )
    if al["route_needed"] is not None:
        parts.append(f"Meeting recall and precision needs {al['route_needed']:.1%} of messages routed to the model.")
    elif rf["route_needed"] is not None:
        parts.append(
            f"The recall floor alone needs {rf['route_needed']:.1%} routed; the precision target is not "
            "reachable together with it at any route."
        )
    parts.append(
        f"Chosen by on_infeasible='{config.on_infeasible}'. Fix: raise --budget, lower --recall-floor or "
        "--review-precision, or train a pre-filter that ranks like the model."
    )
    return " ".join(parts)


def _block_thresholds(v: ValidationScores, y, routed, t_rev, config: CascadeConfig) -> dict:
    categories = list(v.model_category) if config.block_categories is None else config.block_categories
    unknown = [c for c in categories if c not in v.model_category]
    if unknown:
        raise ConfigError(f"block_categories {unknown} are not positive classes {list(v.model_category)}")
    out = {}
    for c in categories:
        p_c = v.model_category[c]
        y_c = v.y_category.get(c, y)
        eligible = routed & (v.model >= t_rev)
        best = None
        for t in np.unique(np.maximum(p_c[eligible], t_rev))[::-1]:  # high to low: more blocked each step
            blocked = eligible & (p_c >= t)
            hits, size = int(y_c[blocked].sum()), int(blocked.sum())
            bound = precision_lower_bound(hits, size)
            if bound >= config.block_precision:
                best = {"threshold": float(t), "support": size, "precision": hits / size, "lower_bound": bound}
        if best is None:
            out[c] = {
                "threshold": None,
                "reason": f"no threshold reaches a {CONFIDENCE:.0%} lower bound of "
                f"{config.block_precision} precision on validation: review only",
            }
        else:
            out[c] = {**best, "reason": f"precision lower bound {best['lower_bound']:.3f} >= {config.block_precision}"}
    return out


def guarantee_text(
    config: CascadeConfig, target_recall: float, r_model: float, t: CascadeThresholds, n_pos: int, n: int
) -> str:
    if config.method == "empirical":
        return (
            "empirical: thresholds meet the targets on the validation split as measured, with no finite-sample "
            "correction and no guarantee for new traffic."
        )
    return (
        f"conformal, for new traffic exchangeable with the {n:,} validation messages: a message reaches the model "
        f"with probability <= the chosen routing level (split-conformal quantile); the expected share of "
        f"violations missed is <= {1 - target_recall:.3f}, i.e. expected recall >= {target_recall:.3f} "
        f"= {config.recall_floor:.0%} of the model's validation recall {r_model:.3f} (conformal risk control over "
        f"{n_pos} validation violations). Marginal over the validation draw; not under drift; the routing level "
        f"is itself picked on the same data. Queue precision: measured, not guaranteed."
    )
