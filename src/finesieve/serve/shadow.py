"""Shadow models: a second model scores the live traffic on the side, and its scores are compared with the live ones.

    shadows = ShadowScorer(engine)                       # one thread; the Moderator owns one
    shadows.submit(served_challenger, [("m1", "WIN a prize, call now")])   # never blocks, never raises
    shadow_comparison("sqlite:///./finesieve.db", "spam", since=datetime(2026, 12, 1))
    # {"messages": 812, "agreement": 0.97, "flag_rate": {"live": 0.11, "shadow": 0.13}, "score_correlation": 0.94,
    #  "reviewed": {"n": 95, "live": {"precision": ..., "recall": ...}, "shadow": {...}}, ...}

The service (`ServiceSettings.shadow`, e.g. {"spam": "registry:spam@challenger"}) hands every message its live model
decided to the shadow after the decision is stored, so the shadow never delays or changes an answer: it runs on a
thread of its own, from a bounded queue (a full queue skips messages and counts them), and writes what it would have
decided into messages.shadow_scores: {"version", "action", "category", "score", "category_scores"}. A shadow that
fails is logged and counted (`failures`, and finesieve_shadow_failures_total in /metrics); the request it shadows was
answered long before. The shadow gets the raw text, held in memory only until it is scored, and prepares it with its
own run's preprocessing, as it would if it were live.

`shadow_comparison` reads one window of a model's messages that carry shadow scores: how often the two agree on
flagging (review or block) a message, each one's flag rate, the correlation of their scores, and, on the messages a
reviewer decided, each one's precision and recall. Reviewed messages are mostly the ones the live model flagged plus
the random audit sample, so those precision and recall figures lean towards the live model's flags: compare them
with that in mind, and with their counts.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from finesieve.data.preprocess import prepare
from finesieve.models.base import positive_scores
from finesieve.serve.db import Message, ReviewItem, connect

if TYPE_CHECKING:
    from finesieve.serve.moderation import ServedModel

BATCH = 64  # messages scored in one call of the shadow model
log = logging.getLogger(__name__)


class ShadowScorer:
    """Scores decided messages with shadow models on one thread of its own and stores what each would have done."""

    def __init__(self, engine: Engine, *, max_pending: int = 10_000, registry: CollectorRegistry | None = None):
        self.engine = engine
        self.scored: Counter = Counter()  # model name -> messages given shadow scores
        self.failures: Counter = Counter()  # model name -> messages the shadow failed on (logged)
        self.skipped: Counter = Counter()  # model name -> messages not shadowed because the queue was full
        self._queue: queue.Queue[tuple[ServedModel, str, str] | None] = queue.Queue(maxsize=max_pending)
        self._counters = _prometheus_counters(registry) if registry is not None else None
        self._thread = threading.Thread(target=self._work, name="shadow", daemon=True)
        self._thread.start()

    def submit(self, shadow: ServedModel, messages: Sequence[tuple[str, str]]) -> None:
        """Queue (id, raw text) pairs for `shadow`; what does not fit in the queue is skipped and counted."""
        for message_id, text in messages:
            try:
                self._queue.put_nowait((shadow, message_id, text))
            except queue.Full:
                self._count(self.skipped, "skipped", shadow.name, 1)

    def close(self, timeout: float | None = None) -> None:
        """Score what is queued (within `timeout` seconds), then stop the thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:  # still full after `timeout`: the daemon thread is left to the process's exit
            return
        self._thread.join(timeout)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until every queued message is scored (tests, shutdown); a no-op when the queue is empty."""
        done = threading.Event()

        def join() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=join, daemon=True).start()
        done.wait(timeout)

    # ------------------------------------------------------------------------------------------ on its thread

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while first is not None and len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                if batch[-1] is None:
                    break
            items = [item for item in batch if item is not None]
            try:
                self._score(items)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if batch[-1] is None:
                return

    def _score(self, items: list[tuple[ServedModel, str, str]]) -> None:
        by_shadow: dict[int, list[tuple[ServedModel, str, str]]] = {}
        for item in items:
            by_shadow.setdefault(id(item[0]), []).append(item)
        for group in by_shadow.values():
            shadow = group[0][0]
            try:
                records = shadow_records(shadow, [text for _, _, text in group])
                with Session(self.engine) as session, session.begin():
                    session.execute(
                        update(Message), [{"id": i, "shadow_scores": r} for (_, i, _), r in zip(group, records)]
                    )
            except Exception:  # noqa: BLE001 - a shadow never surfaces: its messages were answered already
                log.warning("shadow %s failed on %d messages", shadow.version, len(group), exc_info=True)
                self._count(self.failures, "failures", shadow.name, len(group))
                continue
            self._count(self.scored, "scored", shadow.name, len(group))

    def _count(self, counter: Counter, kind: str, model: str, n: int) -> None:
        counter[model] += n
        if self._counters is not None:
            self._counters[kind].labels(model=model).inc(n)


def shadow_records(shadow: ServedModel, texts: list[str]) -> list[dict]:
    """What `shadow` would have decided for each raw text: version, action, category, positive score, per class."""
    prepared, _ = prepare(texts, shadow.run.preprocessing, redactor=shadow.redactor)
    decisions = shadow.decide(prepared)
    cascade = shadow.cascade
    classes, positive = [str(c) for c in cascade.classes_], [str(c) for c in cascade.positive]
    scores = positive_scores(decisions.proba, classes, positive, cascade.multilabel_)
    return [
        {
            "version": shadow.version,
            "action": str(decisions.action[i]),
            "category": str(decisions.category[i] or ""),
            "score": None if np.isnan(scores[i]) else float(scores[i]),
            "category_scores": {c: float(decisions.proba[i, classes.index(c)]) for c in positive},
        }
        for i in range(len(prepared))
    ]


def _prometheus_counters(registry: CollectorRegistry) -> dict[str, PromCounter]:
    help_text = {
        "scored": "Messages a shadow model scored.",
        "failures": "Messages a shadow model failed on (logged; the live decision stands).",
        "skipped": "Messages not shadowed because the shadow's queue was full.",
    }
    return {
        kind: PromCounter(f"finesieve_shadow_{kind}", text, ["model"], registry=registry)
        for kind, text in help_text.items()
    }


# ------------------------------------------------------------------------------------------------ comparison


def shadow_comparison(
    database_url: str, model: str, since: datetime | None = None, until: datetime | None = None
) -> dict:
    """Live vs shadow on `model`'s messages created in [since, until) that carry shadow scores (decided ones)."""
    in_window = [Message.model == model, Message.shadow_scores.is_not(None), Message.failure.is_(None)]
    if since is not None:
        in_window.append(Message.created_at >= since)
    if until is not None:
        in_window.append(Message.created_at < until)
    engine = connect(database_url)
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(Message.id, Message.model_version, Message.action, Message.score, Message.shadow_scores).where(
                    *in_window
                )
            ).all()
            reviewed = dict(
                session.execute(
                    select(ReviewItem.message_id, ReviewItem.violation)
                    .join(Message, Message.id == ReviewItem.message_id)
                    .where(ReviewItem.state == "decided", ReviewItem.violation.is_not(None), *in_window)
                ).all()
            )
    finally:
        engine.dispose()
    live_flag = np.array([action != "deliver" for _, _, action, _, _ in rows], dtype=bool)
    shadow_flag = np.array([s.get("action") != "deliver" for *_, s in rows], dtype=bool)
    both = [(score, s.get("score")) for _, _, _, score, s in rows if score is not None and s.get("score") is not None]
    return {
        "model": model,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "messages": len(rows),
        "live_versions": dict(Counter(version for _, version, *_ in rows)),
        "shadow_versions": dict(Counter(str(s.get("version")) for *_, s in rows)),
        "agreement": _mean(live_flag == shadow_flag),
        "flag_rate": {"live": _mean(live_flag), "shadow": _mean(shadow_flag)},
        "score_correlation": _correlation(both),
        "reviewed": _reviewed(rows, live_flag, shadow_flag, reviewed),
    }


