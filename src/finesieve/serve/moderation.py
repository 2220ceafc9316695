"""Moderate messages online: prepare -> decide -> persist, one batch at a time, before anything is answered.

    from finesieve.serve.moderation import Moderator, MessageIn, load_models
    moderator = Moderator(load_models({"spam": "runs/cascade"}), engine, settings)
    outcomes = moderator.moderate("spam", [MessageIn(id="m1", text="WIN a prize, call 555 123 4567")])

Each text is cleaned and redacted as the run's training texts were (`prepare`); only the redacted text is stored.
The run decides as a cascade (`finesieve.serve.batch.as_cascade`: a single scorer becomes a one-stage cascade at
its threshold) and the decision rows are built by `batch.decisions_frame`, as `finesieve score` builds them.

What is stored, in one transaction, before the caller hears anything:
    messages      one row per new message id (a known id is not decided again: its stored decision is returned
                  with duplicate=True; a race between two requests is settled by the primary key)
    review_items  `flagged` for every review or block (priority: its score); `audit` for a deterministic sample
                  of `audit_rate` of deliveries (by a hash of the message id, so a retry samples the same);
                  `failure` for every message the model could not decide
A model that raises or runs past `model_timeout_s` never delivers silently: its messages get `failure_action`
(review by default), decided_by "failure", and the reason in `failure`. When a batch raises, each message is
retried alone, so one poisonous message does not send its whole batch to review.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from finesieve.data.errors import ConfigError, FinesieveError
from finesieve.data.preprocess import prepare
from finesieve.data.redact import Redactor
from finesieve.models.cascade import STAGES, Cascade
from finesieve.runs import MANIFEST, Run, load_run
from finesieve.serve import store
from finesieve.serve.batch import as_cascade, decisions_frame
from finesieve.serve.db import Message
from finesieve.serve.settings import ServiceSettings

FAILURE_PRIORITY = 2.0  # above any score (scores lie in [0, 1]): a message nobody decided is looked at first
AUDIT_PRIORITY = 0.0


@dataclass
class ServedModel:
    """One run loaded for serving. Its decide calls run one at a time on its own worker thread, which bounds them
    with a timeout and keeps a scorer that is not thread-safe from being entered twice."""

    name: str
    run: Run
    cascade: Cascade
    version: str  # run directory name @ sha256 of its manifest.json
    redactor: Redactor
    worker: ThreadPoolExecutor = field(repr=False)

    def close(self) -> None:
        self.worker.shutdown(wait=False, cancel_futures=True)


def model_version(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    return f"{run_dir.resolve().name}@{hashlib.sha256((run_dir / MANIFEST).read_bytes()).hexdigest()}"


def load_models(runs: Mapping[str, str | Path]) -> dict[str, ServedModel]:
    """Load every run by its serving name; one ConfigError lists every run that cannot be served, with its file."""
    if not runs:
        raise ConfigError("no model to serve: name at least one run directory, e.g. `finesieve serve runs/cascade`")
    models, problems = {}, []
    for name, path in runs.items():
        try:
            run = load_run(path)
            models[name] = ServedModel(
                name=name,
                run=run,
                cascade=as_cascade(run),
                version=model_version(path),
                redactor=Redactor(run.preprocessing.redaction),
                worker=ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}"),
            )
        except (FinesieveError, ValidationError, OSError) as err:
            problems.append(f"model {name!r} ({path}): {err}")
    if problems:
        for served in models.values():
            served.close()
        raise ConfigError("cannot start the service: " + " | ".join(problems))
    return models


@dataclass(frozen=True)
class MessageIn:
    text: str
    id: str | None = None


@dataclass
class Outcome:
    """What the service answers for one message (stored or just decided)."""

    id: str
    model: str
    model_version: str
    action: str
    category: str
    decided_by: str
    score: float | None
    category_scores: dict[str, float]
    stage_scores: dict[str, float]
    rules_fired: list[str]
    latency_ms: float
    failure: str | None
    duplicate: bool

    @classmethod
    def from_row(cls, row: Message, *, duplicate: bool) -> Outcome:
        return cls(
            id=row.id,
            model=row.model,
            model_version=row.model_version,
            action=row.action,
            category=row.category,
            decided_by=row.decided_by,
            score=row.score,
            category_scores=dict(row.category_scores or {}),
            stage_scores=dict(row.stage_scores or {}),
            rules_fired=list(row.rules_fired or []),
            latency_ms=row.latency_ms,
            failure=row.failure,
            duplicate=duplicate,
        )


def audit_sampled(message_id: str, rate: float) -> bool:
    """Whether a delivered message joins the audit sample: the same id always gives the same answer."""
    digest = int.from_bytes(hashlib.sha256(message_id.encode("utf-8")).digest()[:8], "big")
    return digest / 2**64 < rate


class Moderator:
    """Decides and stores batches of messages for the served models."""

    def __init__(self, models: dict[str, ServedModel], engine: Engine, settings: ServiceSettings):
        self.models = models
        self.engine = engine
        self.settings = settings

    def close(self) -> None:
        for served in self.models.values():
            served.close()

    def moderate(self, model: str, messages: Sequence[MessageIn]) -> list[Outcome]:
        """Decide and store every message (known ids are answered from the database), in request order."""
        served = self.models[model]
        ids = [m.id if m.id is not None else str(uuid.uuid4()) for m in messages]
        with Session(self.engine) as session:
            known = store.get_messages(session, ids)
        fresh = [(i, m.text) for i, m in zip(ids, messages) if i not in known]
        rows = self._decide(served, [i for i, _ in fresh], [t for _, t in fresh]) if fresh else []
        with Session(self.engine) as session, session.begin():
            inserted = store.insert_messages(session, rows)
            store.enqueue_reviews(session, self._review_items([r for r in rows if r["id"] in inserted]))
        lost = [r["id"] for r in rows if r["id"] not in inserted]  # another request stored these ids first
        if lost:
            with Session(self.engine) as session:
                known.update(store.get_messages(session, lost))
        decided = {r["id"]: r for r in rows if r["id"] in inserted}
        outcomes = []
        for message_id in ids:
            if message_id in decided:
                outcomes.append(_outcome(decided[message_id]))
            else:
                outcomes.append(Outcome.from_row(known[message_id], duplicate=True))
        return outcomes

    def _decide(self, served: ServedModel, ids: list[str], raw_texts: list[str]) -> list[dict]:
        """Message rows for `ids`: decided by the model, or marked as failures with the reason."""
        start = time.perf_counter()
        texts, _ = prepare(raw_texts, served.run.preprocessing, redactor=served.redactor)
        try:
            rows = self._decide_prepared(served, ids, texts)
        except FutureTimeout:
            reason = f"timeout: the model did not answer within {self.settings.model_timeout_s:g} s"
            rows = [self._failure_row(served, i, t, reason) for i, t in zip(ids, texts)]
        except Exception as err:  # noqa: BLE001 - any stage error must still end in a stored, reviewed message
            if len(ids) > 1:  # find the message(s) at fault: retry each alone
                return [row for i, t in zip(ids, raw_texts) for row in self._decide(served, [i], [t])]
            rows = [self._failure_row(served, ids[0], texts[0], f"{type(err).__name__}: {err}"[:2000])]
        latency_ms = (time.perf_counter() - start) * 1000.0
        for row in rows:
            row["latency_ms"] = latency_ms  # the batch's wall time: every message in it waited that long
        return rows

    def _decide_prepared(self, served: ServedModel, ids: list[str], texts: list[str]) -> list[dict]:
        cascade = served.cascade
        decisions = served.worker.submit(cascade.decide, texts).result(timeout=self.settings.model_timeout_s)
        frame = decisions_frame(cascade, decisions, pd.DataFrame({"id": ids, "row": np.arange(1, len(ids) + 1)}))
        classes = [str(c) for c in cascade.classes_]
        positive = [str(p) for p in cascade.positive]
        rows = []
        for i, (message_id, text, rec) in enumerate(zip(ids, texts, frame.to_dict("records"))):
            rows.append(
                {
                    "id": message_id,
                    "model": served.name,
                    "model_version": served.version,
                    "text": text,
                    "text_length": len(text),
                    "action": str(rec["action"]),
                    "category": str(rec["category"] or ""),
                    "decided_by": str(rec["decided_by"]),
                    "score": _number(rec["score"]),
                    "category_scores": {c: float(decisions.proba[i, classes.index(c)]) for c in positive},
                    "stage_scores": {
                        s: float(rec[f"score_{s}"]) for s in STAGES if _number(rec[f"score_{s}"]) is not None
                    },
                    "rules_fired": list(decisions.rules_fired[i]),
                    "failure": None,
                }
            )
        return rows

    def _failure_row(self, served: ServedModel, message_id: str, text: str, reason: str) -> dict:
        return {
            "id": message_id,
            "model": served.name,
            "model_version": served.version,
            "text": text,
            "text_length": len(text),
            "action": self.settings.failure_action,
            "category": "",
            "decided_by": "failure",
            "score": None,
            "category_scores": {},
            "stage_scores": {},
            "rules_fired": [],
            "failure": reason,
        }

    def _review_items(self, rows: list[dict]) -> list[dict]:
        items = []
        for row in rows:
            if row["failure"] is not None:
                items.append({"message_id": row["id"], "reason": "failure", "priority": FAILURE_PRIORITY})
            elif row["action"] != "deliver":
                items.append({"message_id": row["id"], "reason": "flagged", "priority": row["score"] or 0.0})
            elif audit_sampled(row["id"], self.settings.audit_rate):
                items.append({"message_id": row["id"], "reason": "audit", "priority": AUDIT_PRIORITY})
        return items


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _outcome(row: dict) -> Outcome:
    return Outcome(
        id=row["id"],
        model=row["model"],
        model_version=row["model_version"],
        action=row["action"],
        category=row["category"],
        decided_by=row["decided_by"],
        score=row["score"],
        category_scores=row["category_scores"],
        stage_scores=row["stage_scores"],
        rules_fired=row["rules_fired"],
        latency_ms=row["latency_ms"],
        failure=row["failure"],
        duplicate=False,
    )
