"""The one way finesieve writes outputs: never over an input, never half-written, runs replaced whole."""

import os

import pytest

from finesieve.data.errors import ConfigError
from finesieve.outputs import (
    atomic_file,
    check_outputs,
    check_run_dir,
    commit_run_dir,
    partial_path,
    start_run_dir,
    write_text,
)


def test_an_output_that_is_an_input_is_refused(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("text,label\nhi,a\n")
    with pytest.raises(ConfigError, match=r"--out .*data.csv is the input --data"):
        check_outputs({"--out": data}, {"--data": data})
    # The same file by another spelling, and through a hard link.
    with pytest.raises(ConfigError, match="is the input"):
        check_outputs({"--out": tmp_path / "sub" / ".." / "data.csv"}, {"--data": data})
    os.link(data, tmp_path / "link.csv")
    with pytest.raises(ConfigError, match="is the input"):
        check_outputs({"--out": tmp_path / "link.csv"}, {"--data": data})
    check_outputs({"--out": tmp_path / "other.csv"}, {"--data": data, "--train": None})
    assert data.read_text() == "text,label\nhi,a\n"


def test_an_output_folder_holding_an_input_is_refused(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    data = folder / "data.csv"
    data.write_text("x")
    with pytest.raises(ConfigError, match="holds the input --data"):
        check_outputs({"--out": folder}, {"--data": data})


def test_two_outputs_on_one_path_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="--out and --rejects are the same path"):
        check_outputs({"--out": tmp_path / "a.csv", "--rejects": tmp_path / "a.csv"}, {})


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "report.html"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as fh:
            fh.write("half of the new")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary left behind
    write_text(path, "new")
    assert path.read_text() == "new"


def test_atomic_file_refuses_a_folder_or_a_path_under_a_file(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        write_text(tmp_path, "x")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        write_text(tmp_path / "f" / "out.json", "x")


def test_run_dir_is_refused_unless_overwrite_and_then_replaced_whole(tmp_path):
    run = tmp_path / "run"
    staging = start_run_dir(run)
    (staging / "manifest.json").write_text("{}")
    (staging / "tfidf.pkl").write_text("old kind")
    commit_run_dir(staging, run)
    assert not partial_path(run).exists() and (run / "tfidf.pkl").exists()

    with pytest.raises(ConfigError, match="already holds a run.*--overwrite"):
        start_run_dir(run)
    staging = start_run_dir(run, overwrite=True)
    (staging / "manifest.json").write_text('{"kind": "char_cnn"}')
    commit_run_dir(staging, run)
    # Nothing of the earlier run of another kind is left beside the new one.
    assert sorted(p.name for p in run.iterdir()) == ["manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_run_dir_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "x").write_text("")
    with pytest.raises(ConfigError, match="is a file; a run is a folder"):
        check_run_dir(tmp_path / "x")
    check_run_dir(tmp_path / "new")  # a folder that does not exist yet is fine
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty")  # so is an empty one


def test_stale_partial_is_replaced_unless_kept(tmp_path):
    run = tmp_path / "run"
    partial_path(run).mkdir()
    (partial_path(run) / "checkpoint.pt").write_text("ckpt")
    kept = start_run_dir(run, keep_partial=True)
    assert (kept / "checkpoint.pt").exists()
    fresh = start_run_dir(run)
    assert list(fresh.iterdir()) == []
