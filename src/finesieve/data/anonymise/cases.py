"""The hand-written resume cases (`resume_pii_cases.yaml`, beside this module) and the measurement on them:
the share of what must go that went (recall) and of what must stay that stayed (retention), per type and split.

    print(format_measurement(measure_anonymisation(Anonymiser(), load_resume_cases())))
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from finesieve.data.anonymise.anonymiser import Anonymiser
from finesieve.data.anonymise.config import AnonEntity
from finesieve.data.anonymise.rules import script
from finesieve.data.errors import ConfigError, config_error

# --- measurement -------------------------------------------------------------------------------------------

BUILTIN_CASES = "resume_pii_cases.yaml"


class RemoveItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1, description="A string that must not survive anonymisation.")
    type: AnonEntity = Field(description="Its entity type.")


class ResumeCase(BaseModel):
    """One hand-written resume with what must go (`remove`) and what must stay (`keep`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    split: Literal["dev", "heldout"] = Field(description="dev: used to write the rules; heldout: measured only.")
    lang: str = ""
    format: str = ""
    text: str = Field(min_length=1)
    remove: tuple[RemoveItem, ...] = ()
    keep: tuple[str, ...] = ()


def load_resume_cases(path: str | Path | None = None) -> list[ResumeCase]:
    """The built-in cases (`data/anonymise/resume_pii_cases.yaml`), or a YAML file of the same shape."""
    if path is None:
        source, text = BUILTIN_CASES, (resources.files("finesieve.data.anonymise") / BUILTIN_CASES).read_text("utf-8")
    else:
        source, text = str(path), Path(path).read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML ({err}): fix the syntax at the line shown") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cases"), list):
        raise ConfigError(f"{source}: expected a mapping with a `cases:` list; see the top of {BUILTIN_CASES}")
    cases, problems = [], []
    for i, item in enumerate(raw["cases"]):
        try:
            case = ResumeCase.model_validate(item)
        except ValidationError as err:
            problems.append(str(config_error(err, f"case {i + 1}", ResumeCase)))
            continue
        problems += [
            f"case {case.id}: remove {r.text!r} is not in its text" for r in case.remove if r.text not in case.text
        ]
        problems += [f"case {case.id}: keep {k!r} is not in its text" for k in case.keep if k not in case.text]
        cases.append(case)
    ids = Counter(c.id for c in cases)
    problems += [f"case id {i!r} is used {n} times" for i, n in ids.items() if n > 1]
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems) + ". Fix the cases so each string is copied exactly")
    return cases


def _survives(needle: str, text: str) -> bool:
    """Does `needle` still occur in `text`? Ends that are Latin letters or digits must be word ends, so that
    'he' is not found in 'the' and '34' not in '2034'; other scripts (CJK has no spaces) match as substrings."""
    left = r"(?<![A-Za-zÀ-ÿ0-9])" if needle[0].isalnum() and script(needle[0]) in ("LATIN", "DIGIT") else ""
    right = r"(?![A-Za-zÀ-ÿ0-9])" if needle[-1].isalnum() and script(needle[-1]) in ("LATIN", "DIGIT") else ""
    return re.search(left + re.escape(needle) + right, text) is not None


def measure_anonymisation(anonymiser: Anonymiser, cases: Sequence[ResumeCase]) -> dict:
    """Recall (share of `remove` strings gone, overall and per type) and retention (share of `keep` strings
    intact), per split, with each case's failures."""
    results = anonymiser.anonymise_texts([c.text for c in cases])
    out = {}
    for split in ("dev", "heldout"):
        chosen = [(c, r) for c, r in zip(cases, results) if c.split == split]
        if not chosen:
            continue
        by_type: dict[str, list[int]] = {}
        kept = n_keep = 0
        failures = []
        for case, result in chosen:
            missed = [(item.type, item.text) for item in case.remove if _survives(item.text, result.text)]
            lost = [k for k in case.keep if k not in result.text]
            for item in case.remove:
                found = by_type.setdefault(item.type, [0, 0])
                found[0] += (item.type, item.text) not in missed
                found[1] += 1
            kept += len(case.keep) - len(lost)
            n_keep += len(case.keep)
            if missed or lost:
                failures.append({"case": case.id, "missed": missed, "lost": lost, "output": result.text})
        removed, total = sum(v[0] for v in by_type.values()), sum(v[1] for v in by_type.values())
        out[split] = {
            "cases": len(chosen),
            "recall": removed / total if total else None,
            "removed": removed,
            "to_remove": total,
            "retention": kept / n_keep if n_keep else None,
            "kept": kept,
            "to_keep": n_keep,
            "recall_by_type": {
                t: {"recall": v[0] / v[1], "removed": v[0], "total": v[1]} for t, v in sorted(by_type.items())
            },
            "failures": failures,
        }
    return out


def format_measurement(measured: dict, show_failures: bool = True) -> str:
    """The measurement as a plain-text table: recall per type and split, overall recall and retention, failures."""
    splits = list(measured)
    types = sorted({t for s in splits for t in measured[s]["recall_by_type"]})
    head = f"{'type':<12}" + "".join(f"{s + ' recall':>22}" for s in splits)
    lines = [head, "-" * len(head)]
    for t in types:
        cells = []
        for s in splits:
            v = measured[s]["recall_by_type"].get(t)
            cells.append(f"{v['recall']:>8.1%} ({v['removed']:>3}/{v['total']:<3})".rjust(22) if v else f"{'-':>22}")
        lines.append(f"{t:<12}" + "".join(cells))
    lines.append("-" * len(head))
    for key, num, den in (("recall", "removed", "to_remove"), ("retention", "kept", "to_keep")):
        lines.append(
            f"{key:<12}"
            + "".join(
                f"{measured[s][key]:>8.1%} ({measured[s][num]:>3}/{measured[s][den]:<3})".rjust(22) for s in splits
            )
        )
    lines.append(f"{'cases':<12}" + "".join(f"{measured[s]['cases']:>22}" for s in splits))
    if show_failures:
        for s in splits:
            for failure in measured[s]["failures"]:
                parts = [f"missed {t} {text!r}" for t, text in failure["missed"]]
                parts += [f"lost {k!r}" for k in failure["lost"]]
                lines.append(f"[{s}] {failure['case']}: " + "; ".join(parts))
    return "\n".join(lines)
