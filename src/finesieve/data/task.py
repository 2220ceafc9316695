"""What a model is asked to do: one typed `Task` of three kinds, saved with every run and read by the evaluation.

    from finesieve.data.task import ClassificationTask, RankingTask, GenerationTask, parse_task, task_from_manifest
    task = RankingTask(relevance="graded", min_grade=1, max_grade=7, relevant_grade=5, k_values=(1, 5, 10))
    task.metrics          # ('ndcg@1', 'ndcg@5', 'ndcg@10', 'map', 'mrr', 'precision@1', ..., 'recall@10')
    parse_task(task.model_dump(mode="json")) == task          # the kind picks the class
    task_from_manifest(manifest["task"])                      # today's untyped run manifests -> ClassificationTask

- `classification`: each message gets one class (or, multi-label, several); some classes are the positive
  ("violation") ones that binary metrics and the operating threshold are about.
- `ranking`: query-candidate pairs (a job and a resume) with a relevance label (binary) or grade (graded,
  e.g. an HR score of 1-7); a scorer gives each pair a score, and each query's candidates are ranked by it.
- `generation`: an input text and a reference text (feedback); a system writes a text that is compared
  with the reference.

The data each kind reads is mapped by its column spec (`data.spec`: `ColumnSpec`, `RankingSpec`,
`GenerationSpec`); the metrics each kind names are computed in `evals` (`evals.harness.evaluate_task`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from finesieve.data.errors import ConfigError, config_error

GenerationMetric = Literal["exact_match", "token_f1", "chrf", "rouge_l"]
CLASSIFICATION_METRICS = ("roc_auc", "pr_auc", "precision", "recall", "f1")
# The keys a run manifest's `task` held before tasks were typed (train/recipe.py, cascade/build.py).
LEGACY_TASK_KEYS = ("classes", "multilabel", "positive", "threshold", "threshold_source")


class ClassificationTask(BaseModel):
    """Single- or multi-label classification with positive (violation) classes and an operating threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["classification"] = Field("classification", description="The task kind: classification.")
    classes: tuple[str, ...] = Field(
        ..., description="The class names, in the order of a scorer's predict_proba columns (`classes_`)."
    )
    multilabel: bool = Field(False, description="True when a message may carry several classes at once.")
    positive: tuple[str, ...] = Field(
        ...,
        description="The classes that count as a violation: binary metrics and the threshold treat them as "
        "positive and every other class as clean.",
    )
    threshold: float | None = Field(
        None,
        description="Operating threshold on the positive score, in [0, 1]; None until one is chosen "
        "(e.g. the best F1 on the validation split).",
    )
    threshold_source: str | None = Field(
        None,
        description="How the threshold was chosen, e.g. 'best F1 on the validation split' or 'given'; set "
        "together with threshold.",
    )

    @model_validator(mode="after")
    def _check(self) -> ClassificationTask:
        _refuse_repeats(self.classes, "classes")
        _refuse_repeats(self.positive, "positive")
        if len(self.classes) < (1 if self.multilabel else 2):
            raise ValueError(
                f"classes={list(self.classes)}: a single-label task needs at least two classes "
                "(set multilabel=True for one category)"
            )
        if not self.positive:
            raise ValueError("positive is empty: name the class(es) that count as a violation, e.g. ['spam']")
        if unknown := [p for p in self.positive if p not in self.classes]:
            raise ValueError(
                f"positive names {unknown}, which are not in classes {list(self.classes)}: "
                "pick positive classes from classes"
            )
        if self.threshold is not None and not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"threshold={self.threshold}: expected a score in [0, 1], or None until one is chosen")
        if (self.threshold is None) != (self.threshold_source is None):
            raise ValueError(
                f"threshold={self.threshold} and threshold_source={self.threshold_source!r}: set both or neither "
                "(threshold_source='given' for a threshold chosen by hand)"
            )
        return self

    @property
    def metrics(self) -> tuple[str, ...]:
        """The headline metrics `evals.harness.evaluate` reports for the positive classes."""
        return CLASSIFICATION_METRICS

    def with_threshold(self, threshold: float, source: str) -> ClassificationTask:
        """This task with its operating threshold chosen (validated like a new task)."""
        return ClassificationTask.model_validate(
            {**self.model_dump(), "threshold": threshold, "threshold_source": source}
        )


