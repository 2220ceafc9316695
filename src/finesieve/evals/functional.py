"""Functional tests: short hand-written cases, each tagged with the behaviour it tests, read per behaviour.

After HateCheck (Röttger et al. 2021): a random test split says how often a model is right; a functional suite
says where it is wrong ("it flags counter-speech", "spelling tricks get past it"). Each case carries a
`functionality` (negation, counter_speech, evasion...) and a `target` group ("" for a case about no group). The
suite is a corner-case set, evaluated apart from the random split:

    from finesieve.evals.functional import functional_breakdown, load_functional_suite
    suite = load_functional_suite("builtin:hate_speech")   # or a YAML of the same shape, or a CSV/JSONL file
    flagged = scores >= threshold                          # scores: (n,) the scorer's P(hate_speech) on suite.texts
    report = functional_breakdown(suite.frame["functionality"], suite.frame["target"],
                                  suite.violation(["hate_speech"]), flagged)
    report["functionalities"]["negation"]["accuracy"], report["worst"]

Sources (`load_functional_suite`):
- `builtin:NAME` reads `evals/functional_NAME.yaml`, shipped with finesieve (`builtin:hate_speech`).
- a `.yaml`/`.yml` path: the same shape, templates expanded over target groups (documented at the top of
  `functional_hate_speech.yaml`). Case ids are `FUNCTIONALITY:TARGET:tNN` (template NN) or `...:cNN` (literal case).
- a `.csv`/`.tsv`/`.jsonl` path with columns text, label, functionality and optionally target, read by
  `data.load.load_dataset` (strictly: any rejected row is an error). Case ids are `FUNCTIONALITY:TARGET:rNN`, NN
  the data row.

Texts go through `data.preprocess.prepare` as loaded data does, and the dataset records its `preprocessing`, so a
scorer loaded from a run does not redact them twice. The ids name functionality and target, so the dataset's
`content_hash` changes when a case is retagged as well as when it is reworded or relabelled.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import string
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from finesieve.data.dataset import Dataset
from finesieve.data.delimited import read_header
from finesieve.data.errors import ConfigError, DataError, RowProblem, config_error
from finesieve.data.load import load_dataset
from finesieve.data.preprocess import Preprocessing, prepare
from finesieve.data.redact import RedactionConfig
from finesieve.data.spec import ColumnSpec
from finesieve.evals.metrics import wilson_interval

FUNCTIONALITY_COL = "functionality"
TARGET_COL = "target"
BUILTIN = "builtin:"
YAML_SUFFIXES = (".yaml", ".yml")
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".jsonl": None, ".ndjson": None}  # suffix -> separator
N_WORST = 3  # functionalities listed under "worst"

# ----------------------------------------------------------------------------------------------- the YAML shape


class SuiteCase(BaseModel):
    """One literal case of a functionality."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The message, as a user would write it.")
    target: str | None = Field(None, description="The group it is about (a key of `groups`); none for no group.")
    label: str | None = Field(None, description="Its label, when not the functionality's.")


