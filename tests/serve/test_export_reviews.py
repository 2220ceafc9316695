"""`finesieve data export-reviews` end to end: real messages moderated by the service, reviewed through the queue,
exported by the CLI, and read back by finesieve's own loader and replay source with the run's names."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from finesieve.cli import app as cli_app
from finesieve.data.spec import ColumnSpec
from finesieve.runs import save_run
from finesieve.serve import queue, store
from finesieve.serve.app import create_app
from finesieve.serve.db import Message, ReviewItem, utcnow
from finesieve.serve.review_export import META_COLUMNS
from finesieve.serve.settings import ServiceSettings
from finesieve.train.replay import replay_source

N_MESSAGES = 40
RUN_SPEC = {"text_col": "message", "label_cols": ["verdict"]}


@pytest.fixture(scope="module")
def named_run(tmp_path_factory, service_stages):
    """A run whose data used the columns `message` and `verdict`: the export must write those names."""
    return save_run(
        tmp_path_factory.mktemp("runs") / "named",
        service_stages[1],
        kind="tfidf",
        task={"classes": ["ham", "spam"], "multilabel": False, "positive": ["spam"], "threshold": 0.3},
        data={"column_spec": RUN_SPEC},
        metrics={},
    )


@pytest.fixture
def reviewed(db_url, service_cascade_run, sms_unseen):
    """Moderate SMS messages (every delivery audited), review every item with the data set's own label, and
    delete one text as retention would. Returns (db_url, {message_id: truth}, the purged id)."""
    rows = sms_unseen.head(N_MESSAGES)
    settings = ServiceSettings(database_url=db_url, runs={"spam": service_cascade_run}, audit_rate=1.0)
    app = create_app(settings)
    with Session(app.state.engine) as session, session.begin():
        key = store.create_api_key(session, "app", ["spam"])
    with TestClient(app) as client:
        body = {"model": "spam", "messages": [{"id": i, "text": t} for i, t in zip(rows.msg_id, rows.text)]}
        assert client.post("/v1/moderate", json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    engine = app.state.engine
    truth = dict(zip(rows.msg_id, rows.label))
    while True:
        with Session(engine) as session, session.begin():
            item = queue.lease_next(session, "ana", 600)
            if item is None:
                break
            spam = truth[item.message_id] == "spam"
            queue.decide(session, item.id, "ana", spam, "spam" if spam else None, f"note {item.message_id}")
    purged = rows.msg_id.iloc[0]
    with Session(engine) as session, session.begin():
        session.execute(update(Message).where(Message.id == purged).values(text=None))
    engine.dispose()
    return db_url, truth, purged


def export(*args: str):
    return CliRunner().invoke(cli_app, ["data", "export-reviews", *args])


def test_export_writes_the_runs_names_and_labels_that_replay_reads_back(reviewed, named_run, tmp_path):
    db_url, truth, purged = reviewed
    out = tmp_path / "reviews.csv"
    result = export("--db", db_url, "--run", str(named_run), "--out", str(out), "--model", "spam")
    assert result.exit_code == 0, result.output
    assert f"{N_MESSAGES - 1} reviewed messages written" in result.output
    assert "1 texts deleted by retention" in result.output

    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["message", "verdict", *META_COLUMNS]
    assert purged not in set(frame.message_id) and len(frame) == N_MESSAGES - 1
    assert dict(zip(frame.message_id, frame.verdict)) == {m: t for m, t in truth.items() if m != purged}
    assert set(frame.reason) <= {"flagged", "audit", "failure"} and {"flagged", "audit"} <= set(frame.reason)
    assert set(frame.reviewer) == {"ana"} and set(frame.model) == {"spam"}
    assert all(frame.note == "note " + frame.message_id)
    delivered = frame[frame.reason == "audit"]
    assert set(delivered.model_action) == {"deliver"}  # audits are sampled deliveries

    dataset, description = replay_source(out, ColumnSpec.model_validate(RUN_SPEC))
    assert len(dataset) == N_MESSAGES - 1 and "reviews.csv" in description
    by_text = dict(zip(frame.message, frame.verdict))
    assert [by_text[t] for t in dataset.texts] == [str(label) for label in dataset.labels]


def test_export_refuses_an_existing_file_and_filters_by_model_and_day(reviewed, named_run, tmp_path):
    db_url, _, _ = reviewed
    out = tmp_path / "reviews.csv"
    out.write_text("keep me\n")
    refused = export("--db", db_url, "--run", str(named_run), "--out", str(out))
    assert refused.exit_code != 0 and "--overwrite" in refused.output and out.read_text() == "keep me\n"
    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    later = export("--db", db_url, "--run", str(named_run), "--out", str(out), "--overwrite", "--since", tomorrow)
    assert later.exit_code == 0 and "0 reviewed messages written" in later.output
    assert len(pd.read_csv(out)) == 0
    other = export("--db", db_url, "--run", str(named_run), "--out", str(out), "--overwrite", "--model", "other")
    assert other.exit_code == 0 and "0 reviewed messages written" in other.output
    bad_day = export("--db", db_url, "--run", str(named_run), "--out", str(out), "--overwrite", "--since", "May 1")
    assert bad_day.exit_code != 0 and "YYYY-MM-DD" in bad_day.output


def test_a_decided_category_outside_the_run_is_skipped_and_counted(reviewed, named_run, tmp_path):
    db_url, truth, _ = reviewed
    from finesieve.serve.db import connect

    engine = connect(db_url)
    spam_id = next(m for m, t in truth.items() if t == "spam")
    with Session(engine) as session, session.begin():
        session.execute(update(ReviewItem).where(ReviewItem.message_id == spam_id).values(decided_category="phishing"))
    engine.dispose()
    out = tmp_path / "reviews.csv"
    result = export("--db", db_url, "--run", str(named_run), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "decided category not a positive class of the run ['spam']" in result.output
    assert spam_id not in set(pd.read_csv(out, dtype=str).message_id)


def test_retrain_takes_its_fresh_rows_from_the_service_database(db_url, sms_csv, sms_unseen, tmp_path):
    """`finesieve retrain PARENT --db URL --fresh reviews.csv`: the reviews of the parent's served messages are
    exported to reviews.csv (a file the new run's manifest names), then retrained on; an existing file is refused."""
    from finesieve.data.load import load_dataset
    from finesieve.runs import load_run
    from finesieve.train.recipe import train_reference

    pd.read_csv(sms_csv, dtype=str, keep_default_na=False).head(800).to_csv(tmp_path / "old.csv", index=False)
    parent = train_reference(
        "tfidf", load_dataset(tmp_path / "old.csv", ColumnSpec()), positive=["spam"], out=tmp_path / "parent", n_boot=50
    ).run_dir
    rows = sms_unseen.head(120)
    settings = ServiceSettings(database_url=db_url, runs={"spam": parent}, audit_rate=1.0, require_auth=False)
    app = create_app(settings)
    with TestClient(app) as client:
        body = {"model": "spam", "messages": [{"id": i, "text": t} for i, t in zip(rows.msg_id, rows.text)]}
        assert client.post("/v1/moderate", json=body).status_code == 200
    truth = dict(zip(rows.msg_id, rows.label))
    while True:
        with Session(app.state.engine) as session, session.begin():
            item = queue.lease_next(session, "ana", 600)
            if item is None:
                break
            spam = truth[item.message_id] == "spam"
            queue.decide(session, item.id, "ana", spam, "spam" if spam else None, None)
    app.state.engine.dispose()

    fresh, child = tmp_path / "reviews.csv", tmp_path / "child"
    args = ["retrain", str(parent), "--db", db_url, "--model", "spam", "--fresh", str(fresh), "--out", str(child)]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code in (0, 4), result.output  # promoted or refused: the run is written either way
    assert "120 reviewed messages written" in result.output
    assert len(pd.read_csv(fresh)) == 120
    manifest = load_run(child).manifest
    assert manifest.retrain["fresh"]["source"] == str(fresh) and manifest.parent_run == str(parent)
    again = CliRunner().invoke(cli_app, [*args[:-1], str(tmp_path / "child2")])
    assert again.exit_code == 2 and "reviews.csv" in again.output  # the export never overwrites
    lonely = CliRunner().invoke(
        cli_app, ["retrain", str(parent), "--fresh", str(fresh), "--model", "spam", "--out", "x"]
    )
    assert lonely.exit_code == 2 and "--db" in lonely.output
