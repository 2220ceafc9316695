"""Moderate messages online: prepare -> decide -> persist, one batch at a time, before anything is answered.

    from finesieve.serve.moderation import Moderator, MessageIn, load_models
    moderator = Moderator(load_models({"spam": "runs/cascade"}), engine, settings)
    outcomes = moderator.moderate("spam", [MessageIn(id="m1", text="WIN a prize, call 555 123 4567")])

Each text is cleaned and redacted as the run's training texts were (`prepare`); only the redacted text is stored.
The run decides as a cascade (`finesieve.serve.batch.as_cascade`: a single scorer becomes a one-stage cascade at
its threshold); each message's row carries what `finesieve score` writes for it (action, category, deciding stage,
scores per stage and category).

Each request's messages join their model's `Batcher` (finesieve.serve.batcher): requests arriving within
`batch_wait_ms` of each other, up to `batch_max` messages, are processed together on the batcher's one worker
thread: one query for the ids already stored and one `decide` call on the new texts; the decided batch then goes
to the writer thread, which stores it in one transaction (with any other batches queued behind a slow commit)
before any of those callers hears anything, while the batcher decides the next batch:
    messages      one row per new message id (a known id is not decided again: its stored decision is returned
                  with duplicate=True; a race between two requests is settled by the primary key)
    review_items  `flagged` for every review or block (priority: its score); `audit` for a deterministic sample
                  of `audit_rate` of deliveries (by a hash of the message id, so a retry samples the same);
                  `failure` for every message the model could not decide
A model that raises or a batch that runs past `model_timeout_s` never delivers silently: its messages get
`failure_action` (review by default), decided_by "failure", and the reason in `failure`. When a batch raises, each
message is decided alone, so one poisonous message does not send its whole batch to review. Models whose LoRA
stages share one base share one batcher, and their mixed batches run the base once (`models.mixed.decide_mixed`).

Loading (`load_models`) refuses a run whose model files differ from the sha256 hashes its manifest recorded
(`runs.verify_run_files`), and serves a run saved before hashes were recorded with a warning. LoRA fine-tunes among
the runs (a fine-tuned run, or a cascade stage) that were trained on one base are loaded on one copy of that base,
each keeping its own adapter, head and calibrator (`models.adapters.load_sharing_bases`).

A run may be named by a registry reference (`registry:spam@champion`, finesieve.registry), resolved when loading.
`Moderator.reload(name)` resolves the model's reference again and, when it names another run, loads that run on the
caller's thread and swaps it in with one assignment: each batch reads the model once (`_decide`), so a batch in
flight finishes on the run it started with, later ones use the new run, none fails, and every row records the
`model_version` that decided it. A model may have a shadow (`ServiceSettings.shadow`): after a batch is stored, its
decided messages go to the shadow (finesieve.serve.shadow), which scores them on a thread of its own and stores
what it would have done in shadow_scores, never touching the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
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

from finesieve import registry
from finesieve.data.errors import ConfigError, FinesieveError
from finesieve.data.preprocess import prepare
from finesieve.data.redact import Redactor
from finesieve.models.adapters import load_sharing_bases
from finesieve.models.base import positive_scores
from finesieve.models.cascade import STAGES, Cascade, Decisions
from finesieve.models.finetuned import FineTunedScorer
from finesieve.models.mixed import base_group_key, decide_mixed
from finesieve.runs import MANIFEST, MODEL, Run, load_run, run_manifest, verify_run_files
from finesieve.serve import store
from finesieve.serve.batch import as_cascade
from finesieve.serve.batcher import Batcher
from finesieve.serve.db import Message
from finesieve.serve.metrics import ServiceMetrics
from finesieve.serve.settings import ServiceSettings
from finesieve.serve.shadow import ShadowScorer

FAILURE_PRIORITY = 2.0  # above any score (scores lie in [0, 1]): a message nobody decided is looked at first
AUDIT_PRIORITY = 0.0
log = logging.getLogger(__name__)


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


def resolve_run(source: str | Path, registry_uri: str | None = None) -> Path:
    """A run directory, or the one a registry reference (registry:NAME@ALIAS, registry:NAME/N) names now."""
    return registry.resolve(str(source), uri=registry_uri) if registry.is_ref(str(source)) else Path(source)


def load_models(runs: Mapping[str, str | Path], registry_uri: str | None = None) -> dict[str, ServedModel]:
    """Load every run by its serving name; one ConfigError lists every run that cannot be served, with its file.

    A registry reference is resolved to its run directory first (`registry_uri`: the registry's store). LoRA
    fine-tunes among them (a fine-tuned run, or a cascade's stage) that share a base are loaded first, onto one
    copy of it, and handed to `load_run`, so no base is read more than once."""
    if not runs:
        raise ConfigError("no model to serve: name at least one run directory, e.g. `finesieve serve runs/cascade`")
    verified, problems, resolved = {}, [], {}
    for name, source in runs.items():
        try:
            resolved[name] = resolve_run(source, registry_uri)
        except FinesieveError as err:
            problems.append(f"model {name!r} ({source}): {err}")
    if problems:
        raise ConfigError("cannot start the service: " + " | ".join(problems))
    runs = resolved
    for name, path in runs.items():
        try:
            verified[name] = verify_run_files(path)
        except (FinesieveError, ValidationError, OSError) as err:
            problems.append(f"model {name!r} ({path}): {err}")
    if problems:
        raise ConfigError("cannot start the service: " + " | ".join(problems))
    try:
        shared = _load_shared_bases(runs)
    except (FinesieveError, ValidationError, OSError, ValueError) as err:
        raise ConfigError(
            f"cannot start the service: loading the LoRA runs {sorted(runs)} on shared bases failed ({err}). "
            "Fix: serve the runs named in the error one per service"
        ) from err
    models = {}
    for name, path in runs.items():
        if not verified[name]:
            warnings.warn(
                f"model {name!r} ({path}) was saved before finesieve recorded model file hashes: its weights "
                "cannot be verified. Fix: save the run again (e.g. retrain it) to record them",
                stacklevel=2,
            )
        try:
            run = load_run(path, loaded=shared.get(name))
            models[name] = ServedModel(
                name=name,
                run=run,
                cascade=as_cascade(run),
                version=model_version(path),
                redactor=Redactor(run.preprocessing.redaction),
                verified=verified[name],
            )
        except (FinesieveError, ValidationError, OSError) as err:
            problems.append(f"model {name!r} ({path}): {err}")
    if problems:
        raise ConfigError("cannot start the service: " + " | ".join(problems))
    return models


def _load_shared_bases(runs: Mapping[str, str | Path]) -> dict[str, dict[str, FineTunedScorer]]:
    """model name -> {"run" or a cascade stage: scorer} for the LoRA fine-tunes among the runs that share a base
    with another of them, loaded onto one copy of each base (`models.adapters.load_sharing_bases`); read from the
    manifests and cascade.json, before any weights. A LoRA fine-tune alone on its base is left to `load_run`
    (merged: the faster path for one model)."""
    folders: dict[str, Path] = {}  # adapter key -> a fine-tuned scorer's folder
    owners: dict[str, tuple[str, str]] = {}  # adapter key -> (model name, "run" or the cascade stage)
    for name, path in runs.items():
        kind, model_dir = run_manifest(path).kind, Path(path) / MODEL
        stages = {"run": model_dir} if kind == FineTunedScorer.kind else {}
        if kind == Cascade.kind:
            stage_kinds = json.loads((model_dir / "cascade.json").read_text())["stage_kinds"]
            stages = {stage: model_dir / stage for stage, k in stage_kinds.items() if k == FineTunedScorer.kind}
        for stage, folder in stages.items():
            key = f"m{len(folders)}_{stage}"  # PEFT module names: no '.', and not a single letter
            folders[key], owners[key] = folder, (name, stage)
    shared: dict[str, dict[str, FineTunedScorer]] = {}
    if len(folders) < 2:
        return shared
    for key, scorer in load_sharing_bases(folders).items():
        name, stage = owners[key]
        shared.setdefault(name, {})[stage] = scorer
    return shared


def load_shadows(shadow: Mapping[str, str | Path], registry_uri: str | None = None) -> dict[str, ServedModel]:
    """The shadow models by the name of the model they shadow. One that cannot be loaded is logged and left out: a
    shadow never stops the service (a `registry:...@challenger` may not exist yet; a reload tries it again)."""
    shadows = {}
    for name, source in shadow.items():
        try:
            shadows[name] = load_models({name: resolve_run(source, registry_uri)})[name]
        except (FinesieveError, ValidationError, OSError) as err:
            log.warning("shadow of model %r (%s) not loaded: %s", name, source, err)
    return shadows


@dataclass(frozen=True)
class Reload:
    """What `Moderator.reload` did to one model: its version before and after (equal: unchanged), and its shadow's."""

    model: str
    source: str
    previous_version: str
    version: str
    shadow_previous: str | None = None
    shadow: str | None = None
    shadow_error: str | None = None

    @property
    def changed(self) -> bool:
        return self.version != self.previous_version

    def as_dict(self) -> dict:
        return {**vars(self), "changed": self.changed}


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


@dataclass(frozen=True)
class Pending:
    """One message on its way through a model's batcher: its model, id, raw text, and when it arrived."""

    model: str
    id: str
    text: str
    received: float  # time.perf_counter() when its request was submitted


class Moderator:
    """Decides and stores messages for the served models, a batch at a time, on one worker thread per batcher.

    `moderate` (blocking) and `moderate_async` (for the app's event loop) submit a request's messages to its model's
    `Batcher`; the batcher's worker runs `_process` on the requests that arrived together: one lookup of known ids
    and the model's `decide` on the new texts. The `writer` (a Batcher of decided batches, one thread) stores every
    row and its review items in one transaction per queued group, then the callers get their answers. Models
    whose LoRA stages share one base share one batcher, and a batch that mixes them runs the base once for all
    (`finesieve.models.mixed.decide_mixed`)."""

    def __init__(
        self,
        models: dict[str, ServedModel],
        engine: Engine,
        settings: ServiceSettings,
        metrics: ServiceMetrics | None = None,
        shadows: dict[str, ServedModel] | None = None,
    ):
        self.models = models
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.shadows = dict(shadows or {})  # served model name -> its shadow; replaced whole by `reload`
        self.shadow_scorer = (
            ShadowScorer(
                engine,
                max_pending=settings.shadow_queue_max,
                registry=metrics.registry if metrics is not None else None,
            )
            if settings.shadow or self.shadows
            else None
        )
        self._reloading = threading.Lock()  # one reload at a time: two would load the same run twice
        self.batchers: dict[str, Batcher[Pending, Outcome]] = {}
        for group in batch_groups(models):
            batcher: Batcher[Pending, Outcome] = Batcher(
                self._process,
                name="+".join(group),
                max_items=settings.batch_max,
                wait_s=settings.batch_wait_ms / 1000.0,
            )
            self.batchers.update(dict.fromkeys(group, batcher))
        self.writer: Batcher[Job, list[Outcome]] = Batcher(self._commit, name="writer", max_items=64, wait_s=0.0)

    def close(self) -> None:
        """Take no new requests; decide the queued ones (each batcher waits up to `model_timeout_s` for its own)."""
        for batcher in {id(b): b for b in self.batchers.values()}.values():
            batcher.close(timeout=self.settings.model_timeout_s)
        self.writer.close(timeout=self.settings.model_timeout_s)  # after the batchers: it stores what they decided
        if self.shadow_scorer is not None:  # last: it scores what the writer stored
            self.shadow_scorer.close(timeout=self.settings.model_timeout_s)

    def reload(self, name: str) -> Reload:
        """Resolve `name`'s run (and its shadow's) again and switch to it when it changed (blocking: it loads the
        run; the app calls it off the event loop). Requests are never dropped: the swap is one assignment, and a
        batch reads its model once. A run that cannot be served raises ConfigError and the old one stays; a shadow
        that cannot be loaded is reported in `shadow_error` and the old shadow stays."""
        if name not in self.models:
            raise ConfigError(f"unknown model {name!r}: this service serves {sorted(self.models)}")
        with self._reloading:
            source = self.settings.runs[name]
            current = self.models[name]
            path = resolve_run(source, self.settings.registry_uri)
            if model_version(path) != current.version:
                self.models = {**self.models, name: load_models({name: path})[name]}  # one assignment: atomic
            shadow_previous = self.shadows.get(name)
            shadow_error = None
            if name in self.settings.shadow:
                try:
                    shadow_path = resolve_run(self.settings.shadow[name], self.settings.registry_uri)
                    if shadow_previous is None or model_version(shadow_path) != shadow_previous.version:
                        self.shadows = {**self.shadows, name: load_models({name: shadow_path})[name]}
                except (FinesieveError, ValidationError, OSError) as err:
                    shadow_error = str(err)
                    log.warning("shadow of model %r not reloaded: %s", name, err)
            shadow = self.shadows.get(name)
            return Reload(
                model=name,
                source=str(source),
                previous_version=current.version,
                version=self.models[name].version,
                shadow_previous=shadow_previous.version if shadow_previous is not None else None,
                shadow=shadow.version if shadow is not None else None,
                shadow_error=shadow_error,
            )

    def reload_registry_refs(self) -> list[Reload]:
        """`reload` every model whose run or shadow is a registry reference (the periodic alias check); a model
        that fails is logged and keeps its run."""
        done = []
        for name in list(self.models):
            refs = [self.settings.runs[name], self.settings.shadow.get(name)]
            if not any(registry.is_ref(str(ref)) for ref in refs if ref is not None):
                continue
            try:
                done.append(self.reload(name))
            except FinesieveError as err:
                log.warning("model %r not reloaded from the registry: %s", name, err)
        return done

    def submit(self, model: str, messages: Sequence[MessageIn]) -> tuple[list[Pending], Future]:
        """Queue a request's messages (a uuid4 for each without an id); the future gets their Outcomes, in order."""
        now = time.perf_counter()
        pending = [Pending(model, m.id if m.id is not None else str(uuid.uuid4()), m.text, now) for m in messages]
        return pending, self.batchers[model].submit(pending)

    def moderate(self, model: str, messages: Sequence[MessageIn]) -> list[Outcome]:
        """Decide and store every message (known ids are answered from the database), in request order."""
        pending, future = self.submit(model, messages)
        try:
            return future.result(timeout=self.settings.model_timeout_s)
        except FutureTimeout:
            future.cancel()  # still queued: dropped, not decided for nobody
            return self.store_failures(pending, self._timeout_reason())

    async def moderate_async(self, model: str, messages: Sequence[MessageIn]) -> list[Outcome]:
        """`moderate` for an event loop: the loop waits on the batcher's future without holding a thread."""
        pending, future = self.submit(model, messages)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.settings.model_timeout_s)
        except TimeoutError:  # wait_for cancelled the wrapper, and with it the future if still queued
            return await asyncio.to_thread(self.store_failures, pending, self._timeout_reason())

    def store_failures(self, pending: Sequence[Pending], reason: str) -> list[Outcome]:
        """Store `pending` as failures (failure_action, to review) unless stored already; their Outcomes, in order.

        For requests whose batch did not finish in time: if the batch finishes later, its inserts of these ids
        find them stored and change nothing, so each id still holds exactly one decision."""
        rows = []
        for model, items in _by_model(pending).items():
            served = self.models[model]
            texts, _ = prepare([p.text for p in items], served.run.preprocessing, redactor=served.redactor)
            rows += [self._failure_row(served, p, text, reason) for p, text in zip(items, texts)]
        return self._commit([(pending, rows, {})])[0]

    def _timeout_reason(self) -> str:
        return f"timeout: the model did not answer within {self.settings.model_timeout_s:g} s"

    # ------------------------------------------------------------------------------- on the batcher's thread

    def _process(self, pending: list[Pending]) -> Future:
        """Decide the messages of one batch whose ids are new (each id once), store them in one transaction, and
        answer every message: the new decision, or the stored one (duplicate=True) for a known or repeated id."""
        with Session(self.engine) as session:
            known = store.get_messages(session, [p.id for p in pending])
        fresh: dict[str, Pending] = {}
        for p in pending:
            if p.id not in known:
                fresh.setdefault(p.id, p)  # the same id twice in one batch (two racing requests): decided once
        rows = self._decide(list(fresh.values())) if fresh else []
        # Handed to the writer thread: this thread decides the next batch while the commit waits for the disk,
        # and batches that queue up behind a slow commit are stored together in the next one.
        written = self.writer.submit([(pending, rows, known)])
        answer: Future = Future()
        written.add_done_callback(lambda done: _pass_on(done, answer))
        return answer

    def _commit(self, jobs: list[Job]) -> list[list[Outcome]]:
        """Store the rows of several decided batches in one transaction (the writer's `process`), then answer each
        batch's messages: its own new decision, or the stored one (duplicate=True) for an id known already,
        repeated, or stored first by another batch (the first row of an id wins)."""
        first: dict[str, dict] = {}
        for _, rows, _ in jobs:
            for row in rows:
                first.setdefault(row["id"], row)  # two batches in flight may both have decided a retried id
        candidates = list(first.values())
        with Session(self.engine) as session, session.begin():
            inserted = store.insert_messages(session, candidates)
            store.enqueue_reviews(session, self._review_items([r for r in candidates if r["id"] in inserted]))
        self._to_shadows(jobs, [r for r in candidates if r["id"] in inserted])
        written = {id(r) for r in candidates if r["id"] in inserted}
        lost = {r["id"] for _, rows, _ in jobs for r in rows if id(r) not in written}
        stored = {}
        if lost:  # answered with what the database holds for them
            with Session(self.engine) as session:
                stored = store.get_messages(session, lost)
        answers = []
        for pending, rows, known in jobs:
            decided = {r["id"]: r for r in rows if id(r) in written}
            outcomes, answered = [], set()
            for p in pending:
                if p.id in decided:
                    outcomes.append(_outcome(decided[p.id], duplicate=p.id in answered))
                    answered.add(p.id)
                else:
                    outcomes.append(Outcome.from_row(known.get(p.id) or stored[p.id], duplicate=True))
            answers.append(outcomes)
        return answers

    def _to_shadows(self, jobs: list[Job], stored: list[dict]) -> None:
        """Hand the messages just stored and decided (not failures) to their model's shadow, with their raw texts."""
        shadows = self.shadows
        if self.shadow_scorer is None or not shadows:
            return
        raw = {p.id: p.text for pending, _, _ in jobs for p in pending}
        for model, shadow in shadows.items():
            messages = [(r["id"], raw[r["id"]]) for r in stored if r["model"] == model and r["failure"] is None]
            if messages:
                self.shadow_scorer.submit(shadow, messages)

    def _decide(self, pending: list[Pending]) -> list[dict]:
        """Message rows for `pending` (new ids, any models of one batcher): decided, or failures with the reason."""
        groups = _by_model(pending)
        # Each model read once: a `reload` swapping it in the middle leaves this batch on the run it started with.
        models = {model: self.models[model] for model in groups}
        prepared = {}
        for model, items in groups.items():
            served = models[model]
            prepared[model], _ = prepare([p.text for p in items], served.run.preprocessing, redactor=served.redactor)
        decided: dict[str, list[RowOf | str]] = {}
        if len(groups) > 1:
            try:
                mixed = decide_mixed([(models[m].cascade, prepared[m]) for m in groups])
                decided = {m: _rows_of(d) for m, d in zip(groups, mixed)}
            except Exception:  # noqa: BLE001 - each model alone next, so the failure lands on its own messages
                decided = {}
        for model in groups:
            if model not in decided:
                decided[model] = self._decide_model(models[model], prepared[model])
        rows = []
        for model, items in groups.items():
            served, done = models[model], time.perf_counter()
            scores: dict[int, np.ndarray] = {}  # id of a Decisions -> its positive scores, computed once
            for p, text, result in zip(items, prepared[model], decided[model]):
                if isinstance(result, str):
                    row = self._failure_row(served, p, text, result)
                else:
                    decisions, i = result
                    if id(decisions) not in scores:
                        cascade = served.cascade
                        scores[id(decisions)] = positive_scores(
                            decisions.proba, cascade.classes_, cascade.positive, cascade.multilabel_
                        )
                    row = self._row(served, p, text, decisions, i, scores[id(decisions)][i])
                row["latency_ms"] = (done - p.received) * 1000.0  # arrival to decision, queueing included
                rows.append(row)
            if self.metrics is not None:  # the batch's seconds per stage (every row holds them)
                seconds = next((r[0].seconds for r in decided[model] if not isinstance(r, str)), {})
                self.metrics.observe_stages(model, seconds)
        return rows

    def _decide_model(self, served: ServedModel, texts: list[str]) -> list[RowOf | str]:
        """Each text's row of a Decisions, or the failure reason where the model raised. When the whole batch
        raises, each text is decided alone, so one poisonous message does not send its whole batch to review."""
        try:
            return _rows_of(served.decide(texts))
        except Exception as err:  # noqa: BLE001 - any stage error must still end in a stored, reviewed message
            if len(texts) == 1:
                return [_reason(err)]
        results: list[RowOf | str] = []
        for text in texts:
            try:
                results += _rows_of(served.decide([text]))
            except Exception as err:  # noqa: BLE001
                results.append(_reason(err))
        return results

    def _row(self, served: ServedModel, p: Pending, text: str, decisions: Decisions, i: int, score) -> dict:
        """The message row of one message: row `i` of `decisions`, `score` its positive score."""
        cascade = served.cascade
        classes = [str(c) for c in cascade.classes_]
        positive = [str(c) for c in cascade.positive]
        return {
            **_stored_as(served, p, text),
            "action": str(decisions.action[i]),
            "category": str(decisions.category[i] or ""),
            "decided_by": str(decisions.decided_by[i]),
            "score": _number(score),
            "category_scores": {c: float(decisions.proba[i, classes.index(c)]) for c in positive},
            "stage_scores": {
                s: float(v[i]) for s, v in decisions.stage_scores.items() if s in STAGES and not math.isnan(v[i])
            },
            "rules_fired": list(decisions.rules_fired[i]),
            "failure": None,
        }

    def _failure_row(self, served: ServedModel, p: Pending, text: str, reason: str) -> dict:
        return {
            **_stored_as(served, p, text),
            "action": self.settings.failure_action,
            "category": "",
            "decided_by": "failure",
            "score": None,
            "category_scores": {},
            "stage_scores": {},
            "rules_fired": [],
            "latency_ms": (time.perf_counter() - p.received) * 1000.0,
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


def _stored_as(served: ServedModel, p: Pending, text: str) -> dict:
    """The columns of a message row that do not depend on its decision: who it is, which model, the redacted text."""
    return {"id": p.id, "model": served.name, "model_version": served.version, "text": text, "text_length": len(text)}


def batch_groups(models: Mapping[str, ServedModel]) -> list[list[str]]:
    """The served models in batcher groups: models whose fine-tuned stage is an adapter on one shared base form one
    group (their batches mix, one forward pass of the base); every other model is a group of its own."""
    groups: dict[object, list[str]] = {}
    for name, served in models.items():
        key = base_group_key(served.cascade)
        groups.setdefault(("base", key) if key is not None else ("model", name), []).append(name)
    return list(groups.values())


def _by_model(pending: Sequence[Pending]) -> dict[str, list[Pending]]:
    groups: dict[str, list[Pending]] = {}
    for p in pending:
        groups.setdefault(p.model, []).append(p)
    return groups


Job = tuple[Sequence[Pending], list[dict], dict[str, Message]]  # a decided batch: messages, new rows, known ids


def _pass_on(done: Future, answer: Future) -> None:
    """The writer's answer for one job (a list of one result) into the future the batcher slices."""
    try:
        (outcomes,) = done.result()
    except Exception as err:  # noqa: BLE001 - the commit failed: every request of the batch gets it
        answer.set_exception(err)
        return
    answer.set_result(outcomes)


RowOf = tuple[Decisions, int]  # one message's decision: row i of a batch's Decisions


def _rows_of(decisions: Decisions) -> list[RowOf | str]:
    return [(decisions, i) for i in range(len(decisions.action))]


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"[:2000]


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _outcome(row: dict, *, duplicate: bool = False) -> Outcome:
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
        duplicate=duplicate,
    )
