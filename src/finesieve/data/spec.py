"""The column mapping: which columns of a user's file hold the text, the labels and the metadata.

Validated once at the edge (CLI flags or a YAML file) and stored beside every artifact built from the data.
One spec per task kind (`data.task`): `ColumnSpec` for classification (text and labels), `RankingSpec` for
query-candidate pairs with a relevance grade, `GenerationSpec` for input and reference texts.

    ColumnSpec(text_col="text", label_cols=("label",))
    RankingSpec(query_col="job_id", candidate_col="resume_id", query_text_col="job_terms",
                candidate_text_col="resume_text", relevance_col="hr_score")
    GenerationSpec(input_col="resume", reference_col="feedback", id_col="resume_id")
    spec_from_dict(yaml.safe_load(...))   # the spec class picked by 'kind' (none: ColumnSpec)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from finesieve.data.errors import ConfigError, config_error

FileFormat = Literal["csv", "tsv", "jsonl", "parquet"]


class ColumnSpec(BaseModel):
    """How to read one labelled file. Labels may be binary, multi-class or multi-label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_col: str = Field("text", description="Column holding the message text.")
    label_cols: tuple[str, ...] = Field(
        ("label",),
        description="One column of class names (binary or multi-class; multi-label with label_sep), "
        "or several 0/1 columns, one per policy category (multi-label).",
    )
    label_sep: str | None = Field(
        None, description="Separator of several labels inside one cell, e.g. '|' for 'scam|spam' (multi-label)."
    )
    id_col: str | None = Field(None, description="Unique message id; row numbers are used when absent.")
    time_col: str | None = Field(None, description="Timestamp column (ISO 8601 or epoch seconds).")
    user_col: str | None = Field(None, description="Sender or user id column.")
    thread_col: str | None = Field(None, description="Conversation/thread id column.")
    meta_cols: tuple[str, ...] = Field(
        (), description="Further columns to carry along as text, e.g. for per-slice metrics (country, category)."
    )
    classes: tuple[str, ...] | None = Field(
        None, description="The allowed class names; rows with any other label are rejected. Inferred when absent."
    )
    vote_cols: dict[str, str] | None = Field(
        None,
        description="Annotator vote counts per class (class -> column), when several people labelled each message. "
        "Fine-tuning can learn from the vote shares (soft labels) as well as the majority label.",
    )
    file_format: FileFormat | None = Field(None, description="File format; inferred from the extension when absent.")
    encoding: str = Field("utf-8", description="Text encoding of CSV/TSV/JSONL files.")

    @model_validator(mode="after")
    def _check(self) -> ColumnSpec:
        if not self.label_cols:
            raise ValueError("label_cols is empty: name at least one label column (e.g. --label-col label)")
        if len(self.label_cols) > 1 and self.label_sep is not None:
            raise ValueError(
                "label_cols has several columns and label_sep is set: use either one column with "
                "separated labels (label_sep) or one 0/1 column per category, not both"
            )
        if self.vote_cols is not None:
            if not self.vote_cols:
                raise ValueError(
                    "vote_cols is empty: map each class to its vote-count column, e.g. "
                    "--vote-col hate_speech=hate_votes"
                )
            if self.multilabel:
                raise ValueError(
                    "vote_cols needs a single-label task (one class per message); "
                    "drop the vote columns or the multi-label mapping"
                )
            if self.classes is not None and (extra := sorted(set(self.vote_cols) - set(self.classes))):
                raise ValueError(f"vote_cols names class(es) {extra} that are not in classes {list(self.classes)}")
        named = [
            self.text_col,
            *self.label_cols,
            self.id_col,
            self.time_col,
            self.user_col,
            self.thread_col,
            *self.meta_cols,
            *(self.vote_cols or {}).values(),
        ]
        named = [c for c in named if c is not None]
        dupes = sorted({c for c in named if named.count(c) > 1})
        if dupes:
            raise ValueError(
                f"column(s) {dupes} are mapped to more than one role (text, label, id, ...): map each once"
            )
        return self

    @property
    def multilabel(self) -> bool:
        return len(self.label_cols) > 1 or self.label_sep is not None

    @property
    def indicator_labels(self) -> bool:
        """True when each label column is a 0/1 indicator named by its category."""
        return len(self.label_cols) > 1


