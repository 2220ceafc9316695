"""The evasion gap: the evaded figures are the scorer's own on the evaded messages, the gap is plain minus evaded
with a paired interval, per kind over the messages of that kind, and the harness and HTML report carry it."""

import numpy as np
import pandas as pd
import pytest

from finesieve.data.dataset import from_records
from finesieve.data.evasion import EvasionConfig, evade_texts
from finesieve.evals import metrics as M
from finesieve.evals.compare import compare
from finesieve.evals.evasion import evasion_gap
from finesieve.evals.harness import evaluate
from finesieve.evals.report import write_eval_report
from finesieve.models.tfidf import TfidfLogReg


def keyword_scores(texts):
    """A scorer that only knows the word 'hate' spelt right: the kind evasion beats."""
    rng = np.random.default_rng(0)
    return np.array([0.8 if "hate" in t.lower().split() else 0.2 for t in texts]) + rng.uniform(0, 0.1, len(texts))


@pytest.fixture
def messages():
    hateful = [f"i hate group {i} so much" for i in range(40)]
    clean = [f"i love group {i} so much" for i in range(60)]
    return hateful + clean, np.array([1] * 40 + [0] * 60)


def test_gap_is_plain_minus_the_scorers_own_evaded_figures(messages):
    texts, y = messages
    config = EvasionConfig(seed=3)
    plain = keyword_scores(texts)
    gap = evasion_gap(texts, y, plain, 0.5, config, lambda t: (keyword_scores(t), None), n_boot=200).to_dict()
    evaded, kinds = evade_texts(texts, config)
    expected = M.roc_auc(y, keyword_scores(evaded))
    assert gap["plain"]["roc_auc"] == pytest.approx(M.roc_auc(y, plain))
    assert gap["evaded"]["roc_auc"] == pytest.approx(expected)
    assert gap["gap"]["roc_auc"]["value"] == pytest.approx(M.roc_auc(y, plain) - expected)
    assert gap["gap"]["roc_auc"]["value"] > 0.1  # the keyword scorer loses much of its skill
    lo, hi = gap["gap"]["roc_auc"]["ci95"]
    assert lo <= gap["gap"]["roc_auc"]["value"] <= hi
    assert gap["evaded"]["recall"] < gap["plain"]["recall"] == 1.0
    assert gap["recall_kept"] == pytest.approx(gap["evaded"]["recall"])
    # Per kind: counts add up, figures are over that kind's messages.
    assert sum(e["n"] for e in gap["by_kind"].values()) == len(texts)
    kind, entry = next((k, e) for k, e in gap["by_kind"].items() if e["evaded"]["roc_auc"] is not None)
    mask = np.array(kinds) == kind
    assert entry["evaded"]["roc_auc"] == pytest.approx(M.roc_auc(y[mask], keyword_scores(evaded)[mask]))
    # Examples are violations whose score dropped, largest drop first.
    drops = [x["before"] - x["after"] for x in gap["examples"]]
    assert drops == sorted(drops, reverse=True) and all(d > 0 for d in drops)


def test_a_scorer_blind_to_spelling_shows_no_gap(messages):
    texts, y = messages
    constant_per_row = dict(zip(texts, keyword_scores(texts)))
    evaded, _ = evade_texts(texts, EvasionConfig())
    by_position = dict(zip(evaded, (constant_per_row[t] for t in texts)))
    gap = evasion_gap(
        texts, y, keyword_scores(texts), 0.5, EvasionConfig(), lambda t: (np.array([by_position[x] for x in t]), None)
    ).to_dict()
    assert gap["gap"]["roc_auc"]["value"] == pytest.approx(0.0)
    assert gap["examples"] == []


def test_own_decisions_define_recall_when_given(messages):
    texts, y = messages
    flagged = np.zeros(len(texts), dtype=bool)  # decides by itself: flags nothing, whatever the scores
    gap = evasion_gap(
        texts,
        y,
        keyword_scores(texts),
        0.5,
        EvasionConfig(),
        lambda t: (keyword_scores(t), np.zeros(len(t), bool)),
        flagged=flagged,
        n_boot=0,
    ).to_dict()
    assert gap["plain"]["recall"] == gap["evaded"]["recall"] == 0.0
    assert gap["gap"]["roc_auc"]["ci95"] is None


def test_harness_and_report_carry_the_gap(davidson_slice, tmp_path):
    frame = davidson_slice
    ds = from_records(frame["text"].tolist(), frame["label"].tolist())
    train, test = ds.subset(np.arange(len(ds)) < 1400), ds.subset(np.arange(len(ds)) >= 1400)
    scorer = TfidfLogReg().fit(train.texts, train.labels)
    result = evaluate(scorer, test, positive=["hate_speech"], threshold=0.3, n_boot=100, evasion=EvasionConfig())
    e = result.to_dict()["evasion"]
    assert e["n"] == len(test) and e["n_changed"] > 0.9 * len(test)
    assert e["gap"]["roc_auc"]["value"] == pytest.approx(e["plain"]["roc_auc"] - e["evaded"]["roc_auc"])
    assert e["plain"]["roc_auc"] == pytest.approx(result.summary["roc_auc"])
    plain_only = evaluate(scorer, test, positive=["hate_speech"], threshold=0.3, n_boot=0)
    assert "evasion" not in plain_only.to_dict()
    path = write_eval_report(tmp_path / "r.html", [result], compare([result], n_boot=0), "t")
    html = path.read_text()
    without = write_eval_report(tmp_path / "p.html", [plain_only], compare([plain_only], n_boot=0), "t").read_text()
    assert "Evasion: the same messages" in html and "Evasion" not in without
    assert html.count("<img") == without.count("<img") + 1  # the per-kind plot
    assert "evasion" in pd.read_json(path.with_suffix(".json"), typ="series")["scorers"]["TfidfLogReg"]
