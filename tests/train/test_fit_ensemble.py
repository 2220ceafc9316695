"""`fit_ensemble` end to end on a real Davidson slice (hate_speech vs the rest): a TF-IDF run and a char-CNN run
trained on one file and split are stacked on their validation split, measured on their test split, and saved as a
run of kind "ensemble" that reloads with equal scores; runs of another split or other data are refused.

(Named test_fit_ensemble.py, not test_ensemble.py: tests/models/test_ensemble.py exists, and without __init__.py
files pytest cannot collect two test modules of one name.)
"""

import hashlib
import json

import numpy as np
import pytest

from finesieve.data.errors import ConfigError
from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.data.split import SplitConfig, make_splits
from finesieve.evals.metrics import roc_auc
from finesieve.manifest import input_reference
from finesieve.models.base import positive_scores
from finesieve.models.char_cnn import CharCNNScorer
from finesieve.models.ensemble import StackedEnsemble
from finesieve.runs import MANIFEST, load_run, verify_run_files
from finesieve.train.ensemble import fit_ensemble
from finesieve.train.recipe import fit_and_save, train_reference

POSITIVE = ["hate_speech"]
TINY_CNN = dict(channels=24, embed_dim=8, max_chars=160, kernel_sizes=(3, 5), max_epochs=3, batch_size=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def members(tmp_path_factory, davidson_slice_csv):
    """On the 2,000-row Davidson slice: a TF-IDF run and a char-CNN run on its default split."""
    root = tmp_path_factory.mktemp("ensemble")
    dataset = load_dataset(davidson_slice_csv, ColumnSpec(text_col="text", label_cols=("label",)))
    tfidf = train_reference("tfidf", dataset, positive=POSITIVE, out=root / "tfidf", n_boot=0)
    val = tfidf.splits.dataset("val")
    fit_and_save(
        CharCNNScorer(**TINY_CNN),
        "char_cnn",
        tfidf.splits,
        positive=POSITIVE,
        out=root / "cnn",
        fit_kwargs={"val_texts": val.texts, "val_labels": val.labels},
        n_boot=0,
    )
    return {"root": root, "dataset": dataset, "splits": tfidf.splits}


@pytest.fixture(scope="module")
def ensemble(members):
    root = members["root"]
    return fit_ensemble([root / "tfidf", root / "cnn"], root / "ensemble", n_boot=0)


def test_the_ensemble_run_reloads_with_equal_scores_and_records_its_members(members, ensemble, davidson_slice):
    root, splits = members["root"], members["splits"]
    run = load_run(ensemble.run_dir)
    assert run.manifest.kind == "ensemble" and isinstance(run.scorer, StackedEnsemble)
    assert verify_run_files(ensemble.run_dir)
    test = splits.dataset("test")
    np.testing.assert_array_equal(run.scorer.predict_proba(test.texts), ensemble.scorer.predict_proba(test.texts))
    raw = davidson_slice.text.tolist()[:50]  # raw tweets (HTML entities, mentions): both prepare them alike
    np.testing.assert_array_equal(run.scorer.predict_proba(raw), ensemble.scorer.predict_proba(raw))

    # The stacker learnt from the validation split only: the rows no member trained on.
    assert ensemble.scorer.report_["n"] == splits.sizes()["val"]
    manifest = json.loads((ensemble.run_dir / MANIFEST).read_text())
    assert manifest["splits"]["split_hash"] == splits.split_hash
    assert manifest["data"]["content_hash"] == members["dataset"].content_hash
    section = manifest["ensemble"]
    assert [m["name"] for m in section["members"]] == ["tfidf", "cnn"]
    for member, folder in zip(section["members"], ("tfidf", "cnn")):
        assert member["run"] == str(root / folder)
        assert member["manifest_sha256"] == hashlib.sha256((root / folder / MANIFEST).read_bytes()).hexdigest()
    assert section["weights"] == pytest.approx(ensemble.scorer.weights_)
    assert sum(section["weights"].values()) == pytest.approx(1.0)
    assert run.threshold == pytest.approx(ensemble.threshold) and manifest["metrics"]["test"]["roc_auc"] > 0.5

    # Drift monitoring's reference: validation statistics, with the vocabulary of the members' training split (not
    # of the validation rows the stacker fitted on, against which the validation texts would have no unknown word).
    expected = input_reference(splits.dataset("train").texts, splits.dataset("val").texts)
    assert run.manifest.reference.inputs.vocabulary == expected.vocabulary
    assert run.manifest.reference.inputs.oov_rate == pytest.approx(expected.oov_rate) and expected.oov_rate > 0.01
    assert run.manifest.reference.n == splits.sizes()["val"]
    assert [p.name for p in root.iterdir() if ".draft-" in p.name] == []  # the draft the recipe wrote is gone


def test_the_ensemble_against_its_members(members, ensemble, capsys):
    """Measured, not asserted: validation (where the stacker was fitted, so in-sample for it) and test ROC AUC of
    hate_speech vs the rest, each member alone and stacked. Printed for the record (pytest -s)."""
    splits, root = members["splits"], members["root"]
    scorers = {"tfidf": load_run(root / "tfidf").scorer, "cnn": load_run(root / "cnn").scorer}
    scorers["ensemble"] = ensemble.scorer
    figures = {}
    for split in ("val", "test"):
        data = splits.dataset(split)
        y = data.violation(POSITIVE)
        for name, scorer in scorers.items():
            scores = positive_scores(scorer.predict_proba(data.texts), scorer.classes_, POSITIVE, False)
            figures[f"{split} {name}"] = roc_auc(y, scores)
    with capsys.disabled():
        print("\nROC AUC, hate_speech vs rest:", {k: round(v, 4) for k, v in figures.items()})
    assert all(0.5 < v <= 1.0 for v in figures.values()), figures  # every scorer learnt something


def test_runs_of_another_split_or_other_data_are_refused(members, davidson_slice):
    root, dataset = members["root"], members["dataset"]
    other_split = make_splits(dataset, SplitConfig(seed=1))
    train_reference("tfidf", dataset, positive=POSITIVE, out=root / "seed1", splits=other_split, n_boot=0)
    with pytest.raises(
        ConfigError, match="runs .*tfidf and .*seed1 were not trained on the same data and split: split"
    ):
        fit_ensemble([root / "tfidf", root / "seed1"], None, n_boot=0)

    path = root / "fewer.csv"
    davidson_slice[["text", "label"]].iloc[:1800].to_csv(path, index=False)
    fewer = load_dataset(path, ColumnSpec(text_col="text", label_cols=("label",)))
    train_reference("tfidf", fewer, positive=POSITIVE, out=root / "fewer", n_boot=0)
    with pytest.raises(ConfigError, match="runs .*cnn and .*fewer were not .*data content hash"):
        fit_ensemble([root / "cnn", root / "fewer"], None, n_boot=0)
    with pytest.raises(ConfigError, match="two or more runs"):
        fit_ensemble([root / "cnn"], None, n_boot=0)