class Functionality(BaseModel):
    """One behaviour the suite tests: templates expanded over groups, and literal cases."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="The label of its cases (a literal case may give its own).")
    description: str = Field("", description="What it tests, for the reader of a report.")
    templates: list[str] = Field(
        default_factory=list,
        description="Texts with group forms as placeholders ({plural}; {Plural} capitalised), one case per group.",
    )
    groups: list[str] | None = Field(None, description="The groups its templates are expanded over (default: all).")
    cases: list[SuiteCase] = Field(default_factory=list, description="Literal cases.")


class FunctionalSuite(BaseModel):
    """A functional test suite as written: groups with their forms, and functionalities."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field("", description="What the suite covers and where it comes from.")
    classes: list[str] | None = Field(
        None, description="The labels a case may carry; inferred from the cases when absent."
    )
    groups: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="group -> form name -> text, e.g. {muslim: {plural: Muslims}}."
    )
    functionalities: dict[str, Functionality] = Field(description="name -> functionality, in report order.")

    def problems(self) -> list[str]:
        """Everything wrong with the suite beyond its shape, each naming its key and the fix; [] when none."""
        problems = [f"groups.{g}: {p}" for g, forms in self.groups.items() for p in _form_problems(forms)]
        if not self.functionalities:
            problems.append("functionalities: none given: add at least one")
        for name, func in self.functionalities.items():
            where = f"functionalities.{name}"
            if not func.templates and not func.cases:
                problems.append(f"{where}: has neither templates nor cases: add some, or remove it")
            problems += self._label_problems(f"{where}.label", func.label)
            groups = func.groups if func.groups is not None else list(self.groups)
            for g in func.groups or []:
                if g not in self.groups:
                    problems.append(f"{where}.groups: {_unknown(g, 'group', list(self.groups))}")
            if func.templates and not groups:
                problems.append(f"{where}.templates: no groups to expand them over: define `groups` at the top")
            for i, template in enumerate(func.templates, start=1):
                problems += [
                    f"{where}.templates[{i}] {template!r}: {p}"
                    for p in _template_problems(template, {g: self.groups[g] for g in groups if g in self.groups})
                ]
            for i, case in enumerate(func.cases, start=1):
                if not case.text.strip():
                    problems.append(f"{where}.cases[{i}].text: empty: write the message, or remove the case")
                if case.target is not None and case.target not in self.groups:
                    problems.append(f"{where}.cases[{i}].target: {_unknown(case.target, 'group', list(self.groups))}")
                if case.label is not None:
                    problems += self._label_problems(f"{where}.cases[{i}].label", case.label)
        return problems

    def _label_problems(self, where: str, label: str) -> list[str]:
        if self.classes is not None and label not in self.classes:
            return [f"{where}: {_unknown(label, 'label', self.classes)} (or add it to `classes`)"]
        return []

    def expand(self) -> list[dict]:
        """One record per case (id, text, label, functionality, target): functionalities in file order, each
        template once per group, then the literal cases. Call on a suite without `problems()`."""
        rows = []
        for name, func in self.functionalities.items():
            groups = func.groups if func.groups is not None else list(self.groups)
            for i, template in enumerate(func.templates, start=1):
                for g in groups:
                    text = template.format_map(_with_capitals(self.groups[g]))
                    rows.append(_record(f"{name}:{g}:t{i:02d}", text, func.label, name, g))
            for i, case in enumerate(func.cases, start=1):
                rows.append(
                    _record(
                        f"{name}:{case.target or '-'}:c{i:02d}", case.text, case.label or func.label, name, case.target
                    )
                )
        return rows


def _record(case_id: str, text: str, label: str, functionality: str, target: str | None) -> dict:
    return {"id": case_id, "text": text, "label": label, FUNCTIONALITY_COL: functionality, TARGET_COL: target}


def _form_problems(forms: dict[str, str]) -> list[str]:
    if not forms:
        return ["has no forms: give at least one, e.g. {plural: Muslims}"]
    return [f"form '{k}' is empty: write it out" for k, v in forms.items() if not v.strip()]


def _with_capitals(forms: dict[str, str]) -> dict[str, str]:
    """The forms, plus each under its capitalised name with its first letter capitalised ({Plural}: "Women")."""
    return {**{k[:1].upper() + k[1:]: v[:1].upper() + v[1:] for k, v in forms.items()}, **forms}


def _template_problems(template: str, groups: dict[str, dict[str, str]]) -> list[str]:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:  # a lone { or }
        return [f"{err}: write group forms as {{plural}}, and a literal brace twice ({{{{ or }}}})"]
    if not fields:
        return ["uses no group form, so every group would give the same text: move it to `cases`"]
    problems = []
    for field in dict.fromkeys(fields):
        key = field[:1].lower() + field[1:]
        lacking = [g for g, forms in groups.items() if key not in forms]
        if lacking:
            known = sorted(set.intersection(*(set(f) for f in groups.values()))) if groups else []
            problems.append(
                f"placeholder {{{field}}} is not a form of group(s) {lacking}: use one of "
                f"{['{' + k + '}' for k in known]} (capitalised for a sentence start), or add the form to those groups"
            )
    return problems


