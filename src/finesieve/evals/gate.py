"""The regression gate: may a retrained candidate replace the current model? Paired bootstrap evidence per set.

    from finesieve.evals.gate import GateConfig, GateSet, run_gate, write_gate_report
    sets = [GateSet(name="test", role="fixed", y=y, candidate=s_new, current=s_old), ...,
            GateSet(name="fresh", role="drifted", y=y_f, candidate=f_new, current=f_old)]
    verdict = run_gate(sets, thresholds={"candidate": 0.41, "current": 0.52}, config=GateConfig(margin=0.01))
    verdict.promote, verdict.reasons          # False, ["corner:leet: ROC AUC may have dropped by more than ..."]
    write_gate_report(verdict, "runs/retrained")   # gate.json and gate.html

Both models score the SAME messages of each set, and every difference (candidate - current) comes with a
paired bootstrap interval (`evals.bootstrap.paired_bootstrap_diff`: the same resamples for both models, so the
noise of which messages were drawn cancels). Three metrics are measured on each set:
  roc_auc, pr_auc  threshold-free ranking quality;
  recall           recall at each model's OWN operating threshold (the candidate's chosen on its validation
                   split, the current one's as recorded in its run): what production would catch if the model
                   were deployed as it stands. Unlike recall at a fixed precision it is defined on a set holding
                   only violations (a typical corner-case set), and it needs no threshold read off the test data.
                   It can be bought with false alarms, so it is evidence beside the AUCs, not a verdict on its own.

Verdict rules (a non-inferiority test per fixed set, a superiority test on the drifted slice):
  fixed sets    (the random test split, each corner-case set) pass when, for every deciding metric
                (`decide_on`, default the two AUCs), the lower bound of the difference's CI is above -margin:
                a drop larger than the margin is ruled out at the stated confidence. A set where no deciding
                metric is defined (one class only) is judged on recall when it holds violations, else it is
                not judged (noted). A small set gives a wide interval and so fails: too little evidence to rule a
                regression out is reported as such, never read as a pass.
  drifted sets  (the fresh data's held-out slice) must pass the same non-inferiority test AND improve: the CI's
                lower bound of the `gain_metric` difference is above `min_gain` (0: better with confidence).
Promote only when every judged fixed set passes, there is at least one drifted set, and every drifted set improves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from finesieve import report as R
from finesieve.data.errors import ConfigError, config_error
from finesieve.evals import metrics as M
from finesieve.evals.bootstrap import paired_bootstrap_diff
from finesieve.evals.harness import score_positive
from finesieve.outputs import write_text

GATE_JSON = "gate.json"
GATE_HTML = "gate.html"
METRICS = ("roc_auc", "pr_auc", "recall")
METRIC_NAMES = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "recall": "recall at the operating threshold"}
Role = Literal["fixed", "drifted"]


class GateConfig(BaseModel):
    """How much evidence the gate asks for; every field has a default, a YAML file may set any of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    margin: float = Field(0.01, ge=0, lt=1, description="Non-inferiority margin on ROC AUC (candidate - current).")
    pr_auc_margin: float = Field(
        0.02, ge=0, lt=1, description="Non-inferiority margin on PR AUC, which varies more with few violations."
    )
    recall_margin: float = Field(
        0.05, ge=0, lt=1, description="Non-inferiority margin on recall at the operating thresholds."
    )
    decide_on: tuple[Literal["roc_auc", "pr_auc", "recall"], ...] = Field(
        ("roc_auc", "pr_auc"), min_length=1, description="Metrics whose regression blocks promotion."
    )
    gain_metric: Literal["roc_auc", "pr_auc", "recall"] = Field(
        "roc_auc", description="The metric the drifted slice must improve on."
    )
    min_gain: float = Field(
        0.0, ge=0, lt=1, description="The drifted slice improves when the CI's lower bound of the gain is above this."
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of the bootstrap intervals.")
    n_boot: int = Field(1000, ge=100, le=100_000, description="Paired bootstrap resamples per set and metric.")
    seed: int = Field(0, ge=0, description="Seed of the resamples (the same resamples for every metric of a set).")

    @model_validator(mode="after")
    def _check(self) -> GateConfig:
        if len(set(self.decide_on)) != len(self.decide_on):
            raise ValueError(f"decide_on={list(self.decide_on)} names a metric twice: name each once")
        return self

    def margin_of(self, metric: str) -> float:
        return {"roc_auc": self.margin, "pr_auc": self.pr_auc_margin, "recall": self.recall_margin}[metric]

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> GateConfig:
        """Settings from a YAML mapping (e.g. `margin: 0.02`), then `overrides` that are not None."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise ConfigError(f"--gate-config {path}: cannot read it as YAML ({err}). Fix: pass a YAML file") from None
        if not isinstance(raw, dict):
            raise ConfigError(
                f"--gate-config {path}: expected a mapping such as `margin: 0.01`, found {type(raw).__name__}"
            )
        raw.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            raise config_error(err, f"--gate-config {path}", cls) from None


@dataclass
class GateSet:
    """One evaluation set scored by both models: y (n,) 1 for a violation, positive-class scores (n,) each."""

    name: str
    role: Role
    y: np.ndarray
    candidate: np.ndarray
    current: np.ndarray
    note: str = field(default="")


class MetricEvidence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str
    candidate: float | None = Field(description="The candidate's value on the whole set (None: undefined).")
    current: float | None = Field(description="The current model's value on the whole set.")
    diff: float | None = Field(description="candidate - current.")
    ci: tuple[float, float] | None = Field(description="Paired bootstrap percentile interval of the difference.")
    p_value: float | None = Field(description="Two-sided bootstrap p-value of the difference.")
    margin: float = Field(description="The non-inferiority margin: a drop beyond it must be ruled out.")
    decides: bool = Field(description="Whether this metric decides the set's outcome.")
    outcome: str = Field(description="non-inferior | regression not ruled out | undefined | evidence only.")


class SetEvidence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: Role
    n: int
    n_positive: int
    metrics: list[MetricEvidence]
    passed: bool | None = Field(description="Whether the set passed; None when it could not be judged.")
    improved: bool | None = Field(None, description="Drifted sets: whether the gain is shown with confidence.")
    reason: str = Field(description="The set's outcome in words.")

    def metric(self, name: str) -> MetricEvidence:
        return next(m for m in self.metrics if m.metric == name)


class GateVerdict(BaseModel):
    """The gate's decision, its reasons in words, and the evidence per set; `gate.json` holds exactly this."""

    model_config = ConfigDict(extra="forbid")

    promote: bool
    decision: Literal["promote", "refuse"]
    reasons: list[str] = Field(description="Why: each failing set and what failed, or why it passed.")
    notes: list[str] = Field(default_factory=list, description="Sets skipped or not judged, and why.")
    candidate: str
    current: str
    thresholds: dict[str, float] = Field(description="Operating thresholds: candidate and current.")
    config: GateConfig
    sets: list[SetEvidence]

    def summary(self) -> str:
        """One line: the decision and its first reasons."""
        head = "PROMOTE" if self.promote else "REFUSE"
        return f"gate: {head} {self.candidate} over {self.current}: " + "; ".join(self.reasons[:3])

    def set(self, name: str) -> SetEvidence:
        return next(s for s in self.sets if s.name == name)


# ----------------------------------------------------------------------------- scoring the sets


def score_gate_sets(candidate, current, datasets: Mapping[str, tuple], *, positive: Sequence[str]) -> list[GateSet]:
    """Score each dataset with both scorers: `datasets` maps a name to (Dataset, role). Both are given the same
    texts (the datasets' prepared texts), so the differences are paired message by message."""
    sets = []
    for name, (dataset, role) in datasets.items():
        texts = dataset.texts
        new, _, _ = score_positive(candidate, texts, positive)
        old, _, _ = score_positive(current, texts, positive)
        sets.append(GateSet(name=name, role=role, y=dataset.violation(positive), candidate=new, current=old))
    return sets


# ----------------------------------------------------------------------------- the verdict


def _recall(y: np.ndarray, predicted: np.ndarray) -> float:
    """Recall of 0/1 predictions; ValueError without violations (as the AUCs without both classes)."""
    if not y.any():
        raise ValueError("recall is undefined: no violations")
    return float(predicted[y].mean())


def _defined(metric: str, y: np.ndarray) -> bool:
    return bool(y.any()) if metric == "recall" else bool(0 < y.sum() < len(y))


def _evidence(s: GateSet, thresholds: Mapping[str, float], config: GateConfig) -> dict[str, dict]:
    """Per metric: the two values, the paired difference with its CI and p-value (None where undefined)."""
    y = np.asarray(s.y).astype(bool)
    new, old = np.asarray(s.candidate, dtype=float), np.asarray(s.current, dtype=float)
    inputs = {
        "roc_auc": (M.roc_auc, new, old),
        "pr_auc": (M.pr_auc, new, old),
        # Each model at its own threshold: 0/1 predictions, so the metric needs no threshold of its own.
        "recall": (
            _recall,
            (new >= thresholds["candidate"]).astype(float),
            (old >= thresholds["current"]).astype(float),
        ),
    }
    out: dict[str, dict] = {}
    for metric, (fn, a, b) in inputs.items():
        if not _defined(metric, y):
            out[metric] = {"candidate": None, "current": None, "diff": None, "ci": None, "p_value": None}
            continue
        cmp = paired_bootstrap_diff(fn, y, a, b, n_boot=config.n_boot, alpha=1 - config.confidence, seed=config.seed)
        out[metric] = {
            "candidate": float(fn(y, a)),
            "current": float(fn(y, b)),
            "diff": cmp["diff"],
            "ci": tuple(cmp["ci"]),
            "p_value": cmp["p_value"],
        }
    return out


def _judge_set(s: GateSet, thresholds: Mapping[str, float], config: GateConfig) -> SetEvidence:
    y = np.asarray(s.y).astype(bool)
    if not (len(y) == len(s.candidate) == len(s.current)):
        raise ValueError(
            f"gate set {s.name!r}: {len(y)} labels, {len(s.candidate)} candidate and {len(s.current)} current "
            "scores. Fix: score the same messages with both models"
        )
    values = _evidence(s, thresholds, config)
    deciding = [m for m in config.decide_on if _defined(m, y)]
    if not deciding and _defined("recall", y):
        deciding = ["recall"]  # a set of violations only: recall is all there is to measure
    pct = f"{config.confidence:.0%}"
    metrics, failing = [], []
    for metric in METRICS:
        v, margin = values[metric], config.margin_of(metric)
        if v["ci"] is None:
            outcome = "undefined"
        elif metric not in deciding:
            outcome = "evidence only"
        elif v["ci"][0] > -margin:
            outcome = "non-inferior"
        else:
            outcome = "regression not ruled out"
            failing.append(
                f"{METRIC_NAMES[metric]} {v['current']:.3f} -> {v['candidate']:.3f} "
                f"(diff {v['diff']:+.3f}, {pct} CI [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]): a drop of more than "
                f"{margin:g} is not ruled out"
            )
        metrics.append(MetricEvidence(metric=metric, margin=margin, decides=metric in deciding, outcome=outcome, **v))

    base = {"name": s.name, "role": s.role, "n": len(y), "n_positive": int(y.sum()), "metrics": metrics}
    if not deciding:
        return SetEvidence(**base, passed=None, reason="not judged: the set holds no violations")
    if s.role == "fixed":
        ok = not failing
        reason = "; ".join(failing) if failing else f"no drop beyond the margin on {', '.join(deciding)} ({pct})"
        return SetEvidence(**base, passed=ok, reason=reason)

    gain_metric = config.gain_metric if _defined(config.gain_metric, y) else "recall"
    gain = values[gain_metric]
    improved = gain["ci"] is not None and gain["ci"][0] > config.min_gain
    gain_words = (
        f"{METRIC_NAMES[gain_metric]} {gain['current']:.3f} -> {gain['candidate']:.3f} (diff {gain['diff']:+.3f}, "
        f"{pct} CI [{gain['ci'][0]:+.3f}, {gain['ci'][1]:+.3f}])"
        if gain["ci"] is not None
        else f"{METRIC_NAMES[gain_metric]} undefined"
    )
    reasons = list(failing)
    reasons.append(
        f"improves: {gain_words}"
        if improved
        else f"no improvement shown: {gain_words}, lower bound not above {config.min_gain:g}"
    )
    return SetEvidence(**base, passed=not failing and improved, improved=improved, reason="; ".join(reasons))


def run_gate(
    sets: Sequence[GateSet],
    *,
    thresholds: Mapping[str, float],
    config: GateConfig | None = None,
    candidate: str = "candidate",
    current: str = "current",
    notes: Sequence[str] = (),
) -> GateVerdict:
    """Judge every set and decide (see the module docstring). `thresholds` holds "candidate" and "current"."""
    config = config or GateConfig()
    missing = {"candidate", "current"} - set(thresholds)
    if missing:
        raise ValueError(f"thresholds lack {sorted(missing)}: give each model's operating threshold")
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"gate set names must be unique, got {names}")
    evidence = [_judge_set(s, thresholds, config) for s in sets]
    notes = list(notes) + [f"{e.name}: {e.reason}" for e in evidence if e.passed is None]
    reasons = [f"{e.name}: {e.reason}" for e in evidence if e.passed is False]
    drifted = [e for e in evidence if e.role == "drifted" and e.passed is not None]
    if not drifted:
        reasons.append("no drifted (fresh) slice with violations to show an improvement on")
    promote = not reasons
    if promote:
        fixed = [e.name for e in evidence if e.role == "fixed" and e.passed]
        reasons = [
            f"no regression beyond the margins on {', '.join(fixed) or 'no fixed set'}",
            *(f"{e.name}: {e.reason}" for e in drifted),
        ]
    return GateVerdict(
        promote=promote,
        decision="promote" if promote else "refuse",
        reasons=reasons,
        notes=notes,
        candidate=candidate,
        current=current,
        thresholds={"candidate": float(thresholds["candidate"]), "current": float(thresholds["current"])},
        config=config,
        sets=evidence,
    )


