"""Batch scoring (`finesieve score`) on real SMS spam data, with a small fitted TF-IDF cascade.

The cascade (spam rules -> small TF-IDF pre-filter -> TF-IDF model) is fitted on the first 600 rows of the SMS
file and scores rows it was not fitted on. Its thresholds are set so that every stage decides some messages
and every action occurs, so the per-stage columns are checked where they are empty and where they are not.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from finesieve.cli import app
from finesieve.data.errors import ConfigError, DataError
from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.models.base import positive_scores
from finesieve.models.cascade import ACTIONS, Cascade
from finesieve.outputs import partial_path
from finesieve.runs import save_run
from finesieve.serve.batch import COLUMNS, progress_path, score_file

FIT_ROWS = 600  # the stages of tests/serve/conftest.py are fitted on the first 600 rows
TASK = {"classes": ["ham", "spam"], "multilabel": False, "positive": ["spam"]}
SCORE_SPEC = ColumnSpec(text_col="text", id_col="msg_id")


@pytest.fixture(scope="module")
def sms(sms_csv) -> pd.DataFrame:
    """The SMS file as read (columns label, text, flagged), with a unique message id per row."""
    df = pd.read_csv(sms_csv, dtype=str, keep_default_na=False)
    return df.assign(msg_id=[f"sms-{i}" for i in range(len(df))])


# The fitted stages, the cascade and its runs are the service tests' (tests/serve/conftest.py), fitted once.
@pytest.fixture(scope="module")
def stages(service_stages):
    return service_stages


@pytest.fixture(scope="module")
def cascade(service_cascade) -> Cascade:
    return service_cascade


@pytest.fixture(scope="module")
def cascade_run(service_cascade_run):
    return service_cascade_run


@pytest.fixture(scope="module")
def tfidf_run(service_tfidf_run):
    return service_tfidf_run


@pytest.fixture(scope="module")
def rules_run(tmp_path_factory, stages):
    """The spam rules alone, as a single-scorer run: the cheapest scorer per message."""
    return save_run(
        tmp_path_factory.mktemp("runs") / "rules",
        stages[2],
        kind="rules",
        task={**TASK, "threshold": 0.5},
        data={},
        metrics={},
    )


@pytest.fixture(scope="module")
def unseen(sms) -> pd.DataFrame:
    """1,000 rows the stages were not fitted on."""
    return sms.iloc[FIT_ROWS : FIT_ROWS + 1000].reset_index(drop=True)


def read_csv_out(path) -> pd.DataFrame:
    out = pd.read_csv(path, dtype={"id": str, "category": str, "rules_fired": str})
    return out.fillna({"category": "", "rules_fired": ""})


def test_cascade_run_matches_in_memory_decisions(cascade_run, cascade, unseen, tmp_path):
    # A labelled file: scoring ignores the label, and load_dataset gives the texts exactly as training saw them.
    data = tmp_path / "unseen.csv"
    unseen[["msg_id", "text", "label"]].to_csv(data, index=False)
    summary = score_file(cascade_run, data, tmp_path / "decisions.csv", spec=SCORE_SPEC, chunk_rows=300, progress=False)
    out = read_csv_out(tmp_path / "decisions.csv")

    assert list(out.columns) == COLUMNS
    assert summary.n_rows == summary.n_scored == len(out) == len(unseen) and summary.n_rejected == 0
    assert out["id"].tolist() == unseen["msg_id"].tolist() and out["row"].tolist() == list(range(1, len(unseen) + 1))
    assert set(out["action"]) == set(ACTIONS) and set(out["decided_by"]) == {"rules", "prefilter", "model"}
    assert dict(summary.actions) == out["action"].value_counts().to_dict()
    assert dict(summary.decided_by) == out["decided_by"].value_counts().to_dict()

    # Each stage's score is empty exactly where the stage did not run: rules run on every message, the
    # pre-filter on what no rule decided, the model on what the pre-filter escalated.
    by = out["decided_by"]
    assert out["score_rules"].notna().all()
    assert (out["score_prefilter"].isna() == (by == "rules")).all()
    assert (out["score_model"].isna() == by.isin(["rules", "prefilter"])).all()
    for stage in ("rules", "prefilter", "model"):
        np.testing.assert_allclose(out.loc[by == stage, "score"], out.loc[by == stage, f"score_{stage}"])
    assert (out.loc[by == "prefilter", "score_prefilter"] < cascade.thresholds.escalate).all()
    assert (out.loc[out["action"] == "deliver", "category"] == "").all()
    assert (out.loc[out["action"] != "deliver", "category"] == "spam").all()

    ds = load_dataset(data, ColumnSpec(text_col="text", label_cols=("label",), id_col="msg_id"))
    assert (ds.frame["text"] != ds.frame["text_raw"]).sum() > 10  # redaction changed texts: it must match
    expected = cascade.decide(ds.texts)
    assert out["action"].tolist() == expected.action.tolist()
    assert out["category"].tolist() == expected.category.tolist()
    assert out["decided_by"].tolist() == expected.decided_by.tolist()
    assert out["rules_fired"].tolist() == ["|".join(f) for f in expected.rules_fired]
    np.testing.assert_allclose(
        out["score"], positive_scores(expected.proba, cascade.classes_, ["spam"], False), rtol=1e-12
    )
    for stage, scores in expected.stage_scores.items():
        np.testing.assert_allclose(out[f"score_{stage}"], scores, rtol=1e-12)  # NaN where NaN


def test_single_scorer_run_reviews_at_its_threshold(tfidf_run, stages, unseen, tmp_path):
    data = tmp_path / "unlabelled.csv"
    unseen[["msg_id", "text"]].to_csv(data, index=False)
    summary = score_file(tfidf_run, data, tmp_path / "out.csv", spec=SCORE_SPEC, progress=False)
    out = read_csv_out(tmp_path / "out.csv")

    assert summary.n_scored == len(out) == len(unseen)
    assert (out["decided_by"] == "model").all()
    assert out["score_rules"].isna().all() and out["score_prefilter"].isna().all()
    np.testing.assert_allclose(out["score"], out["score_model"])
    assert out["action"].tolist() == np.where(out["score"] >= 0.3, "review", "deliver").tolist()
    assert 0 < summary.actions["review"] < len(out) and summary.actions["block"] == 0


def test_run_without_threshold_is_refused(stages, unseen, tmp_path):
    run = save_run(
        tmp_path / "bare",
        stages[1],
        kind="tfidf",
        task={"classes": ["ham", "spam"], "positive": ["spam"]},
        data={},
        metrics={},
    )
    data = tmp_path / "in.csv"
    unseen[["text"]].head(5).to_csv(data, index=False)
    with pytest.raises(ConfigError, match="no positive class or threshold"):
        score_file(run, data, tmp_path / "out.csv", spec=ColumnSpec(), progress=False)


def test_bad_rows_are_rejected_counted_and_the_rest_scored(cascade_run, unseen, tmp_path):
    good = unseen.head(20)
    lines = [b"msg_id,text"]
    lines += [f'{i},"{t}"'.encode() for i, t in zip(good["msg_id"], good["text"].str.replace('"', '""'))]
    lines[6:6] = [b'bad-1,""', b'bad-2,"   "', b'bad-3,"caf\xe9 special offer"', b',"a message without an id"']
    data = tmp_path / "mixed.csv"
    data.write_bytes(b"\n".join(lines) + b"\n")

    summary = score_file(
        cascade_run,
        data,
        tmp_path / "out.csv",
        spec=SCORE_SPEC,
        chunk_rows=7,
        rejects_path=tmp_path / "rejects.jsonl",
        progress=False,
    )
    out = read_csv_out(tmp_path / "out.csv")

    assert summary.n_rows == 24 and summary.n_scored == 20
    assert dict(summary.rejected) == {"empty_text": 2, "bad_encoding": 1, "missing_id": 1}
    assert out["id"].tolist() == good["msg_id"].tolist()
    assert set(out["action"]) <= set(ACTIONS)
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rejects] == [6, 7, 8, 9]
    assert [r["problems"][0]["problem"] for r in rejects] == ["empty_text", "empty_text", "bad_encoding", "missing_id"]
    assert all("_finesieve_no_label" not in r for r in rejects)


def test_jsonl_in_and_out_with_redacted_text(cascade_run, tmp_path):
    records = [
        {"id": "m1", "text": "URGENT! You have won a £2000 prize. Call 09066358361 now to claim"},
        {"id": "m2", "text": "Are we still on for lunch tomorrow?"},
        {"id": "m3", "text": 12345},
        {"id": "m4", "text": "Free entry: txt WIN to 87121, or mail john.doe@example.com"},
    ]
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join([json.dumps(r) for r in records] + ["{not json"]) + "\n")

    summary = score_file(
        cascade_run, data, tmp_path / "out.jsonl", spec=ColumnSpec(id_col="id"), include_text=True, progress=False
    )
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]

    assert dict(summary.rejected) == {"non_text": 1, "malformed_record": 1}
    assert [r["id"] for r in rows] == ["m1", "m2", "m4"] and list(rows[0]) == COLUMNS + ["text"]
    first = rows[0]
    assert first["decided_by"] == "rules" and first["action"] == "block"  # the prize rule blocks
    assert first["score_prefilter"] is None and first["score_model"] is None
    assert "<PHONE>" in first["text"] and "09066358361" not in first["text"]
    assert "<EMAIL>" in rows[2]["text"] and "john.doe" not in rows[2]["text"]
    assert json.loads(json.dumps(summary.to_dict())) == summary.to_dict()


def test_bad_arguments_are_refused_before_any_file_is_written(cascade_run, tmp_path):
    data = tmp_path / "in.csv"
    data.write_text("body\nhello there\n")
    with pytest.raises(ConfigError, match=r"\.csv.*\.jsonl"):
        score_file(cascade_run, data, tmp_path / "out.xlsx", spec=ColumnSpec(text_col="body"), progress=False)
    with pytest.raises(ConfigError, match="is the input --data"):
        score_file(cascade_run, data, data, spec=ColumnSpec(text_col="body"), progress=False)
    with pytest.raises(DataError, match="'text' not found"):
        score_file(cascade_run, data, tmp_path / "out.csv", spec=ColumnSpec(), progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["in.csv"] and data.read_text() == "body\nhello there\n"


def test_file_too_large_to_load_is_scored_in_constant_memory(rules_run, sms, tmp_path, monkeypatch):
    # tracemalloc slows every allocation about five-fold, so this test keeps per-message work small: short
    # texts and the rules run. What it measures is the streaming (one chunk held at a time), not the scorer.
    short = sms[sms["text"].str.len() <= 40]

    def write(n: int, path):
        rows = short.sample(n=n, replace=True, random_state=n)[["text", "label"]]
        rows.insert(0, "msg_id", [f"m{i:06d}" for i in range(n)])
        rows.to_csv(path, index=False)
        return path

    small, big = write(2_000, tmp_path / "small.csv"), write(60_000, tmp_path / "big.csv")
    monkeypatch.setattr("finesieve.data.load._memory_available", lambda: big.stat().st_size * 2)
    with pytest.raises(DataError, match="too large to load"):
        load_dataset(big, ColumnSpec(text_col="text", label_cols=("label",)))

    def score(path):
        return score_file(
            rules_run, path, path.with_suffix(".out.csv"), spec=SCORE_SPEC, chunk_rows=2_000, progress=False
        )

    def peak_while_scoring(path):
        tracemalloc.start()
        try:
            return score(path), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    score(small)  # a first pass imports whatever scoring imports lazily, which must not count in the peak
    summary_small, peak_small = peak_while_scoring(small)  # exactly one chunk
    summary_big, peak_big = peak_while_scoring(big)  # thirty chunks
    assert summary_small.n_scored == 2_000 and summary_big.n_scored == 60_000
    out = pd.read_csv(big.with_suffix(".out.csv"), usecols=["id"], dtype=str)
    assert len(out) == 60_000 and out["id"].is_unique

    # Holding results would grow the peak with the file (30x the rows); streaming keeps it at one chunk's.
    assert peak_big < 1.5 * peak_small, (peak_small, peak_big)
    rows = pd.read_csv(big, dtype=str)
    held = sum(sys.getsizeof(t) + sys.getsizeof(i) for t, i in zip(rows["text"], rows["msg_id"]))
    assert peak_big < held / 2, (peak_big, held)  # held: the bare id and text objects of every row, nothing else


def test_cli_scores_a_file_without_labels(cascade_run, unseen, tmp_path):
    data = tmp_path / "messages.csv"
    unseen[["msg_id", "text"]].head(200).to_csv(data, index=False)
    runner = CliRunner()

    result = runner.invoke(
        app,
        [
            "score",
            str(cascade_run),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "out.csv"),
            "--id-col",
            "msg_id",
            "--chunk-rows",
            "50",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # the progress bar goes to stderr; stdout is the JSON alone
    assert payload["n_scored"] == 200 and sum(payload["actions"].values()) == 200
    assert len(read_csv_out(tmp_path / "out.csv")) == 200

    result = runner.invoke(
        app,
        [
            "score",
            str(cascade_run),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o.jsonl"),
            "--id-col",
            "msg_id",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("scored 200 of 200 rows") and str(tmp_path / "o.jsonl") in result.stdout

    result = runner.invoke(app, ["score", str(cascade_run), "--data", str(data), "--out", str(tmp_path / "o.txt")])
    assert result.exit_code == 2 and ".jsonl" in result.output


# --- Resuming an interrupted job (`finesieve score --resume`) ---------------------------------------------------

JOB_CHUNK = 50  # 600 rows: 12 chunks


@pytest.fixture(scope="module")
def job_rows(unseen) -> pd.DataFrame:
    """600 unseen rows, a few of them bad (empty text, missing id) so that the rejects file fills chunk by chunk."""
    rows = unseen.head(600)[["msg_id", "text"]].copy()
    rows.loc[rows.index[5::97], "text"] = ""
    rows.loc[rows.index[40::151], "msg_id"] = ""
    return rows


def job_data(job_rows, folder):
    path = folder / "messages.csv"
    job_rows.to_csv(path, index=False)
    return path


def score_job(run, data, out, **kwargs):
    """One scoring job as the tests below run it: 50-row chunks, rejects beside the output."""
    kwargs = {"spec": SCORE_SPEC, "chunk_rows": JOB_CHUNK, "rejects_path": rejects_of(out), "progress": False, **kwargs}
    return score_file(run, data, out, **kwargs)


def rejects_of(out):
    return out.with_name(out.stem + ".rejects.jsonl")


def counts(summary) -> dict:
    """The summary without its timings."""
    return {k: v for k, v in summary.to_dict().items() if k not in ("seconds", "stage_seconds", "rows_per_second")}


def interrupt(monkeypatch, *, at_call: int, check=None):
    """Make the cascade raise in its `at_call`-th decide call (that chunk is never written); returns the calls."""
    calls = []
    decide = Cascade.decide

    def failing(self, texts):
        calls.append(len(texts))
        if check is not None:
            check()
        if len(calls) == at_call:
            raise RuntimeError("interrupted")
        return decide(self, texts)

    monkeypatch.setattr(Cascade, "decide", failing)
    return calls


@pytest.mark.parametrize("suffix, include_text", [(".csv", False), (".jsonl", True)])
def test_interrupted_job_resumes_to_the_same_bytes(cascade_run, job_rows, tmp_path, monkeypatch, suffix, include_text):
    data = job_data(job_rows, tmp_path)
    full = score_job(cascade_run, data, tmp_path / f"full{suffix}", include_text=include_text)
    assert full.n_rejected == 7 + 4 and full.n_scored == 600 - 11 and min(full.actions.values()) > 0

    out = tmp_path / f"job{suffix}"
    rejects = rejects_of(out)

    def never_final():  # while the job runs, only the partial files exist
        assert not out.exists() and not rejects.exists()
        assert partial_path(out).exists() and partial_path(rejects).exists()

    with monkeypatch.context() as m:
        interrupt(m, at_call=3, check=never_final)
        with pytest.raises(RuntimeError, match="interrupted"):
            score_job(cascade_run, data, out, include_text=include_text)
    never_final()
    record = json.loads(progress_path(out).read_text())
    assert record["rows_done"] == 2 * JOB_CHUNK
    assert record["out_partial_bytes"] == partial_path(out).stat().st_size
    # What a SIGKILL in the middle of writing chunk 3 leaves: bytes beyond what the record counts.
    with open(partial_path(out), "a") as fh:
        fh.write("sms-9999,42,deliver,,mod")
    with open(partial_path(rejects), "a") as fh:
        fh.write('{"row": 13')

    with monkeypatch.context() as m:
        calls = interrupt(m, at_call=0)  # never raises: counts the chunks scored
        resumed = score_job(cascade_run, data, out, include_text=include_text, resume=True)
    assert len(calls) == 12 - 2  # the two chunks done are read but not scored again
    assert out.read_bytes() == (tmp_path / f"full{suffix}").read_bytes()
    assert rejects.read_bytes() == rejects_of(tmp_path / f"full{suffix}").read_bytes()
    assert counts(resumed) == {**counts(full), "out": str(out), "rejects_path": str(rejects)}
    assert not any(p.exists() for p in (partial_path(out), partial_path(rejects), progress_path(out)))


def test_job_killed_with_sigkill_resumes_to_the_same_bytes(cascade_run, job_rows, tmp_path):
    data = job_data(job_rows, tmp_path)
    full = score_job(cascade_run, data, tmp_path / "full.csv")
    out = tmp_path / "killed.csv"
    rejects = rejects_of(out)
    # A child process scores the job, slowed to 50 ms a chunk so that the kill lands mid-job.
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(f"""
        import time
        from finesieve.models.cascade import Cascade
        from finesieve.data.spec import ColumnSpec
        from finesieve.serve.batch import score_file

        decide = Cascade.decide
        Cascade.decide = lambda self, texts: (time.sleep(0.05), decide(self, texts))[1]
        score_file({str(cascade_run)!r}, {str(data)!r}, {str(out)!r}, spec=ColumnSpec(text_col="text",
                   id_col="msg_id"), chunk_rows={JOB_CHUNK}, rejects_path={str(rejects)!r}, progress=False)
    """)
    )
    child = subprocess.Popen(
        [sys.executable, str(script)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if progress_path(out).exists() and json.loads(progress_path(out).read_text())["rows_done"] >= JOB_CHUNK:
                break
            time.sleep(0.01)
        assert child.poll() is None, child.communicate()[0].decode()[-2000:]
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    rows_done = json.loads(progress_path(out).read_text())["rows_done"]
    assert JOB_CHUNK <= rows_done < len(job_rows)
    assert not out.exists() and not rejects.exists() and partial_path(rejects).exists()

    resumed = score_job(cascade_run, data, out, resume=True)
    assert out.read_bytes() == (tmp_path / "full.csv").read_bytes()
    assert rejects.read_bytes() == rejects_of(tmp_path / "full.csv").read_bytes()
    assert counts(resumed) == {**counts(full), "out": str(out), "rejects_path": str(rejects)}


def test_resume_of_another_job_is_refused_and_names_what_changed(
    cascade_run, tfidf_run, job_rows, tmp_path, monkeypatch
):
    data = job_data(job_rows, tmp_path)
    out = tmp_path / "job.csv"
    with monkeypatch.context() as m:
        interrupt(m, at_call=2)
        with pytest.raises(RuntimeError):
            score_job(cascade_run, data, out)
    before = partial_path(out).read_bytes()

    with pytest.raises(
        ConfigError,
        match=r"another job: the run directory was .*cascade.*now .*tfidf.*"
        r"start over without --resume",
    ):
        score_job(tfidf_run, data, out, resume=True)
    with pytest.raises(ConfigError, match=r"the columns read .*msg_id.*now.*null"):
        score_job(cascade_run, data, out, spec=ColumnSpec(text_col="text"), resume=True)
    with pytest.raises(ConfigError, match="--include-text was False, now True"):
        score_job(cascade_run, data, out, include_text=True, resume=True)
    stat = data.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the data file was rewritten
    with pytest.raises(ConfigError, match=r"modification time \(ns\) was \d+, now \d+"):
        score_job(cascade_run, data, out, resume=True)
    assert partial_path(out).read_bytes() == before  # a refusal touches nothing

    # Without --resume the stale partial output is replaced, as before.
    summary = score_job(cascade_run, data, out)
    assert summary.n_rows == len(job_rows) and len(read_csv_out(out)) == summary.n_scored
    assert not progress_path(out).exists()


def test_resume_without_a_partial_output_is_refused(cascade_run, job_rows, tmp_path):
    data = job_data(job_rows, tmp_path)
    out = tmp_path / "job.csv"
    with pytest.raises(ConfigError, match=r"no partial output .*job\.csv\.partial to continue\. Fix: drop --resume"):
        score_job(cascade_run, data, out, resume=True)
    assert not out.exists() and not partial_path(out).exists()
    score_job(cascade_run, data, out)
    with pytest.raises(ConfigError, match=r"job\.csv exists, so the job it was writing finished"):
        score_job(cascade_run, data, out, resume=True)
