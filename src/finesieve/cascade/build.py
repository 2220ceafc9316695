"""`finesieve cascade fit`: assemble a cascade from trained runs, fit its thresholds, measure it, save it.

    run = fit_cascade(dataset, model_run="runs/ft", prefilter_run="runs/cnn", rules="builtin:hate_speech",
                      config=CascadeConfig(budget=0.2), out="runs/cascade")
    run.results["cascade"].to_dict()["recall"];  run.costs["cascade"]["cost_per_million"]

Reads top to bottom: load the fine-tuned model's run and re-apply its split to the data (so the cascade is fitted
on the model's validation split and measured on its test split); refuse a pre-filter or rules run trained on
rows of that validation or test split; score the validation split with every stage, timing each; fit the
thresholds (`cascade.fit`); measure the fine-tuned model alone and the cascade on the test split; price both
(`cascade.cost`); write the cascade's run directory, which holds copies of its stages and loads with `load_scorer`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finesieve.cascade.cost import PriceTable, StageCost, cascade_per_million
from finesieve.cascade.fit import CascadeConfig, CascadeFit, ValidationScores, fit_thresholds
from finesieve.data.dataset import Dataset
from finesieve.data.errors import ConfigError
from finesieve.data.evasion import EvasionConfig
from finesieve.data.split import Splits, load_splits
from finesieve.data.task import ClassificationTask
from finesieve.evals.harness import EvalResult, add_evasion, evaluate_scored
from finesieve.manifest import ReferenceStats, reference_stats, write_reference_embeddings
from finesieve.models.base import positive_scores, set_preprocessing
from finesieve.models.cascade import Cascade, CascadeThresholds, Decisions
from finesieve.models.rules import RulesScorer
from finesieve.outputs import check_run_dir, start_run_dir
from finesieve.runs import SPLITS, Run, check_trained_apart, load_run, save_run


@dataclass
class CascadeRun:
    cascade: Cascade
    fit: CascadeFit
    splits: Splits
    results: dict[str, EvalResult]  # on the test split: "fine-tuned model", "cascade"
    costs: dict[str, dict]  # name -> route, messages_per_second, cost_per_million
    stage_costs: dict[str, StageCost]
    run_dir: Path | None = None
    decisions: Decisions | None = field(default=None, repr=False)  # the cascade's, on the test split


def fit_cascade(
    dataset: Dataset,
    *,
    model_run: str | Path,
    prefilter_run: str | Path | None = None,
    rules: str | Path | None = None,
    config: CascadeConfig | None = None,
    prices: PriceTable | None = None,
    out: str | Path | None = None,
    n_boot: int = 1000,
    overwrite: bool = False,
    reference_embeddings: bool = False,
) -> CascadeRun:
    """Without a pre-filter every message no rule decides reaches the model: the budget is reported, not enforced.
    An existing run directory at `out` is refused before any work unless `overwrite` (see `runs.save_run`).
    `reference_embeddings` saves sentence embeddings of a validation sample with the run, for the monitor's
    embedding distance (seconds; `finesieve cascade fit` asks for it)."""
    config, prices = config or CascadeConfig(), prices or PriceTable()
    if out is not None:
        check_run_dir(out, overwrite=overwrite)
    model = load_run(model_run)
    if model.threshold is None or not model.positive:
        raise ConfigError(f"{model_run}: the run records no positive class or threshold; train it with finesieve train")
    if model.splits_path is None:
        raise ConfigError(
            f"{model_run}: no {SPLITS}; the cascade is fitted on the model's own validation split, so "
            "use a run trained by `finesieve train` on this file"
        )
    splits = load_splits(model.splits_path, dataset)
    positive = list(model.positive)
    prefilter = load_run(prefilter_run) if prefilter_run else None
    if prefilter is not None:
        check_no_leak(prefilter, splits)
    rules_scorer = _rules_stage(rules, splits)
    val, test = splits.dataset("val"), splits.dataset("test")

    stages = {"rules": rules_scorer, "prefilter": prefilter.scorer if prefilter else None, "model": model.scorer}
    stages = {k: v for k, v in stages.items() if v is not None}
    val_proba, stage_costs = {}, {}
    for name, scorer in stages.items():
        start = time.perf_counter()
        val_proba[name] = np.asarray(scorer.predict_proba(val.texts), dtype=float)
        stage_costs[name] = StageCost.measured(name, time.perf_counter() - start, len(val))

    scores = validation_scores(val, val_proba, stages, positive, rules_scorer)
    fit = fit_thresholds(scores, model_threshold=model.threshold, config=config)
    cascade = Cascade(
        model.scorer,
        positive=positive,
        thresholds=fit.thresholds,
        prefilter=stages.get("prefilter"),
        rules=rules_scorer,
    )
    # The cascade prepares raw text once, as its model was trained; its stages then take it as it is (a stage
    # loaded from its own run directory would prepare it again).
    for scorer in stages.values():
        set_preprocessing(scorer, None)
    set_preprocessing(cascade, model.preprocessing)

    results, decisions = measure(
        cascade, model.scorer, test, positive=positive, model_threshold=model.threshold, n_boot=n_boot
    )
    costs = price(results, decisions, stage_costs, prices)
    run_dir = None
    if out is not None:
        staging = start_run_dir(out, overwrite=overwrite)
        embeddings = write_reference_embeddings(staging, val.texts) if reference_embeddings else None
        run_dir = save_run(
            out,
            cascade,
            kind="cascade",
            task=ClassificationTask(
                classes=[str(c) for c in cascade.classes_],
                multilabel=cascade.multilabel_,
                positive=positive,
                threshold=fit.thresholds.review,
                threshold_source=f"cascade fit ({config.method}) on the validation split",
            ),
            preprocessing=model.preprocessing,
            base_model=model.manifest.base_model,
            reference=_cascade_reference(cascade, splits, embeddings),
            data={
                "source": dataset.source,
                "content_hash": dataset.content_hash,
                "n_rows": len(dataset),
                "label_normalisation": dataset.label_normalisation,
            },
            metrics={"test": _headline(results["cascade"]), "test_model_alone": _headline(results["fine-tuned model"])},
            splits=splits,
            parent_run=str(model_run),
            overwrite=overwrite,
            staging=staging,
            extra={
                "cascade": {
                    "config": config.model_dump(),
                    "fit": fit.to_dict(),
                    "costs": costs,
                    "prices": prices.model_dump(),
                    "stage_costs": {k: v.to_dict(prices) for k, v in stage_costs.items()},
                    "stages": {
                        "model": _stage_ref(model),
                        "prefilter": _stage_ref(prefilter),
                        "rules": str(rules) if rules else None,
                    },
                }
            },
        )
    return CascadeRun(cascade, fit, splits, results, costs, stage_costs, run_dir, decisions)


def _cascade_reference(cascade: Cascade, splits: Splits, embeddings_file: str | None) -> ReferenceStats:
    """The cascade's validation statistics for drift monitoring (the vocabulary from the training split);
    `flag_rate` is the share it sends to review or blocks."""
    val = splits.dataset("val")
    decisions = cascade.decide(val.texts)
    return reference_stats(
        decisions.proba,
        [str(c) for c in cascade.classes_],
        val.texts,
        flagged=decisions.flagged,
        train_texts=splits.dataset("train").texts,
        embeddings_file=embeddings_file,
    )


def check_no_leak(stage: Run, splits: Splits) -> None:
    """Refuse a stage trained on rows the cascade is fitted (validation) or measured (test) on."""
    check_trained_apart(
        stage,
        splits,
        what=str(stage.path),
        why="its scores there would be optimistic",
        fix="train the pre-filter on the same file with the same --seed as the fine-tuned model",
    )


def _rules_stage(rules: str | Path | None, splits: Splits) -> RulesScorer | None:
    """A rules run directory, or a policy (builtin:NAME or a YAML path) calibrated on the model's training split."""
    if rules is None:
        return None
    if Path(str(rules)).is_dir():
        run = load_run(rules)
        if not isinstance(run.scorer, RulesScorer):
            raise ConfigError(f"{rules}: a {run.manifest.kind} run, not a rules run; pass a policy or rules run")
        check_no_leak(run, splits)
        return run.scorer
    train = splits.dataset("train")
    return RulesScorer(policy=str(rules)).fit(train.texts, train.labels, multilabel=train.multilabel)


