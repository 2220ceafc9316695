"""The character-level CNN pre-filter: the scorer contract, learning on real data, obfuscation, multi-label,
early stopping, calibration, persistence and determinism. Tiny networks and few epochs keep it fast."""

import signal

import numpy as np
import pandas as pd
import pytest
import torch

import finesieve.models.char_cnn as char_cnn_module
from finesieve.data.errors import ConfigError
from finesieve.evals.metrics import roc_auc
from finesieve.models.base import NotFittedError, positive_scores
from finesieve.models.char_cnn import CharCNNConfig, CharCNNScorer
from finesieve.models.training_loop import LoopSettings, TrainingInterrupted

SMALL = dict(channels=48, embed_dim=16, max_chars=160)  # a small net: enough for SMS spam, quick on 1 core


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sms_split(sms_csv):
    df = pd.read_csv(sms_csv, dtype=str, keep_default_na=False).sample(frac=1.0, random_state=0).reset_index(drop=True)
    return df.iloc[:2800], df.iloc[2800:3300], df.iloc[3300:]  # train, validation, test


@pytest.fixture(scope="module")
def sms_scorer(sms_split):
    train, val, _ = sms_split
    return CharCNNScorer(max_epochs=3, **SMALL).fit(
        train["text"].tolist(),
        train["label"].tolist(),
        val_texts=val["text"].tolist(),
        val_labels=val["label"].tolist(),
    )


def separable(n=120):
    """A task the network learns in an epoch, so validation PR AUC reaches 1.0 and can only stall after."""
    spam = ["buy cheap pills now", "cheap pills, buy now!!", "win cash now, buy pills"]
    ham = ["see you at lunch", "are we still on for lunch?", "thanks, see you tomorrow"]
    texts = [(spam if i % 2 else ham)[i % 3] + f" #{i}" for i in range(n)]
    return texts, ["spam" if i % 2 else "ham" for i in range(n)]


def test_contract(sms_scorer, sms_split, tmp_path):
    _, _, test = sms_split
    with pytest.raises(NotFittedError, match="CharCNNScorer"):
        CharCNNScorer().predict_proba(["hello"])
    assert sms_scorer.classes_.tolist() == ["ham", "spam"]
    assert sms_scorer.multilabel_ is False
    proba = sms_scorer.predict_proba(test["text"].tolist())
    assert proba.shape == (len(test), 2)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert sms_scorer.predict_proba([]).shape == (0, 2)
    assert sms_scorer.predict_proba([""]).shape == (1, 2)  # an empty message still gets a score
    with pytest.raises(TypeError, match="wrap it in a list"):
        sms_scorer.predict_proba("one message")
    # Save, reload, score: identical probabilities (a lost head or temperature would change them).
    sms_scorer.save(tmp_path / "cnn")
    again = CharCNNScorer.load(tmp_path / "cnn")
    np.testing.assert_array_equal(again.predict_proba(test["text"].tolist()), proba)
    assert again.get_config() == sms_scorer.get_config()
    assert again.best_epoch_ == sms_scorer.best_epoch_ and again.history_ == sms_scorer.history_


def test_fit_returns_self_and_records_history():
    texts, labels = separable(60)
    scorer = CharCNNScorer(max_epochs=2, channels=8, embed_dim=8, max_chars=64)
    assert scorer.fit(texts, labels) is scorer
    assert [h["epoch"] for h in scorer.history_] == [1, 2]
    assert all(set(h) == {"epoch", "train_loss", "val_pr_auc"} for h in scorer.history_)
    assert scorer.best_epoch_ in (1, 2)


def test_learns_sms_spam(sms_scorer, sms_split):
    _, _, test = sms_split
    proba = sms_scorer.predict_proba(test["text"].tolist())
    auc = roc_auc((test["label"] == "spam").to_numpy(), proba[:, 1])
    assert auc > 0.95, auc


