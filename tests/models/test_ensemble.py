"""The stacked ensemble on a real Davidson slice: the scorer contract (single- and multi-label), the stacker fitted
on held-out data only, the weights it reports, the choice of C, class order, JSON persistence and refusals.

Members are fitted on the first 1,000 rows of the shared 2,000-row slice, the stacker on the next 600 (rows no
member saw), and the rest is scored. Tiny members keep it fast: TF-IDF and a small char-CNN.
"""

import json

import numpy as np
import pytest

from finesieve import runs
from finesieve.data.errors import ConfigError, DataError
from finesieve.evals.metrics import roc_auc
from finesieve.models.base import NotFittedError
from finesieve.models.char_cnn import CharCNNScorer
from finesieve.models.checks import check_scorer
from finesieve.models.ensemble import STATE_FILE, StackedEnsemble
from finesieve.models.tfidf import TfidfLogReg

TINY_CNN = dict(channels=16, embed_dim=8, max_chars=120, kernel_sizes=(3, 5), max_epochs=2, batch_size=64)
CLASSES = ["hate_speech", "neither", "offensive"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(davidson_slice):
    """Member training rows, held-out stacker rows, scored rows (texts, labels, multi-label votes) and probe texts."""
    votes = davidson_slice[["hate_speech", "offensive_language", "neither"]].astype(int).to_numpy()
    multi = [tuple(c for c, v in zip(("hate_speech", "offensive", "neither"), row) if v > 0) for row in votes]
    texts, labels = davidson_slice.text.tolist(), davidson_slice.label.tolist()
    parts = {
        name: (texts[a:b], labels[a:b], multi[a:b])
        for name, (a, b) in {"train": (0, 1000), "held": (1000, 1600), "rest": (1600, 2000)}.items()
    }
    rest = sorted(parts["rest"][0], key=len)
    probe = [rest[i] for i in np.linspace(0, len(rest) - 1, 10).round().astype(int)]
    parts["probe"] = probe + ["", "\N{GRINNING FACE}", "word " * 800]  # empty, an emoji, longer than any member reads
    return parts


@pytest.fixture(scope="module")
def members(data):
    texts, labels, _ = data["train"]
    return {"tfidf": TfidfLogReg(max_iter=500).fit(texts, labels), "cnn": CharCNNScorer(**TINY_CNN).fit(texts, labels)}


def test_the_run_kind_is_registered_with_runs(members, data):
    texts, labels, _ = data["held"]
    ensemble = StackedEnsemble(members).fit(texts, labels)
    assert runs.SCORER_KINDS["ensemble"] is StackedEnsemble
    assert runs.kind_of(ensemble) == "ensemble"


def test_single_label_contract(members, data, tmp_path):
    texts, labels, _ = data["held"]
    scorer = check_scorer(
        lambda: StackedEnsemble(members),
        texts,
        labels,
        data["probe"],
        tmp_dir=tmp_path,
        rebuild=lambda config: StackedEnsemble.from_config(config, members),
        batch_atol=1e-6,  # the char-CNN member pads batches in float32
        reload_atol=0.0,  # members reload exactly and the coefficients round-trip through JSON exactly
    )
    assert scorer.classes_.tolist() == CLASSES


def test_multilabel_contract(data, tmp_path):
    train_texts, _, train_multi = data["train"]
    texts, _, multi = data["held"]
    members = {  # two different views of the text: words and characters
        "words": TfidfLogReg(char_ngrams=(1, 1), max_features=5000, max_iter=500).fit(train_texts, train_multi),
        "chars": TfidfLogReg(word_ngrams=(1, 1), max_features=5000, max_iter=500).fit(train_texts, train_multi),
    }
    scorer = check_scorer(
        lambda: StackedEnsemble(members, cv_folds=3),
        texts,
        multi,
        data["probe"],
        tmp_dir=tmp_path,
        multilabel=True,
        rebuild=lambda config: StackedEnsemble.from_config(config, members),
        batch_atol=1e-9,
        reload_atol=0.0,
    )
    assert scorer.multilabel_ is True and scorer.coef_.shape == (3, 6) and scorer.C_.shape == (3,)


def test_the_stacker_leans_on_the_member_that_knows(data):
    """A member trained on shuffled labels knows nothing: the stacker gives it little weight, and the ensemble ranks
    hate speech as well as the informative member alone."""
    texts, labels, _ = data["train"]
    shuffled = list(np.random.default_rng(0).permutation(labels))
    informed = TfidfLogReg(max_iter=500).fit(texts, labels)
    noise = TfidfLogReg(max_iter=500).fit(texts, shuffled)
    held_texts, held_labels, _ = data["held"]
    ensemble = StackedEnsemble({"informed": informed, "noise": noise}).fit(held_texts, held_labels)
    assert ensemble.weights_["informed"] > 0.85, ensemble.weights_  # 0.95 when written
    assert sum(ensemble.weights_.values()) == pytest.approx(1.0)
    rest_texts, rest_labels, _ = data["rest"]
    y = np.array([label == "hate_speech" for label in rest_labels], dtype=int)
    alone = roc_auc(y, informed.predict_proba(rest_texts)[:, 0])
    stacked = roc_auc(y, ensemble.predict_proba(rest_texts)[:, 0])
    assert stacked >= alone - 0.02, (stacked, alone)


def test_fit_fits_the_stacker_only(members, data):
    texts, labels, _ = data["held"]
    probe = data["probe"]
    before = {name: m.predict_proba(probe) for name, m in members.items()}
    ensemble = StackedEnsemble(members).fit(texts, labels)
    for name, member in members.items():
        assert ensemble.members[name] is member
        np.testing.assert_array_equal(member.predict_proba(probe), before[name])
    assert ensemble.member_names_ == ["tfidf", "cnn"] and ensemble.coef_.shape == (3, 6)
    assert set(ensemble.report_["member_log_loss"]) == {"tfidf", "cnn"}


def test_cross_validation_chooses_c_by_held_out_log_loss(members, data):
    texts, labels, _ = data["held"]
    fixed = StackedEnsemble(members, C=0.37, cv_folds=0).fit(texts, labels)
    assert fixed.C_.tolist() == [0.37] and fixed.report_["cv"]["method"] == "fixed C"
    chosen = StackedEnsemble(members, cv_folds=3, Cs=(0.001, 1.0, 1000.0)).fit(texts, labels)
    losses = {float(c): v for c, v in chosen.report_["cv"]["log_loss"].items()}
    assert set(losses) == {0.001, 1.0, 1000.0}
    assert chosen.C_.tolist() == [min(losses, key=losses.get)]
    # A very strong penalty leaves the members almost unused: the prior alone is a worse stacker.
    assert losses[0.001] > min(losses.values())


class Rewritten:
    """A member whose probabilities are rewritten: columns in reverse class order (a scorer may document any order),
    or rounded to certainties of 0 and 1 (as a rule or a lookup gives)."""

    def __init__(self, scorer, reverse=False, certain=False):
        self.scorer, self.reverse, self.certain = scorer, reverse, certain
        self.classes_ = scorer.classes_[::-1] if reverse else scorer.classes_
        self.multilabel_ = scorer.multilabel_

    def predict_proba(self, texts):
        proba = self.scorer.predict_proba(texts)
        if self.certain:
            proba = np.eye(proba.shape[1])[proba.argmax(axis=1)]
        return proba[:, ::-1] if self.reverse else proba


def test_members_classes_are_matched_by_name_not_position(members, data):
    texts, labels, _ = data["held"]
    plain = StackedEnsemble(members).fit(texts, labels)
    reordered = StackedEnsemble({"tfidf": members["tfidf"], "cnn": Rewritten(members["cnn"], reverse=True)})
    reordered.fit(texts, labels)
    np.testing.assert_allclose(reordered.predict_proba(data["probe"]), plain.predict_proba(data["probe"]), atol=1e-9)
    # Each member's own held-out log loss is read from the column of the true class, found by name.
    assert reordered.report_["member_log_loss"] == pytest.approx(plain.report_["member_log_loss"])


def test_a_member_certain_of_0_or_1_still_gives_probabilities(members, data):
    """log(0) would be -inf: member probabilities are clipped before the log, so the stacker stays finite."""
    texts, labels, _ = data["held"]
    ensemble = StackedEnsemble({"tfidf": members["tfidf"], "sure": Rewritten(members["cnn"], certain=True)})
    proba = ensemble.fit(texts, labels).predict_proba(data["probe"])
    assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1.0)
    assert np.isfinite(ensemble.coef_).all() and np.isfinite(ensemble.report_["member_log_loss"]["sure"])


