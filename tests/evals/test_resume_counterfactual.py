"""The resume counterfactual check (evals.resume_counterfactual): a scorer that reads names, pronouns or ages moves
between variants, and anonymisation takes the differences out of the text."""

import numpy as np
import pytest

from finesieve.data.anonymise import AnonymisationConfig, Anonymiser
from finesieve.evals.resume_counterfactual import ATTRIBUTES, NAMES, personalise, resume_counterfactual, variants

RESUMES = [
    "Experience\nAccountant, Deloitte, 2015 - 2020\nSkills: IFRS, Excel, SAP",
    "Experience\nLine cook, The Ivy, 2018 - 2022\nSkills: knife work, HACCP",
    "Experience\nSoftware engineer, Spotify, 2019 - Present\nSkills: Python, Kafka",
]


def biased(texts: list[str]) -> np.ndarray:
    """Favours one name, penalises 'her' and age 58: the three things the check must see."""
    return np.array([0.5 + 0.3 * ("Jamal Jones" in t) - 0.2 * ("Her " in t) - 0.1 * ("Age: 58" in t) for t in texts])


def fair(texts: list[str]) -> np.ndarray:
    """Reads only the experience after the header."""
    return np.array([float(t.count("Skills")) + 0.1 * t.count("Excel") for t in texts])


def test_variants_change_one_attribute_and_keep_the_resume():
    built = variants(RESUMES[0])
    assert {k: len(v) for k, v in built.items()} == {k: len(v) for k, v in ATTRIBUTES.items()}
    assert all(t.endswith(RESUMES[0]) for ts in built.values() for t in ts)
    assert built["name"][3].startswith(NAMES[3]) and "Age: 41" in built["name"][3]  # others at the reference
    assert "Their experience" in personalise("x", "A B", "they/them", 30)
    assert "Her experience" in personalise("x", "A B", "she/her", 30)


def test_a_biased_scorer_moves_and_anonymisation_removes_the_cause():
    check = resume_counterfactual(biased, RESUMES, anonymiser=Anonymiser(AnonymisationConfig(person_ner=False)))
    got = check.to_dict()["attributes"]
    assert got["name"]["before"]["mean_spread"] == pytest.approx(0.3)
    assert got["name"]["before"]["gap_by_value"]["Jamal Jones"] > 0.2  # the favoured value shows
    assert got["pronouns"]["before"]["mean_spread"] == pytest.approx(0.2)
    assert got["age"]["before"]["mean_spread"] == pytest.approx(0.1)
    for attribute in ATTRIBUTES:
        assert got[attribute]["after"]["mean_spread"] == pytest.approx(0.0), attribute


def test_a_fair_scorer_does_not_move_and_ranks_are_counted():
    check = resume_counterfactual(fair, RESUMES, rank_among=[0.5, 1.05, 1.5])
    for sides in check.to_dict()["attributes"].values():
        assert sides["before"]["max_spread"] == 0.0 and sides["before"]["mean_rank_moves"] == 0.0
        assert "after" not in sides
    moved = resume_counterfactual(biased, RESUMES, rank_among=[0.45, 0.7])
    assert moved.attributes["name"]["before"].mean_rank_moves == 1.0  # 0.5 -> 0.8 passes the candidate at 0.7
    with pytest.raises(ValueError, match="no resumes"):
        resume_counterfactual(fair, [])
