"""The model registry (finesieve.registry) on a local MLflow store: register two real runs (TF-IDF on two SMS spam
slices), promote, roll back, resolve references, lineage and history; the refusals (unknown names, versions and
aliases, changed run files, a gate-refused version without --force); and the commands end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from finesieve import registry
from finesieve.cli import app as cli_app
from finesieve.data.errors import ConfigError
from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.runs import run_manifest
from finesieve.train.recipe import train_reference

ROWS = 600


def sms_run(root: Path, sms_csv: Path, name: str, start: int) -> Path:
    """A TF-IDF run on SMS rows [start, start + ROWS)."""
    frame = pd.read_csv(sms_csv, dtype=str, keep_default_na=False).iloc[start : start + ROWS]
    path = root / f"{name}.csv"
    frame[["text", "label"]].to_csv(path, index=False)
    dataset = load_dataset(path, ColumnSpec(text_col="text", label_cols=("label",)))
    return train_reference("tfidf", dataset, positive=["spam"], out=root / name, n_boot=0).run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, sms_csv) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("registry_runs")
    return sms_run(root, sms_csv, "spam_a", 0), sms_run(root, sms_csv, "spam_b", ROWS)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for the module (creating one costs seconds); each test registers its own model name."""
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"


def copy_run(run: Path, where: Path) -> Path:
    return Path(shutil.copytree(run, where / run.name))


def test_register_promote_rollback_round_trip_with_lineage(runs, store):
    a, b = runs
    assert registry.register(a, "roundtrip", alias="challenger", uri=store) == 1
    first = registry.promote("roundtrip", uri=store)  # the challenger by default
    assert (first.version, first.replaced) == (1, None)
    assert registry.register(b, "roundtrip", alias="challenger", uri=store) == 2
    assert registry.resolve("registry:roundtrip@champion", uri=store) == a.resolve()
    assert registry.resolve("registry:roundtrip@challenger", uri=store) == b.resolve()
    second = registry.promote("roundtrip", uri=store)
    assert (second.version, second.replaced) == (2, 1)
    assert registry.resolve("registry:roundtrip@champion", uri=store) == b.resolve()
    assert registry.resolve("registry:roundtrip@previous", uri=store) == a.resolve()
    back = registry.rollback("roundtrip", uri=store)
    assert (back.version, back.replaced) == (1, 2) and str(back) == (
        "roundtrip: rollback: champion is now version 1 (was version 2)"
    )
    assert registry.resolve("registry:roundtrip@champion", uri=store) == a.resolve()
    assert registry.resolve("registry:roundtrip/2", uri=store) == b.resolve()

    model = registry.describe("roundtrip", uri=store)
    assert model.aliases == {"champion": 1, "challenger": 2}  # `previous` is spent by the rollback
    assert [(v.version, v.aliases) for v in model.versions] == [(1, ("champion",)), (2, ("challenger",))]
    manifest = run_manifest(b)
    lineage = model.versions[1].lineage
    assert lineage["run_dir"] == str(b.resolve()) and lineage["kind"] == "tfidf"
    assert (
        lineage["data_hash"] == manifest.data["content_hash"] and lineage["split_hash"] == manifest.splits["split_hash"]
    )
    assert lineage["metric.test.roc_auc"] == f"{manifest.metrics['test']['roc_auc']:.4f}"
    assert lineage["manifest_sha256"] == registry._sha256(b / "manifest.json")
    assert model.versions[0].lineage["data_hash"] != lineage["data_hash"]  # two slices, two data hashes
    assert [(e["action"], e["version"]) for e in model.history] == [
        ("register", 1),
        ("set_alias", 1),
        ("promote", 1),
        ("register", 2),
        ("set_alias", 2),
        ("promote", 2),
        ("rollback", 1),
    ]
    assert model.history[-2]["replaced"] == 1 and model.history[-1]["replaced"] == 2


def test_unknown_names_versions_aliases_and_references_are_refused(runs, store):
    registry.register(runs[0], "errors", uri=store)
    with pytest.raises(ConfigError, match=r"no registered model 'nope' .* register a run first"):
        registry.resolve("registry:nope@champion", uri=store)
    with pytest.raises(ConfigError, match=r"model 'errors' has no version 7 \(its versions: \[1\]\)"):
        registry.resolve("registry:errors/7", uri=store)
    with pytest.raises(ConfigError, match=r"model 'errors' has no alias 'champion'"):
        registry.resolve("registry:errors@champion", uri=store)
    with pytest.raises(ConfigError, match="is not a registry reference: write registry:NAME@ALIAS"):
        registry.resolve("registry:errors", uri=store)
    with pytest.raises(ConfigError, match="has no 'challenger' alias to promote"):
        registry.promote("errors", uri=store)
    with pytest.raises(ConfigError, match="has no 'previous' version to roll back to"):
        registry.rollback("errors", uri=store)
    with pytest.raises(ConfigError, match=r"model 'errors' has no version 3"):
        registry.set_alias("errors", "challenger", 3, uri=store)
    registry.promote("errors", 1, uri=store)
    with pytest.raises(ConfigError, match="is the champion already"):
        registry.promote("errors", 1, uri=store)