def _reviewed(rows, live_flag: np.ndarray, shadow_flag: np.ndarray, reviewed: dict[str, bool | None]) -> dict:
    """Precision and recall of each model on the messages reviewers decided (see the module's note on their bias)."""
    index = [i for i, row in enumerate(rows) if row[0] in reviewed]
    truth = np.array([bool(reviewed[rows[i][0]]) for i in index], dtype=bool)

    def figures(flags: np.ndarray) -> dict:
        flagged = flags[index] if index else np.zeros(0, dtype=bool)
        hits = int(np.sum(flagged & truth))
        return {
            "precision": hits / int(flagged.sum()) if flagged.sum() else None,
            "recall": hits / int(truth.sum()) if truth.sum() else None,
            "flagged": int(flagged.sum()),
        }

    return {"n": len(index), "violations": int(truth.sum()), "live": figures(live_flag), "shadow": figures(shadow_flag)}


def _mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _correlation(pairs: list[tuple[float, float]]) -> float | None:
    """Pearson's r of live and shadow scores; None under 3 pairs or when either side is constant."""
    if len(pairs) < 3:
        return None
    a = np.asarray(pairs, dtype=float)
    if np.std(a[:, 0]) == 0 or np.std(a[:, 1]) == 0:
        return None
    return float(np.corrcoef(a[:, 0], a[:, 1])[0, 1])
