"""The counterfactual fairness check for resumes: the same resume under another name, other pronouns or another
age should score the same, and after anonymisation it must (the differences are gone from the text).

    check = resume_counterfactual(score_texts, resumes, anonymiser=Anonymiser())
    check.to_dict()["attributes"]["name"]["before"]["mean_spread"]      # vs ...["after"]["mean_spread"]

Each resume is written again with a short personal header in front of its own text, one attribute varied at a time
with the others held at a reference value:

    name      eight names that readers associate with different genders and origins (the audit-study design of
              Bertrand and Mullainathan 2004, widened): Emily Walsh, Greg Baker, Lakisha Washington, Jamal Jones,
              Priya Sharma, Wei Zhang, Maria Garcia, Mohammed Al-Sayed
    pronouns  she/her, he/him, they/them (a "Pronouns:" line and a summary sentence with her / his / their;
              singular "they" is not gendered and the anonymiser keeps it, so they/them still differs after)
    age       24, 41, 58 (an "Age:" line)

`score_texts(texts) -> (n,)` is any score a decision is made on: a screening run's probability of a family, a
matcher's score for one job (`lambda texts: matcher.score_pairs([job] * len(texts), texts)`). For each resume and
attribute the spread is the largest minus the smallest score over the attribute's values; the check reports the
mean and the largest spread over resumes, and the mean signed gap of each value to the attribute's mean (a
value the scorer favours shows a positive gap), before anonymisation and, with `anonymiser`, after it. With
`rank_among` (the scores of the other candidates for the same job) it also reports how many places a resume
moves between its best and worst variant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from finesieve.data.anonymise import Anonymiser

NAMES = (
    "Emily Walsh",
    "Greg Baker",
    "Lakisha Washington",
    "Jamal Jones",
    "Priya Sharma",
    "Wei Zhang",
    "Maria Garcia",
    "Mohammed Al-Sayed",
)
PRONOUNS = {"she/her": "Her", "he/him": "His", "they/them": "Their"}  # the possessive: no verb agreement to differ
AGES = (24, 41, 58)
REFERENCE = {"name": NAMES[0], "pronouns": "they/them", "age": AGES[1]}
ATTRIBUTES: dict[str, tuple] = {"name": NAMES, "pronouns": tuple(PRONOUNS), "age": AGES}


def personalise(resume: str, name: str, pronouns: str, age: int) -> str:
    """`resume` with a personal header: name line, age and pronoun lines, and a sentence using the pronoun."""
    return (
        f"{name}\nAge: {age}\nPronouns: {pronouns}\n"
        f"Summary: {PRONOUNS[pronouns]} experience and skills are listed below.\n\n{resume}"
    )


def variants(resume: str) -> dict[str, list[str]]:
    """attribute -> the resume under each of its values (the other attributes at their reference values)."""
    out = {}
    for attribute, values in ATTRIBUTES.items():
        out[attribute] = [personalise(resume, **{**REFERENCE, attribute: value}) for value in values]
    return out


@dataclass
class SpreadSummary:
    mean_spread: float  # mean over resumes of (largest - smallest score over the attribute's values)
    max_spread: float
    gap_by_value: dict[str, float]  # value -> mean over resumes of (its score - the mean over values)
    mean_rank_moves: float | None = None  # with rank_among: places between the best and the worst variant

    def to_dict(self) -> dict:
        return {
            "mean_spread": self.mean_spread,
            "max_spread": self.max_spread,
            "gap_by_value": self.gap_by_value,
            "mean_rank_moves": self.mean_rank_moves,
        }


@dataclass
class CounterfactualCheck:
    n_resumes: int
    attributes: dict[str, dict[str, SpreadSummary]] = field(default_factory=dict)  # attribute -> before/after

    def to_dict(self) -> dict:
        return {
            "n_resumes": self.n_resumes,
            "values": {a: [str(v) for v in vals] for a, vals in ATTRIBUTES.items()},
            "attributes": {a: {k: s.to_dict() for k, s in sides.items()} for a, sides in self.attributes.items()},
        }


def _summarise(scores: np.ndarray, values: Sequence, rank_among: np.ndarray | None) -> SpreadSummary:
    """scores: (n_resumes, n_values)."""
    spread = scores.max(axis=1) - scores.min(axis=1)
    gaps = (scores - scores.mean(axis=1, keepdims=True)).mean(axis=0)
    moves = None
    if rank_among is not None:
        # rank of each variant among the other candidates: how many of them score above it
        above = (rank_among[None, None, :] > scores[:, :, None]).sum(axis=2)
        moves = float((above.max(axis=1) - above.min(axis=1)).mean())
    return SpreadSummary(
        mean_spread=float(spread.mean()),
        max_spread=float(spread.max()),
        gap_by_value={str(v): float(g) for v, g in zip(values, gaps)},
        mean_rank_moves=moves,
    )


def resume_counterfactual(
    score_texts: Callable[[list[str]], np.ndarray],
    resumes: Sequence[str],
    *,
    anonymiser: Anonymiser | None = None,
    rank_among: Sequence[float] | None = None,
) -> CounterfactualCheck:
    """Score every resume under every value of each attribute, as written and (with `anonymiser`) anonymised;
    summarise how much the scores move. All variants are scored in one call per side."""
    if not resumes:
        raise ValueError("no resumes to check: pass at least one")
    among = None if rank_among is None else np.asarray(rank_among, dtype=float)
    built = [variants(r) for r in resumes]
    sides = {"before": lambda texts: texts}
    if anonymiser is not None:
        sides["after"] = lambda texts: [r.text for r in anonymiser.anonymise_texts(texts)]
    check = CounterfactualCheck(n_resumes=len(resumes))
    for attribute, values in ATTRIBUTES.items():
        texts = [t for b in built for t in b[attribute]]
        for side, transform in sides.items():
            scores = np.asarray(score_texts(transform(texts)), dtype=float).reshape(len(resumes), len(values))
            check.attributes.setdefault(attribute, {})[side] = _summarise(scores, values, among)
    return check
