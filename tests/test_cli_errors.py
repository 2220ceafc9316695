"""Hurried users: outputs pointed at inputs, runs written twice, bad flags, damaged files. Every refusal is a clear
message with exit code 2 naming the flag or file, nothing is destroyed, and only a real bug prints a traceback."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from finesieve.cli import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    # An error a user causes never escapes as an exception (that would be a traceback on the terminal).
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def refused(result, *needles):
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory, davidson_slice):
    path = tmp_path_factory.mktemp("errs") / "small.csv"
    davidson_slice.iloc[:600][["text", "label"]].to_csv(path, index=False)
    return path


def test_output_pointed_at_its_input_is_refused_and_the_input_kept(small_csv, tmp_path):
    before = small_csv.read_bytes()
    refused(invoke("data", "redact", "--file", small_csv, "--out", small_csv), "--out", "is the input --file")
    refused(invoke("data", "review", small_csv, "--out", small_csv), "is the input FILE")
    refused(
        invoke("eval", "tfidf", "--data", small_csv, "--positive", "hate_speech", "--report", small_csv),
        "--report",
        "is the input --data",
    )
    refused(invoke("data", "validate", small_csv, "--rejects", small_csv), "--rejects")
    refused(invoke("score", tmp_path, "--data", small_csv, "--out", small_csv), "is the input --data")
    # The review's JSON twin counts too: data.json beside data.html would overwrite an input named data.json.
    twin = tmp_path / "rows.json"
    twin.write_text("{}")
    refused(invoke("data", "review", small_csv, "--out", tmp_path / "rows.html", "--corner", twin), "JSON twin")
    assert small_csv.read_bytes() == before and twin.read_text() == "{}"


def test_redact_file_writes_redacted_rows_atomically(tmp_path):
    data = tmp_path / "msgs.csv"
    pd.DataFrame({"text": ["mail me at jo@example.com", "", "call 555 123 4567"]}).to_csv(data, index=False)
    out = tmp_path / "red.jsonl"
    result = invoke("data", "redact", "--file", data, "--out", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{"row": 1, "text": "mail me at <EMAIL>"}, {"row": 3, "text": "call <PHONE>"}]
    assert "3 rows read, 2 written, 1 rejected" in result.output
    refused(invoke("data", "redact", "--file", data, "--out", out, "--entities", "EMAIL,PASSPORT"), "--entities")


def test_a_run_directory_is_not_written_twice_without_overwrite(small_csv, tmp_path):
    run = tmp_path / "run"
    assert invoke("fit", "tfidf", "--data", small_csv, "--positive", "hate_speech", "--out", run).exit_code == 0
    manifest = (run / "manifest.json").read_bytes()
    refused(
        invoke(
            "prefilter",
            "train",
            "--data",
            small_csv,
            "--positive",
            "hate_speech",
            "--out",
            run,
            "--set",
            "max_epochs=1",
            "--set",
            "channels=8",
        ),
        "already holds a run",
        "--overwrite",
    )
    assert (run / "manifest.json").read_bytes() == manifest
    # With --overwrite the run is replaced whole: nothing of the tfidf run is left beside the char-CNN one.
    old_files = {p.name for p in (run / "model").iterdir()}
    result = invoke(
        "prefilter",
        "train",
        "--data",
        small_csv,
        "--positive",
        "hate_speech",
        "--out",
        run,
        "--set",
        "max_epochs=1",
        "--set",
        "channels=8",
        "--overwrite",
    )
    assert result.exit_code == 0, result.output
    assert json.loads((run / "manifest.json").read_text())["kind"] == "char_cnn"
    assert "tfidf_logreg.pkl" in old_files and not (run / "model" / "tfidf_logreg.pkl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left behind


def test_fit_on_a_tiny_file_reports_missing_auc_and_leaves_a_whole_run(tmp_path):
    """Six rows split into train 6, val 0, test 0: the fit succeeds, AUCs undefined on the empty test split are
    printed as n/a and saved as null (not a crash, not a made-up number), and the run is whole."""
    data = tmp_path / "tiny.csv"
    pd.DataFrame(
        {
            "text": [
                "buy now cheap pills",
                "hello friend",
                "win money now",
                "see you soon",
                "free prize claim",
                "lunch tomorrow?",
            ],
            "label": ["spam", "ham", "spam", "ham", "spam", "ham"],
        }
    ).to_csv(data, index=False)
    run = tmp_path / "run"
    result = invoke("fit", "tfidf", "--data", data, "--positive", "spam", "--out", run)
    assert result.exit_code == 0, result.output
    assert "test ROC AUC n/a, PR AUC n/a" in result.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kind"] == "tfidf" and manifest["splits"]["sizes"] == {"train": 6, "val": 0, "test": 0}
    assert manifest["metrics"]["test"]["roc_auc"] is None and manifest["metrics"]["test"]["pr_auc"] is None
    assert (run / "model").is_dir() and not (tmp_path / "run.partial").exists()


def test_flags_out_of_range_name_the_flag(small_csv, tmp_path):
    refused(invoke("data", "review", small_csv, "--max-rows", "0", "--out", tmp_path / "r.html"), "--max-rows")
    refused(
        invoke("eval", "tfidf", "--data", small_csv, "--positive", "hate_speech", "--threshold", "5"), "--threshold"
    )
    refused(
        invoke("eval", "tfidf", "--data", small_csv, "--positive", "hate_speech", "--target-precision", "0"),
        "--target-precision",
    )
    refused(invoke("data", "split", small_csv, "--out", tmp_path / "s", "--test-frac", "1.5"), "--test-frac")
    refused(
        invoke("data", "split", small_csv, "--out", tmp_path / "s", "--test-frac", "0.5", "--val-frac", "0.5"),
        "--test-frac",
    )
    refused(invoke("data", "dedupe", small_csv, "--threshold", "0"), "--threshold")
    refused(
        invoke("cascade", "fit", "--data", small_csv, "--model", tmp_path, "--out", tmp_path / "c", "--budget", "2"),
        "--budget",
    )
    refused(invoke("train", "--data", small_csv, "--out", tmp_path / "t", "--learning-rate", "-1"), "--learning-rate")
    refused(invoke("sweep", "--data", small_csv, "--learning-rate", "fast"), "--learning-rate")
    refused(invoke("eval", "tfidf", "--data", small_csv, "--format", "xlsx"), "--format")
    refused(invoke("eval", "tfidf", "--data", small_csv, "--positive", "hate_speach"), "--positive", "hate_speach")


def test_unknown_settings_suggest_the_right_name(small_csv, tmp_path):
    refused(
        invoke("prefilter", "train", "--data", small_csv, "--out", tmp_path / "p", "--set", "chanels=8"),
        "chanels",
        "did you mean channels",
    )
    refused(
        invoke(
            "prefilter",
            "train",
            "--data",
            small_csv,
            "--out",
            tmp_path / "p",
            "--kind",
            "tfidf",
            "--set",
            "max_featurs=10",
        ),
        "did you mean max_features",
    )
    refused(
        invoke("train", "--data", small_csv, "--out", tmp_path / "t", "--set", "lora_rank=4"), "did you mean lora_r"
    )
    refused(
        invoke(
            "cascade", "fit", "--data", small_csv, "--model", tmp_path, "--out", tmp_path / "c", "--method", "bayes"
        ),
        "method",
    )


def test_paths_that_are_not_files_are_clear_errors(small_csv, tmp_path):
    refused(invoke("data", "validate", tmp_path / "missing.csv"), "missing.csv")
    refused(invoke("data", "validate", tmp_path), str(tmp_path))
    refused(invoke("data", "review", small_csv, "--out", tmp_path), "is a folder")
    (tmp_path / "file").write_text("x")
    refused(
        invoke("fit", "tfidf", "--data", small_csv, "--positive", "hate_speech", "--out", tmp_path / "file"),
        "is a file; a run is a folder",
    )
    refused(
        invoke("eval", str(tmp_path / "no-such-run"), "--data", small_csv, "--positive", "hate_speech"), "no-such-run"
    )


def test_a_damaged_run_directory_names_its_file(small_csv, tmp_path):
    run = tmp_path / "run"
    assert invoke("fit", "tfidf", "--data", small_csv, "--positive", "hate_speech", "--out", run).exit_code == 0
    manifest = (run / "manifest.json").read_text()
    (run / "manifest.json").write_text('{"kind": "tfidf", ')
    refused(invoke("eval", run, "--data", small_csv, "--positive", "hate_speech"), "manifest.json", "not valid JSON")
    (run / "manifest.json").write_text('{"kind": "tfidf"}')
    refused(
        invoke("eval", run, "--data", small_csv, "--positive", "hate_speech"), "manifest.json", "task", "Field required"
    )
    (run / "manifest.json").write_text(manifest)
    for path in (run / "model").iterdir():
        path.unlink()
    refused(invoke("eval", run, "--data", small_csv, "--positive", "hate_speech"), "model", "damaged")


def test_a_bug_still_prints_a_traceback_and_debug_shows_one_for_any_error(small_csv, tmp_path, monkeypatch):
    import finesieve.data.dedupe as dedupe

    def broken(*args, **kwargs):
        raise RuntimeError("an internal bug")

    monkeypatch.setattr(dedupe, "find_duplicates", broken)
    result = runner.invoke(app, ["data", "dedupe", str(small_csv)])
    assert isinstance(result.exception, RuntimeError)  # not turned into a tidy "user error"
    assert "bug" in result.output
    monkeypatch.undo()
    proc = subprocess.run(
        [sys.executable, "-m", "finesieve.cli", "--debug", "data", "validate", str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "x.csv" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "finesieve.cli", "data", "validate", str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "x.csv" in proc.stderr


def test_label_variants_are_refused_or_normalised_and_recorded(davidson_slice, tmp_path):
    df = davidson_slice.iloc[:600][["text", "label"]].copy()
    df.loc[df.index[:40][df["label"].iloc[:40] == "hate_speech"], "label"] = "Hate_Speech"
    n_variant = int((df["label"] == "Hate_Speech").sum())
    assert n_variant > 0
    data = tmp_path / "variants.csv"
    df.to_csv(data, index=False)
    run = tmp_path / "run"
    refused(
        invoke("fit", "tfidf", "--data", data, "--positive", "hate_speech", "--out", run),
        "Hate_Speech",
        "--normalise-labels",
    )
    assert not run.exists()
    result = invoke("fit", "tfidf", "--data", data, "--positive", "hate_speech", "--out", run, "--normalise-labels")
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data"]["label_normalisation"] == {"Hate_Speech": "hate_speech"}
    assert manifest["data"]["label_normalised_rows"] == n_variant
    assert manifest["task"]["classes"] == ["hate_speech", "neither", "offensive"]
