"""Fine-tuning on CPU with tiny real architectures: encoder and decoder paths, LoRA and full, multi-label,
early stopping, replay, calibration, resume after an interruption, and bad configurations."""

import json
import signal

import numpy as np
import pytest
import torch

from finesieve.data.errors import ConfigError
from finesieve.data.split import SplitConfig, make_splits
from finesieve.evals.metrics import roc_auc
from finesieve.models import finetuned as finetuned_module
from finesieve.models.calibration import Calibrator
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.models.finetuned import FineTunedScorer
from finesieve.models.text_classifier import last_token_index
from finesieve.models.training_loop import TrainingInterrupted
from finesieve.train.config import load_finetune_config
from finesieve.train.finetune import train_finetune
from finesieve.train.recipe import train_reference
from finesieve.train.replay import replay_rows


def config(model, **kw):
    base = dict(
        model=model, max_epochs=3, eval_every=10, learning_rate=1e-3, batch_size=32, tracking_uri="none", num_threads=2
    )
    return FinetuneConfig(**{**base, **kw})


def fit(model, sms_task, **kw):
    train, test = sms_task
    scorer = FineTunedScorer(config(model, **kw)).fit(
        train["text"].tolist(), train["label"].tolist(), positive=["spam"]
    )
    proba = scorer.predict_proba(test["text"].tolist())
    return scorer, proba, roc_auc((test["label"] == "spam").to_numpy(), proba[:, 1])


