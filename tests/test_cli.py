"""The real command line, end to end, as scripts and people call it."""

import json
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

CLI = [sys.executable, "-m", "finesieve.cli"]


def run(*args, check=True, cwd=None):
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def files(tmp_path_factory, davidson_slice):
    tmp = tmp_path_factory.mktemp("cli")
    df = davidson_slice[["text", "label"]].sample(frac=1.0, random_state=3).reset_index(drop=True)
    train, other = tmp / "train.csv", tmp / "other.csv"
    df.iloc[:1500].to_csv(train, index=False)
    df.iloc[1500:].to_csv(other, index=False)
    return tmp, train, other


def test_help_on_every_command():
    """Every command documents itself and the flags the safety promises rest on."""
    from typer.testing import CliRunner

    from finesieve.cli import app

    runner = CliRunner()
    writes_runs = {("fit",), ("train",), ("baseline",), ("prefilter", "train"), ("cascade", "fit")}
    reads_labels = writes_runs | {
        ("eval",),
        ("data", "validate"),
        ("data", "review"),
        ("data", "split"),
        ("data", "dedupe"),
        ("sweep",),
    }
    commands = reads_labels | {("demo",), ("score",), ("data", "redact"), ("data", "compose"), ("anonymise",)}
    commands |= {("match", "eval"), ("match", "rank")}
    for cmd in sorted(commands):
        result = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "240"})
        assert result.exit_code == 0, (cmd, result.output)
        assert f"Usage: root {' '.join(cmd)}" in result.output, cmd
        assert ("--overwrite" in result.output) == (cmd in writes_runs or cmd in {("demo",), ("data", "split")}), cmd
        assert ("--normalise-labels" in result.output) == (cmd in reads_labels), cmd
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "240"}).output
    for name in (
        "demo",
        "data",
        "eval",
        "fit",
        "train",
        "score",
        "cascade",
        "prefilter",
        "baseline",
        "sweep",
        "anonymise",
        "match",
        "--debug",
    ):
        assert name in top, name


def test_eval_contract_scorer_name(files):
    tmp, train, _ = files
    proc = run(
        "eval",
        "tfidf",
        "--data",
        train,
        "--text-col",
        "text",
        "--label-col",
        "label",
        "--positive",
        "hate_speech",
        "--json",
        "--n-boot",
        "100",
    )
    payload = json.loads(proc.stdout)  # exactly one JSON object on stdout
    for key in ("roc_auc", "pr_auc", "precision", "recall", "f1", "n"):
        assert key in payload
    assert 0.5 < payload["roc_auc"] <= 1.0
    assert payload["n"] == 150  # the held-out 10% test split of 1,500 rows
    assert "held-out test split" in payload["evaluated_on"]


