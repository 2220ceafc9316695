"""Strict CSV/TSV reading: every malformed record is a rejected row with its row, line, kind and fix, the rows
around it are kept, and rows read = accepted + rejected = the file's data records."""

import json
import zipfile

import pandas as pd
import pytest

from finesieve.data.delimited import iter_records, read_header
from finesieve.data.errors import DataError
from finesieve.data.load import iter_chunks, load_dataset, validate_file
from finesieve.data.spec import ColumnSpec

SPEC = ColumnSpec(text_col="text", label_cols=("label",))


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def validate(path, spec=SPEC, **kwargs):
    """validate_file's report; every test relies on its count invariant, so it is checked here each time."""
    report = validate_file(path, spec, **kwargs)
    assert report.n_rows == report.n_accepted + sum(report.rejected.values())
    return report


def where(report):
    """(row, line, problem kind) of each rejected row, in file order."""
    return [(p.row, p.line, p.problem) for p in report.examples]


def test_real_csv_reads_as_pandas_does_with_lines_of_multiline_tweets(davidson_csv):
    header = read_header(davidson_csv, sep=",", encoding="utf-8")
    records = list(iter_records(davidson_csv, header, sep=",", encoding="utf-8"))
    expected = pd.read_csv(davidson_csv, dtype=object, keep_default_na=False)
    assert header.names == expected.columns.tolist()
    assert [r.row for r in records] == list(range(1, 19827))
    assert all(r.problem is None for r in records)
    assert [r.fields for r in records] == expected.values.tolist()
    # Some tweets hold line ends: the file has 21,458 lines, and each record starts where the previous one ended.
    spans = [b.line - a.line for a, b in zip(records, records[1:])]
    assert records[0].line == 2 and records[-1].line == 21458 - records[-1].fields[0].count("\n")
    assert sum(s > 1 for s in spans) > 500
    assert all(s - 1 == a.fields[0].count("\n") for s, a in zip(spans, records))


def test_extra_and_missing_fields_are_rejected_with_expected_and_found_counts(tmp_path):
    path = write(
        tmp_path,
        "fields.csv",
        b'text,label\n"first message",ham\n"extra","field",spam\n"missing its label"\n"last message",spam\n',
    )
    report = validate(path)
    assert (report.n_rows, report.n_accepted, dict(report.rejected)) == (4, 2, {"bad_field_count": 2})
    assert where(report) == [(2, 3, "bad_field_count"), (3, 4, "bad_field_count")]
    assert "found 3 field(s) where the header names 2" in report.examples[0].fix
    assert "found 1 field(s) where the header names 2" in report.examples[1].fix
    assert "quote every field that contains the separator" in report.examples[0].fix
    ds = load_dataset(path, SPEC)
    assert ds.texts == ["first message", "last message"] and ds.frame["row"].tolist() == [1, 4]


def test_an_unquoted_comma_cannot_shift_the_label_into_the_text(tmp_path):
    # pandas.read_csv reads this file as [{'text': ' world', 'label': 'ham'}, {'text': 'spam', 'label': ''}]:
    # the extra field of row 1 becomes the index, and row 2's label lands in its text.
    path = write(tmp_path, "shift.csv", b'text,label\nhello, world,ham\n"win cash now",spam\n"see you at 6",ham\n')
    ds = load_dataset(path, SPEC)
    assert ds.texts == ["win cash now", "see you at 6"] and ds.labels == ["spam", "ham"]
    assert ds.rejected.counts == {"bad_field_count": 1}
    assert ds.rejected.examples[0]["row"] == 1 and ds.rejected.examples[0]["line"] == 2
    assert ds.rejected.examples[0]["value"] == "hello, world,ham"


def test_unclosed_quote_at_end_of_file_rejects_its_first_line_and_keeps_the_rows_after_it(tmp_path):
    path = write(
        tmp_path, "eof.csv", b'text,label\n"fine",ham\n"never closed,spam\n"after one",ham\n"after two",spam\n'
    )
    report = validate(path)
    assert (report.n_rows, report.n_accepted, dict(report.rejected)) == (4, 3, {"unbalanced_quote": 1})
    assert where(report) == [(2, 3, "unbalanced_quote")]
    assert "line 3 is never closed: the file ends inside it" in report.examples[0].fix
    assert "row 2 (line 3)" in str(report.examples[0])
    assert load_dataset(path, SPEC).texts == ["fine", "after one", "after two"]


