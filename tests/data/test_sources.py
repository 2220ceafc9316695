"""finesieve.data.sources: the repository's copies of the demo data, the lookup order, and the first-use download
(end to end with file:// URLs to public-format files built from real rows), its atomic write and cache, and the
errors when nothing holds a data set."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from finesieve.data import sources
from finesieve.data.errors import DataError
from finesieve.data.sources import SOURCES, convert_davidson, find_dataset

REPO_DATA = Path(__file__).resolve().parents[2] / "data"
DAVIDSON = SOURCES["davidson"].relpath
SMS = SOURCES["sms_spam"].relpath
PUBLIC_DAVIDSON_HEADER = ["", "count", "hate_speech", "offensive_language", "neither", "class", "tweet"]
CLASS_OF = {"hate_speech": "0", "offensive": "1", "neither": "2"}


@pytest.fixture
def nowhere(tmp_path, monkeypatch) -> Path:
    """No data anywhere but what a test puts there: no env folder, no checkout, no shared/data, an empty cache.
    Returns the cache folder."""
    monkeypatch.delenv("FINESIEVE_DATA", raising=False)
    monkeypatch.setenv("FINESIEVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "repo_data_dir", lambda: None)
    monkeypatch.setattr(sources, "shared_data_dir", lambda relpath: None)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _davidson_public(rows: list[dict]) -> bytes:
    """Davidson et al.'s labeled_data.csv format (as pandas wrote it): unnamed index, counts, class, tweet."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PUBLIC_DAVIDSON_HEADER)
    for i, r in enumerate(rows):
        writer.writerow(
            [
                i * 3,
                r["count"],
                r["hate_speech"],
                r["offensive_language"],
                r["neither"],
                r.get("class", CLASS_OF[r["label"]]),
                r["text"],
            ]
        )
    return buffer.getvalue().encode("utf-8")


def _sms_public_zip(rows: list[dict]) -> bytes:
    """The UCI zip: SMSSpamCollection (label<TAB>text lines) beside a readme."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("SMSSpamCollection", "".join(f"{r['label']}\t{r['text']}\n" for r in rows).encode("utf-8"))
        archive.writestr("readme", "SMS Spam Collection v.1\n")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def davidson_rows(davidson_csv) -> list[dict]:
    """~50 real rows: 15 per class plus 5 multi-line tweets and 5 with double quotes (the hard CSV cases)."""
    rows = _rows(davidson_csv)
    picked = [r for label in CLASS_OF for r in [r for r in rows if r["label"] == label][:15]]
    picked += [r for r in rows if "\n" in r["text"]][:5] + [r for r in rows if '"' in r["text"]][:5]
    return picked


@pytest.fixture(scope="module")
def sms_rows(sms_csv) -> list[dict]:
    """~50 real SMS: 20 ham, 20 spam, 5 with leading or trailing spaces and 5 with non-ASCII characters."""
    rows = _rows(sms_csv)
    picked = [r for label in ("ham", "spam") for r in [r for r in rows if r["label"] == label][:20]]
    picked += [r for r in rows if r["text"] != r["text"].strip()][:5]
    picked += [r for r in rows if any(ord(c) > 127 for c in r["text"])][:5]
    return picked


# The repository's copies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("relpath", [DAVIDSON, SMS])
def test_repo_copies_match_the_sha256_in_their_readme(relpath):
    path = REPO_DATA / relpath
    readme = (path.parent / "README.md").read_text(encoding="utf-8")
    stated = re.search(rf"SHA-256 of `{re.escape(path.name)}`[^`]*`([0-9a-f]{{64}})`", readme)
    assert stated, f"{path.parent / 'README.md'} states no SHA-256 for {path.name}"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == stated.group(1)
    for needed in ("Licence", "@inproceedings", "## Columns"):
        assert needed in readme


def test_repo_does_not_carry_the_resumes():
    assert not list(REPO_DATA.rglob("*resume*"))
    assert "Not here, on purpose: the resume data sets" in (REPO_DATA / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["davidson", "sms_spam"])
def test_conversion_of_the_public_format_reproduces_the_repo_copy_byte_for_byte(name, tmp_path):
    """The full repository file, written in the public format and converted back, is the same bytes: a fetched
    file reads exactly like the repository's copy."""
    repo_file = REPO_DATA / SOURCES[name].relpath
    rows = _rows(repo_file)
    public = tmp_path / "public"
    public.write_bytes(_davidson_public(rows) if name == "davidson" else _sms_public_zip(rows))
    got = sources.fetch_dataset(name, url=public.as_uri(), cache=tmp_path / "cache", expected_rows=(len(rows),) * 2)
    assert got.read_bytes() == repo_file.read_bytes()