def _unknown(value: str, what: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(valid), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {what} '{value}'{hint}: use one of {list(valid)}"


# ----------------------------------------------------------------------------------------------- loading


def load_functional_suite(
    ref: str | Path = "builtin:hate_speech", *, redaction: RedactionConfig | None = None
) -> Dataset:
    """The suite `ref` names as a `Dataset` whose frame carries `functionality` and `target` columns.

    `ref`: `builtin:NAME`, a YAML path, or a CSV/TSV/JSONL path (see the module docstring). `redaction` is the
    run's, as for `data.load.load_dataset`. Raises ConfigError for a bad YAML suite, DataError for a bad table or
    cases that read the same after cleaning; each names the file, the key or row, and the fix.
    """
    ref = str(ref)
    if ref.startswith(BUILTIN):
        return _from_yaml(_builtin_text(ref), ref, redaction)
    path = Path(ref)
    suffix = path.suffix.lower()
    if suffix not in (*YAML_SUFFIXES, *TABLE_SUFFIXES):
        raise DataError(
            f"{ref}: a functional suite is a YAML file ({', '.join(YAML_SUFFIXES)}) or a table "
            f"({', '.join(TABLE_SUFFIXES)}) with columns text, label, {FUNCTIONALITY_COL}[, {TARGET_COL}]; "
            f"got {suffix or 'no extension'}: rename or convert it, or use {BUILTIN}hate_speech"
        )
    if not path.is_file():
        raise DataError(f"{ref}: functional suite not found: check the path, or use {BUILTIN}hate_speech")
    if suffix in YAML_SUFFIXES:
        return _from_yaml(path.read_text(encoding="utf-8"), ref, redaction)
    return _from_table(path, redaction)


def is_functional_suite(ref: str | Path) -> bool:
    """Whether `ref` names a functional suite rather than a plain labelled file: `builtin:NAME`, a YAML file, or a
    table with a `functionality` column (a corner-case file given to `--corner` is read as a suite when it is one)."""
    ref = str(ref)
    if ref.startswith(BUILTIN):
        return True
    path = Path(ref)
    suffix = path.suffix.lower()
    if suffix in YAML_SUFFIXES:
        return True
    if suffix not in TABLE_SUFFIXES or not path.is_file():
        return False
    try:
        return FUNCTIONALITY_COL in _table_columns(path)
    except DataError:
        return False  # an unreadable file is reported by whoever loads it


def builtin_suites() -> list[str]:
    """The `builtin:NAME` suites shipped with finesieve."""
    files = resources.files("finesieve.evals")
    names = (p.name for p in files.iterdir() if p.name.startswith("functional_") and p.name.endswith(".yaml"))
    return sorted(BUILTIN + n.removeprefix("functional_").removesuffix(".yaml") for n in names)


def _builtin_text(ref: str) -> str:
    name = ref.removeprefix(BUILTIN)
    if ref not in builtin_suites():
        raise ConfigError(f"no built-in functional suite '{name}': choose one of {builtin_suites()}, or give a path")
    return (resources.files("finesieve.evals") / f"functional_{name}.yaml").read_text(encoding="utf-8")


def _from_yaml(text: str, source: str, redaction: RedactionConfig | None) -> Dataset:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({err}): fix the syntax at the line shown") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: a functional suite is a YAML mapping with `groups` and `functionalities`, got "
            f"{type(raw).__name__}: see the top of functional_hate_speech.yaml for the shape"
        )
    try:
        suite = FunctionalSuite.model_validate(raw)
    except ValidationError as err:
        raise config_error(err, f"{source}: invalid functional suite", FunctionalSuite) from None
    problems = suite.problems()
    if problems:
        raise ConfigError(f"{source}: invalid functional suite:\n  - " + "\n  - ".join(problems))
    frame = pd.DataFrame(suite.expand(), columns=["id", "text", "label", FUNCTIONALITY_COL, TARGET_COL])
    frame.insert(1, "row", np.arange(1, len(frame) + 1))  # the case's position in the expanded suite
    frame = frame.rename(columns={"text": "text_raw"})
    frame[TARGET_COL] = _optional_names(frame[TARGET_COL], frame.index)
    frame["labels"] = [(label,) for label in frame.pop("label")]
    preprocessing = Preprocessing(redaction=redaction or RedactionConfig())
    texts, counts = prepare(frame["text_raw"], preprocessing)
    frame.insert(3, "text", list(texts))
    _refuse_duplicates(frame, source, lambda i: f"case {frame['id'][i]}")
    classes = suite.classes if suite.classes is not None else sorted({lbl for (lbl,) in frame["labels"]})
    return Dataset(
        frame=frame[["id", "row", "text_raw", "text", "labels", FUNCTIONALITY_COL, TARGET_COL]],
        classes=list(classes),
        spec=_spec(classes),
        source=source,
        redaction_counts=dict(counts),
        preprocessing=preprocessing,
    )


