"""Fixtures for the moderation service: small real runs on SMS spam data, and a database per test.

Every database test runs on SQLite, and on PostgreSQL too when FINESIEVE_TEST_PG_URL names a server (each test gets
a fresh database on it, dropped afterwards). Without the URL the PostgreSQL cases skip, unless
FINESIEVE_REQUIRE_PG=1, which makes them fail: CI that promises PostgreSQL coverage cannot lose it silently.
"""

from __future__ import annotations

import os
import uuid

import pandas as pd
import pytest

from finesieve.data.load import load_dataset
from finesieve.data.spec import ColumnSpec
from finesieve.models.cascade import Cascade, CascadeThresholds
from finesieve.models.rules import RulesScorer
from finesieve.models.tfidf import TfidfLogReg
from finesieve.runs import save_run

FIT_ROWS = 600
TASK = {"classes": ["ham", "spam"], "multilabel": False, "positive": ["spam"]}
THRESHOLDS = CascadeThresholds(
    escalate=0.2,
    review=0.5,
    block={"spam": 0.9},
    rule_modes={"prize": "block", "money": "review", "call-to-action": "off"},
)
PG_ENV, REQUIRE_PG_ENV = "FINESIEVE_TEST_PG_URL", "FINESIEVE_REQUIRE_PG"


@pytest.fixture(scope="session")
def sms_unseen(sms_csv) -> pd.DataFrame:
    """SMS rows the runs were not fitted on (columns label, text, msg_id)."""
    df = pd.read_csv(sms_csv, dtype=str, keep_default_na=False)
    df = df.assign(msg_id=[f"sms-{i}" for i in range(len(df))])
    return df.iloc[FIT_ROWS : FIT_ROWS + 1000].reset_index(drop=True)


@pytest.fixture(scope="session")
def service_stages(sms_csv):
    ds = load_dataset(sms_csv, ColumnSpec(text_col="text", label_cols=("label",)), max_rows=FIT_ROWS)
    model = TfidfLogReg().fit(ds.texts, ds.labels)
    prefilter = TfidfLogReg(word_ngrams=(1, 1), char_ngrams=(3, 3), max_features=2000).fit(ds.texts, ds.labels)
    rules = RulesScorer(policy="builtin:spam").fit(ds.texts, ds.labels)
    return model, prefilter, rules


@pytest.fixture(scope="session")
def service_cascade(service_stages) -> Cascade:
    """The cascade (spam rules -> small TF-IDF -> TF-IDF) in memory, in which every stage and every action occurs."""
    model, prefilter, rules = service_stages
    return Cascade(model, positive=["spam"], thresholds=THRESHOLDS, prefilter=prefilter, rules=rules)


@pytest.fixture(scope="session")
def service_cascade_run(tmp_path_factory, service_cascade):
    """`service_cascade` saved as a run directory."""
    return save_run(
        tmp_path_factory.mktemp("runs") / "cascade",
        service_cascade,
        kind="cascade",
        task={**TASK, "threshold": THRESHOLDS.review},
        data={},
        metrics={},
    )


@pytest.fixture(scope="session")
def service_tfidf_run(tmp_path_factory, service_stages):
    """The small TF-IDF alone: a single-scorer run served as a one-stage cascade at its threshold 0.3."""
    return save_run(
        tmp_path_factory.mktemp("runs") / "tfidf",
        service_stages[1],
        kind="tfidf",
        task={**TASK, "threshold": 0.3},
        data={},
        metrics={},
    )


def _postgres_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        message = f"PostgreSQL tests need {PG_ENV}=postgresql+psycopg://USER@HOST:PORT/DB"
        if os.environ.get(REQUIRE_PG_ENV) == "1":
            pytest.fail(f"{REQUIRE_PG_ENV}=1 but {PG_ENV} is not set: {message}")
        pytest.skip(message)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database: a SQLite file, or a fresh PostgreSQL database dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'service.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(_postgres_url())
    name = f"finesieve_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