def test_fit_then_eval_run_on_unseen_file(files):
    tmp, train, other = files
    run_dir = tmp / "run_tfidf"
    run("fit", "tfidf", "--data", train, "--positive", "hate_speech", "--out", run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["kind"] == "tfidf" and len(manifest["data"]["content_hash"]) == 64
    assert manifest["splits"]["sizes"]["test"] > 0 and "roc_auc" in manifest["metrics"]["test"]
    assert "environment" in manifest and manifest["task"]["threshold_source"].startswith("best F1")

    payload = json.loads(
        run(
            "eval",
            run_dir,
            "--data",
            other,
            "--text-col",
            "text",
            "--label-col",
            "label",
            "--positive",
            "hate_speech",
            "--json",
        ).stdout
    )
    assert payload["n"] == 500 and payload["threshold"] == pytest.approx(manifest["task"]["threshold"])
    # On its own training file, the run is evaluated on its saved test split only.
    own = json.loads(run("eval", run_dir, "--data", train, "--positive", "hate_speech", "--json").stdout)
    assert own["n"] == manifest["splits"]["sizes"]["test"]
    assert any("saved test split" in n for n in own["notes"])


def test_functional_suite_as_corner_set_and_as_eval_data(files):
    """`--corner builtin:hate_speech` is evaluated per functionality into the run; `eval --data builtin:...`
    reports it; every evaluation carries the evaded figures unless --no-evasion."""
    tmp, train, _ = files
    run_dir = tmp / "run_functional"
    run(
        "fit",
        "tfidf",
        "--data",
        train,
        "--positive",
        "hate_speech",
        "--out",
        run_dir,
        "--corner",
        "builtin:hate_speech",
    )
    manifest = json.loads((run_dir / "manifest.json").read_text())
    corner = manifest["metrics"]["corner:hate_speech"]
    assert manifest["data"]["corner_sets"]["hate_speech"]["source"] == "builtin:hate_speech"
    functional = corner["functional"]
    assert functional["n"] == corner["n"] and {"negation", "counter_speech", "evasion"} <= set(
        functional["functionalities"]
    )
    assert "evasion" in manifest["metrics"]["test"] and "examples" not in manifest["metrics"]["test"]["evasion"]
    payload = json.loads(
        run("eval", run_dir, "--data", "builtin:hate_speech", "--positive", "hate_speech", "--json").stdout
    )
    assert payload["functional"]["accuracy"] == pytest.approx(functional["accuracy"])
    assert payload["evasion"]["n"] == payload["n"]
    plain = json.loads(
        run(
            "eval", run_dir, "--data", "builtin:hate_speech", "--positive", "hate_speech", "--json", "--no-evasion"
        ).stdout
    )
    assert "evasion" not in plain and plain["roc_auc"] == pytest.approx(payload["roc_auc"])


def test_eval_side_by_side_with_report(files):
    tmp, train, _ = files
    report = tmp / "cmp.html"
    proc = run(
        "eval",
        "rules:builtin:hate_speech",
        "tfidf",
        "--data",
        train,
        "--positive",
        "hate_speech",
        "--report",
        report,
        "--json",
        "--n-boot",
        "100",
    )
    payload = json.loads(proc.stdout)
    assert set(payload["scorers"]) == {"rules:builtin:hate_speech", "tfidf"}
    assert payload["baseline"] == "rules:builtin:hate_speech"
    assert "precision" in payload["ratios"]["tfidf"]
    assert report.exists() and report.with_suffix(".json").exists()


def test_bad_input_is_a_clear_error_not_a_traceback(files):
    tmp, train, _ = files
    proc = run("eval", "tfidf", "--data", train, "--text-col", "message", "--positive", "hate_speech", check=False)
    assert proc.returncode == 2
    assert "'message'" in proc.stderr and "--text-col" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("eval", "nonsense", "--data", train, "--positive", "hate_speech", check=False)
    assert proc.returncode == 2 and "scorer name" in proc.stderr
    proc = run("eval", "tfidf", "--data", train, "--positive", "spam", check=False)
    assert proc.returncode == 2 and "spam" in proc.stderr


def test_data_commands(files, tmp_path):
    _, train, _ = files
    out = run("data", "validate", train, "--json").stdout
    assert json.loads(out)["n_accepted"] == 1500

    review = tmp_path / "review.html"
    proc = run("data", "review", train, "--out", review)
    assert "Data review" in proc.stdout and review.exists()
    assert json.loads(review.with_suffix(".json").read_text())["n"] == 1500

    corner = tmp_path / "corner.csv"
    pd.DataFrame(
        {
            "text": ["you are a n1gg@ and should go back to your country", "my f4vourite sp1ce is cumin"],
            "label": ["hate_speech", "neither"],
        }
    ).to_csv(corner, index=False)
    split_dir = tmp_path / "splits"
    proc = run("data", "split", train, "--out", split_dir, "--corner", corner)
    assert "corner-case set corner" in proc.stdout
    sizes = {name: sum(1 for _ in open(split_dir / f"{name}.jsonl")) for name in ("train", "val", "test")}
    assert sum(sizes.values()) == 1500 and 120 <= sizes["test"] <= 180
    assert (split_dir / "corner_corner.jsonl").exists() and (split_dir / "splits.json").exists()
    # Split files hold redacted text only, and load back with the list-valued label column.
    first = json.loads(open(split_dir / "train.jsonl").readline())
    assert set(first) >= {"id", "text", "labels"}
    back = run("data", "validate", split_dir / "test.jsonl", "--label-col", "labels", "--json").stdout
    assert json.loads(back)["n_accepted"] == sizes["test"]

    red = json.loads(run("data", "redact", "call me on 555 123 4567 or mail jo@example.com").stdout)
    assert red["text"] == "call me on <PHONE> or mail <EMAIL>"

    dd = run("data", "dedupe", train).stdout
    assert "near-duplicate clusters" in dd


def test_validate_reports_bad_rows(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"text": ["ok", "", "fine"], "label": ["a", "b", ""]}).to_csv(path, index=False)
    rejects = tmp_path / "rej.jsonl"
    out = run("data", "validate", path, "--rejects", rejects).stdout
    assert "1 accepted, 2 rejected" in out and "empty_text" in out and "missing_label" in out
    assert len(rejects.read_text().splitlines()) == 2


