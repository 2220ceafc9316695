"""Evaluate any scorer on a labelled dataset: the same code for the baseline, the models and the cascade.

    result = evaluate(scorer, test_set, positive=["hate_speech"], threshold=0.31)
    result.to_dict()["roc_auc"]

Binary figures treat the `positive` classes as the violation and everything else as clean: ROC AUC, PR AUC,
precision, recall and F1 at the operating threshold, with bootstrap confidence intervals; the thresholds
that would meet a target precision or recall on this data; the cost of misses and false alarms. Per-class
figures (one class vs the rest), the multi-class confusion matrix and per-slice figures come beside them.
Asked for, a bias audit per identity group (`evals.bias`) is added as `EvalResult.bias`, and the same messages
evaded by the tricks people use to slip past filters (`evals.evasion`: plain AUC minus evaded AUC, per kind) as
`EvalResult.evasion`. A functional suite (`evals.functional`: cases tagged with the behaviour they test) gets
accuracy per functionality and target group as `EvalResult.functional`, without asking:

    evaluate(scorer, test_set, positive=["hate_speech"], threshold=0.31, bias=BiasConfig(), evasion=EvasionConfig())

Every task kind (`data.task`) goes through one entry point, given what the system produced for the dataset:

    evaluate_task(ClassificationTask(...), dataset, proba)          # (n, n_classes) in task.classes order
    evaluate_task(RankingTask(...), ranking_dataset, scores)        # (n,) one score per pair: evals.ranking
    evaluate_task(GenerationTask(...), generation_dataset, texts)   # n generated texts: evals.generation
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from finesieve.data.dataset import AnyDataset, Dataset, GenerationDataset, RankingDataset
from finesieve.data.errors import ConfigError
from finesieve.data.evasion import EvasionConfig
from finesieve.data.task import ClassificationTask, GenerationTask, RankingTask
from finesieve.evals import metrics as M
from finesieve.evals.bias import BiasConfig, audit_bias
from finesieve.evals.bootstrap import bootstrap_cis, resample_indices
from finesieve.evals.evasion import evasion_gap
from finesieve.evals.functional import FUNCTIONALITY_COL, TARGET_COL, functional_breakdown
from finesieve.evals.generation import GenerationResult, evaluate_generation
from finesieve.evals.ranking import RankingResult, evaluate_ranking
from finesieve.models.base import positive_scores

LENGTH_BUCKETS = ((0, 40, "short (<40 chars)"), (40, 100, "medium (40-99)"), (100, 10**9, "long (100+)"))


@dataclass
class CostModel:
    """Cost of one missed violation and of one false alarm (e.g. minutes of a reviewer's time)."""

    miss_cost: float = 10.0
    false_alarm_cost: float = 1.0


@dataclass
class EvalResult:
    name: str
    positive: list[str]
    threshold: float
    threshold_source: str
    summary: dict
    ci: dict[str, tuple[float, float]]
    targets: dict
    cost: dict
    per_class: dict
    confusion: dict | None
    slices: dict
    scores: np.ndarray = field(repr=False)  # (n,) positive-class scores, for curves and histograms
    y: np.ndarray = field(repr=False)  # (n,) 1 where the message is a violation
    proba: np.ndarray = field(repr=False)  # (n, n_classes)
    classes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bias: dict | None = None  # the bias audit (`evals.bias.BiasAudit.to_dict`), when asked for
    evasion: dict | None = None  # plain vs evaded figures (`evals.evasion.EvasionGap.to_dict`), when asked for
    functional: dict | None = None  # accuracy per functionality (`evals.functional`), on a functional suite
    multiclass: dict | None = None  # accuracy and macro-F1 over the classes (argmax), single-label with 3+ classes

    def to_dict(self) -> dict:
        s = self.summary
        return {
            "scorer": self.name,
            "positive": self.positive,
            "n": s["n"],
            "n_positive": s["n_positive"],
            "prevalence": s["prevalence"],
            "roc_auc": s["roc_auc"],
            "pr_auc": s["pr_auc"],
            "precision": s["precision"],
            "recall": s["recall"],
            "f1": s["f1"],
            "flag_rate": s["flag_rate"],
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "confusion": {k: s[k] for k in ("tp", "fp", "tn", "fn")},
            "ci95": {k: (list(v) if v is not None else None) for k, v in self.ci.items()},
            "targets": self.targets,
            "cost": self.cost,
            "per_class": self.per_class,
            "confusion_matrix": self.confusion,
            "slices": self.slices,
            "messages_per_second": round(s["n"] / self.seconds, 1) if self.seconds > 0 else None,
            **({"bias": self.bias} if self.bias is not None else {}),
            **({"evasion": self.evasion} if self.evasion is not None else {}),
            **({"functional": self.functional} if self.functional is not None else {}),
            **({"multiclass": self.multiclass} if self.multiclass is not None else {}),
        }


def score_positive(scorer, texts: Sequence[str], positive: Sequence[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """(positive scores, per-class probabilities, seconds spent scoring)."""
    start = time.perf_counter()
    proba = np.asarray(scorer.predict_proba(texts if isinstance(texts, list) else list(texts)), dtype=float)
    seconds = time.perf_counter() - start
    classes = [str(c) for c in scorer.classes_]
    return positive_scores(proba, classes, positive, scorer.multilabel_), proba, seconds


def evaluate(
    scorer,
    dataset: Dataset,
    *,
    positive: Sequence[str],
    threshold: float | None = None,
    threshold_source: str = "given",
    target_precision: float = 0.9,
    target_recall: float = 0.9,
    cost: CostModel | None = None,
    slice_cols: Sequence[str] = (),
    n_boot: int = 1000,
    seed: int = 0,
    name: str | None = None,
    bias: BiasConfig | None = None,
    evasion: EvasionConfig | None = None,
) -> EvalResult:
    """Score `dataset` with `scorer` and measure it; a scorer with `decide` (a cascade) is judged by its actions.
    `bias` adds the bias audit, its counterfactual check rescoring with `scorer.predict_proba`; `evasion` scores
    the messages again, evaded, and adds the gap."""
    positive = list(positive)
    flagged = None
    start = time.perf_counter()
    if hasattr(scorer, "decide"):
        decisions = scorer.decide(dataset.texts)
        proba, flagged = np.asarray(decisions.proba, dtype=float), decisions.flagged
    else:
        proba = np.asarray(scorer.predict_proba(dataset.texts), dtype=float)
    seconds = time.perf_counter() - start
    result = evaluate_scored(
        proba,
        [str(c) for c in scorer.classes_],
        scorer.multilabel_,
        dataset,
        positive=positive,
        threshold=threshold,
        threshold_source=threshold_source,
        target_precision=target_precision,
        target_recall=target_recall,
        cost=cost,
        slice_cols=slice_cols,
        n_boot=n_boot,
        seed=seed,
        name=name or type(scorer).__name__,
        seconds=seconds,
        flagged=flagged,
    )
    if bias is not None:
        audit = audit_bias(
            dataset.texts,
            result.y,
            result.scores,
            result.threshold,
            bias,
            rescore=lambda texts: score_positive(scorer, texts, positive)[0],
            flagged=flagged,
            n_boot=n_boot,
            seed=seed,
        )
        result.bias = audit.to_dict()
    if evasion is not None:
        add_evasion(result, scorer, dataset.texts, evasion, flagged=flagged, n_boot=n_boot, seed=seed)
    return result


def add_evasion(
    result: EvalResult,
    scorer,
    texts: Sequence[str],
    config: EvasionConfig,
    *,
    flagged: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> None:
    """Score `texts` (the ones `result` measured) again, evaded, with `scorer` (by its decisions when it has
    `decide`, like the cascade) and set `result.evasion` (`evals.evasion.evasion_gap`)."""
    positive = result.positive

    def rescore(evaded: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        if hasattr(scorer, "decide"):
            d = scorer.decide(evaded)
            classes = [str(c) for c in scorer.classes_]
            return positive_scores(np.asarray(d.proba, dtype=float), classes, positive, scorer.multilabel_), d.flagged
        return score_positive(scorer, evaded, positive)[0], None

    gap = evasion_gap(
        texts, result.y, result.scores, result.threshold, config, rescore, flagged=flagged, n_boot=n_boot, seed=seed
    )
    result.evasion = gap.to_dict()


def evaluate_scored(
    proba: np.ndarray,
    classes: list[str],
    multilabel: bool,
    dataset: Dataset,
    *,
    positive: Sequence[str],
    threshold: float | None = None,
    threshold_source: str = "given",
    target_precision: float = 0.9,
    target_recall: float = 0.9,
    cost: CostModel | None = None,
    slice_cols: Sequence[str] = (),
    n_boot: int = 1000,
    seed: int = 0,
    name: str = "scorer",
    seconds: float = 0.0,
    flagged: np.ndarray | None = None,
) -> EvalResult:
    """Measure probabilities already computed. `flagged` (n,) bool: the scorer's own decisions, which then
    define precision, recall, F1, flag rate and cost instead of `scores >= threshold` (AUCs use the scores)."""
    positive = list(positive)
    y = dataset.violation(positive)
    scores = positive_scores(proba, classes, positive, multilabel)
    if threshold is None:
        threshold, threshold_source = 0.5, "default 0.5"
    cost = cost or CostModel()
    # Decisions as 0/1 scores at threshold 0.5 give the metrics of the decisions themselves.
    decided, at = (np.asarray(flagged, dtype=float), 0.5) if flagged is not None else (scores, threshold)

    summary = M.binary_summary(y, scores, threshold)
    if flagged is not None:
        summary.update(
            {k: v for k, v in M.binary_summary(y, decided, at).items() if k not in ("roc_auc", "pr_auc", "threshold")}
        )
    ci = {}
    if n_boot and 0 < y.sum() < len(y):
        ci = bootstrap_cis(y, scores, threshold, n_boot=n_boot, seed=seed)
        if flagged is not None:  # same seed, so the same resamples
            ci.update(
                {
                    k: v
                    for k, v in bootstrap_cis(y, decided, at, n_boot=n_boot, seed=seed).items()
                    if k not in ("roc_auc", "pr_auc")
                }
            )
    targets = _targets(y, scores, target_precision, target_recall)
    cost_info = _cost(y, scores, threshold, cost, pred=decided >= at)
    per_class = _per_class(dataset, proba, classes)
    confusion = multiclass = None
    if not dataset.multilabel and set(classes) >= set(dataset.classes):
        true_idx = np.array([classes.index(lbl) for lbl in dataset.labels])
        pred_idx = proba.argmax(axis=1)
        confusion = {"labels": classes, "matrix": M.confusion_matrix(true_idx, pred_idx, len(classes)).tolist()}
        if len(classes) > 2:
            multiclass = _multiclass(true_idx, pred_idx, classes, dataset.classes, n_boot=n_boot, seed=seed)
    slices = _slices(dataset, y, scores, threshold, slice_cols, pred=decided >= at)
    functional = None
    if FUNCTIONALITY_COL in dataset.frame:  # a functional suite (evals.functional): accuracy per functionality
        target = dataset.frame[TARGET_COL] if TARGET_COL in dataset.frame else None
        functional = functional_breakdown(dataset.frame[FUNCTIONALITY_COL], target, y, decided >= at)
    return EvalResult(
        name=name,
        positive=positive,
        threshold=float(threshold),
        threshold_source=threshold_source,
        summary=summary,
        ci=ci,
        targets=targets,
        cost=cost_info,
        per_class=per_class,
        confusion=confusion,
        slices=slices,
        scores=scores,
        y=y,
        proba=proba,
        classes=classes,
        seconds=seconds,
        functional=functional,
        multiclass=multiclass,
    )


def _multiclass(
    true_idx: np.ndarray, pred_idx: np.ndarray, classes: list[str], present: Sequence[str], *, n_boot: int, seed: int
) -> dict:
    """Accuracy and macro-F1 of the argmax class, with percentile intervals over resampled messages. Macro-F1
    averages over the classes the data holds (a class the scorer knows but the data lacks is no one's failure)."""
    keep = [i for i, c in enumerate(classes) if c in set(present)]
    remap = np.full(len(classes), len(keep))  # predictions of an absent class become one extra "other" class
    remap[keep] = np.arange(len(keep))
    t, p = remap[true_idx], remap[pred_idx]

    def macro(t_: np.ndarray, p_: np.ndarray) -> float:
        f1 = M.macro_f1(t_, p_, len(keep) + 1)
        return f1 * (len(keep) + 1) / len(keep)  # the mean over the data's classes only ("other" has F1 0)

    out: dict = {"n_classes": len(keep), "accuracy": M.accuracy(t, p), "macro_f1": macro(t, p)}
    if n_boot:
        draws = list(resample_indices(t, n_boot, seed, stratified=False))
        for name, fn in (("accuracy", M.accuracy), ("macro_f1", macro)):
            values = np.array([fn(t[i], p[i]) for i in draws])
            out[f"{name}_ci95"] = [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]
    return out


def evaluate_task(
    task: ClassificationTask | RankingTask | GenerationTask,
    dataset: AnyDataset,
    outputs,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    name: str = "scorer",
    seconds: float = 0.0,
) -> EvalResult | RankingResult | GenerationResult:
    """Measure what a system produced for `dataset`, as its task's kind asks:

    - classification: `outputs` (n, n_classes) probabilities in `task.classes` order, measured at
      `task.threshold` (0.5 while none is chosen) for `task.positive` (`evaluate_scored`);
    - ranking: `outputs` (n,) one score per pair, in dataset order; metrics per query and their means over
      queries with intervals over resampled queries (`evals.ranking.evaluate_ranking`);
    - generation: `outputs` n texts, in dataset order, compared with the references by `task.metrics`
      (`evals.generation.evaluate_generation`).
    """
    expected = {"classification": Dataset, "ranking": RankingDataset, "generation": GenerationDataset}[task.kind]
    if not isinstance(dataset, expected):
        raise ConfigError(
            f"a {task.kind} task is measured on a {expected.__name__}, got a {type(dataset).__name__}: "
            f"load the data with the {task.kind} column spec, or pass the task that fits the data"
        )
    if isinstance(task, ClassificationTask):
        proba = np.asarray(outputs, dtype=float)
        if proba.shape != (len(dataset), len(task.classes)):
            raise ValueError(
                f"outputs have shape {proba.shape}, expected ({len(dataset)}, {len(task.classes)}): one "
                f"row per message, one column per class in task.classes order {list(task.classes)}"
            )
        return evaluate_scored(
            proba,
            list(task.classes),
            task.multilabel,
            dataset,
            positive=task.positive,
            threshold=task.threshold,
            threshold_source=task.threshold_source or "given",
            n_boot=n_boot,
            seed=seed,
            name=name,
            seconds=seconds,
        )
    if isinstance(task, RankingTask):
        return _evaluate_ranking_task(task, dataset, outputs, n_boot=n_boot, seed=seed, name=name, seconds=seconds)
    return evaluate_generation(
        dataset.references,
        list(outputs),
        metrics=task.metrics,
        ids=dataset.ids,
        n_boot=n_boot,
        seed=seed,
        name=name,
        seconds=seconds,
    )


def _evaluate_ranking_task(
    task: RankingTask, dataset: RankingDataset, outputs, *, n_boot: int, seed: int, name: str, seconds: float
) -> RankingResult:
    scores = np.asarray(outputs, dtype=float)
    if scores.shape != (len(dataset),):
        raise ValueError(
            f"outputs have shape {scores.shape}, expected ({len(dataset)},): one score per "
            "(query, candidate) pair, in the dataset's row order"
        )
    grades = dataset.relevance
    outside = (grades < task.min_grade) | (grades > task.max_grade)
    if outside.any():
        raise ValueError(
            f"{int(outside.sum())} pair(s) have grades outside the task's {task.min_grade:g} to "
            f"{task.max_grade:g} (e.g. {grades[outside][0]:g} at row {int(dataset.frame['row'][outside].iloc[0])})"
            ": load the data with this task (load_ranking_dataset(..., task=task)) or fix the task"
        )
    return evaluate_ranking(
        grades,
        scores,
        dataset.queries,
        k_values=task.k_values,
        min_grade=task.min_grade,
        relevant_grade=task.relevant_grade,
        no_relevant=task.no_relevant,
        n_boot=n_boot,
        seed=seed,
        name=name,
        seconds=seconds,
    )


def _targets(y, scores, target_precision, target_recall) -> dict:
    out = {}
    for kind, target, finder in (
        ("precision", target_precision, M.threshold_for_precision),
        ("recall", target_recall, M.threshold_for_recall),
    ):
        t = finder(y, scores, target) if 0 < y.sum() < len(y) else None
        entry = {"target": target, "threshold": t, "reachable": t is not None}
        if t is not None:
            p, r, f = M.precision_recall_f1(y, scores, t)
            entry.update(precision=p, recall=r, f1=f)
        out[f"at_{kind}"] = entry
    return out


def _cost(y, scores, threshold, cost: CostModel, pred: np.ndarray | None = None) -> dict:
    pred = (scores >= threshold if pred is None else pred).astype(int)
    miss, fa = np.array([cost.miss_cost]), np.array([cost.false_alarm_cost])
    out = {
        "miss_cost": cost.miss_cost,
        "false_alarm_cost": cost.false_alarm_cost,
        "expected_cost_per_message": M.expected_cost(y[:, None], pred[:, None], miss, fa),
        "bayes_threshold": M.bayes_threshold(cost.miss_cost, cost.false_alarm_cost),
    }
    if 0 < y.sum() < len(y):
        t = M.cost_optimal_threshold(y, scores, cost.miss_cost, cost.false_alarm_cost)
        best = (scores >= t).astype(int)
        out["cost_optimal_threshold_on_this_data"] = t if np.isfinite(t) else None  # inf: flag nothing
        out["expected_cost_at_optimal"] = M.expected_cost(y[:, None], best[:, None], miss, fa)
    return out


def _per_class(dataset: Dataset, proba: np.ndarray, classes: list[str]) -> dict:
    y_ind = dataset.indicator(classes)
    out = {}
    for j, c in enumerate(classes):
        yc = y_ind[:, j]
        entry = {"n_positive": int(yc.sum())}
        if 0 < yc.sum() < len(yc):
            entry["roc_auc"] = M.roc_auc(yc, proba[:, j])
            entry["pr_auc"] = M.pr_auc(yc, proba[:, j])
            p, r, f = M.precision_recall_f1(yc, proba[:, j], 0.5)
            entry.update(precision_at_0_5=p, recall_at_0_5=r, f1_at_0_5=f)
        out[c] = entry
    return out


def _slices(dataset: Dataset, y, scores, threshold, slice_cols: Sequence[str], pred: np.ndarray | None = None) -> dict:
    pred = scores >= threshold if pred is None else pred
    groups: dict[str, np.ndarray] = {}
    lengths = dataset.frame["text"].str.len().to_numpy()
    groups["length"] = np.array([next(name for lo, hi, name in LENGTH_BUCKETS if lo <= n < hi) for n in lengths])
    for col in slice_cols:
        if col not in dataset.frame:
            raise ValueError(f"slice column '{col}' is not in the data: map it with --meta-col {col} when loading")
        groups[col] = dataset.frame[col].astype(str).to_numpy()
    out = {}
    for col, values in groups.items():
        table = {}
        uniques, counts = np.unique(values, return_counts=True)
        for value in uniques[np.argsort(-counts)][:20]:  # the 20 largest slices; a long tail is unreadable
            mask = values == value
            ys, ss, ps = y[mask], scores[mask], pred[mask]
            p, r, f = M.precision_recall_f1(ys, ps.astype(float), 0.5)
            entry = {
                "n": int(mask.sum()),
                "n_positive": int(ys.sum()),
                "precision": p,
                "recall": r,
                "f1": f,
                "flag_rate": float(ps.mean()),
            }
            if 0 < ys.sum() < len(ys):
                entry["roc_auc"] = M.roc_auc(ys, ss)
            table[str(value)] = entry
        out[col] = table
    return out
