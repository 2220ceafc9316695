"""Errors raised on bad input. Each names the place (file, row, column), what was expected and the fix."""

from __future__ import annotations

from dataclasses import dataclass


class FinesieveError(Exception):
    """Base of the errors finesieve raises for bad input; the CLI prints their message without a traceback."""


class ConfigError(FinesieveError):
    """A setting or flag is wrong."""


class DataError(FinesieveError):
    """A file cannot be read as asked (missing column, unknown format, every row rejected...)."""


class LeakageError(DataError):
    """Near-duplicate messages straddle the train and test splits."""


@dataclass(frozen=True)
class RowProblem:
    """One rejected row: where it is, what is wrong, and how to fix it."""

    file: str
    row: int  # 1-based data row number (the header is not counted)
    column: str
    value: str  # cut short for display
    problem: str  # machine-readable kind, e.g. "empty_text"
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: row {self.row}, column '{self.column}': {self.problem} (value {self.value!r}). Fix: {self.fix}"

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "row": self.row,
            "column": self.column,
            "value": self.value,
            "problem": self.problem,
            "fix": self.fix,
        }
