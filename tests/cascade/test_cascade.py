"""Every path a message can take through the cascade, with scorers whose outputs are known in advance."""

import numpy as np
import pytest
import yaml

from finesieve.data.dataset import from_records
from finesieve.data.errors import ConfigError
from finesieve.evals.harness import evaluate
from finesieve.models.cascade import Cascade, CascadeThresholds
from finesieve.models.rules import RulesScorer


class TableScorer:
    """A fitted scorer whose probabilities are looked up by text: makes every routing decision predictable."""

    def __init__(self, table: dict[str, list[float]], classes=("abuse", "ok", "scam")):
        self.table = table
        self.classes_ = np.array(classes)
        self.multilabel_ = False
        self.calls: list[list[str]] = []

    def predict_proba(self, texts):
        self.calls.append(list(texts))
        return np.array([self.table[t] for t in texts], dtype=float).reshape(len(texts), len(self.classes_))

    def save(self, directory):  # not persisted: the save/load test uses real scorers
        raise NotImplementedError


POLICY = {
    "name": "test",
    "categories": ["abuse", "scam"],
    "rules": [
        {"name": "card-scam", "category": "scam", "action": "block", "keywords": ["gift card"]},
        {"name": "greeting", "category": "scam", "action": "clear", "keywords": ["thanks for the booking"]},
        {"name": "threat", "category": "abuse", "action": "review", "keywords": ["or else"]},
        {"name": "weak", "category": "abuse", "action": "review", "keywords": ["idiot"]},
    ],
}

# text -> (prefilter probabilities, model probabilities) over (abuse, ok, scam)
TEXTS = {
    "pay me with a gift card": ([0.1, 0.8, 0.1], [0.1, 0.1, 0.8]),
    "thanks for the booking, see you": ([0.3, 0.4, 0.3], [0.3, 0.4, 0.3]),
    "fix it or else": ([0.1, 0.9, 0.0], [0.1, 0.9, 0.0]),
    "see you at nine": ([0.02, 0.96, 0.02], [0.0, 1.0, 0.0]),
    "what a lovely idiot dog": ([0.3, 0.5, 0.2], [0.1, 0.85, 0.05]),
    "send the deposit to my own account": ([0.1, 0.5, 0.4], [0.05, 0.4, 0.55]),
    "you will regret this": ([0.4, 0.5, 0.1], [0.97, 0.02, 0.01]),
}