def test_beats_chance_on_davidson_hate_speech(davidson_slice):
    df = davidson_slice.sample(frac=1.0, random_state=1).reset_index(drop=True)
    train, test = df.iloc[:1600], df.iloc[1600:]
    scorer = CharCNNScorer(max_epochs=3, **SMALL).fit(train["text"].tolist(), train["label"].tolist())
    assert scorer.classes_.tolist() == ["hate_speech", "neither", "offensive"]
    proba = scorer.predict_proba(test["text"].tolist())
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    y = (test["label"] == "hate_speech").to_numpy()
    auc = roc_auc(y, positive_scores(proba, scorer.classes_, ["hate_speech"], False))
    assert auc > 0.6, auc


def test_obfuscated_twins_score_alike(sms_scorer, sms_split):
    _, _, test = sms_split
    spam = test.loc[test["label"] == "spam", "text"].head(20).tolist()
    cyrillic = str.maketrans({"a": "а", "e": "е", "o": "о", "p": "р", "c": "с"})  # Latin -> Cyrillic look-alikes

    def leet(t):  # o -> 0 inside words only (ph0ne), as spammers do
        return " ".join(
            w[0] + w[1:-1].replace("o", "0") + w[-1] if len(w) > 2 and w.isalpha() else w for w in t.split()
        )

    def spaced(t):  # the first long word spelt out: p h o n e
        words = t.split()
        i = next((j for j, w in enumerate(words) if w.isalpha() and len(w) >= 4), 0)
        words[i] = " ".join(words[i])
        return " ".join(words)

    base = sms_scorer.predict_proba(spam)[:, 1]
    for twist in (lambda t: t.translate(cyrillic), leet, spaced, str.upper):
        twins = sms_scorer.predict_proba([twist(t) for t in spam])[:, 1]
        assert np.mean(np.abs(twins - base)) < 0.05, (twist, base, twins)
    assert np.median(base) > 0.5  # and the messages are recognised as spam to begin with


def test_score_does_not_depend_on_the_batch(sms_scorer):
    msg = "Free entry in 2 a wkly comp to win FA Cup final tkts, text FA to 87121"
    alone = sms_scorer.predict_proba([msg])
    with_long = sms_scorer.predict_proba([msg, "x" * 500, "ok"])[:1]
    np.testing.assert_allclose(alone, with_long, atol=1e-6)


def test_multilabel_two_categories_at_once():
    texts = ["pay me on venmo you idiot", "you idiot", "pay me on venmo", "thanks, see you tuesday"] * 10
    labels = [("harassment", "off_platform"), ("harassment",), ("off_platform",), ()] * 10
    scorer = CharCNNScorer(max_epochs=15, batch_size=8, channels=16, embed_dim=8, max_chars=64, patience=15)
    scorer.fit(texts, labels, multilabel=True, val_texts=texts[:8], val_labels=labels[:8])
    assert scorer.multilabel_ and scorer.classes_.tolist() == ["harassment", "off_platform"]
    proba = scorer.predict_proba(["you idiot, pay me on venmo", "see you tuesday"])
    assert proba[0, 0] > 0.5 and proba[0, 1] > 0.5  # both policies broken at once
    assert proba[1, 0] < 0.5 and proba[1, 1] < 0.5
    assert scorer.temperature_.shape == (2,)  # per-category Platt scaling


def test_multilabel_with_one_category_is_a_sigmoid_not_a_softmax():
    texts = ["you idiot", "see you tuesday"] * 20
    labels = [("harassment",), ()] * 20
    scorer = CharCNNScorer(max_epochs=10, batch_size=8, channels=16, embed_dim=8, max_chars=64, patience=10)
    proba = scorer.fit(texts, labels, multilabel=True).predict_proba(["you idiot", "see you tuesday"])
    assert proba.shape == (2, 1)
    assert proba[0, 0] > 0.5 > proba[1, 0]  # a softmax over one logit would give 1.0 for both


def test_early_stopping_stops_when_validation_stalls():
    texts, labels = separable()
    scorer = CharCNNScorer(max_epochs=20, patience=2, batch_size=16, channels=16, embed_dim=8, max_chars=64)
    scorer.fit(texts, labels)
    aucs = [h["val_pr_auc"] for h in scorer.history_]
    assert len(aucs) < 20  # stopped early
    assert len(aucs) == scorer.best_epoch_ + 2  # patience epochs without improvement, then stop
    assert aucs[scorer.best_epoch_ - 1] == max(aucs)  # the weights kept are the best epoch's


