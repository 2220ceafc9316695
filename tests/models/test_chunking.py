"""Long documents read as windows (models.chunking): the windows themselves, the classifier averaging them per
document, and a fine-tune that can only succeed by reading past the first window."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from finesieve.evals.metrics import roc_auc
from finesieve.models.chunking import collate_windows, token_windows
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.models.finetuned import FineTunedScorer, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def words(n: int, seed: int) -> str:
    """n filler words drawn from a small vocabulary (each one WordPiece token)."""
    vocab = "the job team work year plan role task data tool city home room note".split()
    return " ".join(np.random.default_rng(seed).choice(vocab, n))


def test_windows_cover_the_text_overlap_and_carry_special_tokens(tokenizer):
    text = " ".join(f"w{i}" for i in range(300))  # many tokens: w, ##N pieces
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    windows = token_windows(tokenizer, [text], max_length=64, max_chunks=64, overlap=8)[0]
    body = 64 - 2  # [CLS] ... [SEP]
    assert all(len(w) <= 64 and w[0] == tokenizer.cls_token_id and w[-1] == tokenizer.sep_token_id for w in windows)
    inner = [w[1:-1] for w in windows]
    assert inner[0] == ids[:body] and inner[-1][-1] == ids[-1]  # from the first token to the last
    for a, b in zip(inner, inner[1:]):
        assert a[-8:] == b[:8]  # neighbours share `overlap` tokens
    assert len(windows) == int(np.ceil((len(ids) - 8) / (body - 8)))

    capped = token_windows(tokenizer, [text], max_length=64, max_chunks=3, overlap=8)[0]
    assert len(capped) == 3 and capped[0] == windows[0] and capped[-1] == windows[-1]  # spread, ends kept
    short, empty = token_windows(tokenizer, ["a short one", ""], max_length=64, max_chunks=4, overlap=8)
    assert short == [tokenizer("a short one")["input_ids"]] and empty == [
        [tokenizer.cls_token_id, tokenizer.sep_token_id]
    ]
    with pytest.raises(ValueError, match="overlap"):
        token_windows(tokenizer, [text], max_length=10, max_chunks=2, overlap=8)


def test_a_document_is_the_mean_of_its_windows_whatever_shares_its_batch(tiny_bert, tokenizer):
    scorer = FineTunedScorer(FinetuneConfig(model=tiny_bert, max_length=32, max_chunks=6, chunk_overlap=4))
    model, _, _ = build_model(scorer.get_config(), 2, ["a", "b"])
    model.eval()
    docs = token_windows(tokenizer, [words(150, 1), words(20, 2), words(90, 3)], 32, 6, 4)
    with torch.inference_mode():
        together = model(*collate_windows(docs, tokenizer.pad_token_id))
        alone = [model(*collate_windows([d], tokenizer.pad_token_id)) for d in docs]
        # by hand: each window pooled alone, averaged, through the head
        by_hand = []
        for doc in docs:
            ids, mask, _ = collate_windows([doc], tokenizer.pad_token_id)
            pooled = model.pool(model.body(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
            by_hand.append(model.score(pooled.mean(dim=0, keepdim=True)))
    assert len(docs[0]) > 1 and together.shape == (3, 2)
    for i in range(3):
        assert torch.allclose(together[i], alone[i][0], atol=1e-5)
        assert torch.allclose(together[i], by_hand[i][0], atol=1e-5)


def test_a_label_only_the_end_of_a_long_text_shows_is_learnt_with_windows_and_not_without(tiny_bert, tmp_path):
    """Each text is 120 filler words, then its label said three times: one 32-token window never sees the end."""
    rng = np.random.default_rng(0)
    labels = rng.choice(["yes", "no"], 400)
    texts = [f"{words(120, i)} " + ("approved " if y == "yes" else "declined ") * 3 for i, y in enumerate(labels)]
    train, test = slice(0, 300), slice(300, 400)
    y_test = labels[test] == "yes"
    common = dict(
        model=tiny_bert,
        max_length=32,
        chunk_overlap=4,
        method="full",
        learning_rate=3e-3,
        batch_size=16,
        max_epochs=8,
        eval_every=20,
        tracking_uri="none",
        num_threads=1,
        calibration="none",
    )
    aucs = {}
    for name, chunks in (("windows", 8), ("first window", 1)):
        scorer = FineTunedScorer(FinetuneConfig(**common, max_chunks=chunks)).fit(
            texts[train], labels[train].tolist(), positive=["yes"]
        )
        proba = scorer.predict_proba(texts[test])
        aucs[name] = roc_auc(y_test, proba[:, list(scorer.classes_).index("yes")])
        if chunks > 1:
            scorer.save(tmp_path / "model")
            again = FineTunedScorer.load(tmp_path / "model")
            assert again.get_config().max_chunks == chunks
            np.testing.assert_allclose(again.predict_proba(texts[test]), proba, atol=1e-5)
    print("test ROC AUC:", aucs)
    assert aucs["windows"] > 0.95 and aucs["first window"] < 0.7
