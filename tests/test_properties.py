"""Property-based tests (hypothesis): malformed CSV, TSV and JSONL files and hostile command-line arguments.

For every generated input and every command tried, the same promises hold:
  - no traceback: an error a user causes is a message and exit code 2, never an exception;
  - the input's bytes are unchanged;
  - rows read = rows accepted + rows rejected, and, where no quote can join lines, rows read = the file's
    data lines (blank lines included), so no row is ever dropped uncounted;
  - anything refused exits with code 2 and a message naming the file or the flag.

Examples are bounded (and derandomised, so CI sees the same ones every run): FINESIEVE_HYPOTHESIS_EXAMPLES
raises the count for a deeper local search.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from finesieve.cli import app

EXAMPLES = int(os.environ.get("FINESIEVE_HYPOTHESIS_EXAMPLES", "30"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
runner = CliRunner()

# Characters people and broken exports put in messages: separators, quotes, tabs, invisible and bidi marks,
# look-alikes, emoji, accents. No bare carriage return: it is a line end of its own.
HOSTILE = st.sampled_from(list(",\"'\t;|\\ abcxyzSPAMham0129\u200b\u200e\u202e\ufeff\u00a0é漢🙂аӏ<>&%#"))
TEXT = st.text(HOSTILE, min_size=0, max_size=24)
LABEL = st.sampled_from(["spam", "ham", "spam", "ham", "Spam", " ham ", "", "sp,am", 'h"am', "spma", "ham\tx"])


@st.composite
def delimited_file(draw):
    """(bytes, separator, the number of data records the file holds when no quote joins lines)."""
    sep = draw(st.sampled_from([",", "\t"]))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    pieces = [f"text{sep}label"]
    kinds = draw(
        st.lists(st.sampled_from(["good", "good", "raw", "blank", "multiline", "bytes"]), min_size=1, max_size=25)
    )
    for kind in kinds:
        if kind == "blank":
            pieces.append("")
        elif kind == "raw":  # a hand-typed line: stray quotes, extra or missing separators
            pieces.append(draw(TEXT).replace("\n", " "))
        elif kind == "bytes":
            pieces.append("\udcff\udcfe" + draw(TEXT).replace("\n", " "))  # undecodable bytes, via surrogateescape
        else:
            text = draw(TEXT)
            if kind == "multiline":
                text = text + "\n" + draw(TEXT)
            buf = io.StringIO()
            csv.writer(buf, delimiter=sep, lineterminator="").writerow([text, draw(LABEL)])
            pieces.append(buf.getvalue())
    body = eol.join(pieces) + (eol if draw(st.booleans()) else "")
    return body.encode("utf-8", "surrogateescape"), sep


def data_lines(raw: bytes) -> int:
    """Physical lines after the header; a final line end does not open a line."""
    text = raw.decode("utf-8", "surrogateescape").replace("\r\n", "\n")
    lines = text.split("\n")
    if text.endswith("\n"):
        lines = lines[:-1]
    return len(lines) - 1


def invoke(args):
    result = runner.invoke(app, [str(a) for a in args])
    # Nothing a user types may escape as an exception: that is the traceback a user would see.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        repr(result.exception),
        result.output,
    )
    return result


def assert_refusal_is_clear(result, names):
    """Exit code 2 names what was refused: one of the files or flags involved."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert any(str(n) in result.output for n in names), (names, result.output)


@pytest.fixture(scope="module")
def tfidf_run(tmp_path_factory, sms_csv):
    """A small real run to score with."""
    run = tmp_path_factory.mktemp("prop") / "run"
    result = invoke(["fit", "tfidf", "--data", sms_csv, "--max-rows", "600", "--positive", "spam", "--out", run])
    assert result.exit_code == 0, result.output
    return run


@PROPERTY
@given(case=delimited_file(), normalise=st.booleans())
def test_validate_counts_every_row_and_keeps_the_input(case, normalise, tmp_path_factory):
    raw, sep = case
    folder = tmp_path_factory.mktemp("v")
    path = folder / ("in.tsv" if sep == "\t" else "in.csv")
    path.write_bytes(raw)
    rejects = folder / "rejects.jsonl"
    args = ["data", "validate", path, "--json", "--rejects", rejects] + (["--normalise-labels"] if normalise else [])
    result = invoke(args)
    assert path.read_bytes() == raw
    if result.exit_code == 2:
        assert_refusal_is_clear(result, [path])
        return
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    assert report["n_rows"] == report["n_accepted"] + report["n_rejected"]
    assert report["n_rows"] <= data_lines(raw)
    if b'"' not in raw:  # nothing can join two lines into one record
        assert report["n_rows"] == data_lines(raw)
    assert len(rejects.read_text(encoding="utf-8").splitlines()) == report["n_rejected"]


