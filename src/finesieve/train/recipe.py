"""The recipe every trained scorer follows, from a labelled dataset to a run directory.

    run = train_reference("tfidf", dataset, positive=["hate_speech"], out="runs/tfidf")
    run = fit_and_save(FineTunedScorer(config), "finetuned", splits, positive=["hate_speech"], out="runs/ft")

Split the data (group-aware, stratified, reproducible), fit on train, choose the operating threshold on the
validation split (best F1 for the positive classes), evaluate on the held-out test split (plain and evaded,
`evals.evasion`) and on each corner-case set, then save scorer, config, data and split hashes and metrics
together. The reference statistics saved with the run (what `finesieve monitor` compares traffic against) come
from the validation split, with the vocabulary of the training split; `reference_embeddings=True` also embeds a sample of the validation texts
(seconds per run: `finesieve train` asks for it, the quick reference kinds and the tests do not).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finesieve.data.dataset import Dataset, GenerationDataset, RankingDataset
from finesieve.data.errors import ConfigError
from finesieve.data.evasion import EvasionConfig
from finesieve.data.preprocess import Preprocessing
from finesieve.data.split import SplitConfig, Splits, make_splits
from finesieve.data.task import ClassificationTask
from finesieve.evals.harness import EvalResult, evaluate
from finesieve.evals.threshold import choose_threshold
from finesieve.manifest import BaseWeights, ReferenceStats, reference_stats, write_reference_embeddings
from finesieve.models.base import Scorer, positive_scores
from finesieve.outputs import check_run_dir, start_run_dir
from finesieve.runs import new_reference_scorer, save_run


@dataclass
class FittedRun:
    scorer: Scorer
    threshold: float
    threshold_source: str
    splits: Splits | None
    run_dir: Path | None
    test_result: EvalResult


def train_reference(
    ref: str,
    dataset: Dataset,
    *,
    positive: Sequence[str],
    out: str | Path | None = None,
    split_config: SplitConfig | None = None,
    splits: Splits | None = None,
    corner_sets: dict[str, Dataset] | None = None,
    n_boot: int = 1000,
    name: str | None = None,
    overwrite: bool = False,
) -> FittedRun:
    splits = splits or make_splits(dataset, split_config or SplitConfig())
    return fit_and_save(
        new_reference_scorer(ref),
        ref.split(":")[0],
        splits,
        positive=positive,
        out=out,
        corner_sets=corner_sets,
        n_boot=n_boot,
        name=name or ref,
        overwrite=overwrite,
    )


def fit_and_save(
    scorer: Scorer,
    kind: str,
    splits: Splits,
    *,
    positive: Sequence[str],
    out: str | Path | None = None,
    train: Dataset | None = None,
    fit_kwargs: dict | None = None,
    corner_sets: dict[str, Dataset] | None = None,
    n_boot: int = 1000,
    name: str | None = None,
    extra: dict | Callable[[object], dict] | None = None,
    parent_run: str | None = None,
    overwrite: bool = False,
    staging: str | Path | None = None,
    base_model: BaseWeights | None = None,
    reference_embeddings: bool = False,
    vocabulary: Dataset | None = None,
) -> FittedRun:
    """Fit `scorer` on `train` (default: the training split), threshold on val, evaluate, save the run.

    `vocabulary`: the texts whose words the monitor's out-of-vocabulary rate is measured against (default: what
    the scorer is fitted on; a stacker fitted on the validation split passes the training split, else the
    reference out-of-vocabulary rate would be 0 and every production window would look drifted).

    `extra` (or a function of the fitted scorer returning it) adds sections to the manifest, e.g. training history.
    An existing run directory at `out` is refused before any work unless `overwrite` (see `runs.save_run`);
    `staging` is the folder the run is assembled in when the caller already writes there.
    `reference_embeddings` saves sentence embeddings of a validation sample with the run, for the monitor's
    embedding distance.
    """
    if out is not None:
        check_run_dir(out, overwrite=overwrite)
    dataset = _classification(splits.source)
    train = train if train is not None else _classification(splits.dataset("train"))
    val, test = _classification(splits.dataset("val")), _classification(splits.dataset("test"))
    name = name or kind
    scorer.fit(train.texts, train.labels, multilabel=train.multilabel, **(fit_kwargs or {}))
    val_proba = np.asarray(scorer.predict_proba(val.texts), dtype=float)
    threshold, source = choose_threshold(scorer, val, positive, proba=val_proba)
    test_result = evaluate(
        scorer,
        test,
        positive=positive,
        threshold=threshold,
        threshold_source=source,
        n_boot=n_boot,
        name=name,
        evasion=EvasionConfig(),
    )
    metrics = {"test": test_result.to_dict()}
    for corner_name, corner in (corner_sets or {}).items():
        metrics[f"corner:{corner_name}"] = evaluate(
            scorer, corner, positive=positive, threshold=threshold, threshold_source=source, n_boot=n_boot, name=name
        ).to_dict()
    run_dir = None
    if out is not None:
        embeddings_file = None
        if reference_embeddings:
            # Written into the staging folder before the run is saved, so the manifest's `files` hashes it.
            staging = staging if staging is not None else start_run_dir(out, overwrite=overwrite)
            embeddings_file = write_reference_embeddings(staging, val.texts)
        run_dir = save_run(
            out,
            scorer,
            kind=kind,
            task=ClassificationTask(
                classes=[str(c) for c in scorer.classes_],
                multilabel=scorer.multilabel_,
                positive=list(positive),
                threshold=threshold,
                threshold_source=source,
            ),
            preprocessing=dataset.preprocessing or Preprocessing.none(),
            base_model=base_model,
            reference=validation_reference(
                scorer,
                val,
                val_proba,
                positive,
                threshold,
                train=vocabulary if vocabulary is not None else train,
                embeddings_file=embeddings_file,
            ),
            data={
                "source": dataset.source,
                "content_hash": dataset.content_hash,
                "n_rows": len(dataset),
                "rejected": dataset.rejected.to_dict(),
                "column_spec": dataset.spec.model_dump(),
                "votes_hash": dataset.votes_hash,
                "label_normalisation": dataset.label_normalisation,
                "label_normalised_rows": dataset.label_normalised_rows,
                "corner_sets": {
                    k: {"source": v.source, "content_hash": v.content_hash, "n_rows": len(v)}
                    for k, v in (corner_sets or {}).items()
                },
            },
            metrics=_strip(metrics),
            splits=splits,
            parent_run=parent_run,
            extra=extra(scorer) if callable(extra) else extra,
            overwrite=overwrite,
            staging=staging,
        )
    return FittedRun(scorer, threshold, source, splits, run_dir, test_result)


def _classification(dataset: Dataset | RankingDataset | GenerationDataset) -> Dataset:
    """The recipe fits classifiers; ranking and generation data are split and evaluated, not trained on, here."""
    if not isinstance(dataset, Dataset):
        raise ConfigError(
            f"{dataset.source}: a {type(dataset).__name__}; the training recipe fits classification "
            "scorers only: evaluate ranking or generation data with evals.harness.evaluate_task"
        )
    return dataset


def validation_reference(
    scorer: Scorer,
    val: Dataset,
    proba: np.ndarray,
    positive: Sequence[str],
    threshold: float,
    *,
    train: Dataset | None = None,
    embeddings_file: str | None = None,
) -> ReferenceStats:
    """What monitoring compares traffic against: the validation split's score histograms, text lengths and flag
    rate at the operating threshold and, given the training split (`train`, for the vocabulary), the input
    statistics of its texts; `embeddings_file` names the reference embeddings saved in the run directory."""
    scores = positive_scores(proba, [str(c) for c in scorer.classes_], positive, scorer.multilabel_)
    return reference_stats(
        proba,
        [str(c) for c in scorer.classes_],
        val.texts,
        flagged=scores >= threshold,
        train_texts=train.texts if train is not None else None,
        embeddings_file=embeddings_file,
    )


def _strip(metrics: dict) -> dict:
    """Keep the run manifest readable: headline figures, not every slice."""
    keep = (
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
        "targets",
        "cost",
        "evasion",
        "functional",
    )
    stripped = {split: {k: v for k, v in m.items() if k in keep} for split, m in metrics.items()}
    for m in stripped.values():
        if "evasion" in m:  # the figures, not the example messages
            m["evasion"] = {k: v for k, v in m["evasion"].items() if k != "examples"}
        if "functional" in m:  # per functionality and group; the full cross table stays in the eval report
            m["functional"] = {k: v for k, v in m["functional"].items() if k != "by_functionality_target"}
    return stripped