def test_demo_small(tmp_path, shared_data):
    """The whole story on a slice: every system in the table, every run saved, the report with the cascade."""
    demo = tmp_path / "demo"
    proc = run(
        "demo",
        "--out",
        demo,
        "--data-dir",
        shared_data,
        "--max-rows",
        "3000",
        "--n-boot",
        "50",
        "--finetune-steps",
        "12",
    )
    for system in (
        "legacy (rules + pre-filter)",
        "prompt baseline on a hosted LLM",
        "fine-tuned",
        "cascade",
        "to model",
        "USD/M msgs",
    ):
        assert system in proc.stdout
    for step in (
        "1. Data review",
        "2. Prompt baseline",
        "3. Legacy system",
        "4. Fine-tune",
        "5. Cascade",
        "6. Side by side",
        "7. The moderation service",
    ):
        assert step in proc.stdout
    for name in ("baseline", "prefilter", "finetuned", "cascade"):
        assert (demo / "runs" / name / "manifest.json").exists(), name
    report = (demo / "eval_report.html").read_text()
    assert "Systems side by side" in report and "Cascade thresholds and targets" in report
    assert report.count("<img") >= 3  # curves, histograms, the cascade trade-off plot
    payload = json.loads((demo / "eval_report.json").read_text())
    systems = {r["system"]: r for r in payload["systems"]}
    assert systems["fine-tuned"]["route"] == 1.0 and systems["legacy (rules + pre-filter)"]["route"] == 0.0
    assert 0.0 <= systems["cascade"]["route"] <= 1.0
    assert (
        systems["cascade"]["cost_per_million"] > 0
        and systems["prompt baseline on a hosted LLM"]["cost_per_million"] > 0
    )
    assert (demo / "data_review.html").exists()
    # Compared as a review team would: every system at the legacy queue's size and at the legacy recall.
    points = payload["operating_points"]
    assert points["reference"]["name"] == "legacy (rules + pre-filter)" and points["reference"]["flagged"] > 0
    assert set(points["systems"]) == {"prompt baseline", "fine-tuned", "cascade"}
    assert "operating point" in report and "Evasion: the same messages" in report
    assert "caught in" in proc.stdout
    assert all("evasion" in payload["scorers"][name] for name in payload["scorers"])
    # Step 7 ran the real service on the cascade and stopped it: five test messages stored once each (the retry
    # was answered from the database), the review queue used through the API, the command to start it printed.
    assert "duplicate=True" in proc.stdout and "finesieve serve" in proc.stdout and "service stopped" in proc.stdout
    with sqlite3.connect(demo / "service.db") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM messages ORDER BY id")]
        decided = db.execute("SELECT count(*) FROM review_items WHERE state = 'decided'").fetchone()[0]
    assert ids == [f"demo-{i}" for i in range(5)]
    assert decided == (1 if "review queue: took item" in proc.stdout else 0)


def test_prefilter_train_then_eval(files):
    tmp, train, other = files
    run_dir = tmp / "run_cnn"
    proc = run(
        "prefilter",
        "train",
        "--data",
        train,
        "--positive",
        "hate_speech",
        "--out",
        run_dir,
        "--set",
        "max_epochs=2",
        "--set",
        "channels=32",
    )
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["kind"] == "char_cnn" and manifest["scorer_config"]["channels"] == 32
    # The figure printed is the one the run saved, and `eval` on the training file reproduces it from the saved
    # model and split: a command that printed, saved or reloaded the wrong thing fails one of these.
    test_auc = manifest["metrics"]["test"]["roc_auc"]
    assert f"char_cnn: test ROC AUC {test_auc:.3f}," in proc.stdout
    own = json.loads(run("eval", run_dir, "--data", train, "--positive", "hate_speech", "--json").stdout)
    assert own["n"] == manifest["splits"]["sizes"]["test"] and own["roc_auc"] == pytest.approx(test_auc, abs=1e-6)
    # On an unseen file, the figure is the saved model's own ROC AUC on those rows, recomputed here.
    payload = json.loads(run("eval", run_dir, "--data", other, "--positive", "hate_speech", "--json").stdout)
    assert payload["n"] == 500 and payload["roc_auc"] == pytest.approx(_recomputed_roc_auc(run_dir, other), abs=1e-6)
    bad = run(
        "prefilter",
        "train",
        "--data",
        train,
        "--positive",
        "hate_speech",
        "--out",
        tmp / "x",
        "--set",
        "chanels=32",
        check=False,
    )
    assert bad.returncode == 2 and "chanels" in bad.stderr


