"""`finesieve train` and `finesieve eval RUN` end to end through the real command line (tiny model)."""

import json
import subprocess
import sys

import pandas as pd


def cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "finesieve.cli", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_train_then_eval_on_unseen_file(tmp_path, sms_csv, tiny_bert):
    df = pd.read_csv(sms_csv, dtype=str, keep_default_na=False).sample(900, random_state=1)
    train, other = tmp_path / "train.csv", tmp_path / "other.csv"
    df.iloc[:600].to_csv(train, index=False)
    df.iloc[600:].to_csv(other, index=False)
    run = tmp_path / "run"
    proc = cli(
        "train",
        "--data",
        train,
        "--text-col",
        "text",
        "--label-col",
        "label",
        "--positive",
        "spam",
        "--out",
        run,
        "--model",
        tiny_bert,
        "--max-epochs",
        "1",
        "--tracking-uri",
        "none",
        "--set",
        "learning_rate=0.001",
        "--set",
        "eval_every=5",
    )
    assert "test ROC AUC" in proc.stdout and (run / "manifest.json").exists()
    payload = json.loads(
        cli(
            "eval", run, "--data", other, "--text-col", "text", "--label-col", "label", "--positive", "spam", "--json"
        ).stdout
    )
    assert payload["n"] == 300 and 0.5 < payload["roc_auc"] <= 1.0
    # Checkpoints live in the staging folder RUN.partial while training; a finished run carries none.
    assert not (run / "checkpoints").exists() and not (tmp_path / "run.partial").exists()
    # A second train into the finished run is refused before any work, and the run is untouched.
    before = (run / "manifest.json").read_bytes()
    again = cli("train", "--data", train, "--positive", "spam", "--out", run, "--model", tiny_bert, check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert (run / "manifest.json").read_bytes() == before


def test_train_bad_setting_is_a_clear_error(tmp_path, sms_csv):
    proc = cli("train", "--data", sms_csv, "--out", tmp_path / "r", "--set", "lora_rank=4", check=False)
    assert proc.returncode == 2 and "did you mean lora_r" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli(
        "train", "--data", sms_csv, "--out", tmp_path / "r", "--method", "qlora", "--max-rows", "200", check=False
    )
    assert proc.returncode == 2 and "GPU" in proc.stderr


def test_sweep_judges_on_validation(tmp_path, sms_csv, tiny_bert):
    proc = cli(
        "sweep",
        "--data",
        sms_csv,
        "--max-rows",
        "400",
        "--positive",
        "spam",
        "--out",
        tmp_path / "sw",
        "--learning-rate",
        "1e-4,1e-3",
        "--batch-size",
        "32",
        "--max-steps",
        "6",
        "--set",
        f"model={tiny_bert}",
        "--set",
        "eval_every=3",
    )
    trials = json.loads((tmp_path / "sw" / "sweep.json").read_text())["trials"]
    assert sorted(t["learning_rate"] for t in trials) == [1e-4, 1e-3]
    assert all(0 <= t["val_pr_auc"] <= 1 and t["steps"] == 6 for t in trials)
    for t in trials:  # an interval around each figure, and the same validation messages evaded
        lo, hi = t["val_pr_auc_ci95"]
        assert lo <= t["val_pr_auc"] <= hi and 0 <= t["val_evaded_roc_auc"] <= 1
    assert "validation split" in proc.stdout


def test_sweep_over_any_setting_with_grid(tmp_path, sms_csv, tiny_bert):
    args = ["sweep", "--data", sms_csv, "--max-rows", "300", "--positive", "spam", "--out", tmp_path / "sw"]
    args += ["--max-steps", "3", "--set", f"model={tiny_bert}", "--set", "eval_every=3"]
    cli(*args, "--grid", "method=lora,full", "--grid", "deobfuscate=true,false")
    trials = json.loads((tmp_path / "sw" / "sweep.json").read_text())["trials"]
    assert sorted((t["method"], t["deobfuscate"]) for t in trials) == [
        ("full", False),
        ("full", True),
        ("lora", False),
        ("lora", True),
    ]
    assert all("learning_rate" not in t for t in trials)  # only the axes asked for

    def refused(*grid: str) -> str:
        proc = cli(*args, *grid, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        return " ".join(proc.stderr.replace("│", " ").split())  # the message as one line, out of its box

    assert "did you mean lora_r" in refused("--grid", "lora_rank=4,8")
    assert "method=huge" in refused("--grid", "method=lora,huge")


def test_an_interrupted_sweep_continues_and_a_different_one_is_refused(tmp_path, sms_csv, tiny_bert):
    args = ["sweep", "--data", sms_csv, "--max-rows", "300", "--positive", "spam", "--out", tmp_path / "sw"]
    args += ["--max-steps", "3", "--set", f"model={tiny_bert}", "--set", "eval_every=3"]
    cli(*args, "--grid", "method=lora")  # stands for a search stopped after its first trial
    path = tmp_path / "sw" / "sweep.json"
    first = json.loads(path.read_text())["trials"]
    proc = cli(*args, "--grid", "method=lora,full")
    trials = json.loads(path.read_text())["trials"]
    assert "resuming" in proc.stdout and "1 trial(s) already done" in proc.stdout
    assert [t["method"] for t in trials] == ["lora", "full"] and trials[0] == first[0]  # kept as it was, not re-run

    before = path.read_bytes()
    for other in (["--max-steps", "4"], ["--seed", "1"], ["--grid", "learning_rate=1e-4"]):
        proc = cli(*args, "--grid", "method=lora,full", *other, check=False)
        message = " ".join(proc.stderr.replace("│", " ").split())
        assert proc.returncode == 2 and "holds another sweep" in message and "Traceback" not in proc.stderr, other
    assert "max_steps" in " ".join(cli(*args, "--max-steps", "4", check=False).stderr.split())
    assert path.read_bytes() == before  # the finished trials are never overwritten by another search


def test_train_on_annotator_votes(tmp_path, davidson_slice, tiny_bert):
    data = tmp_path / "votes.csv"
    davidson_slice.iloc[:500].to_csv(data, index=False)
    votes = [
        "--vote-col",
        "hate_speech=hate_speech",
        "--vote-col",
        "offensive=offensive_language",
        "--vote-col",
        "neither=neither",
    ]
    run = tmp_path / "run"
    cli(
        "train",
        "--data",
        data,
        "--positive",
        "hate_speech",
        "--out",
        run,
        "--model",
        tiny_bert,
        *votes,
        "--soft-labels",
        "0.5",
        "--max-steps",
        "4",
        "--tracking-uri",
        "none",
        "--set",
        "eval_every=2",
    )
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["scorer_config"]["soft_labels"] == 0.5
    assert manifest["data"]["column_spec"]["vote_cols"]["offensive"] == "offensive_language"
    assert manifest["training"]["soft_label_rows"] == manifest["training"]["n_train"] > 0
    assert len(manifest["data"]["votes_hash"]) == 64
    proc = cli("train", "--data", data, "--out", tmp_path / "r2", "--vote-col", "hate_speech", check=False)
    assert proc.returncode == 2 and "CLASS=COLUMN" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli(
        "train",
        "--data",
        data,
        "--out",
        tmp_path / "r3",
        "--soft-labels",
        "0.5",
        "--max-rows",
        "200",
        "--positive",
        "hate_speech",
        "--model",
        tiny_bert,
        "--tracking-uri",
        "none",
        check=False,
    )
    assert proc.returncode == 2 and "--vote-col" in proc.stderr and "Traceback" not in proc.stderr