@st.composite
def jsonl_file(draw):
    lines = []
    for kind in draw(
        st.lists(st.sampled_from(["good", "good", "blank", "garbage", "array", "nontext"]), min_size=1, max_size=20)
    ):
        if kind == "good":
            lines.append(json.dumps({"text": draw(TEXT), "label": draw(LABEL)}, ensure_ascii=draw(st.booleans())))
        elif kind == "blank":
            lines.append(draw(st.sampled_from(["", "   ", "\t"])))
        elif kind == "garbage":
            lines.append(draw(TEXT).replace("\n", " ") + "{")
        elif kind == "array":
            lines.append(json.dumps([draw(TEXT), draw(LABEL)]))
        else:
            lines.append(json.dumps({"text": draw(st.sampled_from([None, 3, [1], {"a": 1}, True])), "label": "spam"}))
    return ("\n".join(lines) + "\n").encode("utf-8")


@PROPERTY
@given(raw=jsonl_file())
def test_validate_jsonl_counts_every_line(raw, tmp_path_factory):
    path = tmp_path_factory.mktemp("j") / "in.jsonl"
    path.write_bytes(raw)
    result = invoke(["data", "validate", path, "--json"])
    assert path.read_bytes() == raw
    if result.exit_code == 2:
        assert_refusal_is_clear(result, [path])
        return
    report = json.loads(result.stdout)
    assert report["n_rows"] == report["n_accepted"] + report["n_rejected"] == raw.count(b"\n")


@PROPERTY
@given(case=delimited_file())
def test_score_writes_one_row_per_accepted_message_with_the_files_row_numbers(case, tfidf_run, tmp_path_factory):
    raw, sep = case
    folder = tmp_path_factory.mktemp("s")
    path = folder / ("in.tsv" if sep == "\t" else "in.csv")
    path.write_bytes(raw)
    out = folder / "out.jsonl"
    result = invoke(
        ["score", tfidf_run, "--data", path, "--out", out, "--json", "--no-progress", "--rejects", folder / "rej.jsonl"]
    )
    assert path.read_bytes() == raw
    if result.exit_code == 2:
        assert_refusal_is_clear(result, [path])
        return
    summary = json.loads(result.stdout)
    assert summary["n_rows"] == summary["n_scored"] + summary["n_rejected"]
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(written) == summary["n_scored"]
    rows = [w["row"] for w in written]
    assert rows == sorted(rows) and len(set(rows)) == len(rows)
    if b'"' not in raw:
        assert summary["n_rows"] == data_lines(raw)
        assert all(1 <= r <= data_lines(raw) for r in rows)
    assert not [p for p in folder.iterdir() if p.name.endswith(".partial")]


# Flags that take a number, per command, with what else the command needs to run.
NUMERIC = [
    (["data", "review", "{data}", "--out", "{tmp}/r.html", "--no-noise-check"], ["--max-rows", "--seed"]),
    (["data", "dedupe", "{data}"], ["--threshold", "--show", "--max-rows"]),
    (["data", "split", "{data}", "--out", "{tmp}/split"], ["--test-frac", "--val-frac", "--seed"]),
    (
        ["eval", "tfidf", "--data", "{data}", "--positive", "spam"],
        ["--threshold", "--n-boot", "--target-precision", "--target-recall", "--miss-cost", "--false-alarm-cost"],
    ),
    (["score", "{run}", "--data", "{data}", "--out", "{tmp}/o.csv", "--no-progress"], ["--chunk-rows"]),
    (
        ["cascade", "fit", "--data", "{data}", "--model", "{run}", "--out", "{tmp}/c"],
        ["--budget", "--recall-floor", "--review-precision", "--block-precision", "--n-boot"],
    ),
    (
        ["train", "--data", "{data}", "--out", "{tmp}/t"],
        ["--learning-rate", "--batch-size", "--max-epochs", "--max-steps", "--soft-labels", "--replay-fraction"],
    ),
]
NUMBERS = st.sampled_from(
    [
        "-1",
        "0",
        "-0",
        "1.5",
        "2",
        "1e309",
        "-1e309",
        "nan",
        "inf",
        "abc",
        "",
        "3.7e-400",
        "99999999999999999999",
        "0x10",
    ]
)