def test_unclosed_quote_that_would_merge_rows_rejects_only_its_first_line(tmp_path):
    # Line 3's quote is closed by the quote that opens line 4 as far as quote counting goes; the joined lines
    # 3-5 do not parse as one record, so only line 3 is rejected and lines 4 and 5 are read on their own.
    path = write(
        tmp_path,
        "merge.csv",
        b'text,label\n"a fine one",ham\n"unclosed,spam\n"next message",ham\nhe said "hi,spam\n"last",ham\n',
    )
    report = validate(path)
    assert (report.n_rows, report.n_accepted, dict(report.rejected)) == (5, 4, {"unbalanced_quote": 1})
    assert where(report) == [(2, 3, "unbalanced_quote")]
    assert "would join lines 3 to 5 into one record" in report.examples[0].fix
    ds = load_dataset(path, SPEC)
    assert ds.texts == ["a fine one", "next message", 'he said "hi', "last"]
    assert ds.labels == ["ham", "ham", "spam", "ham"] and ds.frame["row"].tolist() == [1, 3, 4, 5]


def test_quoted_message_spanning_lines_is_one_row_with_its_line_end(tmp_path):
    path = write(tmp_path, "multi.csv", b'text,label\n"see you\nat 6, ok?",ham\n"win ""cash"" now",spam\n')
    report = validate(path)
    assert (report.n_rows, report.n_accepted, sum(report.rejected.values())) == (2, 2, 0)
    ds = load_dataset(path, SPEC)
    assert ds.frame["text_raw"].tolist() == ["see you\nat 6, ok?", 'win "cash" now']
    chunk = next(iter_chunks(path, SPEC))
    assert chunk["_row"].tolist() == [1, 2] and chunk["_line"].tolist() == [2, 4]


def test_blank_lines_are_counted_and_rejected_in_the_middle_and_at_the_end(tmp_path):
    path = write(tmp_path, "blank.csv", b'text,label\n"one",ham\n\n"two",spam\n"three",ham\n\n\n')
    report = validate(path)
    assert (report.n_rows, report.n_accepted, dict(report.rejected)) == (6, 3, {"blank_line": 3})
    assert where(report) == [(2, 3, "blank_line"), (5, 6, "blank_line"), (6, 7, "blank_line")]
    assert load_dataset(path, SPEC).frame["row"].tolist() == [1, 3, 4]
    # The line end that closes the last line is not a blank line.
    closed = write(tmp_path, "closed.csv", b'text,label\n"one",ham\n"two",spam\n')
    assert validate(closed).n_rows == 2


def test_crlf_line_endings(tmp_path):
    path = write(
        tmp_path,
        "crlf.csv",
        b'text,label\r\n"one",ham\r\nplain two,spam\r\n"three\r\nlines",ham\r\n\r\n"four",spam\r\n',
    )
    report = validate(path)
    assert (report.n_rows, report.n_accepted, dict(report.rejected)) == (5, 4, {"blank_line": 1})
    assert where(report) == [(4, 6, "blank_line")]
    ds = load_dataset(path, SPEC)
    assert ds.frame["text_raw"].tolist() == ["one", "plain two", "three\r\nlines", "four"]
    assert ds.labels == ["ham", "spam", "ham", "spam"]


