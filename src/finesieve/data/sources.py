"""Where finesieve finds a named data set, and how an installed wheel fetches a missing one on first use.

    from finesieve.data.sources import find_dataset
    find_dataset("davidson")              # .../davidson_hate_offensive/davidson_hate_offensive.csv
    find_dataset("sms_spam", "/my/data")  # --data-dir: that folder must hold sms_spam/sms_spam.csv
    find_dataset("resumes")               # the resumes/ folder; never downloaded

The places, in order; the first that holds the data set wins:
  1. the explicit folder (`--data-dir`). When given it is the only place looked at: a folder the user named
     that lacks the data set is an error, never a silent fall-back to another copy;
  2. $FINESIEVE_DATA;
  3. the repository's `data/` folder, when finesieve runs from a checkout (an editable install): the first
     folder above this file that holds `pyproject.toml` and `src/finesieve/`;
  4. a `shared/data` folder above the working directory or above this file (where the data lived before
     the repository carried it; the resume data sets are only there);
  5. the download cache: $FINESIEVE_CACHE, else $XDG_CACHE_HOME/finesieve/data, else ~/.cache/finesieve/data.
Each folder has the same layout: `davidson_hate_offensive/davidson_hate_offensive.csv`,
`sms_spam/sms_spam.csv`, `resumes/`.

When none holds Davidson or SMS (an installed wheel carries no data), `fetch_dataset` downloads the public
file once into the cache: Davidson et al.'s `labeled_data.csv` from their GitHub repository, the SMS Spam
Collection zip from the UCI archive. It converts it to the columns of the repository's copy, checks it
(columns, labels known, every count a number, a plausible number of rows; all problems reported together,
no row dropped), writes it atomically (a temporary file, then os.replace) and records the URL and the
download's SHA-256 beside it in `<name>.source.json`.

Note: the public files are the FULL data sets (24,783 tweets, 5,574 messages), not the development parts
the repository carries (19,826 and 4,459; the rest is held back for independent evaluation). Figures on a
split of a downloaded file are therefore not comparable with figures on a split of the repository's copy.
The resume data sets are never downloaded (their licence is unclear): point --data-dir or $FINESIEVE_DATA
at the folder that holds resumes/.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import http.client
import io
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from finesieve.data.errors import ConfigError, DataError, RowProblem

DAVIDSON_URL = (
    "https://raw.githubusercontent.com/t-davidson/hate-speech-and-offensive-language/master/data/labeled_data.csv"
)
SMS_SPAM_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
TIMEOUT_S = 60.0  # per network operation (connect, each read), not for the whole download
SHOW_PROBLEMS = 10  # row problems spelled out in an error; the rest are counted


class Converted(NamedTuple):
    """A public file in this project's format: the CSV header and its rows (counts as int), in source order."""

    header: list[str]
    rows: list[list]
    encoding: str  # how the download was decoded


@dataclass(frozen=True)
class Source:
    """One named data set: where it sits in a data folder and, if it can be fetched, from where and how."""

    name: str
    relpath: str  # inside a data folder, "/"-separated: a CSV file, or a folder for a path-only data set
    url: str | None = None  # the public full data set; None: never downloaded
    rows: tuple[int, int] | None = None  # plausible row count of the full public set (inclusive)
    convert: Callable[[bytes, str], Converted] | None = None  # (download, url) -> this project's format