# Lookup order ------------------------------------------------------------------------------------------------


def _holding(folder: Path, relpath: str) -> Path:
    (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
    (folder / relpath).write_text('"text","label"\n"x","neither"\n')
    return folder


def test_lookup_order_explicit_then_env_then_repo_then_cache(tmp_path, monkeypatch):
    explicit, env, cache = (_holding(tmp_path / n, DAVIDSON) for n in ("explicit", "env", "cache"))
    monkeypatch.setenv("FINESIEVE_DATA", str(env))
    monkeypatch.setenv("FINESIEVE_CACHE", str(cache))
    monkeypatch.setattr(sources, "shared_data_dir", lambda relpath: None)
    monkeypatch.chdir(tmp_path)

    assert find_dataset("davidson", explicit) == explicit / DAVIDSON
    assert find_dataset("davidson") == env / DAVIDSON
    monkeypatch.delenv("FINESIEVE_DATA")
    assert find_dataset("davidson") == REPO_DATA / DAVIDSON
    monkeypatch.setattr(sources, "repo_data_dir", lambda: None)
    assert find_dataset("davidson") == cache / DAVIDSON
    # An env folder without the data set is passed over; a --data-dir without it is an error naming it.
    monkeypatch.setenv("FINESIEVE_DATA", str(tmp_path / "empty"))
    assert find_dataset("davidson") == cache / DAVIDSON
    with pytest.raises(DataError, match=r"--data-dir .*empty.* does not hold the davidson data set"):
        find_dataset("davidson", tmp_path / "empty")


def test_shared_data_above_the_working_directory_is_still_found(tmp_path, monkeypatch):
    shared = _holding(tmp_path / "shared" / "data", SMS)
    (tmp_path / "work" / "deep").mkdir(parents=True)
    monkeypatch.delenv("FINESIEVE_DATA", raising=False)
    monkeypatch.setenv("FINESIEVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "repo_data_dir", lambda: None)
    monkeypatch.chdir(tmp_path / "work" / "deep")
    assert find_dataset("sms_spam") == shared / SMS


def test_demo_finds_the_repo_data_from_a_directory_outside_the_checkout(tmp_path, monkeypatch):
    """`make demo` / `finesieve demo` on a fresh clone: no env, no shared/data, run from anywhere."""
    from finesieve.demo import find_data_dir, run_demo

    monkeypatch.delenv("FINESIEVE_DATA", raising=False)
    monkeypatch.setenv("FINESIEVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "shared_data_dir", lambda relpath: None)
    monkeypatch.chdir(tmp_path)
    assert find_data_dir() == REPO_DATA
    assert find_data_dir(REPO_DATA) == REPO_DATA
    assert not (tmp_path / "cache").exists()  # nothing was downloaded
    # run_demo locates its data the same way: a --data-dir without it fails before any work, naming it.
    with pytest.raises(DataError, match="does not hold the davidson data set"):
        run_demo(out=tmp_path / "demo", data_dir=tmp_path / "no-data")


# First-use download ------------------------------------------------------------------------------------------


def test_davidson_download_end_to_end_then_from_the_cache(nowhere, tmp_path, davidson_rows):
    public = tmp_path / "labeled_data.csv"
    public.write_bytes(_davidson_public(davidson_rows))
    n = len(davidson_rows)

    path = find_dataset("davidson", url=public.as_uri(), expected_rows=(n, n))
    assert path == nowhere / DAVIDSON
    got = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(got.columns) == ["text", "label", "flagged", "count", "hate_speech", "offensive_language", "neither"]
    assert set(got["label"]) == {"hate_speech", "offensive", "neither"}
    expected = pd.DataFrame(davidson_rows)[list(got.columns)]
    pd.testing.assert_frame_equal(got, expected)  # every row, in source order, text untouched
    record = json.loads(path.with_name("davidson_hate_offensive.source.json").read_text())
    assert record["url"] == public.as_uri() and record["rows"] == n
    assert record["sha256"] == hashlib.sha256(public.read_bytes()).hexdigest()
    assert record["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "full public data set" in record["note"]

    public.unlink()  # the second call must not fetch: the source is gone
    assert find_dataset("davidson", url=public.as_uri()) == path


def test_sms_download_end_to_end(nowhere, tmp_path, sms_rows):
    public = tmp_path / "sms+spam+collection.zip"
    public.write_bytes(_sms_public_zip(sms_rows))
    n = len(sms_rows)

    path = find_dataset("sms_spam", url=public.as_uri(), expected_rows=(n, n))
    got = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(got.columns) == ["label", "text", "flagged"]
    assert got["text"].tolist() == [r["text"] for r in sms_rows]  # spaces and non-ASCII kept
    assert got["label"].tolist() == [r["label"] for r in sms_rows]
    assert (got["flagged"] == (got["label"] == "spam").astype(int).astype(str)).all()
    record = json.loads(path.with_name("sms_spam.source.json").read_text())
    assert record["labels"] == dict(Counter(r["label"] for r in sms_rows)) and record["encoding"] == "utf-8"


def test_bad_download_writes_nothing(nowhere, tmp_path, davidson_rows):
    """A download that is not the expected file (non-numeric count, unknown class, too few rows, not a zip) is
    refused with every problem named, and leaves nothing in the cache."""
    rows = [dict(r) for r in davidson_rows]
    rows[0]["count"], rows[1]["class"] = "many", "9"
    bad = tmp_path / "bad.csv"
    bad.write_bytes(_davidson_public(rows))
    with pytest.raises(DataError) as err:
        find_dataset("davidson", url=bad.as_uri(), expected_rows=(1, 100))
    message = str(err.value)
    assert "2 problem(s)" in message and "nothing was written" in message
    assert "row 1, column 'count': not_a_count (value 'many')" in message
    assert "row 2, column 'class': unknown_label (value '9')" in message

    good = tmp_path / "good.csv"
    good.write_bytes(_davidson_public(davidson_rows))
    with pytest.raises(DataError, match=rf"{len(davidson_rows)} rows, expected 20,000 to 30,000"):
        find_dataset("davidson", url=good.as_uri())  # the default plausible range of the full set

    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"<html>moved</html>")
    with pytest.raises(DataError, match="not a zip archive"):
        find_dataset("sms_spam", url=not_zip.as_uri())

    assert not nowhere.exists() or not [p for p in nowhere.rglob("*") if p.is_file()]


def test_interrupted_write_leaves_no_partial_file(nowhere, tmp_path, davidson_rows, monkeypatch):
    public = tmp_path / "labeled_data.csv"
    public.write_bytes(_davidson_public(davidson_rows))
    real_replace = sources.os.replace

    def replace(src, dst):
        if str(dst).endswith(".csv"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(sources.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        find_dataset("davidson", url=public.as_uri(), expected_rows=(1, 100))
    assert not (nowhere / DAVIDSON).exists()
    assert not list(nowhere.rglob("*.part"))


# Errors when nothing holds a data set -------------------------------------------------------------------------


def test_offline_error_names_the_data_set_every_place_the_url_and_the_fix(nowhere):
    url = "http://127.0.0.1:9/x"  # the discard port: nothing listens, the connection is refused at once
    with pytest.raises(DataError) as err:
        find_dataset("davidson", url=url, timeout=5)
    message = str(err.value)
    for needed in (
        "the davidson data set",
        "--data-dir (not given)",
        "$FINESIEVE_DATA (not set)",
        "the repository's data/ folder",
        "shared/data",
        str(nowhere / DAVIDSON),
        url,
        "Fix: pass --data-dir (or set FINESIEVE_DATA)",
        "go online once",
    ):
        assert needed in message, needed
    assert not nowhere.exists()


def test_resumes_are_never_downloaded_and_missing_is_a_clear_error(nowhere, tmp_path, monkeypatch):
    with pytest.raises(DataError) as err:
        find_dataset("resumes")
    message = str(err.value)
    for needed in (
        "the resumes data set",
        "$FINESIEVE_DATA",
        "shared/data",
        "never downloaded",
        "pass --data-dir (or set FINESIEVE_DATA) pointing at a folder holding resumes/",
    ):
        assert needed in message, needed
    (tmp_path / "mine" / "resumes").mkdir(parents=True)
    monkeypatch.setenv("FINESIEVE_DATA", str(tmp_path / "mine"))
    assert find_dataset("resumes") == tmp_path / "mine" / "resumes"


def test_unknown_name_says_the_valid_ones():
    with pytest.raises(DataError, match=r"did you mean davidson\?.*davidson, sms_spam, resumes"):
        find_dataset("davidsn")


def test_davidson_header_mismatch_names_the_missing_columns():
    with pytest.raises(DataError, match="missing column.*class, tweet"):
        convert_davidson(b"text,label\nx,neither\n", "file:///x.csv")