def test_trains_through_the_shared_loop(monkeypatch):
    """The pre-filter has no loop of its own: `fit` hands its model, batches, loss and validation to `train_loop`
    with its own settings (Adam at a constant rate, no clipping, one validation per epoch)."""
    calls = []
    real = char_cnn_module.train_loop

    def spy(model, batches, validate, loss_fn, settings, checkpoint_dir, **kwargs):
        calls.append(settings)
        return real(model, batches, validate, loss_fn, settings, checkpoint_dir, **kwargs)

    monkeypatch.setattr(char_cnn_module, "train_loop", spy)
    texts, labels = separable(60)
    CharCNNScorer(max_epochs=2, lr=1e-3, channels=8, embed_dim=8, max_chars=64).fit(texts, labels)
    assert len(calls) == 1 and isinstance(calls[0], LoopSettings)
    settings = calls[0]
    assert (settings.learning_rate, settings.schedule, settings.max_grad_norm, settings.eval_every) == (
        1e-3,
        "constant",
        None,
        None,
    )
    assert settings.weight_decay == 0.0 and not settings.ties_to_lower_loss


def test_checkpoint_and_resume_after_interruption(tmp_path, monkeypatch):
    """Ctrl-C mid-training writes a checkpoint; `fit(..., resume=True)` finishes to the same model as a run
    never interrupted (same batches, same dropout masks, same best epoch)."""
    texts, labels = separable(96)

    def make():
        return CharCNNScorer(
            max_epochs=4, patience=10, batch_size=16, channels=8, embed_dim=8, max_chars=64, val_frac=0.25
        )

    probe = ["buy pills", "lunch tomorrow?", "cheap cash now"]
    reference = make().fit(texts, labels, out_dir=tmp_path / "a")
    assert (tmp_path / "a" / "checkpoints" / "checkpoint.pt").exists()

    real, calls = char_cnn_module.mean_pr_auc, []

    def ctrl_c_at_second_validation(*args):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)  # the loop finishes the epoch, checkpoints, then stops
        return real(*args)

    monkeypatch.setattr(char_cnn_module, "mean_pr_auc", ctrl_c_at_second_validation)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        make().fit(texts, labels, out_dir=tmp_path / "b")
    monkeypatch.undo()
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "checkpoint.pt", weights_only=False)
    assert ckpt["state"]["epoch"] == 2 and len(ckpt["state"]["history"]) == 2

    resumed = make().fit(texts, labels, out_dir=tmp_path / "b", resume=True)
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3, 4]
    assert resumed.history_ == reference.history_ and resumed.best_epoch_ == reference.best_epoch_
    np.testing.assert_array_equal(resumed.decision_function(probe), reference.decision_function(probe))
    with pytest.raises(Exception, match="different configuration"):
        CharCNNScorer(
            max_epochs=4, patience=10, batch_size=16, channels=8, embed_dim=8, max_chars=64, val_frac=0.25, lr=1e-2
        ).fit(texts, labels, out_dir=tmp_path / "b", resume=True)


def test_no_validation_trains_every_epoch_and_keeps_the_last():
    texts, labels = separable(60)
    scorer = CharCNNScorer(max_epochs=3, patience=1, val_frac=0, channels=8, embed_dim=8, max_chars=64)
    scorer.fit(texts, labels)
    assert [h["val_pr_auc"] for h in scorer.history_] == [None, None, None]
    assert scorer.best_epoch_ == 3 and scorer.calibration_["method"] == "none"