def _from_table(path: Path, redaction: RedactionConfig | None) -> Dataset:
    columns = _table_columns(path)
    missing = [c for c in ("text", "label", FUNCTIONALITY_COL) if c not in columns]
    if missing:
        hints = []
        for col in missing:
            close = difflib.get_close_matches(col, columns, n=1, cutoff=0.5)
            hints.append(f"'{col}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise DataError(
            f"{path}: column(s) {', '.join(hints)} not found; the file has {columns}. A functional suite needs the "
            f"columns text, label, {FUNCTIONALITY_COL} and optionally {TARGET_COL}: rename yours"
        )
    meta = (FUNCTIONALITY_COL, TARGET_COL) if TARGET_COL in columns else (FUNCTIONALITY_COL,)
    # strict: a rejected row is an error, as a test case must never be dropped silently.
    loaded = load_dataset(path, ColumnSpec(meta_cols=meta), redaction=redaction, strict=True)
    frame = loaded.frame.copy()
    functionality = [_tag(v) for v in frame[FUNCTIONALITY_COL]]
    problems = [
        RowProblem(
            str(path),
            int(row),
            FUNCTIONALITY_COL,
            str(value)[:60],
            "missing_functionality",
            "name the functionality the case tests (e.g. negation), or remove the row",
        )
        for row, value, tag in zip(frame["row"], frame[FUNCTIONALITY_COL], functionality)
        if tag is None
    ]
    if problems:
        raise DataError(
            f"{path}: {len(problems)} row(s) without a functionality:\n  " + "\n  ".join(map(str, problems[:20]))
        )
    frame[FUNCTIONALITY_COL] = functionality
    frame[TARGET_COL] = _optional_names(frame[TARGET_COL] if TARGET_COL in frame else [None] * len(frame), frame.index)
    frame["id"] = [
        f"{f}:{t or '-'}:r{row}" for f, t, row in zip(frame[FUNCTIONALITY_COL], frame[TARGET_COL], frame["row"])
    ]
    _refuse_duplicates(frame, str(path), lambda i: f"row {frame['row'][i]}")
    return dataclasses.replace(
        loaded,
        frame=frame[["id", "row", "text_raw", "text", "labels", FUNCTIONALITY_COL, TARGET_COL]],
        spec=_spec(loaded.classes),
        source=str(path),
    )


def _table_columns(path: Path) -> list[str]:
    """The column names: the header of a CSV/TSV, the keys of the first record of a JSONL (its first non-blank
    line; [] when that is not a JSON object, which `load_dataset` then reports with its line)."""
    sep = TABLE_SUFFIXES[path.suffix.lower()]
    if sep is not None:
        return read_header(path, sep=sep, encoding="utf-8").names
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                try:
                    record = json.loads(line)
                except ValueError:
                    return []
                return list(record) if isinstance(record, dict) else []
    raise DataError(f"{path}: the file is empty: write one JSON object per line with text, label, {FUNCTIONALITY_COL}")