@PROPERTY
@given(case=st.sampled_from(NUMERIC), pick=st.data())
def test_hostile_numbers_are_refused_with_the_flag_named(case, pick, tfidf_run, sms_csv, tmp_path_factory):
    """Out-of-range numbers are refused naming the flag; a value that is accepted never crashes. (The commands
    are cut short: a number that passes the checks meets --max-rows 300 on the data, or a missing model.)"""
    command, flags = case
    flag = pick.draw(st.sampled_from(flags))
    value = pick.draw(NUMBERS)
    tmp = tmp_path_factory.mktemp("n")
    data = tmp / "d.csv"
    data.write_bytes(sms_csv.read_bytes()[:40_000].rsplit(b"\n", 1)[0] + b"\n")
    before = data.read_bytes()
    args = [a.format(data=data, tmp=tmp, run=tfidf_run) for a in command] + [flag, value]
    # Stop points for numbers that pass the checks: QLoRA refuses a CPU, the cascade a run of the wrong kind.
    stops = {"train": ["GPU", "--vote-col"], "cascade": [str(tfidf_run), "splits"]}.get(command[0], [])
    if command[0] == "train":
        args += ["--method", "qlora", "--max-rows", "200"]
    result = invoke(args)
    assert data.read_bytes() == before
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code == 2:
        assert "Traceback" not in result.output
        assert any(s in result.output for s in [flag, *stops]), (args, result.output)


@settings(PROPERTY, max_examples=max(5, EXAMPLES // 3))  # each example trains a small pre-filter
@given(
    key=st.text(st.sampled_from(list("abcdefghilmnoprstuwx_")), min_size=1, max_size=14),
    value=st.sampled_from(["1", "-1", "0", "x", "[1, 2]", "{a: 1}", "", "null", "1e9", "true"]),
    kind=st.sampled_from(["char_cnn", "tfidf"]),
)
def test_hostile_settings_are_refused_with_the_setting_named(key, value, kind, sms_csv, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("set")
    result = invoke(
        [
            "prefilter",
            "train",
            "--kind",
            kind,
            "--data",
            sms_csv,
            "--max-rows",
            "300",
            "--positive",
            "spam",
            "--out",
            tmp / "run",
            "--set",
            f"{key}={value}",
            "--set",
            "max_epochs=1",
            "--set",
            "channels=4",
        ]
        if kind == "char_cnn"
        else [
            "prefilter",
            "train",
            "--kind",
            kind,
            "--data",
            sms_csv,
            "--max-rows",
            "300",
            "--positive",
            "spam",
            "--out",
            tmp / "run",
            "--set",
            f"{key}={value}",
        ]
    )
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        assert "Traceback" not in result.output
        assert key in result.output or "--set" in result.output, result.output
    else:
        assert (tmp / "run" / "manifest.json").exists()


@PROPERTY
@given(
    role=st.sampled_from(["same", "folder", "under-file", "missing-input", "input-as-folder"]),
    command=st.sampled_from(["redact", "review", "eval", "validate", "score", "fit", "split"]),
)
def test_hostile_paths_never_destroy_an_input(role, command, tfidf_run, sms_csv, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("p")
    data = tmp / "d.csv"
    data.write_bytes(sms_csv.read_bytes()[:20_000].rsplit(b"\n", 1)[0] + b"\n")
    before = data.read_bytes()
    (tmp / "afile").write_text("keep me")
    out = {
        "same": data,
        "folder": tmp,
        "under-file": tmp / "afile" / "x.csv",
        "missing-input": tmp / "new.csv",
        "input-as-folder": tmp / "new2.csv",
    }[role]
    inp = {"missing-input": tmp / "nope.csv", "input-as-folder": tmp}.get(role, data)
    args = {
        "redact": ["data", "redact", "--file", inp, "--out", out],
        "review": ["data", "review", inp, "--out", out, "--no-noise-check"],
        "eval": ["eval", "tfidf", "--data", inp, "--positive", "spam", "--report", out, "--n-boot", "0"],
        "validate": ["data", "validate", inp, "--rejects", out],
        "score": ["score", tfidf_run, "--data", inp, "--out", out, "--no-progress"],
        "fit": ["fit", "tfidf", "--data", inp, "--positive", "spam", "--out", out],
        "split": ["data", "split", inp, "--out", out],
    }[command]
    result = invoke(args)
    assert data.read_bytes() == before and (tmp / "afile").read_text() == "keep me"
    # Every one of these is a mistake: it must be refused, naming the path or the flag.
    assert_refusal_is_clear(result, [Path(out).name, Path(inp).name, "--out", "--report", "--rejects", "--file"])