def validation_scores(
    val: Dataset, proba: dict[str, np.ndarray], stages: dict, positive: Sequence[str], rules: RulesScorer | None
) -> ValidationScores:
    model = stages["model"]
    classes = [str(c) for c in model.classes_]

    def pos(name):
        scorer = stages[name]
        return positive_scores(proba[name], [str(c) for c in scorer.classes_], positive, scorer.multilabel_)

    usable = [] if rules is None else [r for r in rules.policy_.rules if r.name not in set(rules.ignored_rules_)]
    return ValidationScores(
        y=val.violation(positive),
        model=pos("model"),
        prefilter=pos("prefilter") if "prefilter" in stages else None,
        y_category={c: val.indicator([c])[:, 0] for c in positive},
        model_category={c: proba["model"][:, classes.index(c)] for c in positive},
        rules_fired=rules.fired(val.texts) if rules is not None else None,
        rule_action=rules.policy_modes(positive) if rules is not None else {},
        rule_category={r.name: r.category for r in usable},
    )


def measure(
    cascade: Cascade, model, test: Dataset, *, positive: Sequence[str], model_threshold: float, n_boot: int = 1000
) -> tuple[dict[str, EvalResult], Decisions]:
    """The fine-tuned model on every message and the cascade, on the same test messages."""
    start = time.perf_counter()
    model_proba = np.asarray(model.predict_proba(test.texts), dtype=float)
    model_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decisions = cascade.decide(test.texts)
    cascade_seconds = time.perf_counter() - start
    results = {
        "fine-tuned model": evaluate_scored(
            model_proba,
            [str(c) for c in model.classes_],
            model.multilabel_,
            test,
            positive=positive,
            threshold=model_threshold,
            threshold_source="model run (validation)",
            n_boot=n_boot,
            name="fine-tuned model",
            seconds=model_seconds,
        ),
        "cascade": evaluate_scored(
            decisions.proba,
            list(cascade.classes_),
            cascade.multilabel_,
            test,
            positive=positive,
            threshold=cascade.thresholds.review,
            threshold_source="cascade fit (validation)",
            n_boot=n_boot,
            name="cascade",
            seconds=cascade_seconds,
            flagged=decisions.flagged,
        ),
    }
    # The same test messages evaded (evals.evasion): how much of each system's skill survives spelling tricks.
    add_evasion(results["fine-tuned model"], model, test.texts, EvasionConfig(), n_boot=n_boot)
    add_evasion(results["cascade"], cascade, test.texts, EvasionConfig(), flagged=decisions.flagged, n_boot=n_boot)
    return results, decisions


