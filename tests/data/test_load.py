"""Loading and validation: real data in four formats, and every kind of bad input (clear error, nothing lost)."""

import json

import numpy as np
import pandas as pd
import pytest

from finesieve.data import load as load_mod
from finesieve.data.errors import DataError
from finesieve.data.load import load_dataset, validate_file
from finesieve.data.spec import ColumnSpec

SPEC = ColumnSpec(text_col="text", label_cols=("label",))


@pytest.fixture()
def slice_csv(tmp_path, davidson_slice):
    path = tmp_path / "slice.csv"
    davidson_slice[["text", "label"]].to_csv(path, index=False)
    return path


def test_loads_real_data_redacted_with_raw_kept(slice_csv, davidson_slice):
    ds = load_dataset(slice_csv, SPEC)
    assert len(ds) == len(davidson_slice)
    assert ds.classes == ["hate_speech", "neither", "offensive"]
    assert ds.class_counts() == davidson_slice["label"].value_counts().to_dict()
    assert ds.rejected.total == 0
    # Raw text is kept exactly; the trained/stored text has mentions and URLs replaced.
    assert ds.frame["text_raw"].tolist() == davidson_slice["text"].tolist()
    with_mention = ds.frame[ds.frame["text_raw"].str.contains(r"@\w+", regex=True)]
    assert len(with_mention) > 100
    assert not with_mention["text"].str.contains(r"@[A-Za-z_]\w{2,}", regex=True).any()
    assert ds.redaction_counts.get("HANDLE", 0) >= len(with_mention)


def test_same_content_hash_from_every_format(tmp_path, davidson_slice):
    df = davidson_slice[["text", "label"]].head(300)
    paths = {
        "csv": tmp_path / "d.csv",
        "tsv": tmp_path / "d.tsv",
        "jsonl": tmp_path / "d.jsonl",
        "parquet": tmp_path / "d.parquet",
    }
    df.to_csv(paths["csv"], index=False)
    df.to_csv(paths["tsv"], index=False, sep="\t")
    df.to_json(paths["jsonl"], orient="records", lines=True, force_ascii=False)
    df.to_parquet(paths["parquet"], index=False)
    loaded = {fmt: load_dataset(p, SPEC) for fmt, p in paths.items()}
    hashes = {fmt: ds.content_hash for fmt, ds in loaded.items()}
    assert len(set(hashes.values())) == 1, hashes
    assert all(ds.texts == loaded["csv"].texts for ds in loaded.values())


def _write_bad_csv(path):
    rows = [
        ("1", "perfectly fine message", "spam"),
        ("2", "", "ham"),  # empty text
        ("3", "   ", "ham"),  # whitespace only
        ("4", "no label here", ""),  # missing label
        ("5", "unknown label", "spamm"),  # unknown label (classes declared)
        ("1", "duplicate id", "ham"),  # duplicate id
        ("7", "another fine one", "ham"),
    ]
    pd.DataFrame(rows, columns=["id", "text", "label"]).to_csv(path, index=False)
    # A latin-1 byte that is not valid UTF-8, on its own row.
    with open(path, "ab") as fh:
        fh.write(b'8,"caf\xe9 latin-1 bytes",ham\n')


def test_bad_rows_rejected_with_place_and_fix_and_nothing_lost(tmp_path):
    path = tmp_path / "bad.csv"
    _write_bad_csv(path)
    spec = ColumnSpec(text_col="text", label_cols=("label",), id_col="id", classes=("spam", "ham"))
    rejects = tmp_path / "rejects.jsonl"
    ds = load_dataset(path, spec, rejects_path=rejects)
    assert sorted(ds.ids) == ["1", "7"]
    assert ds.rejected.counts == {
        "empty_text": 2,
        "missing_label": 1,
        "unknown_label": 1,
        "duplicate_id": 1,
        "bad_encoding": 1,
    }
    by_kind = {}
    for e in ds.rejected.examples:
        by_kind.setdefault(e["problem"], e)
    assert by_kind["empty_text"]["row"] == 2 and by_kind["empty_text"]["column"] == "text"
    assert "did you mean 'spam'" in by_kind["unknown_label"]["fix"]
    assert "row 1" in by_kind["duplicate_id"]["fix"]
    assert "UTF-8" in by_kind["bad_encoding"]["fix"] and by_kind["bad_encoding"]["row"] == 8
    # Every rejected row is in the rejects file with its raw values.
    lines = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert sorted(r["row"] for r in lines) == [2, 3, 4, 5, 6, 8]
    assert any(r.get("text") == "duplicate id" for r in lines)
    # The accepted + rejected rows account for the whole file.
    assert len(ds) + ds.rejected.total == 8


