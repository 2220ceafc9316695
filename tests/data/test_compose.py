"""Structured records written as text (data.compose), on the synthetic screening set: the leak it carries is
refused, and the composed file goes through `finesieve fit` like any message file."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from finesieve.cli import app
from finesieve.data.compose import compose_file, compose_text, leaky_fields

FIELDS = ["Skills", "Experience (Years)", "Education", "Certifications", "Job Role", "Projects Count"]
LABEL = "Recruiter Decision"


@pytest.fixture(scope="module")
def screening_csv(resumes_dir):
    return resumes_dir / "ai_resume_screening_synthetic.csv"


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def test_fields_become_lines_in_order_and_empty_ones_are_left_out():
    record = {"Skills": " Python, SQL ", "Certifications": "", "Education": "B.Sc", "Projects Count": 3}
    assert compose_text(record, ["Education", "Skills", "Certifications", "Projects Count", "Absent"]) == (
        "Education: B.Sc\nSkills: Python, SQL\nProjects Count: 3"
    )


def test_the_score_that_decided_the_label_is_found_and_refused(screening_csv, tmp_path):
    frame = pd.read_csv(screening_csv, dtype=str, keep_default_na=False)
    leaks = leaky_fields(frame, [*FIELDS, "AI Score (0-100)"], LABEL)
    assert list(leaks) == ["AI Score (0-100)"] and leaks["AI Score (0-100)"] == 1.0  # the decision is score >= 65
    out = tmp_path / "composed.csv"
    with pytest.raises(Exception, match="AI Score"):
        compose_file(screening_csv, out, [*FIELDS, "AI Score (0-100)"], keep=["Resume_ID"], label_col=LABEL)
    assert not out.exists()  # nothing half-written
    allowed = compose_file(
        screening_csv, out, [*FIELDS, "AI Score (0-100)"], label_col=LABEL, allow_leaky=["AI Score (0-100)"]
    )
    assert allowed.rows == 1000 and "AI Score (0-100): " in out.read_text()


def test_compose_then_fit_from_the_command_line(screening_csv, tmp_path):
    composed = tmp_path / "screening_text.csv"
    before = screening_csv.read_bytes()
    args = ["data", "compose", "--data", screening_csv, "--out", composed, "--keep", "Resume_ID"]
    result = invoke(*args, *[x for f in FIELDS for x in ("--field", f)], "--label-col", LABEL)
    assert result.exit_code == 0, result.output
    assert "1000 row(s) written" in result.output and screening_csv.read_bytes() == before
    frame = pd.read_csv(composed, dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["Resume_ID", LABEL, "text"]
    assert not frame["text"].str.contains("Ashley Ali|AI Score").any()  # neither the name nor the leak
    first = frame.iloc[0]
    assert first["Resume_ID"] == "1" and first["text"].startswith("Skills: TensorFlow, NLP, Pytorch\n")

    run = tmp_path / "run"
    fit = ["fit", "tfidf", "--data", composed, "--label-col", LABEL, "--id-col", "Resume_ID", "--positive", "Reject"]
    result = invoke(*fit, "--out", run)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "manifest.json").read_text())["metrics"]["test"]
    assert 0.5 < metrics["roc_auc"] <= 1.0  # learnt something from the fields alone (a synthetic set: no claim)


def test_bad_requests_are_clear_errors(screening_csv, tmp_path):
    out = tmp_path / "x.csv"
    result = invoke("data", "compose", "--data", screening_csv, "--out", screening_csv, "--field", "Skills")
    assert result.exit_code == 2 and "--out" in result.output  # never over the input
    result = invoke("data", "compose", "--data", screening_csv, "--out", out, "--field", "Skils")
    assert result.exit_code == 2 and "did you mean 'Skills'" in result.output
    result = invoke("data", "compose", "--data", screening_csv, "--out", out, "--field", "Skills", "--keep", "Skills")
    assert result.exit_code == 2 and "both a --field and kept" in result.output
