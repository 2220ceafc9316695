"""Moderate messages online: prepare -> decide -> persist, one batch at a time, before anything is answered.

    from finesieve.serve.moderation import Moderator, MessageIn, load_models
    moderator = Moderator(load_models({"spam": "runs/cascade"}), engine, settings)
    outcomes = moderator.moderate("spam", [MessageIn(id="m1", text="WIN a prize, call 555 123 4567")])

Each text is cleaned and redacted as the run's training texts were (`prepare`); only the redacted text is stored.
The run decides as a cascade (`finesieve.serve.batch.as_cascade`: a single scorer becomes a one-stage cascade at
its threshold); each message's row carries what `finesieve score` writes for it (action, category, deciding stage,
scores per stage and category).

What is stored, in one transaction, before the caller hears anything:
    messages      one row per new message id (a known id is not decided again: its stored decision is returned
                  with duplicate=True; a race between two requests is settled by the primary key)
    review_items  `flagged` for every review or block (priority: its score); `audit` for a deterministic sample
                  of `audit_rate` of deliveries (by a hash of the message id, so a retry samples the same);
                  `failure` for every message the model could not decide
A model that raises or runs past `model_timeout_s` never delivers silently: its messages get `failure_action`
(review by default), decided_by "failure", and the reason in `failure`. When a batch raises, each message is
retried alone, so one poisonous message does not send its whole batch to review.

Every request reaches its model through the model's `Batcher` (finesieve.serve.batcher): requests arriving within
`batch_wait_ms` of each other are decided in one `decide` call of up to `batch_max` texts, on the model's one
worker thread. Loading (`load_models`) refuses a run whose model files differ from the sha256 hashes its manifest
recorded (`runs.verify_run_files`), and serves a run saved before hashes were recorded with a warning. LoRA
fine-tunes among the runs (a fine-tuned run, or a cascade stage) that were trained on one base are loaded on one
copy of that base, each keeping its own adapter, head and calibrator (`models.adapters.load_sharing_bases`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from finesieve.data.errors import ConfigError, FinesieveError
from finesieve.data.preprocess import prepare
from finesieve.data.redact import Redactor
from finesieve.models.adapters import load_sharing_bases
from finesieve.models.base import positive_scores, set_preprocessing
from finesieve.models.cascade import STAGES, Cascade, Decisions
from finesieve.models.finetuned import FineTunedScorer
from finesieve.runs import MANIFEST, MODEL, Run, load_run, verify_run_files
from finesieve.serve import store
from finesieve.serve.batch import as_cascade
from finesieve.serve.batcher import Batcher
from finesieve.serve.db import Message
from finesieve.serve.settings import ServiceSettings

FAILURE_PRIORITY = 2.0  # above any score (scores lie in [0, 1]): a message nobody decided is looked at first
AUDIT_PRIORITY = 0.0


@dataclass
class ServedModel:
    """One run loaded for serving. The Moderator decides its messages through a `Batcher`: one worker thread per
    model, which merges concurrent requests and keeps a scorer that is not thread-safe from being entered twice."""

    name: str
    run: Run
    cascade: Cascade
    version: str  # run directory name @ sha256 of its manifest.json
    redactor: Redactor
    verified: bool = False  # its model files matched the hashes in its manifest (False: an older, unhashed run)

    def decide(self, texts: list[str]) -> Decisions:
        # Looked up at each call, not bound once: the cascade (or a stage of it) may be replaced after start-up.
        return self.cascade.decide(texts)


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
            verified = verify_run_files(path)
            if not verified:
                warnings.warn(
                    f"model {name!r} ({path}) was saved before finesieve recorded model file hashes: its weights "
                    "cannot be verified. Fix: save the run again (e.g. retrain it) to record them",
                    stacklevel=2,
                )
            run = load_run(path)
            models[name] = ServedModel(
                name=name,
                run=run,
                cascade=as_cascade(run),
                version=model_version(path),
                redactor=Redactor(run.preprocessing.redaction),
                verified=verified,
            )
        except (FinesieveError, ValidationError, OSError) as err:
            problems.append(f"model {name!r} ({path}): {err}")
    if problems:
        raise ConfigError("cannot start the service: " + " | ".join(problems))
    try:
        _share_bases(models)
    except (FinesieveError, ValidationError, OSError, ValueError) as err:
        raise ConfigError(
            f"cannot start the service: loading the LoRA runs {sorted(models)} on shared bases failed ({err}). "
            "Fix: serve the runs named in the error one per service"
        ) from err
    return models


def _share_bases(models: dict[str, ServedModel]) -> None:
    """Reload the LoRA fine-tunes of all served runs that were trained on one base onto one copy of it.

    Each run was loaded on its own first (merged: validated, and the fast path for a LoRA run alone on its base);
    the groups found here replace those copies, so N adapters on one base hold the base once in memory."""
    folders: dict[str, Path] = {}  # adapter key -> a fine-tuned scorer's folder
    owners: dict[str, tuple[str, str]] = {}  # adapter key -> (model name, "run" or the cascade stage)
    for name, served in models.items():
        kind, model_dir = served.run.manifest.kind, served.run.path / MODEL
        stages = {"run": model_dir} if kind == FineTunedScorer.kind else {}
        if kind == Cascade.kind:
            stage_kinds = json.loads((model_dir / "cascade.json").read_text())["stage_kinds"]
            stages = {stage: model_dir / stage for stage, k in stage_kinds.items() if k == FineTunedScorer.kind}
        for stage, folder in stages.items():
            key = f"m{len(folders)}_{stage}"  # PEFT module names: no '.', and not a single letter
            folders[key], owners[key] = folder, (name, stage)
    if len(folders) < 2:
        return
    for key, scorer in load_sharing_bases(folders).items():
        name, stage = owners[key]
        served = models[name]
        if stage == "run":
            set_preprocessing(scorer, served.run.manifest.preprocessing)
            served.run.scorer = scorer
            served.cascade = as_cascade(served.run)
        else:
            setattr(served.cascade, stage, scorer)


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
        self.batchers = {
            name: Batcher(
                served.decide, name=name, max_texts=settings.batch_max, wait_s=settings.batch_wait_ms / 1000.0
            )
            for name, served in models.items()
        }

    def close(self) -> None:
        """Take no new requests; decide the queued ones (each model waits up to `model_timeout_s` for its own)."""
        for batcher in self.batchers.values():
            batcher.close(timeout=self.settings.model_timeout_s)

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
        batcher = self.batchers[served.name]
        try:
            rows = self._rows(served, ids, texts, self._wait(batcher.submit(texts)))
        except FutureTimeout:
            reason = f"timeout: the model did not answer within {self.settings.model_timeout_s:g} s"
            rows = [self._failure_row(served, i, t, reason) for i, t in zip(ids, texts)]
        except Exception as err:  # noqa: BLE001 - any stage error must still end in a stored, reviewed message
            if len(ids) > 1:
                # Find the message(s) at fault: each alone. Submitted together, the batcher tries them merged once
                # more, then each alone, so only the poisonous ones fail.
                futures = [batcher.submit([t]) for t in texts]
                rows = [self._decide_alone(served, i, t, f) for i, t, f in zip(ids, texts, futures)]
            else:
                rows = [self._failure_row(served, ids[0], texts[0], _reason(err))]
        latency_ms = (time.perf_counter() - start) * 1000.0
        for row in rows:
            row["latency_ms"] = latency_ms  # the batch's wall time: every message in it waited that long
        return rows

    def _wait(self, future: Future) -> Decisions:
        try:
            return future.result(timeout=self.settings.model_timeout_s)
        except FutureTimeout:
            future.cancel()  # still queued: dropped, not decided for nobody
            raise

    def _decide_alone(self, served: ServedModel, message_id: str, text: str, future: Future) -> dict:
        try:
            return self._rows(served, [message_id], [text], self._wait(future))[0]
        except FutureTimeout:
            reason = f"timeout: the model did not answer within {self.settings.model_timeout_s:g} s"
            return self._failure_row(served, message_id, text, reason)
        except Exception as err:  # noqa: BLE001
            return self._failure_row(served, message_id, text, _reason(err))

    def _rows(self, served: ServedModel, ids: list[str], texts: list[str], decisions: Decisions) -> list[dict]:
        # Built from the Decisions arrays directly, not through `batch.decisions_frame`: a DataFrame per request cost
        # ~40 ms of a single message's ~50 ms in the service (profiled on the demo cascade).
        cascade = served.cascade
        classes = [str(c) for c in cascade.classes_]
        positive = [str(p) for p in cascade.positive]
        columns = [classes.index(c) for c in positive]
        scores = positive_scores(decisions.proba, cascade.classes_, cascade.positive, cascade.multilabel_)
        stage_scores = {
            s: np.asarray(decisions.stage_scores[s], dtype=float) for s in STAGES if s in decisions.stage_scores
        }
        rows = []
        for i, (message_id, text) in enumerate(zip(ids, texts)):
            rows.append(
                {
                    "id": message_id,
                    "model": served.name,
                    "model_version": served.version,
                    "text": text,
                    "text_length": len(text),
                    "action": str(decisions.action[i]),
                    "category": str(decisions.category[i] or ""),
                    "decided_by": str(decisions.decided_by[i]),
                    "score": _number(scores[i]),
                    "category_scores": {c: float(decisions.proba[i, j]) for c, j in zip(positive, columns)},
                    "stage_scores": {s: float(v[i]) for s, v in stage_scores.items() if not math.isnan(v[i])},
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


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"[:2000]


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
