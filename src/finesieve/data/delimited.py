"""Strict reading of delimited text files (CSV, TSV): every record is checked, and one broken record never
hides the records after it.

    header = read_header(path, sep=",", encoding="utf-8")
    for record in iter_records(path, header, sep=",", encoding="utf-8"):
        if record.fields is None:
            print(record.row, record.line, record.problem, record.fix)

pandas.read_csv accepts structure that is wrong without a word: an extra leading field becomes the index and
shifts the label into the text column, and a quote that is never closed joins every later line into one field.
Here each record is parsed on its own by the csv module in strict mode and its field count is checked against
the header. What cannot be read becomes a rejected `Record` (its `problem` says which kind, its `fix` what is
wrong and what to change) and reading goes on:

  bad_field_count   more or fewer fields than the header names (an unquoted separator inside a text)
  malformed_quotes  a one-line record whose quotes do not parse ("a"b, text after a closing quote)
  unbalanced_quote  a quote opened on this line is not closed where the next lines can close it: only this
                    first line is rejected and reading resumes on the next line, so the rows after it are kept
  blank_line        an empty line; counted as a row so that row numbers match the file (a final line end is
                    not a blank line)

A quoted field may hold line ends: physical lines are joined while the count of quote characters is odd. The
file is opened with errors="surrogateescape", so undecodable bytes reach the row validator (which rejects that
row as `bad_encoding`) instead of stopping the read. A file that is not text (NUL characters in its first
64 KiB: a zip, an Excel file, UTF-16 read as UTF-8), an empty file, a header alone or a header naming a column
twice is refused with a DataError naming the file and the fix.
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from finesieve.data.errors import DataError

QUOTE = '"'
BINARY_PROBE_CHARS = 64 * 1024  # how much of the start of a file is searched for NUL characters
# The longest record (all its lines together) read while looking for the quote that closes a field. It bounds
# the memory a never-closed quote can take in a stream; the longest real record in our data (a resume) is 29,496
# characters, so this leaves a wide margin.
MAX_RECORD_CHARS = 1 << 20
# The csv module refuses fields over 131,072 characters by default; a field may be as long as a record.
csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_CHARS))


@dataclass(frozen=True)
class Header:
    """The column names, and how many physical lines they take (more than one only when a quoted name holds a
    line end)."""

    names: list[str]
    n_lines: int = 1


@dataclass(frozen=True)
class Record:
    """One data record: its values, or, when it cannot be read, the problem kind and the fix."""

    row: int  # 1-based data record number; the header is not counted, blank lines and rejected records are counted
    line: int  # 1-based physical line of the file where the record starts (the header is line 1)
    fields: list[str] | None  # one value per header column; None when rejected
    problem: str | None = None  # bad_field_count | malformed_quotes | unbalanced_quote | blank_line
    fix: str | None = None  # what is wrong with this record and what to change
    raw: str | None = None  # the rejected text as read (for unbalanced_quote, its first line only)


def read_header(path: str | Path, *, sep: str, encoding: str) -> Header:
    """The header of a delimited file; a DataError when the file is not text, is empty, holds a header only or
    names a column twice."""
    path = Path(path)
    _refuse_binary(path, encoding)
    with _open(path, encoding) as fh:
        lines = _Lines(fh, path, encoding)
        first = next(lines, None)
        if first is None:
            raise DataError(f"{path}: the file is empty: it needs a header row naming the columns")
        number, text = first
        text = text.removeprefix("\ufeff")  # a byte order mark is not part of the first column's name
        if not text.rstrip("\r\n"):
            if next(lines, None) is None:
                raise DataError(f"{path}: the file is empty: it needs a header row naming the columns")
            raise DataError(
                f"{path}: line 1 is blank: the first line must be the header naming the columns; "
                "remove the blank line(s) above it"
            )
        names, error = _parse([text], sep)
        taken = 1
        if names is None and text.count(QUOTE) % 2 == 1:  # a quoted name may hold a line end
            names, taken, error = _join_and_parse((number, text), lines, sep, n_fields=None)
        if names is None:
            raise DataError(
                f"{path}: the header (line 1) cannot be read as {_sep_name(sep)}-separated column names "
                f"({error}). Fix: quote the names correctly, or check --format"
            )
        _refuse_duplicate_names(path, names)
        if next(lines, None) is None:
            raise DataError(
                f"{path}: the file holds a header (columns {names}) but no data rows: add the rows "
                "below the header, or check the path"
            )
        return Header(names=names, n_lines=taken)


def iter_records(path: str | Path, header: Header, *, sep: str, encoding: str) -> Iterator[Record]:
    """Every data record of the file after `header` (from `read_header`), in file order, one `Record` each."""
    path = Path(path)
    n_fields = len(header.names)
    with _open(path, encoding) as fh:
        lines = _Lines(fh, path, encoding)
        for _ in range(header.n_lines):
            next(lines, None)
        row = 0
        for number, text in lines:
            row += 1
            yield _read_record(row, number, text, lines, sep, n_fields)


def _read_record(row: int, number: int, text: str, lines: _Lines, sep: str, n_fields: int) -> Record:
    body = text.rstrip("\r\n")
    if not body:
        return Record(
            row,
            number,
            None,
            "blank_line",
            f"line {number} is blank: remove it (a blank line is counted as a row, so that row numbers match the file)",
            "",
        )
    if QUOTE not in body:
        # Without a quote the csv module splits exactly on the separator: the short path most lines take.
        fields = body.split(sep)
    else:
        fields, error = _parse([text], sep)
        if fields is None:
            if text.count(QUOTE) % 2 == 0:
                return Record(
                    row,
                    number,
                    None,
                    "malformed_quotes",
                    f"the quotes on line {number} do not parse ({error}): a quoted field must close its "
                    f"quote right before the separator {_sep_name(sep)} or the line end, and a quote "
                    'inside a quoted field is written twice ("")',
                    body,
                )
            # An odd count: a quoted field goes on past this line, or a quote is never closed.
            fields, _, error = _join_and_parse((number, text), lines, sep, n_fields)
            if fields is None:
                return Record(
                    row,
                    number,
                    None,
                    "unbalanced_quote",
                    f"the quote opened on line {number} {error}: close it, or write a quote that is part "
                    'of the text as two (""); the lines after it were read as rows of their own',
                    body,
                )
    if len(fields) != n_fields:
        return Record(
            row,
            number,
            None,
            "bad_field_count",
            f"found {len(fields)} field(s) where the header names {n_fields}: quote every field that "
            f"contains the separator ({_sep_name(sep)}), and give each row exactly one value per column",
            body,
        )
    return Record(row, number, fields)


def _join_and_parse(
    first: tuple[int, str], lines: _Lines, sep: str, n_fields: int | None
) -> tuple[list[str] | None, int, str]:
    """Join physical lines from `first` while a quote is open and parse them as one record.

    Returns (fields, lines taken, ""), or (None, 1, why) with every line after the first given back to `lines`,
    so that reading resumes on the line after `first`.
    """
    number, text = first
    taken, quotes, size = [first], text.count(QUOTE), len(text)
    while quotes % 2 == 1 and size <= MAX_RECORD_CHARS:
        following = next(lines, None)
        if following is None:
            break
        taken.append(following)
        quotes += following[1].count(QUOTE)
        size += len(following[1])
    last = taken[-1][0]
    if quotes % 2 == 1:
        why = (
            "is never closed: the file ends inside it"
            if size <= MAX_RECORD_CHARS
            else f"is not closed within {MAX_RECORD_CHARS:,} characters (lines {number} to {last})"
        )
    else:
        fields, error = _parse([t for _, t in taken], sep)
        if fields is not None and (n_fields is None or len(fields) == n_fields):
            return fields, len(taken), ""
        found = error or f"{len(fields)} field(s) where the header names {n_fields}"
        why = f"would join lines {number} to {last} into one record, which does not parse ({found})"
    lines.give_back(taken[1:])
    return None, 1, why


def _parse(texts: list[str], sep: str) -> tuple[list[str] | None, str]:
    """The one record that `texts` (physical lines, line ends kept) hold, or (None, the csv module's complaint)."""
    try:
        records = list(csv.reader(texts, delimiter=sep, quotechar=QUOTE, strict=True))
    except csv.Error as err:
        return None, str(err)
    if len(records) != 1:
        return None, f"{len(records)} records where one was expected"
    return records[0], ""


class _Lines:
    """The physical lines of an open file with their 1-based numbers; lines read ahead while looking for a
    closing quote can be given back, to be read again as records of their own."""

    def __init__(self, fh: TextIO, path: Path, encoding: str):
        self._fh, self._path, self._encoding = fh, path, encoding
        self._back: deque[tuple[int, str]] = deque()
        self._number = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> tuple[int, str]:
        if self._back:
            return self._back.popleft()
        try:
            text = next(self._fh)
        except UnicodeDecodeError as err:  # surrogateescape cannot carry every bad byte of every codec (utf-16)
            raise DataError(
                f"{self._path}: the bytes after line {self._number} cannot be decoded as "
                f"{self._encoding} ({err.reason}). Fix: pass the file's encoding with --encoding "
                "(e.g. utf-8, latin-1), or re-save the file as UTF-8"
            ) from None
        self._number += 1
        return self._number, text

    def give_back(self, taken: list[tuple[int, str]]) -> None:
        self._back.extendleft(reversed(taken))


def _open(path: Path, encoding: str) -> TextIO:
    try:
        # newline="": line ends reach the csv module untranslated, so a quoted "\r\n" stays in the text as written.
        return open(path, encoding=encoding, errors="surrogateescape", newline="")
    except LookupError:
        raise DataError(
            f"{path}: unknown encoding {encoding!r}: pass a Python codec name such as utf-8 or latin-1"
        ) from None
    except OSError as err:  # a folder, no permission
        raise DataError(f"{path}: cannot be opened ({err.strerror}): check the path") from None


def _refuse_binary(path: Path, encoding: str) -> None:
    """A NUL character never appears in text: a file that has one is binary, or is text in another encoding."""
    with _open(path, encoding) as fh:
        try:
            start = fh.read(BINARY_PROBE_CHARS)
        except UnicodeDecodeError as err:
            raise DataError(
                f"{path}: the file cannot be decoded as {encoding} ({err.reason}). Fix: check the path, "
                "or pass the file's encoding with --encoding (e.g. utf-8, latin-1)"
            ) from None
    at = start.find("\x00")
    if at >= 0:
        line = start.count("\n", 0, at) + 1
        raise DataError(
            f"{path}: this is not {encoding} text (a NUL character on line {line}, within the first "
            f"{BINARY_PROBE_CHARS // 1024} KiB): it looks like a binary file (zip, Excel, Parquet) or text in "
            "another encoding such as UTF-16. Fix: check the path; pass --format for the file's real format, or "
            "--encoding for its encoding (e.g. --encoding utf-16), or re-save it as UTF-8 CSV"
        )


def _refuse_duplicate_names(path: Path, names: list[str]) -> None:
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(names, start=1):
        positions.setdefault(name, []).append(i)
    repeated = {name: at for name, at in positions.items() if len(at) > 1}
    if repeated:
        listed = "; ".join(f"{name!r} at columns {', '.join(map(str, at))}" for name, at in repeated.items())
        raise DataError(
            f"{path}: the header (line 1) names the same column more than once ({listed}): a column "
            "must be found by its name, so give each column a name of its own"
        )


def _sep_name(sep: str) -> str:
    return {"\t": "tab", ",": "comma"}.get(sep, repr(sep))
