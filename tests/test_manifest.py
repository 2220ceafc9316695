"""The typed run manifest: today's manifests migrate, every field validates, problems name the file."""

import json

import numpy as np
import pytest

from finesieve.data.errors import ConfigError
from finesieve.data.load import load_dataset
from finesieve.data.preprocess import Preprocessing
from finesieve.data.redact import RedactionConfig
from finesieve.data.spec import ColumnSpec
from finesieve.data.task import ClassificationTask
from finesieve.manifest import SCHEMA_VERSION, RunManifest, read_manifest, reference_stats, write_manifest
from finesieve.models.text_classifier import weights_hash
from finesieve.runs import load_run, load_scorer
from finesieve.train.recipe import train_reference

# A manifest as finesieve wrote it before the manifest was typed (schema version 1, no version key).
V1 = {
    "finesieve_version": "0.1.0",
    "created_utc": "2026-11-30T10:00:00+00:00",
    "kind": "finetuned",
    "scorer_config": {"model": "packaged:all-MiniLM-L6-v2", "method": "lora", "learning_rate": 0.0005},
    "task": {
        "classes": ["hate_speech", "neither", "offensive"],
        "multilabel": False,
        "positive": ["hate_speech"],
        "threshold": 0.31,
        "threshold_source": "best F1 on the validation split",
    },
    "data": {"source": "d.csv", "content_hash": "ab" * 32, "n_rows": 19826},
    "splits": {"split_hash": "cd" * 32, "sizes": {"train": 15861, "val": 1982, "test": 1983}},
    "metrics": {"test": {"roc_auc": 0.916}},
    "environment": {"python": "3.11.7"},
    "parent_run": None,
    "training": {"steps": 1488, "history": [{"step": 200, "val": 0.41}]},
}


def test_a_version_1_manifest_migrates_and_keeps_every_section(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(V1))
    m = read_manifest(path)
    assert m.schema_version == SCHEMA_VERSION
    assert isinstance(m.task, ClassificationTask)
    assert m.task.positive == ("hate_speech",) and m.task.threshold == pytest.approx(0.31)
    assert m.preprocessing == Preprocessing()  # version 1 always cleaned, then redacted with the defaults
    assert m.base_model.name == "packaged:all-MiniLM-L6-v2" and m.base_model.content_hash is None
    assert m.reference is None
    assert m.training == V1["training"]  # a recipe's own section survives as it was
    # Written back and read again: the same manifest, now at the current version.
    write_manifest(m, tmp_path / "again.json")
    assert read_manifest(tmp_path / "again.json") == m
    assert json.loads((tmp_path / "again.json").read_text())["schema_version"] == SCHEMA_VERSION


