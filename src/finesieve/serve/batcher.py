"""Dynamic batching: requests for one model that arrive together are decided together, in one `decide` call.

    from finesieve.serve.batcher import Batcher
    batcher = Batcher(cascade.decide, name="spam", max_texts=64, wait_s=0.005)
    decisions = batcher.submit(["hello", "WIN a prize"]).result(timeout=10)   # this request's rows only
    batcher.close()   # refuses new requests, decides the ones already queued, then stops its thread

A model forward pass costs little more for 30 texts than for one, so the service queues each request's texts and
one worker thread per model takes them in arrival order: it waits at most `wait_s` after the first request for
more to arrive, or until `max_texts` texts are gathered, calls `decide` once on all of them, and hands each request
its own rows (`slice_decisions`). A request is never split across calls, so a request larger than `max_texts` is
decided alone. The single worker also keeps a model that is not thread-safe from being entered twice.

Failures stay with the request that caused them: when a merged call raises, each request of that call is decided
again alone, and only the ones that still raise get the exception (the Moderator then retries their messages one
by one, so one poisonous message fails only itself). A caller that gives up waiting (`model_timeout_s`) cancels
its future: a request still queued is then dropped, never decided.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace

from finesieve.models.cascade import Decisions


@dataclass
class _Request:
    texts: list[str]
    future: Future


def slice_decisions(decisions: Decisions, start: int, stop: int) -> Decisions:
    """Rows start..stop of a batch's decisions; `seconds` stays the whole batch's (every row waited that long)."""
    return replace(
        decisions,
        action=decisions.action[start:stop],
        category=decisions.category[start:stop],
        decided_by=decisions.decided_by[start:stop],
        stage_scores={stage: scores[start:stop] for stage, scores in decisions.stage_scores.items()},
        rules_fired=decisions.rules_fired[start:stop],
        proba=decisions.proba[start:stop],
        seconds=dict(decisions.seconds),
    )


class Batcher:
    """One model's queue and its worker thread; `submit` returns a future of that request's `Decisions`."""

    def __init__(
        self, decide: Callable[[list[str]], Decisions], *, name: str, max_texts: int = 64, wait_s: float = 0.005
    ):
        if max_texts < 1 or wait_s < 0:
            raise ValueError(f"max_texts must be >= 1 and wait_s >= 0, got {max_texts} and {wait_s}")
        self.decide = decide
        self.name = name
        self.max_texts = max_texts
        self.wait_s = wait_s
        self.calls = 0  # decide calls made, merged batches and retries alike (read by tests and benchmarks)
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        # A daemon thread: a model stuck in a call past every timeout must not keep the process from exiting.
        self._thread = threading.Thread(target=self._work, name=f"model-{name}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Requests queued and not yet taken by the worker."""
        with self._cond:
            return len(self._queue)

    def submit(self, texts: Sequence[str]) -> Future:
        """Queue one request's texts; the future gets its `Decisions` (in order) or the exception that it raised."""
        request = _Request(list(texts), Future())
        with self._cond:
            if self._closed:
                raise RuntimeError(f"model {self.name!r} is shutting down and takes no new messages; retry later")
            self._queue.append(request)
            self._cond.notify()
        return request.future

    def close(self, timeout: float | None = None) -> None:
        """Take no new requests, decide the queued ones (draining), and wait up to `timeout` s for the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    # --------------------------------------------------------------------------------------------- the worker

    def _work(self) -> None:
        while (batch := self._gather()) is not None:
            try:
                self._decide(batch)
            except Exception as err:  # noqa: BLE001 - a bug here must not leave callers waiting on dead futures
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(err)

    def _gather(self) -> list[_Request] | None:
        """The next batch (requests not cancelled by their callers); None once closed and drained."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            batch = [self._queue.popleft()]
            n = len(batch[0].texts)
            deadline = time.monotonic() + self.wait_s
            while n < self.max_texts:
                if self._queue:
                    if n + len(self._queue[0].texts) > self.max_texts:
                        break  # it starts the next batch: a request is never split
                    batch.append(self._queue.popleft())
                    n += len(batch[-1].texts)
                    continue
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:  # closing: nothing more will arrive, decide what is here now
                    break
                self._cond.wait(remaining)
        return [r for r in batch if r.future.set_running_or_notify_cancel()]

    def _call(self, texts: list[str]) -> Decisions:
        self.calls += 1  # only this thread writes it
        return self.decide(texts)

    def _decide(self, batch: list[_Request]) -> None:
        try:
            decisions = self._call([t for r in batch for t in r.texts])
        except Exception as err:  # noqa: BLE001 - handed to the caller, whose request it belongs to
            if len(batch) == 1:
                batch[0].future.set_exception(err)
                return
            for request in batch:  # find the request(s) at fault: each alone
                try:
                    request.future.set_result(self._call(request.texts))
                except Exception as alone:  # noqa: BLE001
                    request.future.set_exception(alone)
            return
        start = 0
        for request in batch:
            stop = start + len(request.texts)
            request.future.set_result(slice_decisions(decisions, start, stop))
            start = stop