@pytest.fixture()
def stages(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    texts = list(TEXTS) * 3
    labels = ["scam", "ok", "abuse", "ok", "ok", "scam", "abuse"] * 3
    rules = RulesScorer(policy=str(path)).fit(texts, labels)
    pre = TableScorer({t: v[0] for t, v in TEXTS.items()})
    model = TableScorer({t: v[1] for t, v in TEXTS.items()})
    return rules, pre, model


def thresholds(**kw):
    base = dict(
        escalate=0.2,
        review=0.5,
        block={"abuse": 0.95},
        rule_modes={"card-scam": "block", "greeting": "clear", "threat": "review", "weak": "off"},
    )
    return CascadeThresholds(**{**base, **kw})


def test_every_action_path(stages):
    rules, pre, model = stages
    cascade = Cascade(model, positive=["abuse", "scam"], thresholds=thresholds(), prefilter=pre, rules=rules)
    texts = list(TEXTS)
    d = cascade.decide(texts)
    got = {t: (a, c, s) for t, a, c, s in zip(texts, d.action, d.category, d.decided_by)}
    assert got["pay me with a gift card"] == ("block", "scam", "rules")
    assert got["thanks for the booking, see you"] == ("deliver", "", "rules")
    assert got["fix it or else"] == ("review", "abuse", "rules")
    assert got["see you at nine"] == ("deliver", "", "prefilter")  # pre-filter positive score 0.04 < 0.2
    assert got["what a lovely idiot dog"] == ("deliver", "", "model")  # rule 'weak' is off: only a signal
    assert got["send the deposit to my own account"] == ("review", "scam", "model")  # 0.6 >= 0.5, scam the top
    assert got["you will regret this"] == ("block", "abuse", "model")  # abuse 0.97 >= block 0.95
    assert d.rules_fired[texts.index("what a lovely idiot dog")] == ["weak"]

    # Stages run only on what is still open: the model never saw the rule- or pre-filter-decided messages.
    assert sorted(model.calls[-1]) == sorted(
        ["what a lovely idiot dog", "send the deposit to my own account", "you will regret this"]
    )
    assert np.isnan(d.stage_scores["model"][texts.index("see you at nine")])
    assert np.isnan(d.stage_scores["prefilter"][texts.index("pay me with a gift card")])
    assert d.stage_scores["model"][texts.index("you will regret this")] == pytest.approx(0.98)
    assert d.route_fraction() == pytest.approx(3 / 7)
    # The probabilities are the deciding stage's.
    np.testing.assert_allclose(d.proba[texts.index("see you at nine")], [0.02, 0.96, 0.02])
    np.testing.assert_allclose(cascade.predict_proba(texts), d.proba)
    frame = d.to_frame()
    assert list(frame.columns) == [
        "action",
        "category",
        "decided_by",
        "score_rules",
        "score_prefilter",
        "score_model",
        "rules_fired",
    ]


def test_without_prefilter_or_rules_the_model_decides_everything(stages):
    _, _, model = stages
    cascade = Cascade(model, positive=["abuse", "scam"], thresholds=CascadeThresholds(review=0.5))
    d = cascade.decide(list(TEXTS))
    assert set(d.decided_by) == {"model"}
    assert d.route_fraction() == 1.0
    scores = d.proba[:, [0, 2]].sum(axis=1)
    assert list(d.flagged) == list(scores >= 0.5)


def test_stage_class_order_is_aligned(stages):
    rules, pre, model = stages
    # The same pre-filter with its columns in another order must decide the same way.
    shuffled = TableScorer({t: [v[0][2], v[0][0], v[0][1]] for t, v in TEXTS.items()}, classes=("scam", "abuse", "ok"))
    a = Cascade(model, positive=["abuse", "scam"], thresholds=thresholds(), prefilter=pre, rules=rules).decide(
        list(TEXTS)
    )
    b = Cascade(model, positive=["abuse", "scam"], thresholds=thresholds(), prefilter=shuffled, rules=rules).decide(
        list(TEXTS)
    )
    assert list(a.action) == list(b.action)
    np.testing.assert_allclose(a.proba, b.proba)


def test_bad_assembly_is_refused(stages):
    rules, pre, model = stages
    other = TableScorer({}, classes=("ham", "spam"))
    with pytest.raises(ConfigError, match="prefilter stage has classes"):
        Cascade(model, positive=["abuse"], thresholds=thresholds(), prefilter=other)
    with pytest.raises(ConfigError, match="not among the model's classes"):
        Cascade(model, positive=["spam"], thresholds=thresholds())
    with pytest.raises(ConfigError, match="needs thresholds.escalate"):
        Cascade(model, positive=["abuse"], thresholds=thresholds(escalate=None), prefilter=pre)
    with pytest.raises(ValueError, match="below the review threshold"):
        thresholds(block={"abuse": 0.4})
    with pytest.raises(TypeError, match="sequence of strings"):
        Cascade(model, positive=["abuse"], thresholds=thresholds()).decide("one text")


def test_harness_judges_the_cascade_by_its_actions(stages):
    """A rule can block a message its calibrated probability calls unlikely: precision counts the block."""
    rules, pre, model = stages
    cascade = Cascade(model, positive=["abuse", "scam"], thresholds=thresholds(), prefilter=pre, rules=rules)
    texts = list(TEXTS)
    labels = ["scam", "ok", "abuse", "ok", "ok", "scam", "abuse"]
    data = from_records(texts, labels)
    result = evaluate(cascade, data, positive=["abuse", "scam"], threshold=0.5, n_boot=0).to_dict()
    flagged = cascade.decide(texts).flagged
    tp = sum(f and lbl != "ok" for f, lbl in zip(flagged, labels))
    assert result["confusion"]["tp"] == tp == 4
    assert result["precision"] == pytest.approx(tp / flagged.sum())
    assert result["recall"] == pytest.approx(tp / 4)
    assert result["flag_rate"] == pytest.approx(flagged.mean())