def find_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    url: str | None = None,
    expected_rows: tuple[int, int] | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """The path of data set `name` (a CSV file; the folder for `resumes`), from the first place that holds it,
    fetched into the cache when none does. `url` and `expected_rows` replace the source's for this call (a
    mirror, or a file:// URL in tests); `timeout` is in seconds. Raises DataError saying every place it
    looked, what failed and the fix."""
    source = get_source(name)
    if url is not None and source.url is None:
        raise ConfigError(
            f"the {name} data set is never downloaded, so url= does not apply: point --data-dir "
            f"or FINESIEVE_DATA at the folder that holds {source.relpath}/"
        )
    if data_dir:  # None or "": not given
        path = Path(data_dir).expanduser() / source.relpath
        if not path.exists():
            raise DataError(
                f"--data-dir {data_dir} does not hold the {name} data set (no {path}). Fix: pass the "
                f"folder that holds {source.relpath}, or leave --data-dir out to use the default places"
            )
        return path
    places = search_places(name)
    for _, folder in places:
        if folder is not None and (folder / source.relpath).exists():
            return folder / source.relpath
    if source.url is None:
        raise DataError(_not_found(source, places, reason=None))
    url = url or source.url
    try:
        return fetch_dataset(name, url=url, cache=cache_dir(), expected_rows=expected_rows, timeout=timeout)
    except _Unreachable as err:
        raise DataError(_not_found(source, places, reason=f"downloading it failed: {err}")) from err


def search_places(name: str) -> list[tuple[str, Path | None]]:
    """The default places (all but --data-dir) in lookup order for data set `name`, as (description, folder);
    folder is None where there is none."""
    source = get_source(name)
    env, repo, shared = os.environ.get("FINESIEVE_DATA"), repo_data_dir(), shared_data_dir(source.relpath)
    return [
        ("$FINESIEVE_DATA" + ("" if env else " (not set)"), Path(env).expanduser() if env else None),
        ("the repository's data/ folder" + ("" if repo else " (finesieve is not running from a checkout)"), repo),
        (
            f"a shared/data folder above {Path.cwd()} or above the finesieve package"
            + ("" if shared else " (none found)"),
            shared,
        ),
        ("the download cache", cache_dir()),
    ]