class RankingTask(BaseModel):
    """Query-candidate pairs (a job and a resume) with a binary relevance label or an ordinal grade."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["ranking"] = Field("ranking", description="The task kind: ranking.")
    relevance: Literal["binary", "graded"] = Field(
        "binary",
        description="binary: each pair is relevant (1) or not (0); graded: an ordinal grade from "
        "min_grade to max_grade, e.g. an HR fit score of 1-7.",
    )
    min_grade: float = Field(
        0.0, description="The lowest grade (no fit). NDCG gains are 2**(grade - min_grade) - 1, so it gains 0."
    )
    max_grade: float = Field(
        1.0, description="The highest grade; grades outside [min_grade, max_grade] are rejected when loading."
    )
    relevant_grade: float = Field(
        1.0,
        description="The lowest grade that counts as relevant for the binary metrics (MAP, MRR, precision@k, "
        "recall@k); NDCG uses the grades themselves.",
    )
    k_values: tuple[int, ...] = Field((1, 5, 10), description="The cut-offs k of NDCG@k, precision@k and recall@k.")
    no_relevant: Literal["skip", "zero"] = Field(
        "skip",
        description="A query without a relevant candidate leaves a metric undefined: 'skip' leaves it out of "
        "that metric's mean (and counts it), 'zero' scores it 0 (scikit-learn's ndcg_score convention).",
    )

    @model_validator(mode="after")
    def _check(self) -> RankingTask:
        grades = {"min_grade": self.min_grade, "max_grade": self.max_grade, "relevant_grade": self.relevant_grade}
        if bad := [name for name, value in grades.items() if not math.isfinite(value)]:
            raise ValueError(f"{', '.join(bad)} must be finite numbers")
        if self.relevance == "binary" and (self.min_grade, self.max_grade, self.relevant_grade) != (0, 1, 1):
            raise ValueError(
                f"relevance='binary' takes grades 0 and 1 with 1 relevant, but min_grade={self.min_grade:g}, "
                f"max_grade={self.max_grade:g}, relevant_grade={self.relevant_grade:g}: use relevance='graded' "
                "for other grades, or leave the grades at their defaults"
            )
        if self.min_grade >= self.max_grade:
            raise ValueError(
                f"min_grade={self.min_grade:g} is not below max_grade={self.max_grade:g}: "
                "give the lowest and the highest grade, e.g. 1 and 7"
            )
        if not self.min_grade < self.relevant_grade <= self.max_grade:
            raise ValueError(
                f"relevant_grade={self.relevant_grade:g} must lie above min_grade={self.min_grade:g} and at most "
                f"max_grade={self.max_grade:g}: a candidate of the lowest grade is never relevant"
            )
        if not self.k_values:
            raise ValueError("k_values is empty: give at least one cut-off, e.g. (1, 5, 10)")
        if bad_k := [k for k in self.k_values if k < 1]:
            raise ValueError(f"k_values holds {bad_k}: each cut-off is a number of top candidates, at least 1")
        _refuse_repeats(self.k_values, "k_values")
        return self

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics `evals.ranking.evaluate_ranking` computes per query and averages over queries."""
        return (
            *(f"ndcg@{k}" for k in self.k_values),
            "map",
            "mrr",
            *(f"precision@{k}" for k in self.k_values),
            *(f"recall@{k}" for k in self.k_values),
        )


class GenerationTask(BaseModel):
    """An input text and a reference text; a system's output is compared with the reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["generation"] = Field("generation", description="The task kind: generation.")
    metrics: tuple[GenerationMetric, ...] = Field(
        ("exact_match", "token_f1", "chrf", "rouge_l"),
        description="Reference-based metrics computed per example (`evals.generation`): exact_match and token_f1 "
        "on normalised words, chrf on characters, rouge_l on the longest common word subsequence.",
    )

    @model_validator(mode="after")
    def _check(self) -> GenerationTask:
        if not self.metrics:
            raise ValueError("metrics is empty: name at least one, e.g. ['token_f1', 'chrf']")
        _refuse_repeats(self.metrics, "metrics")
        return self


# The type of a task field in another model (a run manifest's `task: Task`): pydantic picks the class by `kind`.
Task = Annotated[ClassificationTask | RankingTask | GenerationTask, Field(discriminator="kind")]
TASK_KINDS: dict[str, type[ClassificationTask] | type[RankingTask] | type[GenerationTask]] = {
    "classification": ClassificationTask,
    "ranking": RankingTask,
    "generation": GenerationTask,
}


def parse_task(data: Mapping[str, Any], where: str = "task") -> ClassificationTask | RankingTask | GenerationTask:
    """The typed task of a dict with a `kind` (as `task.model_dump(mode="json")` writes it); ConfigError naming
    every problem and, for a misspelt setting, the closest valid one."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping with a 'kind' ({', '.join(TASK_KINDS)}), got {type(data).__name__}"
        )
    kind = data.get("kind")
    if kind not in TASK_KINDS:
        raise ConfigError(f"{where}: kind={kind!r} is not a task kind: use one of {', '.join(TASK_KINDS)}")
    try:  # the kind's own class, so that errors name `k_values`, not `ranking.k_values`
        return TASK_KINDS[kind].model_validate(dict(data))
    except ValidationError as err:
        raise config_error(err, where, TASK_KINDS[kind]) from None


def task_from_manifest(
    task: Mapping[str, Any], where: str = "run manifest task"
) -> ClassificationTask | RankingTask | GenerationTask:
    """The typed task of a run manifest's `task` entry.

    A typed entry (with `kind`) is parsed as it is. An entry written before tasks were typed holds the keys
    classes, multilabel, positive, threshold and threshold_source of a classification run, and becomes a
    `ClassificationTask` (a missing multilabel is False, a missing threshold None), so old run directories load.
    """
    if isinstance(task, Mapping) and "kind" in task:
        return parse_task(task, where)
    if not isinstance(task, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(LEGACY_TASK_KEYS)}, got {type(task).__name__}")
    legacy = {key: task[key] for key in LEGACY_TASK_KEYS if key in task and task[key] is not None}
    legacy.update({key: task[key] for key in task if key not in LEGACY_TASK_KEYS})  # refused below, by name
    if legacy.get("threshold") is not None and "threshold_source" not in legacy:
        legacy["threshold_source"] = "given"  # some version-1 writers recorded the threshold alone
    try:
        return ClassificationTask.model_validate(legacy)
    except ValidationError as err:
        raise config_error(err, where, ClassificationTask) from None


def _refuse_repeats(values, name: str) -> None:
    if repeated := sorted({v for v in values if list(values).count(v) > 1}, key=str):
        raise ValueError(f"{name} lists {repeated} more than once: list each once")