def test_two_classes_are_one_logistic_regression(data, tmp_path):
    texts, labels, _ = data["train"]
    binary = ["hate_speech" if label == "hate_speech" else "other" for label in labels]
    member = TfidfLogReg(max_iter=500).fit(texts, binary)
    held_texts, held_labels, _ = data["held"]
    held_binary = ["hate_speech" if label == "hate_speech" else "other" for label in held_labels]
    ensemble = StackedEnsemble({"tfidf": member}, cv_folds=0).fit(held_texts, held_binary)
    # Stored as the symmetric rows -w/2, +w/2: the softmax is the sigmoid of w.x + b.
    np.testing.assert_allclose(ensemble.coef_[0], -ensemble.coef_[1])
    x = np.log(np.clip(member.predict_proba(data["probe"]), 1e-6, 1 - 1e-6))
    w, b = ensemble.coef_[1] - ensemble.coef_[0], ensemble.intercept_[1] - ensemble.intercept_[0]
    np.testing.assert_allclose(ensemble.predict_proba(data["probe"])[:, 1], 1 / (1 + np.exp(-(x @ w + b))), atol=1e-12)


def test_saved_as_json_and_member_folders(members, data, tmp_path):
    texts, labels, _ = data["held"]
    ensemble = StackedEnsemble(members).fit(texts, labels)
    ensemble.save(tmp_path / "ens")
    state = json.loads((tmp_path / "ens" / STATE_FILE).read_text())
    assert [m["kind"] for m in state["members"]] == ["tfidf", "char_cnn"]
    assert np.array_equal(np.array(state["coef"]), ensemble.coef_)
    assert state["weights"] == ensemble.weights_
    assert sorted(p.name for p in (tmp_path / "ens" / "members").iterdir()) == ["cnn", "tfidf"]
    top_level = sorted(p.name for p in (tmp_path / "ens").iterdir())
    assert top_level == [STATE_FILE, "members"]  # the stacker is JSON; members keep their own formats
    again = StackedEnsemble.load(tmp_path / "ens")
    np.testing.assert_array_equal(again.predict_proba(data["rest"][0]), ensemble.predict_proba(data["rest"][0]))
    assert again.weights_ == ensemble.weights_ and again.get_config() == ensemble.get_config()