def test_tsv_keeps_commas_and_literal_quotes_and_rejects_an_extra_tab(tmp_path, sms_csv):
    real = pd.read_csv(sms_csv, dtype=str, keep_default_na=False).head(200)
    lines = ["label\ttext"] + [
        f"{lbl}\t{text}" for lbl, text in zip(real["label"], real["text"]) if "\t" not in text and '"' not in text
    ]
    lines[3:3] = ['ham\the said "hi, see you\tlater', 'spam\tcall now, "free" prize']  # data rows 3 and 4
    path = write(tmp_path, "sms.tsv", ("\n".join(lines) + "\n").encode("utf-8"))
    report = validate(path)
    assert report.n_rows == len(lines) - 1 and dict(report.rejected) == {"bad_field_count": 1}
    assert where(report) == [(3, 4, "bad_field_count")] and "separator (tab)" in report.examples[0].fix
    raw = load_dataset(path, SPEC).frame["text_raw"].tolist()
    assert raw[:3] == real["text"].head(2).tolist() + ['call now, "free" prize']
    assert len(raw) == len(lines) - 2


def test_malformed_quotes_on_one_line(tmp_path):
    path = write(tmp_path, "quotes.csv", b'text,label\n"a"b,ham\n"ok",spam\n"x" ,ham\n')
    report = validate(path)
    assert (report.n_rows, report.n_accepted, dict(report.rejected)) == (3, 1, {"malformed_quotes": 2})
    assert where(report) == [(1, 2, "malformed_quotes"), (3, 4, "malformed_quotes")]
    assert "',' expected after '\"'" in report.examples[0].fix


def test_rejects_file_keeps_each_malformed_record_with_its_line(tmp_path):
    path = write(tmp_path, "mixed.csv", b'text,label\n"ok",ham\n"a","b",spam\n\n"open,ham\n"fine",spam\n')
    rejects = tmp_path / "rejects.jsonl"
    report = validate(path, rejects_path=rejects)
    saved = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert len(saved) == sum(report.rejected.values()) == 3
    assert [(r["row"], r["raw"], r["problems"][0]["line"], r["problems"][0]["problem"]) for r in saved] == [
        (2, '"a","b",spam', 3, "bad_field_count"),
        (3, "", 4, "blank_line"),
        (4, '"open,ham', 5, "unbalanced_quote"),
    ]


def test_binary_file_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "messages.csv"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("messages.csv", "text,label\nhello,ham\n")
    for call in (lambda: load_dataset(path, SPEC), lambda: validate_file(path, SPEC)):
        with pytest.raises(DataError) as err:
            call()
        message = str(err.value)
        assert str(path) in message and "check the path" in message
        assert "--format" in message and "--encoding" in message and "codec" not in message


def test_utf16_file_is_refused_as_utf8_and_read_with_its_encoding(tmp_path):
    path = write(tmp_path, "utf16.csv", 'text,label\n"café",ham\n"win now",spam\n'.encode("utf-16"))
    with pytest.raises(DataError) as err:
        load_dataset(path, SPEC)
    assert str(path) in str(err.value) and "UTF-16" in str(err.value) and "--encoding utf-16" in str(err.value)
    ds = load_dataset(path, ColumnSpec(encoding="utf-16"))
    assert ds.texts == ["café", "win now"] and ds.rejected.total == 0


def test_duplicate_header_names_are_refused(tmp_path):
    path = write(tmp_path, "dupes.csv", b'text,label,label\n"one",ham,spam\n')
    with pytest.raises(DataError) as err:
        validate_file(path, SPEC)
    assert str(path) in str(err.value) and "'label' at columns 2, 3" in str(err.value)


def test_empty_file_header_only_and_unknown_encoding_are_refused(tmp_path):
    empty = write(tmp_path, "empty.csv", b"")
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        load_dataset(empty, SPEC)
    header_only = write(tmp_path, "header.csv", b"text,label\n")
    with pytest.raises(DataError, match=r"header.csv: the file holds a header .* but no data rows"):
        validate_file(header_only, SPEC)
    fine = write(tmp_path, "fine.csv", b"text,label\none,ham\n")
    with pytest.raises(DataError, match="unknown encoding 'utf-9'.*utf-8 or latin-1"):
        load_dataset(fine, ColumnSpec(encoding="utf-9"))


def test_utf8_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    path = write(tmp_path, "bom.csv", '\ufefftext,label\n"one",ham\n"two",spam\n'.encode("utf-8"))
    assert load_dataset(path, SPEC).texts == ["one", "two"]