class RankingSpec(BaseModel):
    """How to read a file of query-candidate pairs (a job and a resume), one pair per row, with its relevance."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Role fields, in the order their columns are read; what a missing column's message tells the user to set.
    ROLES: ClassVar[tuple[str, ...]] = (
        "query_col",
        "candidate_col",
        "query_text_col",
        "candidate_text_col",
        "relevance_col",
    )

    kind: Literal["ranking"] = Field("ranking", description="The task kind this spec reads: ranking.")
    query_col: str = Field("query_id", description="Query id column (e.g. the job): a query's pairs stay in one split.")
    candidate_col: str = Field("candidate_id", description="Candidate id column (e.g. the resume).")
    query_text_col: str | None = Field(
        None,
        description="Query text column (e.g. the job's description or skill terms); every row of one query "
        "must hold the same text. Optional: a scorer may know the queries by id.",
    )
    candidate_text_col: str = Field("text", description="Candidate text column (e.g. the resume).")
    relevance_col: str = Field(
        "relevance", description="Relevance column: a number per pair, 0/1 or a grade (e.g. an HR score of 1-7)."
    )
    meta_cols: tuple[str, ...] = Field((), description="Further columns to carry along as text, e.g. the rater id.")
    file_format: FileFormat | None = Field(None, description="File format; inferred from the extension when absent.")
    encoding: str = Field("utf-8", description="Text encoding of CSV/TSV/JSONL files.")

    @model_validator(mode="after")
    def _check(self) -> RankingSpec:
        _refuse_shared_columns(self, [*self.ROLES, "meta_cols"])
        return self

    @property
    def columns(self) -> list[str]:
        """Every mapped column, in role order."""
        cols = [
            self.query_col,
            self.candidate_col,
            self.query_text_col,
            self.candidate_text_col,
            self.relevance_col,
            *self.meta_cols,
        ]
        return [c for c in cols if c is not None]

    @property
    def target_columns(self) -> set[str]:
        """Columns only a judged file has: a file of pairs to score may lack them."""
        return {self.relevance_col}


class GenerationSpec(BaseModel):
    """How to read a file of input texts with their reference texts (e.g. a resume and the feedback on it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ROLES: ClassVar[tuple[str, ...]] = ("input_col", "reference_col", "id_col")

    kind: Literal["generation"] = Field("generation", description="The task kind this spec reads: generation.")
    input_col: str = Field("text", description="Input text column (what the system reads).")
    reference_col: str = Field("reference", description="Reference text column (what the system should write).")
    id_col: str | None = Field(None, description="Unique example id; row numbers are used when absent.")
    meta_cols: tuple[str, ...] = Field((), description="Further columns to carry along as text, e.g. for slices.")
    file_format: FileFormat | None = Field(None, description="File format; inferred from the extension when absent.")
    encoding: str = Field("utf-8", description="Text encoding of CSV/TSV/JSONL files.")

    @model_validator(mode="after")
    def _check(self) -> GenerationSpec:
        _refuse_shared_columns(self, [*self.ROLES, "meta_cols"])
        return self

    @property
    def columns(self) -> list[str]:
        """Every mapped column, in role order."""
        return [c for c in [self.input_col, self.reference_col, self.id_col, *self.meta_cols] if c is not None]

    @property
    def target_columns(self) -> set[str]:
        """Columns only a file with references has: a file of inputs to generate from may lack them."""
        return {self.reference_col}


AnySpec = ColumnSpec | RankingSpec | GenerationSpec
SPEC_KINDS: dict[str, type[BaseModel]] = {
    "classification": ColumnSpec,
    "ranking": RankingSpec,
    "generation": GenerationSpec,
}


def spec_from_dict(data: Mapping[str, Any], where: str = "column spec") -> AnySpec:
    """The column spec of a mapping (a YAML file, a run manifest): its `kind` picks the class; without one it is a
    classification `ColumnSpec`, as every spec written before ranking and generation."""
    data = dict(data)
    kind = data.get("kind") or "classification"
    if kind == "classification":
        data.pop("kind", None)  # ColumnSpec predates kinds and has no such field
    if kind not in SPEC_KINDS:
        raise ConfigError(f"{where}: kind={kind!r} is not a task kind: use one of {', '.join(SPEC_KINDS)}")
    try:
        return SPEC_KINDS[kind].model_validate(data)
    except ValidationError as err:
        raise config_error(err, where, SPEC_KINDS[kind]) from None


def _refuse_shared_columns(spec: BaseModel, roles: list[str]) -> None:
    """Refuse a column mapped to two roles, naming both roles."""
    role_of: dict[str, str] = {}
    clashes = []
    for role in roles:
        value = getattr(spec, role)
        for col in value if isinstance(value, tuple) else (value,):
            if col is None:
                continue
            if col in role_of:
                clashes.append(f"'{col}' is both {role_of[col]} and {role}")
            else:
                role_of[col] = role
    if clashes:
        raise ValueError(f"column {'; '.join(clashes)}: map each column to one role")
