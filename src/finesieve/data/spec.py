"""The column mapping: which columns of a user's file hold the text, the labels and the metadata.

Validated once at the edge (CLI flags or a YAML file) and stored beside every artifact built from the data.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    def _check(self) -> "ColumnSpec":
        if not self.label_cols:
            raise ValueError("label_cols is empty: name at least one label column (e.g. --label-col label)")
        if len(self.label_cols) > 1 and self.label_sep is not None:
            raise ValueError(
                "label_cols has several columns and label_sep is set: use either one column with "
                "separated labels (label_sep) or one 0/1 column per category, not both"
            )
        if self.vote_cols is not None:
            if not self.vote_cols:
                raise ValueError("vote_cols is empty: map each class to its vote-count column, e.g. "
                                 "--vote-col hate_speech=hate_votes")
            if self.multilabel:
                raise ValueError("vote_cols needs a single-label task (one class per message); "
                                 "drop the vote columns or the multi-label mapping")
            if self.classes is not None and (extra := sorted(set(self.vote_cols) - set(self.classes))):
                raise ValueError(f"vote_cols names class(es) {extra} that are not in classes {list(self.classes)}")
        named = [self.text_col, *self.label_cols, self.id_col, self.time_col, self.user_col, self.thread_col,
                 *self.meta_cols, *(self.vote_cols or {}).values()]
        named = [c for c in named if c is not None]
        dupes = sorted({c for c in named if named.count(c) > 1})
        if dupes:
            raise ValueError(f"column(s) {dupes} are mapped to more than one role (text, label, id, ...): map each once")
        return self

    @property
    def multilabel(self) -> bool:
        return len(self.label_cols) > 1 or self.label_sep is not None

    @property
    def indicator_labels(self) -> bool:
        """True when each label column is a 0/1 indicator named by its category."""
        return len(self.label_cols) > 1