def repo_data_dir() -> Path | None:
    """`data/` of the checkout this module runs from (an editable install), or None for an installed wheel."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "finesieve").is_dir():
            return parent / "data"
    return None


def shared_data_dir(relpath: str) -> Path | None:
    """The first `shared/data` holding `relpath` above the working directory, then above this file."""
    for start in (Path.cwd().resolve(), Path(__file__).resolve()):
        for parent in [start, *start.parents]:
            if (parent / "shared" / "data" / relpath).exists():
                return parent / "shared" / "data"
    return None


def cache_dir() -> Path:
    """The per-user download cache: $FINESIEVE_CACHE, else $XDG_CACHE_HOME/finesieve/data, else ~/.cache/..."""
    if os.environ.get("FINESIEVE_CACHE"):
        return Path(os.environ["FINESIEVE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "finesieve" / "data"


def get_source(name: str) -> Source:
    """The Source of a data set name; DataError with the valid names (and the closest) otherwise."""
    if name in SOURCES:
        return SOURCES[name]
    close = difflib.get_close_matches(name, list(SOURCES), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise DataError(f"unknown data set {name!r}{hint}: expected one of {', '.join(SOURCES)}")


def fetch_dataset(
    name: str,
    *,
    url: str | None = None,
    cache: str | Path | None = None,
    expected_rows: tuple[int, int] | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download data set `name` from `url` (default: its public source), convert and check it, and write it
    atomically into `cache` (default: cache_dir()) with `<stem>.source.json` beside it. Returns the CSV path.
    Overwrites an earlier copy. Raises DataError when the download is not what was expected."""
    source = get_source(name)
    if source.url is None or source.convert is None:
        raise DataError(
            f"the {name} data set is never downloaded: point --data-dir or FINESIEVE_DATA at the "
            f"folder that holds {source.relpath}/"
        )
    url = url or source.url
    target = Path(cache or cache_dir()) / source.relpath
    print(f"finesieve: downloading the {name} data set from {url} into {target.parent} (once)", file=sys.stderr)
    raw = _download(url, timeout)
    converted = source.convert(raw, url)
    _check_row_count(name, url, len(converted.rows), expected_rows or source.rows)
    body = _csv_bytes(converted)
    record = {
        "dataset": name,
        "file": target.name,
        "url": url,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "bytes": len(raw),
        "encoding": converted.encoding,
        "rows": len(converted.rows),
        "labels": dict(Counter(row[converted.header.index("label")] for row in converted.rows)),
        "file_sha256": hashlib.sha256(body).hexdigest(),
        "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "note": "the full public data set, not the development part the repository carries",
    }
    provenance = target.with_name(f"{Path(source.relpath).stem}.source.json")
    _write_atomically({provenance: (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(), target: body})
    return target


class _Unreachable(DataError):
    """The source could not be reached (offline, DNS, refused, timed out, HTTP error)."""


def _download(url: str, timeout: float) -> bytes:
    from finesieve import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"finesieve/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        raise _Unreachable(f"could not reach {url}: {getattr(err, 'reason', None) or err}") from err


def _not_found(source: Source, places: list[tuple[str, Path | None]], reason: str | None) -> str:
    lines = [
        f"the {source.name} data set ({source.relpath}) was not found. Looked in, in order:",
        "  - --data-dir (not given)",
    ]
    for what, folder in places:
        lines.append(f"  - {what}" + (f": {folder / source.relpath} (absent)" if folder is not None else ""))
    where = f"a folder holding {source.relpath}" + ("/" if source.url is None else "")
    if reason is None:
        lines.append(f"It is never downloaded. Fix: pass --data-dir (or set FINESIEVE_DATA) pointing at {where}.")
    else:
        lines.append(f"And {reason}.")
        lines.append(
            f"Fix: pass --data-dir (or set FINESIEVE_DATA) pointing at {where}, or go online once so "
            f"finesieve can download it into {cache_dir()}."
        )
    return "\n".join(lines)


def _check_row_count(name: str, url: str, n: int, expected: tuple[int, int]) -> None:
    low, high = expected
    if not low <= n <= high:
        raise DataError(
            f"{url}: {n:,} rows, expected {low:,} to {high:,} for the full {name} data set; the "
            "download may be cut short or the source changed. Fix: retry, or pass --data-dir "
            "pointing at a folder holding a checked copy"
        )


def _decode(raw: bytes) -> tuple[str, str]:
    """UTF-8 (with or without a BOM); Latin-1 for an older export, which never fails and is recorded."""
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"


def _raise_problems(url: str, problems: list[RowProblem], n_rows: int) -> None:
    if problems:
        shown = "\n  ".join(str(p) for p in problems[:SHOW_PROBLEMS])
        more = f"\n  ... and {len(problems) - SHOW_PROBLEMS} more" if len(problems) > SHOW_PROBLEMS else ""
        raise DataError(
            f"{url}: {len(problems)} problem(s) in {n_rows:,} rows, so nothing was written; the "
            f"download is not the expected public file:\n  {shown}{more}"
        )


DAVIDSON_CLASSES = {"0": "hate_speech", "1": "offensive", "2": "neither"}  # the source's `class`
DAVIDSON_COUNTS = ("count", "hate_speech", "offensive_language", "neither")


def convert_davidson(raw: bytes, url: str) -> Converted:
    """Davidson et al.'s labeled_data.csv (unnamed index, count, hate_speech, offensive_language, neither,
    class, tweet) -> text, label, flagged, count, hate_speech, offensive_language, neither."""
    text, encoding = _decode(raw)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    missing = [c for c in (*DAVIDSON_COUNTS, "class", "tweet") if c not in header]
    if missing:
        raise DataError(
            f"{url}: missing column(s) {', '.join(missing)}; found {header[:10]}. Expected Davidson et "
            "al.'s labeled_data.csv (count, hate_speech, offensive_language, neither, class, tweet)"
        )
    at = {c: header.index(c) for c in (*DAVIDSON_COUNTS, "class", "tweet")}
    rows, problems, i = [], [], 0
    for i, row in enumerate(reader, start=1):
        if len(row) != len(header):
            problems.append(
                RowProblem(
                    url,
                    i,
                    "(row)",
                    ",".join(row)[:60],
                    "bad_field_count",
                    f"expected {len(header)} fields as in the header, got {len(row)}",
                )
            )
            continue
        label = DAVIDSON_CLASSES.get(row[at["class"]])
        if label is None:
            problems.append(
                RowProblem(
                    url,
                    i,
                    "class",
                    row[at["class"]][:60],
                    "unknown_label",
                    "expected 0 (hate speech), 1 (offensive language) or 2 (neither)",
                )
            )
        counts = [row[at[c]] for c in DAVIDSON_COUNTS]
        for column, value in zip(DAVIDSON_COUNTS, counts):
            if not value.isdigit():
                problems.append(
                    RowProblem(url, i, column, value[:60], "not_a_count", "expected a number of annotators (0 or more)")
                )
        if label is not None and all(v.isdigit() for v in counts):
            rows.append([row[at["tweet"]], label, int(label != "neither"), *map(int, counts)])
    _raise_problems(url, problems, i)
    return Converted(["text", "label", "flagged", *DAVIDSON_COUNTS], rows, encoding)


SMS_MEMBER = "SMSSpamCollection"  # inside the UCI zip: one `label<TAB>text` line per message


def convert_sms_spam(raw: bytes, url: str) -> Converted:
    """The UCI zip holding SMSSpamCollection (label<TAB>text lines) -> label, text, flagged. The text is kept
    as it is (HTML entities, leading and trailing spaces), as in the repository's copy."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile as err:
        raise DataError(
            f"{url}: not a zip archive ({len(raw):,} bytes starting {raw[:20]!r}); expected the UCI "
            f"zip holding {SMS_MEMBER}"
        ) from err
    members = [m for m in archive.namelist() if Path(m).name == SMS_MEMBER]
    if not members:
        raise DataError(
            f"{url}: the zip holds no {SMS_MEMBER} (it holds {archive.namelist()[:10]}); expected "
            "the UCI SMS Spam Collection zip"
        )
    text, encoding = _decode(archive.read(members[0]))
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    rows, problems = [], []
    for i, line in enumerate(lines, start=1):
        label, tab, message = line.removesuffix("\r").partition("\t")
        if not tab or label not in ("ham", "spam"):
            problems.append(
                RowProblem(
                    f"{url}!{members[0]}",
                    i,
                    "label",
                    line[:60],
                    "unknown_label",
                    "expected a line 'ham<TAB>text' or 'spam<TAB>text'",
                )
            )
            continue
        rows.append([label, message, int(label == "spam")])
    _raise_problems(url, problems, len(lines))
    return Converted(["label", "text", "flagged"], rows, encoding)


def _csv_bytes(converted: Converted) -> bytes:
    """The repository's CSV format: UTF-8, every text field quoted, numbers bare, `\\n` line ends."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writerow(converted.header)
    writer.writerows(converted.rows)
    return buffer.getvalue().encode("utf-8")


def _write_atomically(files: dict[Path, bytes]) -> None:
    """Write every file to a temporary file beside it, then move each into place (os.replace, atomic on one
    file system), in the given order: a reader never sees a partial file, and a failure leaves no temp file."""
    temps: dict[Path, str] = {}
    try:
        for path, body in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temps[path] = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
        for path, temp in temps.items():
            os.replace(temp, path)
    finally:
        for temp in temps.values():
            if os.path.exists(temp):
                os.unlink(temp)


SOURCES: dict[str, Source] = {
    "davidson": Source(
        "davidson",
        "davidson_hate_offensive/davidson_hate_offensive.csv",
        DAVIDSON_URL,
        rows=(20_000, 30_000),
        convert=convert_davidson,
    ),
    "sms_spam": Source(
        "sms_spam", "sms_spam/sms_spam.csv", SMS_SPAM_URL, rows=(5_000, 6_500), convert=convert_sms_spam
    ),
    "resumes": Source("resumes", "resumes"),
}
