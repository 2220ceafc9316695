"""Embedding zero-shot with the packaged all-MiniLM-L6-v2, offline, on real SMS and Davidson rows."""

import os

import numpy as np
import pandas as pd
import pytest

from finesieve.data.errors import ConfigError
from finesieve.evals.metrics import pr_auc, roc_auc
from finesieve.models.base import NotFittedError
from finesieve.models.calibration import apply_softmax_scaling
from finesieve.models.embedding_zero_shot import EmbeddingZeroShot, EmbeddingZeroShotConfig


@pytest.fixture(scope="module")
def sms(sms_csv):
    """240 real SMS, stratified (32 spam): enough for a stable AUC, small enough for two CPU cores."""
    df = pd.read_csv(sms_csv, dtype=str, keep_default_na=False)
    parts = [df[df.label == "spam"].sample(32, random_state=0), df[df.label == "ham"].sample(208, random_state=0)]
    return pd.concat(parts).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def sms_scored(sms):
    """{few_shot: (scorer, proba)} on the SMS rows."""
    out = {}
    for few_shot in (False, True):
        scorer = EmbeddingZeroShot(prompt="builtin:sms_spam", few_shot=few_shot, progress=False)
        scorer.fit(sms.text.tolist(), sms.label.tolist())
        out[few_shot] = scorer, scorer.predict_proba(sms.text.tolist())
    return out


@pytest.mark.parametrize("few_shot", [False, True])
def test_spam_is_ranked_above_ham(sms, sms_scored, few_shot):
    scorer, proba = sms_scored[few_shot]
    assert scorer.classes_.tolist() == ["ham", "spam"] and scorer.multilabel_ is False
    assert proba.shape == (len(sms), 2) and np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    y = (sms.label == "spam").to_numpy()
    auc, ap = roc_auc(y, proba[:, 1]), pr_auc(y, proba[:, 1])
    print(f"sms spam, few_shot={few_shot}: ROC AUC {auc:.3f}, PR AUC {ap:.3f} (prevalence {y.mean():.3f})")
    assert auc > 0.8, auc  # measured 0.88 zero-shot, 0.96 few-shot on this sample


def test_few_shot_examples_move_the_prototypes(sms_scored):
    zero, few = sms_scored[False][0], sms_scored[True][0]
    np.testing.assert_allclose(np.linalg.norm(few.prototypes_, axis=1), 1.0, rtol=1e-5)
    assert np.abs(few.prototypes_ - zero.prototypes_).max() > 0.05
    assert "HF_HUB_OFFLINE" in os.environ  # a local model: the hub is never asked


def test_hate_speech_on_davidson(davidson_slice):
    """Reported, not tuned: hate vs offensive is the hard boundary, and a sentence encoder mostly sees topic."""
    df = davidson_slice.iloc[:400]
    scorer = EmbeddingZeroShot(prompt="builtin:davidson", progress=False).fit(df.text.tolist(), df.label.tolist())
    proba = scorer.predict_proba(df.text.tolist())
    y = (df.label == "hate_speech").to_numpy()
    j = scorer.classes_.tolist().index("hate_speech")
    auc = roc_auc(y, proba[:, j])
    ap = pr_auc(y, proba[:, j])
    print(f"davidson hate_speech (400-row slice, prevalence {y.mean():.3f}): ROC AUC {auc:.3f}, PR AUC {ap:.3f}")
    # Measured 0.615 and 0.241 (prevalence 0.175); the floors sit about one standard error (~0.035) below, so
    # a lost signal (prototypes out of classes_ order, the wrong class column) fails where chance (0.5) passed.
    assert auc > 0.58, auc
    assert ap > 0.21, ap


def test_tuned_temperature_lowers_the_nll(sms):
    texts, labels = sms.text.tolist()[:80], sms.label.tolist()[:80]
    tuned = EmbeddingZeroShot(prompt="builtin:sms_spam", tune_temperature=True, progress=False).fit(texts, labels)
    assert tuned.temperature_ != tuned.temperature == 0.05
    sims = tuned.similarities(texts)
    y = np.array([tuned.classes_.tolist().index(label) for label in labels])

    def nll(t):
        return -np.mean(np.log(apply_softmax_scaling(sims, t)[np.arange(len(y)), y]))

    assert nll(tuned.temperature_) < nll(0.05)


def test_save_load_round_trip(sms_scored, sms, tmp_path):
    scorer, proba = sms_scored[True]
    scorer.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "embedding_zero_shot.json",
        "prompt.yaml",
        "prototypes.npy",
        "scorer_config.json",
    ]
    again = EmbeddingZeroShot.load(tmp_path)
    assert again.get_config() == scorer.get_config() and again.prompt_ == scorer.prompt_
    np.testing.assert_allclose(again.predict_proba(sms.text.tolist()[:20]), proba[:20], atol=1e-6)


def test_contract_and_errors():
    scorer = EmbeddingZeroShot(prompt="builtin:marketplace", progress=False)
    with pytest.raises(NotFittedError, match="EmbeddingZeroShot"):
        scorer.predict_proba(["hi"])
    with pytest.raises(ConfigError, match=r"labels \['hate_speech'\] are not classes of prompt 'marketplace'"):
        scorer.fit(["x"], ["hate_speech"])
    texts = ["pay me on venmo, skip the app fee", "you useless idiot", "can you come tuesday at 9?"]
    labels = [("off_platform",), ("harassment",), ()]
    scorer = EmbeddingZeroShot(prompt="builtin:marketplace", tune_temperature=True, progress=False).fit(texts, labels)
    assert scorer.multilabel_ and scorer.calibration_["kind"] == "platt"
    proba = scorer.predict_proba(texts)
    assert proba.shape == (3, 7) and np.all((proba > 0) & (proba < 1))
    with pytest.raises(TypeError, match="wrap it in a list"):
        scorer.predict_proba("one message")
    assert scorer.predict_proba([]).shape == (0, 7)
    with pytest.raises(ValueError, match="temperature"):
        EmbeddingZeroShotConfig(temperature=0)
