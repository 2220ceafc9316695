"""Shared fixtures: real data slices from the shared data folder, found next to the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest


REPO_DATA = Path(__file__).resolve().parents[1] / "data"  # the demo data the repository carries


def find_shared_data() -> Path:
    """The data folder for the tests: $FINESIEVE_SHARED_DATA, else the first `shared/data` above this checkout,
    else the repository's own data/ (Davidson and SMS only: the resume data sets are not in the repository, so
    their fixtures skip)."""
    env = os.environ.get("FINESIEVE_SHARED_DATA")
    if env:
        return Path(env)
    for parent in [*Path(__file__).resolve().parents, *Path.cwd().resolve().parents]:
        candidate = parent / "shared" / "data"
        if (candidate / "davidson_hate_offensive").is_dir():
            return candidate
    if (REPO_DATA / "davidson_hate_offensive").is_dir():
        return REPO_DATA
    raise RuntimeError(
        f"no data for the tests: neither shared/data above the checkout nor {REPO_DATA}; set "
        "FINESIEVE_SHARED_DATA to the folder holding davidson_hate_offensive/ and sms_spam/"
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return find_shared_data()


@pytest.fixture(scope="session")
def davidson_csv(shared_data) -> Path:
    return shared_data / "davidson_hate_offensive" / "davidson_hate_offensive.csv"


@pytest.fixture(scope="session")
def sms_csv(shared_data) -> Path:
    return shared_data / "sms_spam" / "sms_spam.csv"


@pytest.fixture(scope="session")
def resumes_dir(shared_data) -> Path:
    """The resume data sets' folder; skips where it is absent (the repository does not carry them: licence unclear)."""
    folder = shared_data / "resumes"
    if not folder.is_dir():
        pytest.skip(f"the resume data sets are not in {shared_data} (the repository does not carry them): set "
                    "FINESIEVE_SHARED_DATA to a folder holding resumes/ to run this test")
    return folder


@pytest.fixture(scope="session")
def davidson_slice(davidson_csv) -> pd.DataFrame:
    """A fixed, stratified 2,000-row slice of the real Davidson data (all three classes present)."""
    df = pd.read_csv(davidson_csv, dtype=str, keep_default_na=False)
    parts = [g.sample(n=min(len(g), n), random_state=0) for (label, g), n in
             zip(df.groupby("label"), (300, 500, 1200))]  # hate_speech, neither, offensive (sorted)
    return pd.concat(parts).sample(frac=1.0, random_state=0).reset_index(drop=True)
