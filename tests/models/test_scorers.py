"""One shared check for every scorer (the sklearn way), plus what is particular to each reference scorer."""

import numpy as np
import pytest

from finesieve.data.errors import ConfigError
from finesieve.evals.metrics import roc_auc
from finesieve.models.base import NotFittedError, positive_scores
from finesieve.models.rules import RulesScorer, load_policy
from finesieve.models.tfidf import TfidfLogReg

SCORERS = {"tfidf": lambda: TfidfLogReg(), "rules": lambda: RulesScorer(policy="builtin:hate_speech")}


@pytest.fixture(scope="module")
def davidson_split(davidson_slice):
    df = davidson_slice.sample(frac=1.0, random_state=1).reset_index(drop=True)
    cut = int(len(df) * 0.8)
    return df.iloc[:cut], df.iloc[cut:]


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_scorer_contract(name, davidson_split, tmp_path):
    train, test = davidson_split
    scorer = SCORERS[name]()
    with pytest.raises(NotFittedError, match=type(scorer).__name__):
        scorer.predict_proba(["hello"])
    assert scorer.fit(train["text"].tolist(), train["label"].tolist()) is scorer
    assert scorer.classes_.tolist() == ["hate_speech", "neither", "offensive"]
    assert scorer.multilabel_ is False
    proba = scorer.predict_proba(test["text"].tolist())
    assert proba.shape == (len(test), 3)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(TypeError, match="wrap it in a list"):
        scorer.predict_proba("one message")
    # Save, reload, score: the same probabilities (a lost head or vocabulary would change them).
    scorer.save(tmp_path / name)
    again = type(scorer).load(tmp_path / name)
    np.testing.assert_allclose(again.predict_proba(test["text"].tolist()), proba)
    # Scores carry signal for hate_speech on real held-out tweets.
    y = (test["label"] == "hate_speech").to_numpy()
    auc = roc_auc(y, positive_scores(proba, scorer.classes_, ["hate_speech"], False))
    assert auc > (0.75 if name == "tfidf" else 0.6), auc


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_multilabel(name):
    texts = ["pay me on venmo you idiot", "you idiot", "pay me on venmo", "thanks, see you tuesday"] * 10
    labels = [("harassment", "off_platform"), ("harassment",), ("off_platform",), ()] * 10
    policy_scorer = SCORERS[name]() if name == "tfidf" else RulesScorer(policy="builtin:marketplace")
    scorer = policy_scorer.fit(texts, labels, multilabel=True)
    assert scorer.multilabel_
    proba = scorer.predict_proba(["you idiot, pay me on venmo", "see you tuesday"])
    classes = scorer.classes_.tolist()
    assert {"harassment", "off_platform"} <= set(classes)
    h, o = classes.index("harassment"), classes.index("off_platform")
    assert proba[0, h] > 0.5 and proba[0, o] > 0.5  # both policies broken at once
    assert proba[1, h] < 0.5 and proba[1, o] < 0.5


def test_rules_are_calibrated_on_their_training_data(davidson_split):
    train, _ = davidson_split
    scorer = RulesScorer(policy="builtin:hate_speech", smoothing=1.0).fit(
        train["text"].tolist(), train["label"].tolist()
    )
    proba = scorer.predict_proba(train["text"].tolist())
    # Each group's probability is its (smoothed) positive share, so totals match the label counts closely.
    for j, c in enumerate(scorer.classes_):
        assert abs(proba[:, j].sum() - (train["label"] == c).sum()) < 0.02 * len(train)


def test_rules_catch_obfuscated_contact_requests():
    texts = ["text me on wh@tsapp", "pay with v e n m o please", "can you come on tuesday", "what time works"] * 5
    labels = ["off_platform", "off_platform", "harassment", "harassment"] * 5  # only the off_platform rules matter here
    scorer = RulesScorer(policy="builtin:marketplace").fit(texts, labels)
    assert scorer.fired(["wh@tsapp me", "V E N M O", "see you soon"]) == [["contact-outside"], ["pay-outside"], []]
    assert scorer.actions(["wh@tsapp me", "see you soon"]) == ["review", None]


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        (
            "categories: [a]\nrules:\n  - {name: r, category: a, patterns: ['(unclosed']}",
            "not a valid regular expression",
        ),
        ("categories: [a]\nrules:\n  - {name: r, category: b, keywords: [x]}", "not in 'categories'"),
        (
            "categories: [a]\nrules:\n  - {name: r, category: a, keywords: [x]}\n  - {name: r, category: a, keywords: [y]}",
            "more than once",
        ),
        ("categories: [a]\nrules:\n  - {name: r, category: a}", "neither keywords nor patterns"),
        ("categories: [a]\nrules:\n  - {name: r, category: a, keywords: [x], colour: red}", "colour"),
        ("categories: [a\n", "not valid YAML"),
    ],
)
def test_bad_policy_is_a_clear_error(tmp_path, yaml_text, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_policy(path)


def test_policy_for_other_labels_is_refused():
    with pytest.raises(ConfigError, match="none of which is a class"):
        RulesScorer(policy="builtin:marketplace").fit(["a", "b"], ["ham", "eggs"])
    with pytest.raises(ConfigError, match="choose one of"):
        load_policy("builtin:nope")


def test_positive_scores_sum_or_max():
    proba = np.array([[0.2, 0.3, 0.5]])
    assert positive_scores(proba, ["a", "b", "c"], ["a", "c"], multilabel=False)[0] == pytest.approx(0.7)
    assert positive_scores(proba, ["a", "b", "c"], ["a", "c"], multilabel=True)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="--positive"):
        positive_scores(proba, ["a", "b", "c"], ["z"], multilabel=False)