def test_encoding_option_reads_latin1(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes('text,label\n"café crème",ham\n"win a prize",spam\n'.encode("latin-1"))
    ds = load_dataset(path, ColumnSpec(encoding="latin-1"))
    assert ds.frame["text_raw"].tolist() == ["café crème", "win a prize"]


def test_strict_mode_raises_with_every_problem(tmp_path):
    path = tmp_path / "bad.csv"
    _write_bad_csv(path)
    spec = ColumnSpec(id_col="id", classes=("spam", "ham"))
    with pytest.raises(DataError) as err:
        load_dataset(path, spec, strict=True)
    message = str(err.value)
    for kind in ("empty_text", "missing_label", "unknown_label", "duplicate_id", "bad_encoding"):
        assert kind in message


def test_missing_column_names_it_and_suggests(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"message": ["a", "b"], "label": ["x", "y"]}).to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load_dataset(path, ColumnSpec(text_col="mesage"))
    assert (
        "'mesage'" in str(err.value) and "did you mean 'message'" in str(err.value) and "--text-col" in str(err.value)
    )


def test_unknown_format_and_missing_file(tmp_path):
    path = tmp_path / "d.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match="--format"):
        load_dataset(path, SPEC)
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope.csv", SPEC)


def test_jsonl_malformed_non_text_and_null(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [
        json.dumps({"text": "good one", "label": "ham"}),
        "{not json",
        json.dumps({"text": 12345, "label": "ham"}),
        json.dumps({"text": None, "label": "spam"}),
        json.dumps({"text": "list label", "label": ["spam"]}),
        json.dumps({"text": "also good", "label": "spam"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    ds = load_dataset(path, SPEC)
    assert ds.texts == ["good one", "list label", "also good"]
    assert ds.labels == ["ham", "spam", "spam"]
    assert ds.rejected.counts == {"malformed_record": 1, "non_text": 1, "missing_text": 1}
    assert {e["row"] for e in ds.rejected.examples} == {2, 3, 4}


def test_parquet_non_text_values(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["fine", "good", None, "ok too"], "label": ["a", "b", "b", None]}).to_parquet(path)
    ds = load_dataset(path, SPEC)
    assert ds.texts == ["fine", "good"]
    assert ds.rejected.counts == {"missing_text": 1, "missing_label": 1}
    assert {e["row"] for e in ds.rejected.examples} == {3, 4}


def test_only_one_class_is_refused(tmp_path):
    path = tmp_path / "one.csv"
    pd.DataFrame({"text": ["a", "b"], "label": ["x", "x"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="one class"):
        load_dataset(path, SPEC)


def test_rare_label_typo_rejected_when_classes_inferred(tmp_path, sms_csv):
    df = pd.read_csv(sms_csv, dtype=str, keep_default_na=False).head(1500)
    df.loc[3, "label"] = "spma"  # a typo; 'Spam' (a spelling variant) is refused instead: see test_labels.py
    path = tmp_path / "typo.csv"
    df.to_csv(path, index=False)
    ds = load_dataset(path, SPEC)
    assert ds.classes == ["ham", "spam"]
    assert ds.rejected.counts == {"unknown_label": 1}
    assert "typo of 'spam'" in ds.rejected.examples[0]["fix"] and ds.rejected.examples[0]["row"] == 4
    report = validate_file(path, SPEC)
    assert report.rejected["unknown_label"] == 1 and report.n_accepted == 1499
    assert [(p.row, p.value) for p in report.examples] == [(4, "spma")]


def test_multilabel_separator_and_indicator_columns(tmp_path):
    sep_path = tmp_path / "ml.csv"
    pd.DataFrame(
        {
            "text": ["pay me on venmo and text me", "you idiot", "great job", "send gift cards"],
            "labels": ["off_platform|scam", "harassment", "", "scam"],
        }
    ).to_csv(sep_path, index=False)
    ds = load_dataset(sep_path, ColumnSpec(label_cols=("labels",), label_sep="|"))
    assert ds.multilabel
    assert ds.labels[0] == ("off_platform", "scam") and ds.labels[2] == ()
    assert ds.indicator(["harassment", "off_platform", "scam"]).tolist() == [[0, 1, 1], [1, 0, 0], [0, 0, 0], [0, 0, 1]]

    ind_path = tmp_path / "ind.csv"
    pd.DataFrame({"text": ["a b", "c d", "e f"], "scam": ["1", "0", "maybe"], "spam": ["0", "true", "0"]}).to_csv(
        ind_path, index=False
    )
    ds = load_dataset(ind_path, ColumnSpec(label_cols=("scam", "spam")))
    assert ds.classes == ["scam", "spam"]
    assert ds.labels == [("scam",), ("spam",)]
    assert ds.rejected.counts == {"bad_indicator": 1}
    assert ds.rejected.examples[0]["column"] == "scam"


def test_bad_timestamp_and_metadata(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame(
        {
            "text": ["one", "two", "three"],
            "label": ["a", "a", "b"],
            "ts": ["2024-05-01T10:00:00Z", "yesterday", "1714557600"],
            "user": ["u1", "u2", "u1"],
            "country": ["DE", "FR", "DE"],
        }
    ).to_csv(path, index=False)
    ds = load_dataset(path, ColumnSpec(time_col="ts", user_col="user", meta_cols=("country",)))
    assert ds.rejected.counts == {"bad_timestamp": 1}
    assert ds.frame["user"].tolist() == ["u1", "u1"]
    assert ds.frame["country"].tolist() == ["DE", "DE"]
    assert str(ds.frame["time"].iloc[1]) == "2024-05-01 10:00:00+00:00"


def test_validate_streams_many_chunks(tmp_path, davidson_csv):
    report = validate_file(davidson_csv, SPEC, chunk_rows=1000)
    full = load_dataset(davidson_csv, SPEC)
    assert report.n_rows == 19826
    assert report.n_accepted == len(full)
    assert dict(report.label_counts) == full.class_counts()


def test_file_too_large_for_memory_is_refused_with_the_fix(monkeypatch, slice_csv):
    monkeypatch.setattr(load_mod, "_memory_available", lambda: 1000)
    with pytest.raises(DataError) as err:
        load_dataset(slice_csv, SPEC)
    assert "finesieve data validate" in str(err.value) and "--max-rows" in str(err.value)
    assert len(load_dataset(slice_csv, SPEC, max_rows=50)) == 50


def test_column_spec_errors_name_the_fields():
    with pytest.raises(ValueError, match="label_sep"):
        ColumnSpec(label_cols=("a", "b"), label_sep="|")
    with pytest.raises(ValueError, match="more than one role"):
        ColumnSpec(text_col="x", label_cols=("x",))
    with pytest.raises(ValueError, match="extra"):
        ColumnSpec(txt_col="x")


def test_annotator_votes_load_as_shares_and_bad_counts_are_rejected(tmp_path, davidson_csv):
    df = pd.read_csv(davidson_csv, dtype=str, keep_default_na=False).iloc[:300].copy()
    df.loc[3, "hate_speech"] = "-1"
    df.loc[4, "neither"] = "many"
    df.loc[5, ["hate_speech", "offensive_language", "neither"]] = "0"
    path = tmp_path / "votes.csv"
    df.to_csv(path, index=False)
    votes = {"hate_speech": "hate_speech", "offensive": "offensive_language", "neither": "neither"}
    ds = load_dataset(path, ColumnSpec(vote_cols=votes))
    assert len(ds) == 297 and ds.rejected.counts == {"bad_votes": 3}
    bad = {e["row"]: e for e in ds.rejected.examples}
    assert bad[4]["column"] == "hate_speech" and "--vote-col" in bad[4]["fix"] and bad[5]["column"] == "neither"
    shares = ds.vote_shares(["hate_speech", "neither", "offensive"])
    kept = df.drop(index=[3, 4, 5]).reset_index(drop=True)
    counts = kept[["hate_speech", "neither", "offensive_language"]].astype(float).to_numpy()
    np.testing.assert_allclose(shares, counts / counts.sum(axis=1, keepdims=True))
    # The majority label is the largest share in this data set.
    assert (np.array(ds.classes)[shares.argmax(axis=1)] == np.array(ds.labels)).mean() > 0.95
    # Without vote columns there are no shares; a file to score needs no vote columns.
    assert load_dataset(path, ColumnSpec()).vote_shares() is None
    assert validate_file(path, ColumnSpec(text_col="text", label_cols=("label",), vote_cols=votes)).n_accepted == 297


def test_vote_columns_are_checked_against_classes_and_roles(tmp_path, davidson_csv):
    df = pd.read_csv(davidson_csv, dtype=str, keep_default_na=False).iloc[:200]
    path = tmp_path / "votes.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match="'hate'.*CLASS=COLUMN"):
        load_dataset(path, ColumnSpec(vote_cols={"hate": "hate_speech", "neither": "neither"}))
    with pytest.raises(DataError, match="'hate_votes'"):
        load_dataset(path, ColumnSpec(vote_cols={"hate_speech": "hate_votes"}))
    with pytest.raises(ValueError, match="single-label"):
        ColumnSpec(label_cols=("a", "b"), vote_cols={"a": "va"})
    with pytest.raises(ValueError, match="more than one role"):
        ColumnSpec(vote_cols={"spam": "label"})
    with pytest.raises(ValueError, match="vote_cols is empty"):
        ColumnSpec(vote_cols={})


def test_jsonl_blank_lines_are_counted_rows_rejected_with_their_line(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [
        json.dumps({"text": "first", "label": "ham"}),
        "",
        json.dumps({"text": "second", "label": "spam"}),
        "   ",
        json.dumps({"text": "third", "label": "ham"}),
        "",
    ]
    path.write_text("\n".join(lines) + "\n")
    report = validate_file(path, SPEC)
    assert (report.n_rows, report.n_accepted, dict(report.rejected)) == (6, 3, {"blank_line": 3})
    assert [(p.row, p.line, p.problem) for p in report.examples] == [
        (2, 2, "blank_line"),
        (4, 4, "blank_line"),
        (6, 6, "blank_line"),
    ]
    assert load_dataset(path, SPEC).frame["row"].tolist() == [1, 3, 5]


def test_text_of_only_invisible_characters_is_rejected_as_empty_for_training_and_scoring(tmp_path):
    from finesieve.data.load import iter_chunks
    from finesieve.data.validate import RowValidator

    path = tmp_path / "invisible.csv"
    texts = ["win a prize now", "\u200b\u200b", "\u202e\u200d\ufeff", "\x01\x02", "see you at 6", "a\u200bb"]
    pd.DataFrame({"text": texts, "label": ["spam", "ham", "ham", "spam", "ham", "spam"]}).to_csv(path, index=False)
    ds = load_dataset(path, SPEC)
    assert ds.texts == ["win a prize now", "see you at 6", "ab"]
    assert ds.rejected.counts == {"empty_text": 3}
    assert [e["row"] for e in ds.rejected.examples] == [2, 3, 4]
    assert "only invisible or control characters" in ds.rejected.examples[0]["fix"]
    # A file to score is checked the same way.
    validator = RowValidator(SPEC, str(path), labelled=False, unique_ids=False)
    result = validator.validate(next(iter_chunks(path, SPEC, labelled=False)))
    assert result.accepted["row"].tolist() == [1, 5, 6]
    assert [(p.row, p.line, p.problem) for p in result.problems] == [
        (2, 3, "empty_text"),
        (3, 4, "empty_text"),
        (4, 5, "empty_text"),
    ]


def test_row_problem_line_is_optional_and_shown_when_known():
    from finesieve.data.errors import RowProblem

    old = RowProblem("f.csv", 3, "text", "", "empty_text", "fill it in")
    assert old.line is None and "line" not in old.to_dict() and "row 3, column" in str(old)
    new = RowProblem("f.csv", 3, "text", "", "empty_text", "fill it in", line=5)
    assert new.to_dict()["line"] == 5 and "f.csv: row 3 (line 5), column 'text'" in str(new)


def test_rejects_file_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    """The rejects file is staged as REJECTS.partial: complete under its name, even when every row is rejected
    (the rejects say why), and absent after a failure that is not about the data."""
    import finesieve.data.load as load_module
    from finesieve.data.errors import DataError
    from finesieve.data.load import load_dataset, validate_file
    from finesieve.data.spec import ColumnSpec

    path = tmp_path / "bad.csv"
    path.write_text("text,label\n,spam\n   ,ham\n", encoding="utf-8")
    rejects = tmp_path / "rejects.jsonl"
    with pytest.raises(DataError, match="no valid rows"):
        load_dataset(path, ColumnSpec(), rejects_path=rejects)
    assert [json.loads(line)["row"] for line in rejects.read_text().splitlines()] == [1, 2]
    assert not (tmp_path / "rejects.jsonl.partial").exists()

    def crash(*args, **kwargs):
        raise RuntimeError("killed mid-pass")

    rejects.unlink()
    monkeypatch.setattr(load_module, "iter_chunks", crash)
    with pytest.raises(RuntimeError):
        validate_file(path, ColumnSpec(), rejects_path=rejects)
    assert not rejects.exists() and not (tmp_path / "rejects.jsonl.partial").exists()