def test_calibration_lowers_validation_nll(sms_scorer, sms_split):
    _, val, _ = sms_split
    y = (val["label"] == "spam").to_numpy().astype(int)
    logits = sms_scorer.decision_function(val["text"].tolist())

    def nll(proba):
        return -np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None)))

    raw = np.exp(logits - logits.max(axis=1, keepdims=True))
    raw /= raw.sum(axis=1, keepdims=True)  # T = 1, no bias
    calibrated = sms_scorer.predict_proba(val["text"].tolist())
    assert sms_scorer.temperature_.shape == (1,) and sms_scorer.temperature_[0] != 1.0
    assert nll(calibrated) < nll(raw)
    assert sms_scorer.calibration_["val_nll_after"] < sms_scorer.calibration_["val_nll_before"]
    # Calibration rescales the logits monotonically, so the ranking is unchanged.
    assert np.array_equal(np.argsort(calibrated[:, 1], kind="stable"), np.argsort(raw[:, 1], kind="stable")) or roc_auc(
        y, calibrated[:, 1]
    ) == pytest.approx(roc_auc(y, raw[:, 1]))


def test_same_seed_same_model_other_seed_other_model():
    texts, labels = separable(80)
    probe = ["buy pills", "lunch tomorrow?"]

    def fit(seed):
        return CharCNNScorer(max_epochs=2, channels=8, embed_dim=8, max_chars=64, seed=seed).fit(texts, labels)

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = fit(0).predict_proba(probe)
    assert torch.equal(torch.get_rng_state(), state)  # fitting leaves the caller's RNG alone
    np.testing.assert_array_equal(fit(0).predict_proba(probe), a)
    assert not np.array_equal(fit(1).predict_proba(probe), a)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="extra"):
        CharCNNConfig(chanels=64)
    with pytest.raises(ConfigError, match="kernel_sizes"):
        CharCNNScorer(kernel_sizes=()).fit(["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="at least 2"):
        CharCNNScorer().fit(["a", "b"], ["x", "x"])
    with pytest.raises(ValueError, match="not among the training classes"):
        CharCNNScorer(max_epochs=1).fit(["a", "b"], ["x", "y"], val_texts=["c"], val_labels=["z"])


# ----------------------------------------------------------------------------------------------- distillation

TINY_DISTIL = dict(channels=16, embed_dim=8, max_chars=120, max_epochs=2, batch_size=32)


@pytest.fixture(scope="module")
def sms_small(sms_split):
    """400 real SMS messages to fit on, and 60 others to score."""
    train, val, _ = sms_split
    return train["text"].tolist()[:400], train["label"].tolist()[:400], val["text"].tolist()[:60]


def test_distilling_towards_the_labels_themselves_changes_nothing(sms_small):
    """The target is (1 - w) x one-hot + w x teacher: a teacher that repeats the labels leaves the target one-hot,
    and the class-weighted soft-target loss is then the plain one, so the network is the same."""
    texts, labels, probe = sms_small
    plain = CharCNNScorer(**TINY_DISTIL).fit(texts, labels)
    onehot = np.eye(2)[[["ham", "spam"].index(c) for c in labels]]
    echo = CharCNNScorer(distill_weight=0.5, **TINY_DISTIL).fit(texts, labels, teacher_proba=onehot)
    np.testing.assert_allclose(echo.predict_proba(probe), plain.predict_proba(probe), atol=1e-5)


def test_the_soft_target_loss_is_the_class_weighted_loss_of_its_mixture():
    """WeightedCrossEntropy on a distribution is linear in it and normalised by the targets' weight, as torch
    normalises class ids: a one-hot row gives exactly CrossEntropyLoss(weight)."""
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-1.0, 1.0, 0.0]])
    ids = torch.tensor([0, 2, 1])
    weight = torch.tensor([3.0, 1.0, 0.5])
    loss = char_cnn_module.WeightedCrossEntropy(weight)
    torch.testing.assert_close(loss(logits, torch.eye(3)[ids]), torch.nn.CrossEntropyLoss(weight=weight)(logits, ids))
    torch.testing.assert_close(loss(logits, ids), torch.nn.CrossEntropyLoss(weight=weight)(logits, ids))
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [0.1, 0.9, 0.0]])
    per_row = -(soft * weight * torch.log_softmax(logits, 1)).sum(1)
    torch.testing.assert_close(loss(logits, soft), per_row.sum() / (soft * weight).sum())


