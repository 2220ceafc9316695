"""Errors raised on bad input. Each names the place (file, row, column), what was expected and the fix."""

from __future__ import annotations

from dataclasses import dataclass


class FinesieveError(Exception):
    """Base of the errors finesieve raises for bad input; the CLI prints their message without a traceback."""


class ConfigError(FinesieveError, ValueError):
    """A setting or flag is wrong."""


class DataError(FinesieveError, ValueError):
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
    line: int | None = None  # 1-based physical line where the row starts (CSV, TSV, JSONL); None when unknown

    def __str__(self) -> str:
        where = f"row {self.row}" + (f" (line {self.line})" if self.line is not None else "")
        return f"{self.file}: {where}, column '{self.column}': {self.problem} (value {self.value!r}). Fix: {self.fix}"

    def to_dict(self) -> dict:
        out = {
            "file": self.file,
            "row": self.row,
            "column": self.column,
            "value": self.value,
            "problem": self.problem,
            "fix": self.fix,
        }
        if self.line is not None:
            out["line"] = self.line
        return out


def config_error(err, where: str, model=None) -> ConfigError:
    """A pydantic `ValidationError` as one readable ConfigError: every problem with its setting, what was given,
    and, for a misspelt setting, the closest valid name ("did you mean ..."). The one place such errors are
    formatted, so a YAML policy, a `--set` flag and a price table all read the same way.

    `where` names the source (a file, `--set`, a flag); `model` is the pydantic class, for the valid names.
    """
    import difflib

    valid = list(getattr(model, "model_fields", {}) or {})
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e.get("loc", ())) or "value"
        if e.get("type") == "extra_forbidden":
            name = str(e["loc"][-1]) if e.get("loc") else loc
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"unknown setting {loc}{hint}" + (f"; valid ones: {', '.join(valid)}" if valid else ""))
            continue
        given = e.get("input")
        shown = "" if isinstance(given, dict) else f" (given {str(given)[:60]!r})"
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{loc}: {msg}{shown}")
    return ConfigError(f"{where}: " + "; ".join(problems))
