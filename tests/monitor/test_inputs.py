"""Input drift on real SMS messages (`finesieve.monitor.inputs`, with the reference from `manifest.input_reference`):
an unshifted window of held-out messages reads as stable; windows with placeholders, another script or a new
campaign's vocabulary read as drift, and the n-gram list names what drives it. The reference is the validation
split of the SMS Spam Collection, cleaned and redacted as `load_dataset` and the service prepare texts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import SplitConfig, make_splits
from finesieve.data.text_stats import ngrams, tokens
from finesieve.manifest import REFERENCE_EMBEDDINGS, input_reference, reference_stats
from finesieve.monitor.alerts import AlertThresholds, alerts_for
from finesieve.monitor.inputs import input_drift, mmd_test, rising_ngrams
from finesieve.monitor.slow_evals import slow_evals
from finesieve.runs import load_run, new_reference_scorer, verify_run_files
from finesieve.train.recipe import fit_and_save

# Real Russian text messages, the kind a bilingual user base sends (another script arriving in the traffic).
CYRILLIC = [
    "Привет, ты сегодня придёшь на ужин?",
    "Позвони мне, когда освободишься",
    "Я уже в дороге, буду через десять минут",
    "Спасибо за вчерашний вечер, было здорово",
    "Не забудь купить хлеб и молоко",
    "Встречаемся у метро в семь",
    "Как прошёл экзамен? Напиши потом",
    "Мама просила перезвонить ей сегодня",
]
NAMES = ["Аня", "Саша", "Миша", "Оля", "Дима", "Катя", "Лена", "Паша"]
# 64 distinct messages: the embedding distance counts each distinct text once.
CYRILLIC_TRAFFIC = [f"{name}, {message.lower()}" for name in NAMES for message in CYRILLIC]
CAMPAIGN = "Your crypto wallet is frozen. Verify your seed phrase at <URL> to unlock it"


@pytest.fixture(scope="module")
def sms(sms_csv):
    dataset = load_dataset(sms_csv, ColumnSpec(text_col="text", label_cols=("label",)))
    return make_splits(dataset, SplitConfig(test_frac=0.25, val_frac=0.15))


@pytest.fixture(scope="module")
def reference(sms):
    val = sms.dataset("val")
    proba = np.tile([0.9, 0.1], (len(val), 1))  # the scores play no part in input drift
    return reference_stats(proba, ["ham", "spam"], val.texts, train_texts=sms.dataset("train").texts)


def window(sms, n=500, seed=0) -> list[str]:
    test = sms.dataset("test").texts
    return [test[i] for i in np.random.default_rng(seed).choice(len(test), n, replace=False)]


def no_evals():
    return slow_evals(pd.DataFrame(columns=["reason", "violation"]), flagged=0, delivered=0)


def test_the_reference_counts_the_validation_texts_with_the_training_vocabulary(sms, reference):
    inputs = reference.inputs
    val = sms.dataset("val").texts
    assert inputs.n == len(val) == sum(inputs.length_histogram)
    assert inputs.entity_share["PHONE"] == pytest.approx(np.mean(["<PHONE>" in t for t in val]))
    assert len(inputs.vocabulary) == 5000 and "you" in inputs.vocabulary and "<PHONE>" not in inputs.vocabulary
    assert 0.02 < inputs.oov_rate < 0.2  # SMS slang and typos: some words the training split never had
    assert inputs.script_mix["latin"] > 0.99
    assert inputs.ngram_shares["you"] == pytest.approx(np.mean(["you" in tokens(t) for t in val]))
    assert len(inputs.ngram_shares) == 1000
    assert tokens("Call <PHONE> NOW, don't wait") == ["call", "<PHONE>", "now", "don't", "wait"]


def test_an_unshifted_window_of_500_messages_raises_no_input_alert(sms, reference):
    drift = input_drift(reference, window(sms))
    assert drift.n == 500 and drift.embedding is None  # the reference saved no embeddings
    assert drift.length["psi"] < 0.25 and drift.length["ks_pvalue"] > 0.01
    assert abs(drift.oov_rate["window"] - drift.oov_rate["reference"]) < 0.03
    assert drift.script_mix["psi"] < 0.01
    assert alerts_for(AlertThresholds(), {}, no_evals(), drift) == []


def test_another_script_arriving_is_read_in_the_script_mix_and_the_oov_rate(sms, reference):
    shifted = window(sms, 400) + CYRILLIC_TRAFFIC + CYRILLIC_TRAFFIC[:40]  # a fifth of the window in Cyrillic
    drift = input_drift(reference, shifted)
    assert drift.script_mix["window"]["cyrillic"] > 0.1 and drift.script_mix["reference"]["cyrillic"] == 0
    assert drift.script_mix["psi"] > 0.25
    assert drift.oov_rate["window"] - drift.oov_rate["reference"] > 0.05  # short messages: ~10% of the words
    (alert,) = alerts_for(AlertThresholds(), {}, no_evals(), drift)
    assert alert.startswith("out-of-vocabulary rate")


def test_a_campaign_with_links_is_read_in_the_entity_shares_and_tops_the_ngrams(sms, reference):
    texts = window(sms, 450, seed=1)
    shifted = texts + [CAMPAIGN.replace("frozen", word) for word in ["frozen", "locked", "paused"] * 17]
    drift = input_drift(reference, shifted)
    url = drift.entity_share["URL"]
    assert url["window"] > url["reference"] + 0.08
    rising = rising_ngrams(reference.inputs, shifted)
    campaign_grams = {
        g for variant in ["frozen", "locked", "paused"] for g in ngrams(tokens(CAMPAIGN.replace("frozen", variant)))
    }
    assert {g.ngram for g in rising[:10]} <= campaign_grams and "seed phrase" in {g.ngram for g in rising}
    top = rising[0]
    assert top.window_share == pytest.approx(51 / 501, abs=0.01) and top.lift > 10
    assert len(top.examples) == 3 and all(top.ngram.split()[0] in e.lower() for e in top.examples)
    assert rising_ngrams(reference.inputs, texts)[0].lift < top.lift  # unshifted: nothing rises like that


def test_longer_messages_read_as_length_drift(sms, reference):
    texts = window(sms, 500, seed=2)
    drift = input_drift(reference, [t + " " + t for t in texts])
    assert drift.length["psi"] > 0.25 and drift.length["window_q50"] > 1.5 * drift.length["reference_q50"]
    assert any(a.startswith("input length drift") for a in alerts_for(AlertThresholds(), {}, no_evals(), drift))


def test_mmd_permutation_test_on_known_distributions():
    rng = np.random.default_rng(0)
    same = mmd_test(rng.normal(size=(150, 8)), rng.normal(size=(150, 8)), permutations=300)
    moved = mmd_test(rng.normal(size=(150, 8)), rng.normal(0.5, 1, size=(150, 8)), permutations=300)
    assert same[1] > 0.05 and moved[1] == pytest.approx(1 / 301) and moved[0] > same[0]


def test_the_reference_embeddings_travel_with_the_run_and_catch_another_script(sms_csv, tmp_path):
    dataset = load_dataset(sms_csv, ColumnSpec(text_col="text", label_cols=("label",)), max_rows=1500)
    splits = make_splits(dataset, SplitConfig(test_frac=0.3, val_frac=0.2))
    scorer = new_reference_scorer("tfidf")
    fitted = fit_and_save(scorer, "tfidf", splits, positive=["spam"], out=tmp_path / "run", reference_embeddings=True)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["reference"]["inputs"]["embeddings"] == REFERENCE_EMBEDDINGS
    assert REFERENCE_EMBEDDINGS in manifest["files"] and verify_run_files(fitted.run_dir)
    saved = np.load(tmp_path / "run" / REFERENCE_EMBEDDINGS)
    assert saved.dtype == np.float16 and saved.shape[1] == 384 and len(saved) <= 256

    run = load_run(fitted.run_dir)
    recomputed = input_reference(splits.dataset("train").texts, splits.dataset("val").texts, REFERENCE_EMBEDDINGS)
    assert run.manifest.reference.inputs == recomputed  # the same numbers after a trip through disk

    test = splits.dataset("test").texts
    stable = input_drift(run.manifest.reference, test[:300], run_dir=run.path)
    shifted = input_drift(run.manifest.reference, test[:200] + CYRILLIC_TRAFFIC, run_dir=run.path)
    assert stable.embedding.n > 200 and stable.embedding.p_value > 0.001
    assert shifted.embedding.p_value <= 0.001 and shifted.embedding.mmd > stable.embedding.mmd
    assert input_drift(run.manifest.reference, test[:300], run_dir=run.path, embeddings=False).embedding is None