# ----------------------------------------------------------------------------- writing it


def read_verdict(path: str | Path) -> GateVerdict:
    path = Path(path)
    try:
        return GateVerdict.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError) as err:
        raise ConfigError(f"{path}: not a gate verdict written by finesieve ({err})") from None


def write_gate_report(verdict: GateVerdict, folder: str | Path) -> tuple[Path, Path]:
    """Write `gate.json` (the verdict, exactly) and `gate.html` (a self-contained page) into `folder`."""
    folder = Path(folder)
    json_path = write_text(folder / GATE_JSON, verdict.model_dump_json(indent=2) + "\n")
    html_path = R.write_page(
        folder / GATE_HTML,
        f"Regression gate: {verdict.decision.upper()}",
        _sections(verdict),
        subtitle=f"candidate {verdict.candidate} vs current {verdict.current}",
    )
    return json_path, html_path


def _sections(verdict: GateVerdict) -> list[str]:
    c = verdict.config
    rules = (
        f"Fixed sets pass when the {c.confidence:.0%} CI's lower bound of each deciding difference "
        f"({', '.join(c.decide_on)}) is above minus its margin (ROC AUC {c.margin:g}, PR AUC {c.pr_auc_margin:g}, "
        f"recall {c.recall_margin:g}); the drifted slice must also improve ({c.gain_metric}: lower bound above "
        f"{c.min_gain:g}). Paired bootstrap, {c.n_boot} resamples, seed {c.seed}. Recall is read at each model's own "
        f"operating threshold (candidate {verdict.thresholds['candidate']:.3f}, current "
        f"{verdict.thresholds['current']:.3f})."
    )
    decision = [R.paragraph(r, "" if verdict.promote else "warn") for r in verdict.reasons]
    decision += [R.paragraph(f"note: {n}", "note") for n in verdict.notes]
    rows = [
        (
            s.name,
            s.role,
            s.n,
            s.n_positive,
            METRIC_NAMES[m.metric],
            m.current,
            m.candidate,
            m.diff,
            "-" if m.ci is None else f"[{m.ci[0]:+.3f}, {m.ci[1]:+.3f}]",
            m.margin,
            m.outcome,
        )
        for s in verdict.sets
        for m in s.metrics
    ]
    header = ("set", "role", "n", "violations", "metric", "current", "candidate", "diff", "CI", "margin", "outcome")
    per_set = R.table(("set", "outcome"), [(s.name, s.reason) for s in verdict.sets])
    return [
        R.section("Decision", *decision, R.paragraph(rules, "note")),
        R.section("Differences with their intervals", R.figure(_plot(verdict))),
        R.section("Evidence per set", per_set, R.table(header, rows)),
    ]


def _plot(verdict: GateVerdict):
    """One panel per metric: each set's difference (candidate - current) with its CI, and the -margin line."""
    plt = R.plt
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 0.6 * len(verdict.sets) + 1.6), sharey=True)
    ys = np.arange(len(verdict.sets))
    for ax, metric in zip(np.atleast_1d(axes), METRICS):
        for y, s in zip(ys, verdict.sets):
            m = s.metric(metric)
            if m.ci is None or m.diff is None:
                continue
            colour = {"non-inferior": "tab:green", "regression not ruled out": "tab:red"}.get(m.outcome, "tab:gray")
            ax.errorbar(m.diff, y, xerr=[[m.diff - m.ci[0]], [m.ci[1] - m.diff]], fmt="o", color=colour, capsize=3)
        margin = verdict.config.margin_of(metric)
        ax.axvline(-margin, color="tab:red", linestyle="--", linewidth=1, label=f"-margin ({margin:g})")
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_title(METRIC_NAMES[metric], fontsize=10)
        ax.set_xlabel("candidate - current")
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_yticks(ys, [f"{s.name} ({s.role})" for s in verdict.sets])
    axes[0].invert_yaxis()
    fig.tight_layout()
    return fig
