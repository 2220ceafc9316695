"""`retrain` on real SMS data: a TF-IDF parent never saw a spam campaign written with spaced-out letters (an evasion
style); reviewers label it; retraining adds the fresh rows, drops the ones that copy evaluation messages, keeps the
parent's test split, and the gate promotes the candidate. Then the real command line, exit codes included."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from finesieve.data.dedupe import exact_duplicate_groups
from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import exclude_near_duplicates
from finesieve.evals.gate import GateConfig, read_verdict
from finesieve.models.finetune_config import FinetuneConfig
from finesieve.runs import load_run
from finesieve.train.finetune import train_finetune
from finesieve.train.recipe import train_reference
from finesieve.train.replay import run_data_splits
from finesieve.train.retrain import load_fresh, retrain

CAMPAIGN = r"(?i)prize|\bwon\b|\bwin|claim|cash|urgent|£|award"
N_TEST_COPIES, N_TRAIN_COPIES = 8, 5
# The parent's test split holds ~120 messages (~15 spam): too few to rule out a 0.01 drop in ROC AUC (its 95%
# interval is about +-0.01 wide) or a 0.02 drop in PR AUC (about +-0.05), so these tests state margins of 0.03
# and 0.06.
MARGIN, PR_MARGIN = 0.03, 0.06


def spaced(text: str) -> str:
    """The campaign's evasion: the words run together and cut every two characters ('Wo na pr iz e'), a form the
    de-obfuscation cannot join back (it joins single spaced-out letters)."""
    joined = text.replace(" ", "")
    return " ".join(joined[i : i + 2] for i in range(0, len(joined), 2))


@pytest.fixture(scope="module")
def drift(tmp_path_factory, sms_csv):
    """A parent run on 1,200 messages without the campaign, and a fresh file of reviewed rows: the spaced-out
    campaign, unseen ham, plus exact copies of parent test messages and of parent training messages."""
    tmp = tmp_path_factory.mktemp("retrain")
    df = pd.read_csv(sms_csv, dtype=str, keep_default_na=False)
    campaign = df["label"].eq("spam") & df["text"].str.contains(CAMPAIGN)
    old = df[~campaign].sample(1200, random_state=0)[["text", "label"]]
    old.to_csv(tmp / "old.csv", index=False)
    parent = train_reference(
        "tfidf", load_dataset(tmp / "old.csv", ColumnSpec()), positive=["spam"], out=tmp / "parent", n_boot=100
    ).run_dir

    # New traffic: no copy of the old file and no copy of each other, so the only copies are the injected ones.
    new = pd.concat(
        [
            df[campaign].sample(160, random_state=0).assign(text=lambda d: d["text"].map(spaced)),
            df[~campaign & ~df.index.isin(old.index) & df["label"].eq("ham")].sample(260, random_state=1),
        ]
    )[["text", "label"]]
    new_ds = load_dataset(_write(new, tmp / "new.csv"), ColumnSpec())
    kept, _ = exclude_near_duplicates(new_ds, load_dataset(tmp / "old.csv", ColumnSpec()).texts)
    first = ~pd.Series(exact_duplicate_groups(new_ds.texts)).duplicated().to_numpy()
    new = new.iloc[np.flatnonzero(kept & first)]

    splits = json.loads((parent / "splits.json").read_text())
    old["id"] = [str(i + 1) for i in range(len(old))]  # the parent's ids: its row numbers
    test_copies = old[old["id"].isin(splits["ids"]["test"])].head(N_TEST_COPIES)
    train_copies = old[old["id"].isin(splits["ids"]["train"])].head(N_TRAIN_COPIES)
    fresh = pd.concat([new, test_copies[["text", "label"]], train_copies[["text", "label"]]])
    fresh = fresh.sample(frac=1.0, random_state=0)
    return {
        "tmp": tmp,
        "parent": parent,
        "fresh_csv": _write(fresh, tmp / "fresh.csv"),
        "test_copies": set(test_copies["text"]),
    }


def _write(frame: pd.DataFrame, path):
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def retrained(drift):
    fresh = load_fresh(drift["fresh_csv"], drift["parent"])
    fitted, verdict = retrain(
        drift["parent"],
        fresh,
        drift["tmp"] / "child",
        gate=GateConfig(margin=MARGIN, pr_auc_margin=PR_MARGIN, n_boot=300),
        n_boot=100,
    )
    return fitted, verdict


def test_retrain_adds_fresh_rows_and_drops_copies_of_evaluation_messages(drift, retrained):
    fitted, _ = retrained
    child = fitted.run_dir
    manifest = json.loads((child / "manifest.json").read_text())
    report = manifest["retrain"]
    dropped = report["fresh"]["dropped"]
    assert dropped["near_duplicates_per_evaluation_set"] == {"val": 0, "test": N_TEST_COPIES}
    assert dropped["near_duplicates_of_evaluation_sets"] == N_TEST_COPIES
    assert dropped["exact_duplicates_of_training_rows"] == N_TRAIN_COPIES

    splits = run_data_splits(child)  # the new run reloads as a parent: its data file and split hash-check
    train = splits.dataset("train")
    fresh_in_train = train.frame[train.frame["id"].str.startswith("fresh.")]
    assert len(fresh_in_train) == report["fresh"]["slices"]["train"] > 50
    assert fresh_in_train["text"].str.match(r"^(\S\S )+\S{1,2}$").any()  # the cut-up campaign is trained on
    assert not set(train.texts) & drift["test_copies"]
    assert len(train) == report["n_train"]


def test_retrain_keeps_the_parents_test_split_and_records_its_lineage(drift, retrained):
    fitted, verdict = retrained
    parent_splits = json.loads((drift["parent"] / "splits.json").read_text())
    child_splits = json.loads((fitted.run_dir / "splits.json").read_text())
    assert sorted(child_splits["ids"]["test"]) == sorted(parent_splits["ids"]["test"])
    assert sorted(child_splits["text_hashes"]["test"]) == sorted(parent_splits["text_hashes"]["test"])
    # Validation is the parent's plus the fresh val slice; the fresh test slice is a corner set of its own.
    assert set(parent_splits["ids"]["val"]) < set(child_splits["ids"]["val"])
    manifest = load_run(fitted.run_dir).manifest
    assert manifest.parent_run == str(drift["parent"])
    assert manifest.data["corner_sets"]["fresh"]["n_rows"] == manifest.retrain["fresh"]["slices"]["test"] > 0
    assert "corner:fresh" in manifest.metrics
    assert manifest.retrain["parent_data_hash"] == load_run(drift["parent"]).manifest.data["content_hash"]
    assert manifest.gate["decision"] == verdict.decision


def test_gate_promotes_the_candidate_and_its_report_travels_with_the_run(drift, retrained):
    fitted, verdict = retrained
    assert verdict.promote, verdict.reasons
    fresh = verdict.set("corner:fresh")
    assert fresh.role == "drifted" and fresh.improved
    # The parent misses some of the campaign (since the de-obfuscation joins most spaced-out words, only a few).
    assert (
        fresh.metric("roc_auc").current < fresh.metric("roc_auc").candidate
        and fresh.metric("roc_auc").candidate >= 0.99
    )
    assert verdict.set("test").passed
    assert read_verdict(fitted.run_dir / "gate.json") == verdict
    assert "PROMOTE" in (fitted.run_dir / "gate.html").read_text()

    # The run round-trips through disk: the reloaded scorer gives the same scores.
    fresh_test = load_dataset(
        fitted.run_dir / "fresh_test.csv",
        ColumnSpec.model_validate(load_run(fitted.run_dir).manifest.data["column_spec"]),
    )
    reloaded = load_run(fitted.run_dir).scorer
    np.testing.assert_allclose(
        reloaded.predict_proba(fresh_test.texts), fitted.scorer.predict_proba(fresh_test.texts), rtol=0, atol=1e-12
    )


def cli(*args):
    return subprocess.run([sys.executable, "-m", "finesieve.cli", *map(str, args)], capture_output=True, text=True)


def test_retrain_command_exit_codes(drift, tmp_path):
    margins = tmp_path / "margins.yaml"
    margins.write_text(f"margin: {MARGIN}\npr_auc_margin: {PR_MARGIN}\n")
    promoted = cli(
        "retrain", drift["parent"], "--fresh", drift["fresh_csv"], "--out", tmp_path / "a", "--gate-config", margins
    )
    assert promoted.returncode == 0, promoted.stdout
    assert "PROMOTE" in promoted.stdout and (tmp_path / "a" / "gate.html").exists()

    strict = tmp_path / "gate.yaml"
    strict.write_text(
        f"margin: {MARGIN}\npr_auc_margin: {PR_MARGIN}\nmin_gain: 0.5\nn_boot: 200\n"
    )  # an improvement no retrain can show
    refused = cli(
        "retrain", drift["parent"], "--fresh", drift["fresh_csv"], "--out", tmp_path / "b", "--gate-config", strict
    )
    assert refused.returncode == 4, refused.stderr
    assert "REFUSE" in refused.stdout and "no improvement shown" in refused.stdout
    assert read_verdict(tmp_path / "b" / "gate.json").decision == "refuse"  # the evidence is written either way

    bad = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["win a car now"], "label": ["scam"]}).to_csv(bad, index=False)
    error = cli("retrain", drift["parent"], "--fresh", bad, "--out", tmp_path / "c")
    assert error.returncode == 2 and "scam" in error.stderr and "Traceback" not in error.stderr
    assert not (tmp_path / "c").exists()


def test_a_fine_tuned_parent_is_retrained_with_its_own_settings(drift, tiny_bert, tmp_path):
    """The fine-tune path: the parent's recorded FinetuneConfig (a tiny BERT, LoRA) is trained again on the new
    training set; the child round-trips through disk with the scores it was gated on."""
    config = FinetuneConfig(
        model=tiny_bert, max_steps=20, eval_every=10, learning_rate=1e-3, batch_size=32, tracking_uri="none"
    )
    parent = train_finetune(
        config,
        load_dataset(drift["tmp"] / "old.csv", ColumnSpec()),
        positive=["spam"],
        out=tmp_path / "parent",
        n_boot=100,
    ).run_dir
    fresh = load_fresh(drift["fresh_csv"], parent)
    fitted, verdict = retrain(parent, fresh, tmp_path / "child", gate=GateConfig(n_boot=100), n_boot=100)
    child = load_run(fitted.run_dir)
    assert child.manifest.kind == "finetuned" and child.manifest.parent_run == str(parent)
    assert child.manifest.scorer_config["model"] == tiny_bert
    assert child.section("training")["steps"] == 20  # the parent's max_steps, not a default
    assert (fitted.run_dir / "gate.json").exists() and verdict.decision in ("promote", "refuse")
    texts = fresh.texts[:32]
    np.testing.assert_allclose(child.scorer.predict_proba(texts), fitted.scorer.predict_proba(texts), atol=1e-5)


def test_a_drifted_sample_decides_the_gain_and_the_reviewed_slice_only_must_not_regress(drift, tmp_path):
    fresh = load_fresh(drift["fresh_csv"], drift["parent"])
    sample = pd.read_csv(drift["fresh_csv"], dtype=str, keep_default_na=False).tail(80)
    drifted = load_fresh(_write(sample, tmp_path / "sample.csv"), drift["parent"])
    _, verdict = retrain(
        drift["parent"], fresh, tmp_path / "child", drifted={"sample": drifted}, gate=GateConfig(n_boot=100), n_boot=100
    )
    roles = {s.name: s.role for s in verdict.sets}
    assert roles["corner:sample"] == "drifted" and roles["corner:fresh"] == "fixed"
    manifest = load_run(tmp_path / "child").manifest
    assert "sample" in manifest.data["corner_sets"]  # held fixed by the next retrain
    # The sample's rows never reach training: they were evaluation data from the start.
    training = pd.read_csv(tmp_path / "child" / "training_data.csv", dtype=str, keep_default_na=False)
    assert not set(drifted.texts) & set(training["text"])


def test_a_builtin_functional_suite_is_reloaded_as_the_parents_corner_set(davidson_csv, tmp_path):
    from finesieve.evals.functional import load_functional_suite
    from finesieve.train.retrain import _parent_corner_sets

    data = load_dataset(davidson_csv, ColumnSpec(text_col="text", label_cols=("label",)), max_rows=1500)
    suite = load_functional_suite("builtin:hate_speech")
    train_reference(
        "tfidf", data, positive=["hate_speech"], out=tmp_path / "parent", corner_sets={"hate_speech": suite}, n_boot=0
    )
    manifest = load_run(tmp_path / "parent").manifest
    sets, notes = _parent_corner_sets(manifest)
    assert notes == [] and sets["hate_speech"].content_hash == suite.content_hash
    # A suite that no longer reads as recorded is skipped with a note, never silently swapped.
    manifest.data["corner_sets"]["hate_speech"]["content_hash"] = "0" * 64
    sets, notes = _parent_corner_sets(manifest)
    assert sets == {} and "has changed" in notes[0]