@pytest.mark.parametrize("arch, method", [("bert", "lora"), ("bert", "full"), ("llama", "lora"), ("llama", "full")])
def test_learns_and_round_trips(arch, method, sms_task, tiny_bert, tiny_llama, tmp_path):
    model = tiny_bert if arch == "bert" else tiny_llama
    scorer, proba, auc = fit(model, sms_task, method=method)
    assert scorer.architecture_ == ("encoder" if arch == "bert" else "decoder")
    assert scorer.classes_.tolist() == ["ham", "spam"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert auc > 0.75, auc  # random tiny weights learn real SMS spam within two epochs
    t = scorer.training_
    if method == "lora":
        assert t["trainable_parameters"] < 0.1 * t["total_parameters"]
        # all-linear must not wrap the head (PEFT PR #2033): adapters live in the body only.
        assert not any("lora" in n for n, _ in scorer.model_.score.named_parameters())
        assert any("lora" in n for n, _ in scorer.model_.body.named_parameters())
    else:
        assert t["trainable_parameters"] == t["total_parameters"]
    # Save, reload, score: the same probabilities (a head lost on save would score noise; PEFT #310).
    scorer.save(tmp_path / "m")
    again = FineTunedScorer.load(tmp_path / "m")
    texts = sms_task[1]["text"].tolist()[:64]
    np.testing.assert_allclose(again.predict_proba(texts), proba[:64], atol=1e-5)
    assert (tmp_path / "m" / ("adapter" if method == "lora" else "body")).is_dir()


def test_last_token_under_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [2, 4]
    assert last_token_index(left).tolist() == [4, 4]


def test_decoder_scores_do_not_depend_on_batch_or_padding(sms_task, tiny_llama):
    scorer, _, _ = fit(tiny_llama, sms_task, max_epochs=1)
    texts = ["hi", "call 09061701461 now to claim your prize of 1000 pounds cash guaranteed", "ok see you later"]
    together = scorer.logits(texts)
    alone = np.vstack([scorer.logits([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    scorer.tokenizer_.padding_side = "left"
    np.testing.assert_allclose(scorer.logits(texts), alone, atol=1e-4)


def test_label_token_head_init(sms_task, tiny_llama):
    cfg = config(tiny_llama, head_init="label_tokens", label_words={"ham": "fine", "spam": "prize"}, max_epochs=1)
    train, _ = sms_task
    scorer = FineTunedScorer(cfg).fit(train["text"].tolist()[:200], train["label"].tolist()[:200])
    assert scorer.model_.score.weight.shape == (2, 32)
    with pytest.raises(ValueError, match="needs a decoder"):
        FinetuneConfig(architecture="encoder", head_init="label_tokens", label_words={"a": "b"})


def test_multilabel(tiny_bert):
    texts = ["pay me on venmo you idiot", "you idiot", "pay me on venmo", "thanks, see you tuesday"] * 30
    labels = [("harassment", "off_platform"), ("harassment",), ("off_platform",), ()] * 30
    scorer = FineTunedScorer(config(tiny_bert, method="full", max_epochs=15, patience=100)).fit(
        texts, labels, multilabel=True
    )
    assert scorer.multilabel_ and scorer.classes_.tolist() == ["harassment", "off_platform"]
    proba = scorer.predict_proba(["you idiot, pay me on venmo", "thanks, see you tuesday"])
    assert proba.shape == (2, 2)
    assert proba[0].min() > 0.5 and proba[1].max() < 0.5  # two policies at once, and none
    assert not np.allclose(proba.sum(axis=1), 1.0)  # independent sigmoids, not a softmax


def test_early_stopping_on_noise(tiny_bert):
    rng = np.random.default_rng(0)
    texts = [f"message number {i} {rng.integers(1000)}" for i in range(400)]
    labels = rng.choice(["a", "b"], size=400).tolist()  # nothing to learn: validation cannot keep improving
    cfg = config(tiny_bert, max_epochs=20, eval_every=5, patience=2)
    scorer = FineTunedScorer(cfg).fit(texts, labels)
    t = scorer.training_
    assert t["stopped_early"]
    assert t["steps"] < 20 * 12  # well before the 20-epoch budget
    assert t["best_step"] < t["steps"]
    # The last `patience` validations did not beat the best one.
    assert all(h["val_metric"] <= t["best_val_metric"] for h in t["history"][-2:])


def test_calibration_lowers_validation_nll():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=2000)
    logits = np.column_stack([np.zeros(2000), (2 * y - 1) * 1.0 + rng.normal(0, 1.5, 2000)]) * 4  # overconfident
    cal = Calibrator("temperature").fit(logits, y)
    assert cal.temperature_[0] > 2
    nll = lambda p: -np.mean(np.log(p[np.arange(len(y)), y]))  # noqa: E731
    assert nll(cal.transform(logits)) < nll(Calibrator("none").fit(logits, y).transform(logits))
    iso = Calibrator("isotonic").fit(logits, y)
    again = Calibrator.from_state_dict(json.loads(json.dumps(iso.state_dict())))
    np.testing.assert_allclose(again.transform(logits), iso.transform(logits))
    # Ranking is unchanged by temperature scaling, so AUC is too.
    assert roc_auc(y, cal.transform(logits)[:, 1]) == pytest.approx(roc_auc(y, logits[:, 1]))


def test_resume_after_interruption_matches_uninterrupted_run(tiny_bert, sms_task, tmp_path):
    train, _ = sms_task
    texts, labels = train["text"].tolist()[:320], train["label"].tolist()[:320]
    cfg = config(tiny_bert, method="full", max_epochs=2, eval_every=4, checkpoint_every=4, patience=100)
    val_t, val_l = texts[:64], labels[:64]

    reference = FineTunedScorer(cfg).fit(texts, labels, val_texts=val_t, val_labels=val_l, out_dir=tmp_path / "a")

    class CtrlCAtSecondValidation:  # stands in for the tracker, which hears of every validation
        calls = 0

        def log_metrics(self, metrics, step=None):
            self.calls += 1
            if self.calls == 2:
                signal.raise_signal(signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="--resume"):
        FineTunedScorer(cfg).fit(
            texts, labels, val_texts=val_t, val_labels=val_l, out_dir=tmp_path / "b", tracker=CtrlCAtSecondValidation()
        )
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "checkpoint.pt", weights_only=False)
    assert 0 < ckpt["state"]["step"] < reference.training_["steps"]

    resumed = FineTunedScorer(cfg).fit(
        texts, labels, val_texts=val_t, val_labels=val_l, out_dir=tmp_path / "b", resume=True
    )
    assert resumed.training_["steps"] == reference.training_["steps"]
    np.testing.assert_allclose(resumed.logits(val_t), reference.logits(val_t), atol=1e-4)


def test_interrupted_train_run_resumes_from_its_staging_folder(tiny_bert, davidson_slice, tmp_path, monkeypatch):
    """`finesieve train` writes checkpoints into RUN.partial; an interrupted run leaves no RUN, refuses a fresh
    start that would discard its checkpoint, and --resume finishes it into RUN."""
    import finesieve.train.finetune as finetune_module
    from finesieve.data.load import load_dataset
    from finesieve.data.spec import ColumnSpec

    path = tmp_path / "d.csv"
    davidson_slice.iloc[:400][["text", "label"]].to_csv(path, index=False)
    dataset = load_dataset(path, ColumnSpec())
    cfg = config(tiny_bert, max_steps=8, eval_every=4, checkpoint_every=4, patience=100)
    run = tmp_path / "run"

    class CtrlCAtFirstValidation(finetune_module.Tracker):
        def log_metrics(self, metrics, step=None):
            if "val_pr_auc" in metrics:
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(finetune_module, "Tracker", CtrlCAtFirstValidation)
    with pytest.raises(TrainingInterrupted):
        train_finetune(cfg, dataset, positive=["hate_speech"], out=run, n_boot=0)
    assert not run.exists() and (tmp_path / "run.partial" / "checkpoints" / "checkpoint.pt").exists()
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="--resume"):
        train_finetune(cfg, dataset, positive=["hate_speech"], out=run, n_boot=0)
    fitted = train_finetune(cfg, dataset, positive=["hate_speech"], out=run, n_boot=0, resume=True)
    assert fitted.scorer.training_["steps"] == 8
    assert (run / "manifest.json").exists() and not (tmp_path / "run.partial").exists()
    assert not (run / "checkpoints").exists()


def test_replay_mixes_old_rows_without_leaking(tmp_path, davidson_csv):
    import pandas as pd

    from finesieve.data.load import load_dataset
    from finesieve.data.spec import ColumnSpec

    df = pd.read_csv(davidson_csv, dtype=str, keep_default_na=False)
    old_path = tmp_path / "old.csv"
    df.iloc[:1500][["text", "label"]].to_csv(old_path, index=False)
    old = load_dataset(old_path, ColumnSpec())
    run = train_reference("tfidf", old, positive=["hate_speech"], out=tmp_path / "old", n_boot=0)
    new_df = df.iloc[1500:2700]
    new_path = tmp_path / "new.csv"
    new_df[["text", "label"]].to_csv(new_path, index=False)
    new = load_dataset(new_path, ColumnSpec())
    splits = make_splits(new, SplitConfig())
    train, val, test = splits.dataset("train"), splits.dataset("val"), splits.dataset("test")
    mixed, info = replay_rows(run.run_dir, train, exclude=[val, test], fraction=0.25, seed=0)
    assert info["n_replayed"] == round(0.25 * len(train)) and len(mixed) == len(train) + info["n_replayed"]
    replayed = mixed.frame[mixed.frame["id"].str.startswith("replay:")]
    assert len(replayed) == info["n_replayed"]
    assert not set(replayed["text"]) & set(val.texts + test.texts)
    assert "training split of run" in info["source"]
    # The replayed rows come from the old run's training split only, never its test split.
    old_test_ids = set(run.splits.ids("test"))
    assert not {i.removeprefix("replay:") for i in replayed["id"]} & old_test_ids


def test_soft_targets_mix_majority_label_and_vote_shares():
    from finesieve.models.finetuned import soft_targets

    y = np.array([0, 1, 2])
    shares = np.array([[2 / 3, 1 / 3, 0.0], [np.nan, np.nan, np.nan], [0.0, 0.0, 1.0]], dtype=np.float32)
    t = soft_targets(y, shares, 0.5)
    np.testing.assert_allclose(t, [[5 / 6, 1 / 6, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(soft_targets(y, shares, 1.0)[0], shares[0])


def test_vote_shares_reach_the_loss_aligned_by_row_and_class(sms_task, tiny_bert, monkeypatch):
    """The targets handed to the training loop are the mix of label and votes for the same rows (after the
    internal validation split) and in the model's class order, whatever the votes' column order."""
    import pandas as pd

    import finesieve.models.finetuned as ft

    train, _ = sms_task
    texts, labels = train["text"].tolist(), train["label"].tolist()
    votes = pd.DataFrame({"spam": np.linspace(0, 1, len(texts)), "ham": 1 - np.linspace(0, 1, len(texts))})
    votes.iloc[:50] = np.nan  # rows without votes keep their label
    seen = {}

    class Captured(Exception):
        pass

    def capture(model, batches, *args, **kwargs):
        seen["targets"] = batches.targets
        raise Captured

    monkeypatch.setattr(ft, "train_loop", capture)
    with pytest.raises(Captured):
        FineTunedScorer(config(tiny_bert, soft_labels=0.25)).fit(texts, labels, vote_shares=votes)
    train_idx, _ = ft._internal_val_split(texts, [(label,) for label in labels], False, 0)
    onehot = np.array([[label == "ham", label == "spam"] for label in labels], dtype=float)
    expected = np.where(
        np.isnan(votes[["ham", "spam"]].to_numpy()), onehot, 0.75 * onehot + 0.25 * votes[["ham", "spam"]].to_numpy()
    )[train_idx]
    np.testing.assert_allclose(seen["targets"], expected, rtol=1e-6)


def test_training_learns_from_vote_shares(sms_task, tiny_bert):
    """With soft_labels=1 the votes alone are the target: votes that contradict every label are what it learns."""
    import pandas as pd

    train, test = sms_task
    texts, labels = train["text"].tolist(), train["label"].tolist()
    spam = np.array([label == "spam" for label in labels], dtype=float)
    flipped = pd.DataFrame({"ham": spam, "spam": 1 - spam})
    # Validate at epoch ends only, so every kept checkpoint has trained on the votes for at least an epoch.
    scorer = FineTunedScorer(config(tiny_bert, soft_labels=1.0, eval_every=1000)).fit(
        texts, labels, positive=["spam"], vote_shares=flipped
    )
    auc = roc_auc((test["label"] == "spam").to_numpy(), scorer.predict_proba(test["text"].tolist())[:, 1])
    assert auc < 0.35, auc  # the same set-up learns the labels to > 0.75 (test_learns_and_round_trips)
    assert scorer.training_["soft_label_rows"] == scorer.training_["n_train"]
    with pytest.raises(ConfigError, match="--vote-col"):
        FineTunedScorer(config(tiny_bert, soft_labels=0.5)).fit(texts, labels)


def test_train_recipe_writes_a_complete_run(tiny_bert, sms_csv, tmp_path):
    from finesieve.data.load import load_dataset
    from finesieve.data.spec import ColumnSpec
    from finesieve.runs import load_run

    ds = load_dataset(sms_csv, ColumnSpec(), max_rows=600)
    cfg = config(tiny_bert, max_epochs=1, tracking_uri=(tmp_path / "mlruns").as_uri())
    fitted = train_finetune(cfg, ds, positive=["spam"], out=tmp_path / "run", n_boot=50)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["kind"] == "finetuned" and manifest["task"]["positive"] == ["spam"]
    assert manifest["scorer_config"]["method"] == "lora" and manifest["scorer_config"]["model"] == tiny_bert
    assert manifest["training"]["steps"] > 0 and manifest["training"]["history"]
    assert manifest["data"]["content_hash"] == ds.content_hash and manifest["splits"]["split_hash"]
    assert manifest["tracking"]["run_id"] and (tmp_path / "mlruns").is_dir()
    run = load_run(tmp_path / "run")
    texts = fitted.splits.dataset("test").texts[:20]
    np.testing.assert_allclose(run.scorer.predict_proba(texts), fitted.scorer.predict_proba(texts), atol=1e-5)


def test_bad_configs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean lora_r"):
        load_finetune_config(None, {}, ["lora_rank=8"])
    with pytest.raises(ConfigError, match="key=value"):
        load_finetune_config(None, {}, ["lora_r"])
    bad = tmp_path / "c.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_finetune_config(bad)
    with pytest.raises(ValueError, match="learning_rate"):
        FinetuneConfig(learning_rate=-1)
    with pytest.raises(ValueError, match="method"):
        FinetuneConfig(method="qlara")
    if not torch.cuda.is_available():
        from finesieve.models.finetuned import check_method

        with pytest.raises(ConfigError, match="CUDA GPU"):
            check_method(FinetuneConfig(method="qlora"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA needs a CUDA GPU (CI has none)")
def test_qlora_on_gpu_trains_adapters_on_a_4bit_body(sms_task, tiny_llama):
    """QLoRA as it must be, each check failing on its own way of being broken: the body's linear layers are
    4-bit, the LoRA adapters (B starts at zero in PEFT) moved, the head stayed fp32, and training lowered the loss."""
    bnb = pytest.importorskip("bitsandbytes")
    scorer, proba, auc = fit(tiny_llama, sms_task, method="qlora")
    body = scorer.model_.body
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in body.modules()), "the base model was not quantised"
    lora_b = [p for n, p in body.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.requires_grad for p in lora_b)
    assert any(float(p.detach().abs().max()) > 0 for p in lora_b), "the adapters never left their zero init"
    assert not any(p.requires_grad for n, p in body.named_parameters() if "lora_" not in n)  # base frozen
    assert scorer.model_.score.weight.dtype == torch.float32  # 4-bit heads degrade or crash (PEFT #1720)
    history = scorer.training_["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"], history
    assert scorer.training_["best_val_metric"] > history[0]["val_metric"] or auc > 0.75, (history, auc)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_model_reads_text_deobfuscated_when_told_to(sms_task, tiny_bert, tmp_path):
    train, _ = sms_task
    texts, labels = train["text"].tolist()[:200], train["label"].tolist()[:200]
    on = FineTunedScorer(config(tiny_bert, max_steps=2, deobfuscate=True)).fit(texts, labels)
    off = FineTunedScorer(config(tiny_bert, max_steps=2)).fit(texts, labels)
    assert off.get_config().deobfuscate is False  # the default, chosen on validation (bench/evasion_recipe.py)
    evaded, plain = ["call my ph0ne n.o.w for FREE c4sh"], ["call my phone now for free cash"]
    np.testing.assert_array_equal(on.logits(evaded), on.logits(plain))
    assert not np.allclose(off.logits(evaded), off.logits(plain))
    # A run saved before the setting existed read the prepared text as given, and still does.
    off.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "scorer.json").read_text())
    del meta["config"]["deobfuscate"]
    (tmp_path / "old" / "scorer.json").write_text(json.dumps(meta))
    old = FineTunedScorer.load(tmp_path / "old")
    assert old.get_config().deobfuscate is False
    np.testing.assert_allclose(old.predict_proba(evaded), off.predict_proba(evaded), atol=1e-6)


def test_evasion_augmentation_adds_labelled_copies(sms_task, tiny_bert, monkeypatch):
    train, _ = sms_task
    texts, labels = train["text"].tolist()[:300], train["label"].tolist()[:300]
    seen = {}
    real_batches = finetuned_module.Batches

    def spy(ids, targets, *args, **kwargs):
        seen["n"], seen["targets"] = len(ids), np.asarray(targets)
        return real_batches(ids, targets, *args, **kwargs)

    monkeypatch.setattr(finetuned_module, "Batches", spy)
    scorer = FineTunedScorer(config(tiny_bert, max_steps=2, augment_evasion=0.5)).fit(texts, labels)
    t = scorer.training_
    assert t["n_train"] == 270  # 300 less the internal 10% validation split
    assert t["augmented_rows"] == seen["n"] - 270 and 120 <= t["augmented_rows"] <= 135
    # The copies carry their rows' labels: the class balance of the copies follows the originals'.
    copies = seen["targets"][270:]
    assert 0 < copies.sum() < len(copies)