def test_a_teacher_changes_the_network_and_the_weight_is_saved(sms_small, tmp_path):
    texts, labels, probe = sms_small
    # A teacher that doubts every label (70% on it, 30% on the other class): the student learns softer targets.
    onehot = np.eye(2)[[["ham", "spam"].index(c) for c in labels]]
    doubtful = 0.7 * onehot + 0.3 * (1 - onehot)
    plain = CharCNNScorer(**TINY_DISTIL).fit(texts, labels)
    student = CharCNNScorer(distill_weight=0.5, **TINY_DISTIL).fit(texts, labels, teacher_proba=doubtful)
    assert np.abs(student.decision_function(probe) - plain.decision_function(probe)).max() > 1e-2
    # distill_weight 1 learns from the teacher alone: further from the plain network than the half-way student.
    keener = CharCNNScorer(distill_weight=1.0, **TINY_DISTIL).fit(texts, labels, teacher_proba=doubtful)
    assert np.abs(keener.decision_function(probe) - student.decision_function(probe)).max() > 1e-2
    assert np.abs(keener.decision_function(probe) - plain.decision_function(probe)).max() > 1e-2
    # The teacher's columns follow `teacher_classes` when given: reversed columns, named so, are the same teacher.
    reversed_ = CharCNNScorer(distill_weight=0.5, **TINY_DISTIL).fit(
        texts, labels, teacher_proba=doubtful[:, ::-1], teacher_classes=["spam", "ham"]
    )
    np.testing.assert_array_equal(reversed_.predict_proba(probe), student.predict_proba(probe))
    student.save(tmp_path / "student")
    again = CharCNNScorer.load(tmp_path / "student")
    assert again.get_config().distill_weight == 0.5
    np.testing.assert_array_equal(again.predict_proba(probe), student.predict_proba(probe))


def test_multilabel_distillation_mixes_each_category():
    texts = ["pay me on venmo you idiot", "you idiot", "pay me on venmo", "thanks, see you tuesday"] * 10
    labels = [("harassment", "off_platform"), ("harassment",), ("off_platform",), ()] * 10
    settings = dict(max_epochs=3, batch_size=8, channels=16, embed_dim=8, max_chars=64, val_frac=0.2)
    plain = CharCNNScorer(**settings).fit(texts, labels, multilabel=True)
    # A teacher unsure of every category (0.5): the student's logits are pulled towards 0 where labels say 0 or 1.
    teacher = np.full((len(texts), 2), 0.5)
    student = CharCNNScorer(distill_weight=0.8, **settings).fit(texts, labels, multilabel=True, teacher_proba=teacher)
    probe = ["you idiot, pay me on venmo", "see you tuesday"]
    assert np.abs(student.decision_function(probe)).mean() < np.abs(plain.decision_function(probe)).mean()


def test_a_bad_teacher_is_refused(sms_small):
    texts, labels, _ = sms_small
    good = np.full((len(texts), 2), 0.5)
    with pytest.raises(ConfigError, match="distill_weight=0.5 but no teacher_proba"):
        CharCNNScorer(distill_weight=0.5, max_epochs=1).fit(texts, labels)
    with pytest.raises(ConfigError, match="distill_weight is 0"):
        CharCNNScorer(max_epochs=1).fit(texts, labels, teacher_proba=good)
    with pytest.raises(ValueError, match="teacher's classes"):
        CharCNNScorer(distill_weight=0.5).fit(texts, labels, teacher_proba=good, teacher_classes=["ham", "scam"])
    with pytest.raises(ValueError, match=r"shape \(400, 3\), expected \(400, 2\)"):
        CharCNNScorer(distill_weight=0.5).fit(texts, labels, teacher_proba=np.full((len(texts), 3), 1 / 3))
    with pytest.raises(ValueError, match="sums to 0.800000, not 1"):
        CharCNNScorer(distill_weight=0.5).fit(texts, labels, teacher_proba=np.full((len(texts), 2), 0.4))
    with pytest.raises(ValueError, match="outside"):
        CharCNNScorer(distill_weight=0.5).fit(texts, labels, teacher_proba=good * np.nan)
    with pytest.raises(ValueError, match="distill_weight"):
        CharCNNConfig(distill_weight=1.5)