def price(
    results: dict[str, EvalResult], decisions: Decisions, stage_costs: dict[str, StageCost], prices: PriceTable
) -> dict[str, dict]:
    shares = decisions.reach()
    model_result, cascade_result = results["fine-tuned model"], results["cascade"]
    return {
        "fine-tuned model": {
            "route": 1.0,
            "messages_per_second": _mps(model_result),
            "cost_per_million": stage_costs["model"].per_million(prices),
        },
        "cascade": {
            "route": shares.get("model", 0.0),
            "reach": shares,
            "messages_per_second": _mps(cascade_result),
            "cost_per_million": cascade_per_million(stage_costs, shares, prices),
            "actions": {a: int((decisions.action == a).sum()) for a in ("deliver", "review", "block")},
            "decided_by": {s: int((decisions.decided_by == s).sum()) for s in ("rules", "prefilter", "model")},
        },
    }


def summary_rows(run: CascadeRun) -> list[dict]:
    """One row per system (the model on every message, the cascade) for the side-by-side table."""
    return [summary_row(name, run.results[name], run.costs[name]) for name in ("fine-tuned model", "cascade")]


def summary_row(name: str, result: EvalResult, cost: dict | None) -> dict:
    d = result.to_dict()
    cost = cost or {}
    return {
        "system": name,
        "roc_auc": d["roc_auc"],
        "roc_auc_ci95": d["ci95"].get("roc_auc"),
        "pr_auc": d["pr_auc"],
        "precision": d["precision"],
        "recall": d["recall"],
        "f1": d["f1"],
        "flag_rate": d["flag_rate"],
        "route": cost.get("route"),
        "messages_per_second": cost.get("messages_per_second", d["messages_per_second"]),
        "cost_per_million": cost.get("cost_per_million"),
        "note": cost.get("note", ""),
    }


def legacy_cascade(rules: RulesScorer | None, prefilter, *, positive: Sequence[str], threshold: float) -> Cascade:
    """The system a cascade replaces: policy rules acting as written (review/block/clear) and the pre-filter
    flagging for review at its own threshold, with no fine-tuned model."""
    modes = rules.policy_modes(positive) if rules is not None else {}
    return Cascade(
        prefilter, positive=positive, thresholds=CascadeThresholds(review=threshold, rule_modes=modes), rules=rules
    )


def _mps(result: EvalResult) -> float | None:
    return result.summary["n"] / result.seconds if result.seconds > 0 else None


def _headline(result: EvalResult) -> dict:
    d = result.to_dict()
    return {
        k: d[k]
        for k in (
            "n",
            "n_positive",
            "roc_auc",
            "pr_auc",
            "precision",
            "recall",
            "f1",
            "flag_rate",
            "threshold",
            "ci95",
            "messages_per_second",
        )
    }


def _stage_ref(run: Run | None) -> dict | None:
    if run is None:
        return None
    return {
        "run": str(run.path),
        "kind": run.manifest.kind,
        "data_hash": run.manifest.data.get("content_hash"),
        "split_hash": (run.manifest.splits or {}).get("split_hash"),
        "threshold": run.threshold,
    }