def _recomputed_roc_auc(run_dir, path) -> float:
    """ROC AUC of the saved run on a file's hate_speech labels, computed without the CLI."""
    from sklearn.metrics import roc_auc_score

    from finesieve.data.load import load_dataset
    from finesieve.data.spec import ColumnSpec
    from finesieve.evals.harness import score_positive
    from finesieve.runs import load_run

    dataset = load_dataset(path, ColumnSpec())
    scores, _, _ = score_positive(load_run(run_dir).scorer, dataset.texts, ["hate_speech"])
    y = ["hate_speech" in labels for labels in dataset.frame["labels"]]
    return roc_auc_score(y, scores)


def test_baseline_embedding_zero_shot_then_compare(files):
    tmp, train, _ = files
    run_dir = tmp / "run_baseline"
    proc = run("baseline", "--data", train, "--positive", "hate_speech", "--out", run_dir)
    assert "embedding_zero_shot (zero-shot, prompt builtin:davidson)" in proc.stdout
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["kind"] == "embedding_zero_shot"
    # The baseline and a trained reference compared side by side on the same held-out split.
    fit_dir = tmp / "run_tfidf_cmp"
    run("fit", "tfidf", "--data", train, "--positive", "hate_speech", "--out", fit_dir)
    payload = json.loads(
        run("eval", run_dir, fit_dir, "--data", train, "--positive", "hate_speech", "--json", "--n-boot", "100").stdout
    )
    assert set(payload["scorers"]) == {"run_baseline", "run_tfidf_cmp"}
    assert payload["scorers"]["run_baseline"]["n"] == manifest["splits"]["sizes"]["test"]
    bad = run(
        "baseline", "--data", train, "--positive", "hate_speech", "--out", tmp / "x", "--kind", "llm", check=False
    )
    assert bad.returncode == 2 and "--model" in bad.stderr


def test_ensemble_and_distillation_end_to_end(files):
    """TF-IDF and a char-CNN stacked into an ensemble run; the ensemble as a teacher for a distilled CNN, as the
    model stage of a cascade, and scored from a file: every step a command, every run read back from disk."""
    tmp, train, other = files
    cnn_settings = ["--set", "max_epochs=1", "--set", "channels=16"]
    pos = ["--positive", "hate_speech"]
    run("prefilter", "train", "--kind", "tfidf", "--data", train, *pos, "--out", tmp / "e_tfidf")
    run("prefilter", "train", "--data", train, *pos, "--out", tmp / "e_cnn", *cnn_settings)
    proc = run("ensemble", "fit", tmp / "e_tfidf", tmp / "e_cnn", "--out", tmp / "e_ens", "--n-boot", "50")
    manifest = json.loads((tmp / "e_ens" / "manifest.json").read_text())
    assert manifest["kind"] == "ensemble" and set(manifest["ensemble"]["weights"]) == {"e_tfidf", "e_cnn"}
    assert "ensemble (e_tfidf" in proc.stdout
    own = json.loads(run("eval", tmp / "e_ens", "--data", train, *pos, "--json", "--n-boot", "50").stdout)
    assert own["roc_auc"] == pytest.approx(manifest["metrics"]["test"]["roc_auc"], abs=1e-9)

    run(
        "prefilter",
        "train",
        "--data",
        train,
        *pos,
        "--out",
        tmp / "e_student",
        *cnn_settings,
        "--teacher",
        tmp / "e_ens",
    )
    student = json.loads((tmp / "e_student" / "manifest.json").read_text())
    assert student["distillation"]["weight"] == 0.5 and student["scorer_config"]["distill_weight"] == 0.5
    bad = run("prefilter", "train", "--data", train, *pos, "--out", tmp / "x", "--distill-weight", "0.3", check=False)
    assert bad.returncode == 2 and "--teacher" in bad.stderr

    run(
        "cascade",
        "fit",
        "--data",
        train,
        "--model",
        tmp / "e_ens",
        "--prefilter",
        tmp / "e_student",
        "--out",
        tmp / "e_cascade",
        "--n-boot",
        "0",
    )
    assert json.loads((tmp / "e_cascade" / "manifest.json").read_text())["kind"] == "cascade"
    out = tmp / "e_scored.csv"
    run("score", tmp / "e_cascade", "--data", other, "--out", out, "--no-progress")
    scored = pd.read_csv(out)
    assert len(scored) == 500 and set(scored["action"]) <= {"deliver", "review", "block"}