def test_changed_run_files_are_refused_at_register_promote_and_resolve(runs, store, tmp_path):
    run = copy_run(runs[0], tmp_path)
    weights = next(p for p in sorted((run / "model").rglob("*")) if p.is_file())
    original = weights.read_bytes()
    weights.write_bytes(original + b"x")
    with pytest.raises(ConfigError, match=f"{weights.name}: changed since the run was saved"):
        registry.register(run, "tampered", uri=store)
    weights.write_bytes(original)
    registry.register(run, "tampered", uri=store)
    weights.write_bytes(original + b"x")
    with pytest.raises(ConfigError, match="changed since the run was saved"):
        registry.promote("tampered", 1, uri=store)
    weights.write_bytes(original)
    registry.promote("tampered", 1, uri=store)
    manifest = run / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"kind": "tfidf"', '"kind":  "tfidf"'))
    with pytest.raises(ConfigError, match="manifest.json changed since it was registered"):
        registry.resolve("registry:tampered@champion", uri=store)


def test_a_version_the_gate_refused_is_promoted_only_with_force(runs, store, tmp_path):
    run = copy_run(runs[1], tmp_path)
    # gate.json as `finesieve retrain` writes it (finesieve.evals.gate.GateVerdict), beside the model
    (run / "gate.json").write_text(json.dumps({"promote": False, "decision": "refuse", "reasons": ["test: -0.04"]}))
    registry.register(runs[0], "gated", uri=store)
    registry.promote("gated", 1, uri=store)
    assert registry.register(run, "gated", alias="challenger", uri=store) == 2
    lineage = registry.describe("gated", uri=store).versions[1].lineage
    assert lineage["gate_verdict"] == "refused" and lineage["gate_report"] == str(run.resolve() / "gate.json")
    with pytest.raises(ConfigError, match="the retraining gate refused it .* with --force"):
        registry.promote("gated", uri=store)
    assert registry.promote("gated", uri=store, force=True).version == 2
    event = registry.describe("gated", uri=store).history[-1]
    assert (event["action"], event["forced"], event["version"], event["replaced"]) == ("promote", True, 2, 1)


def test_the_commands_end_to_end(runs, store):
    cli = CliRunner()
    registered = cli.invoke(
        cli_app, ["register", str(runs[0]), "--name", "cli", "--alias", "challenger", "--registry", store]
    )
    assert registered.exit_code == 0, registered.output
    assert f"cli version 1: {runs[0].resolve()} (alias challenger)" in registered.stdout
    assert cli.invoke(cli_app, ["register", str(runs[1]), "--name", "cli", "--registry", store]).exit_code == 0
    promoted = cli.invoke(cli_app, ["promote", "cli", "--registry", store])
    assert promoted.exit_code == 0 and "champion is now version 1 (was no version)" in promoted.stdout
    promoted = cli.invoke(cli_app, ["promote", "cli", "--version", "2", "--registry", store])
    assert promoted.exit_code == 0 and "champion is now version 2 (was version 1)" in promoted.stdout
    rolled = cli.invoke(cli_app, ["rollback", "cli", "--registry", store])
    assert rolled.exit_code == 0 and "rollback: champion is now version 1 (was version 2)" in rolled.stdout
    listed = cli.invoke(cli_app, ["registry", "list", "cli", "--registry", store])
    assert listed.exit_code == 0, listed.output
    assert "cli: challenger -> 1, champion -> 1" in listed.stdout
    assert "version 2\t-\t" in listed.stdout and "data_hash: " in listed.stdout and "\trollback\t" in listed.stdout
    again = cli.invoke(cli_app, ["rollback", "cli", "--registry", store])
    assert again.exit_code == 2 and "no 'previous' version to roll back to" in again.output
    unknown = cli.invoke(cli_app, ["promote", "nobody", "--registry", store])
    assert unknown.exit_code == 2 and "no registered model 'nobody'" in unknown.output
