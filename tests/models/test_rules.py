"""Rule priority (`models.rules.deciding_rule`): the one place that decides which fired rule acts on a message,
shared by `RulesScorer.actions`, the cascade and its fit."""

import pytest

from finesieve.models.rules import ACTION_PRIORITY, Policy, RulesScorer, deciding_rule


@pytest.fixture()
def rules():
    policy = Policy(
        categories=["abuse", "scam", "spam"],
        rules=[
            {"name": "card-scam", "category": "scam", "action": "block", "keywords": ["gift card"]},
            {"name": "deposit", "category": "scam", "action": "review", "keywords": ["deposit"]},
            {"name": "threat", "category": "abuse", "action": "review", "keywords": ["or else"]},
            {"name": "greeting", "category": "abuse", "action": "clear", "keywords": ["thanks"]},
            {"name": "spam-only", "category": "spam", "action": "block", "keywords": ["unsubscribe"]},
        ],
    )
    texts = ["a gift card deposit, thanks", "pay the deposit or else", "thanks a lot", "see you", "fine"] * 3
    labels = ["scam", "abuse", "ok", "ok", "ok"] * 3
    return RulesScorer(policy=policy).fit(texts, labels)


def test_block_beats_review_beats_clear_and_off_never_decides():
    modes = {"b": "block", "r": "review", "c": "clear", "o": "off"}
    assert deciding_rule(["c", "r", "b", "o"], modes) == ("block", "b")
    assert deciding_rule(["c", "r", "o"], modes) == ("review", "r")
    assert deciding_rule(["o", "c"], modes) == ("clear", "c")
    assert deciding_rule(["o"], modes) is None
    assert deciding_rule(["unknown"], modes) is None  # a rule without a mode is off
    assert deciding_rule([], modes) is None
    assert sorted(ACTION_PRIORITY, key=ACTION_PRIORITY.get) == ["clear", "review", "block"]


def test_equally_strict_rules_are_decided_by_name_whatever_order_they_fired_in():
    modes = {"alpha": "review", "beta": "review"}
    assert deciding_rule(["alpha", "beta"], modes) == ("review", "beta")
    assert deciding_rule(["beta", "alpha"], modes) == ("review", "beta")


def test_actions_take_the_strictest_policy_action(rules):
    texts = ["a gift card deposit, thanks", "pay the deposit or else, thanks", "thanks", "nothing here"]
    assert rules.fired(texts)[0] == ["card-scam", "deposit", "greeting"]
    assert rules.actions(texts) == ["block", "review", "clear", None]


def test_policy_modes_keep_rules_that_act_for_the_positive_classes(rules):
    assert rules.ignored_rules_ == ["spam-only"]  # spam is not a class of the training labels
    assert rules.policy_modes(["scam"]) == {"card-scam": "block", "deposit": "review", "greeting": "clear"}
    assert rules.policy_modes(["abuse", "scam"]) == {
        "card-scam": "block",
        "deposit": "review",
        "threat": "review",
        "greeting": "clear",
    }