def test_refusals(members, data):
    texts, labels, multi = data["held"]
    with pytest.raises(NotFittedError, match="StackedEnsemble"):
        StackedEnsemble(members).predict_proba(["hello"])
    with pytest.raises(ConfigError, match="dict of name"):
        StackedEnsemble({}).fit(texts, labels)
    with pytest.raises(NotFittedError, match="TfidfLogReg"):
        StackedEnsemble({"tfidf": members["tfidf"], "fresh": TfidfLogReg()}).fit(texts, labels)
    with pytest.raises(ConfigError, match="cannot name a folder"):
        StackedEnsemble({"a/b": members["tfidf"]}).fit(texts, labels)
    two = TfidfLogReg(max_iter=200).fit(
        texts[:300], ["hate_speech" if c == "hate_speech" else "x" for c in labels[:300]]
    )
    with pytest.raises(ConfigError, match="member 'two' has classes"):
        StackedEnsemble({"tfidf": members["tfidf"], "two": two}).fit(texts, labels)
    with pytest.raises(DataError, match="no example for class"):
        keep = [i for i, c in enumerate(labels) if c != "hate_speech"]
        StackedEnsemble(members).fit([texts[i] for i in keep], [labels[i] for i in keep])
    with pytest.raises(DataError, match="multi-label but the members are single-label"):
        StackedEnsemble(members).fit(texts, multi)
    with pytest.raises(ConfigError, match="StackedEnsemble settings: .*cv_folds is 1: use 0"):
        StackedEnsemble(members, cv_folds=1).fit(texts, labels)