def _tag(value) -> str | None:
    """A functionality or target cell as a name; None when empty (blank, None, NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value).strip() or None


def _optional_names(values, index: pd.Index) -> pd.Series:
    """A target column: names, "" where a case has no group. Not None: pandas keeps a missing value as NaN, a
    float, which string code downstream (slices, `astype(str)`, sorting) does not expect."""
    return pd.Series([_tag(v) or "" for v in values], index=index, dtype=object)


def _spec(classes: Sequence[str]) -> ColumnSpec:
    return ColumnSpec(meta_cols=(FUNCTIONALITY_COL, TARGET_COL), classes=tuple(classes))


def _refuse_duplicates(frame: pd.DataFrame, source: str, name) -> None:
    """A case repeated (after cleaning and redaction: two @handles read the same) counts twice in its figures."""
    first: dict[str, int] = {}
    problems = []
    for i, text in enumerate(frame["text"]):
        if text in first:
            problems.append(f"{name(i)} reads the same as {name(first[text])}: {text[:80]!r}")
        first.setdefault(text, i)
    if problems:
        raise DataError(
            f"{source}: {len(problems)} case(s) repeat another after cleaning and redaction, so they would count "
            "twice in the figures; reword or remove them:\n  - " + "\n  - ".join(problems[:20])
        )


# ----------------------------------------------------------------------------------------------- the breakdown


def functional_breakdown(functionality, target, y, flagged, *, n_worst: int = N_WORST) -> dict:
    """Accuracy of decisions per functionality and per target group, JSON-ready.

    functionality: (n,) names; target: (n,) group names, empty or None for a case with no group (or `target`
    None: no per-group figures); y: (n,) 0/1, 1 for a violation; flagged: (n,) bool, the scorer's decisions.
    Returns {n, n_violation, accuracy, accuracy_ci95, flag_rate} overall and for each functionality
    (`functionalities`, in order of first appearance), each target (`targets`) and each functionality x target
    (`by_functionality_target`), plus `worst`: up to `n_worst` functionalities below 100% accuracy, worst first.
    """
    func = _names(functionality, "functionality")
    n = len(func)
    y_arr = _binary(y, "y", n)
    flag = _binary(flagged, "flagged", n)
    correct = flag == y_arr
    everything = np.ones(n, dtype=bool)

    def entry(mask: np.ndarray) -> dict:
        k, right = int(mask.sum()), int(correct[mask].sum())
        low, high = wilson_interval(right, k)
        return {
            "n": k,
            "n_violation": int(y_arr[mask].sum()),
            "accuracy": right / k,
            "accuracy_ci95": [low, high],
            "flag_rate": float(flag[mask].mean()),
        }

    by_func = {f: entry(func == f) for f in dict.fromkeys(func.tolist())}
    out = {**entry(everything), "functionalities": by_func, "targets": {}, "by_functionality_target": {}}
    if target is not None:
        tgt = np.array([_tag(t) or "" for t in _as_list(target, "target", n)], dtype=object)
        groups = [t for t in dict.fromkeys(tgt.tolist()) if t]
        out["targets"] = {t: entry(tgt == t) for t in groups}
        for f in by_func:
            cells = {t: entry((func == f) & (tgt == t)) for t in groups if ((func == f) & (tgt == t)).any()}
            if cells:
                out["by_functionality_target"][f] = cells
    ranked = sorted(((e["accuracy"], -e["n"], f) for f, e in by_func.items() if e["accuracy"] < 1.0))
    out["worst"] = [
        {
            "functionality": f,
            "accuracy": by_func[f]["accuracy"],
            "n": by_func[f]["n"],
            "flag_rate": by_func[f]["flag_rate"],
        }
        for _, _, f in ranked[:n_worst]
    ]
    return out


def _as_list(values, name: str, n: int | None = None) -> list:
    values = list(values.tolist() if hasattr(values, "tolist") else values)
    if n is not None and len(values) != n:
        raise ValueError(f"{name} has {len(values)} items but functionality has {n}: pass one per case")
    return values


def _names(values, name: str) -> np.ndarray:
    names = [_tag(v) for v in _as_list(values, name)]
    if not names:
        raise ValueError(f"{name} is empty: pass one functionality per case")
    if None in names:
        raise ValueError(
            f"{name} has an empty name at index {names.index(None)}: tag every case with the functionality it tests"
        )
    return np.array(names, dtype=object)


def _binary(values, name: str, n: int) -> np.ndarray:
    arr = np.asarray(_as_list(values, name, n))
    if arr.dtype != bool:
        bad = ~np.isin(arr, (0, 1))
        if bad.any():
            raise ValueError(
                f"{name} must hold only 0/1 or booleans, got {np.unique(arr[bad])[:5].tolist()}: binarise it first "
                "(y = dataset.violation(positive), flagged = scores >= threshold)"
            )
    return arr.astype(bool)