def test_bad_manifests_name_the_file_and_the_field(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="manifest.json: not valid JSON"):
        read_manifest(path)
    path.write_text(json.dumps({**V1, "task": {**V1["task"], "positive": ["spam"]}}))
    with pytest.raises(ConfigError, match=r"manifest.json.*spam"):
        read_manifest(path)
    path.write_text(json.dumps({**V1, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ConfigError, match="newer than this finesieve reads"):
        read_manifest(path)
    path.write_text(json.dumps({**V1, "schema_version": 2, "preprocessing": {"clean": True, "redact": False}}))
    with pytest.raises(ConfigError, match="redact"):
        read_manifest(path)


def test_preprocessing_records_the_redaction_settings(tmp_path):
    raw = {
        **V1,
        "schema_version": 2,
        "task": {"kind": "classification", **V1["task"]},
        "preprocessing": Preprocessing(redaction=RedactionConfig(entities=("EMAIL", "PHONE"))).model_dump(mode="json"),
    }
    (tmp_path / "m.json").write_text(json.dumps(raw))
    m = read_manifest(tmp_path / "m.json")
    assert m.preprocessing.redaction.entities == ("EMAIL", "PHONE")
    assert isinstance(m, RunManifest)


def test_reference_statistics_describe_the_validation_split():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=400)
    proba = np.stack([1 - p, p], axis=1)
    texts = ["x" * n for n in rng.integers(5, 200, size=400)]
    ref = reference_stats(proba, ["ham", "spam"], texts, flagged=p >= 0.9)
    assert ref.n == 400 and sum(ref.score_histograms["spam"]) == 400
    assert ref.score_histograms["spam"] == tuple(reversed(ref.score_histograms["ham"]))  # p and 1 - p mirror
    assert ref.length_quantiles["q50"] == pytest.approx(np.median([len(t) for t in texts]))
    assert ref.flag_rate == pytest.approx(np.mean(p >= 0.9))


def test_weights_hash_changes_with_the_bytes(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    (tmp_path / "config.json").write_text("{}")  # not weights: not hashed
    first = weights_hash(str(tmp_path))
    (tmp_path / "config.json").write_text('{"x": 1}')
    assert weights_hash(str(tmp_path)) == first
    (tmp_path / "model.safetensors").write_bytes(b"abd")
    assert weights_hash(str(tmp_path)) != first and len(first) == 64
    assert weights_hash(str(tmp_path / "missing")) is None


def test_the_packaged_base_model_hashes_its_weights():
    digest = weights_hash("packaged:all-MiniLM-L6-v2")
    assert digest is not None and len(digest) == 64 and digest == weights_hash("packaged:all-MiniLM-L6-v2")


def _v1(manifest: dict) -> dict:
    """A version-2 manifest as finesieve wrote it before the manifest was typed."""
    old = {k: v for k, v in manifest.items() if k not in ("schema_version", "preprocessing", "base_model", "reference")}
    old["task"] = {k: v for k, v in manifest["task"].items() if k != "kind"}
    return old


def test_a_run_directory_written_before_the_typed_manifest_loads_and_scores_the_same(tmp_path, sms_csv):
    dataset = load_dataset(sms_csv, ColumnSpec(text_col="text", label_cols=("label",)), max_rows=600)
    fitted = train_reference("tfidf", dataset, positive=["spam"], out=tmp_path / "run", n_boot=0)
    manifest_path = tmp_path / "run" / "manifest.json"
    written = json.loads(manifest_path.read_text())
    assert written["schema_version"] == SCHEMA_VERSION and written["reference"]["n"] > 0
    inputs = written["reference"]["inputs"]  # input statistics of the validation texts, vocabulary from train
    assert inputs["n"] == written["reference"]["n"] and len(inputs["vocabulary"]) > 1000
    assert inputs["embeddings"] is None  # the quick reference kinds do not pay for embeddings unless asked
    assert written["preprocessing"] == Preprocessing(text_field="text").model_dump(mode="json")
    raw = ["WINNER! call 09061701461 to claim your prize", "see you at 5, mail me at ann@example.com"]
    expected = load_scorer(tmp_path / "run")[0].predict_proba(raw)

    manifest_path.write_text(json.dumps(_v1(written)))
    run = load_run(tmp_path / "run")
    assert run.manifest.schema_version == SCHEMA_VERSION and run.threshold == pytest.approx(fitted.threshold)
    assert run.preprocessing == Preprocessing()  # what version 1 always applied, for the text column "text"
    np.testing.assert_allclose(run.scorer.predict_proba(raw), expected)


def test_a_manifest_whose_reference_has_no_input_statistics_still_loads(tmp_path):
    reference = reference_stats(np.array([[0.8, 0.2], [0.3, 0.7]]), ["ham", "spam"], ["hi there", "WIN <URL>"])
    raw = {
        **V1,
        "schema_version": 2,
        "task": {"kind": "classification", **V1["task"]},
        "reference": reference.model_dump(mode="json"),
    }
    assert "inputs" in raw["reference"] and raw["reference"].pop("inputs") is None
    (tmp_path / "m.json").write_text(json.dumps(raw))
    m = read_manifest(tmp_path / "m.json")
    assert m.reference.inputs is None and m.reference.n == 2
    raw["reference"]["inputs"] = {"n": 2, "unknown": 1}
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"reference\.inputs"):
        read_manifest(tmp_path / "m.json")
