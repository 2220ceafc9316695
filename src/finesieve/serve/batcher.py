"""Dynamic batching: work items of requests that arrive together are processed together, in one call.

    from finesieve.serve.batcher import Batcher
    batcher = Batcher(lambda texts: [len(t) for t in texts], name="lengths", max_items=64, wait_s=0.005)
    batcher.submit(["hello", "WIN a prize"]).result(timeout=10)   # [5, 11]: this request's results only
    batcher.close()   # refuses new requests, processes the ones already queued, then stops its thread

A model forward pass costs little more for 30 texts than for one, and so does a database transaction for 30 rows,
so the service queues each request's items and one worker thread takes them in arrival order: it waits at most
`wait_s` after the first request for more to arrive, or until `max_items` items are gathered, calls `process` once
on all of them (it returns one result per item, in order), and hands each request its own slice. A request is never
split across calls, so a request larger than `max_items` is processed alone. The single worker also keeps a model
that is not thread-safe from being entered twice. (The Moderator's `process` decides and stores a whole batch:
`finesieve.serve.moderation`.)

Failures stay with the request that caused them: when a merged call raises, each request of that call is processed
again alone, and only the ones that still raise get the exception. A caller that gives up waiting cancels its
future: a request still queued is then dropped, never processed. `process` may also return a Future of the results
(work handed on to another thread, so this one can take the next batch): each request gets its slice when it is
done.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Request(Generic[Item]):
    items: list[Item]
    future: Future


class Batcher(Generic[Item, Result]):
    """One queue and its worker thread; `submit` returns a future of that request's results (a list, in order)."""

    def __init__(
        self,
        process: Callable[[list[Item]], Sequence[Result]],
        *,
        name: str,
        max_items: int = 64,
        wait_s: float = 0.005,
    ):
        if max_items < 1 or wait_s < 0:
            raise ValueError(f"max_items must be >= 1 and wait_s >= 0, got {max_items} and {wait_s}")
        self.process = process
        self.name = name
        self.max_items = max_items
        self.wait_s = wait_s
        self.calls = 0  # process calls made, merged batches and retries alike (read by tests and benchmarks)
        self._queue: deque[_Request[Item]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        # A daemon thread: a model stuck in a call past every timeout must not keep the process from exiting.
        self._thread = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Requests queued and not yet taken by the worker."""
        with self._cond:
            return len(self._queue)

    def submit(self, items: Sequence[Item]) -> Future:
        """Queue one request's items; the future gets their results (in order) or the exception their call raised."""
        request = _Request(list(items), Future())
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name!r} is shutting down and takes no new messages; retry later")
            self._queue.append(request)
            self._cond.notify()
        return request.future

    def close(self, timeout: float | None = None) -> None:
        """Take no new requests, process the queued ones (draining), and wait up to `timeout` s for the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    # --------------------------------------------------------------------------------------------- the worker

    def _work(self) -> None:
        while (batch := self._gather()) is not None:
            try:
                self._run(batch)
            except Exception as err:  # noqa: BLE001 - a bug here must not leave callers waiting on dead futures
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(err)

    def _gather(self) -> list[_Request[Item]] | None:
        """The next batch (requests not cancelled by their callers); None once closed and drained."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            batch = [self._queue.popleft()]
            n = len(batch[0].items)
            deadline = time.monotonic() + self.wait_s
            while n < self.max_items:
                if self._queue:
                    if n + len(self._queue[0].items) > self.max_items:
                        break  # it starts the next batch: a request is never split
                    batch.append(self._queue.popleft())
                    n += len(batch[-1].items)
                    continue
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:  # closing: nothing more will arrive, process what is here now
                    break
                self._cond.wait(remaining)
        return [r for r in batch if r.future.set_running_or_notify_cancel()]

    def _call(self, items: list[Item]) -> Sequence[Result] | Future:
        self.calls += 1  # only this thread writes it
        return self.process(items)

    def _run(self, batch: list[_Request[Item]]) -> None:
        try:
            results = self._call([item for r in batch for item in r.items])
        except Exception as err:  # noqa: BLE001 - handed to the caller, whose request it belongs to
            if len(batch) == 1:
                batch[0].future.set_exception(err)
                return
            for request in batch:  # find the request(s) at fault: each alone
                try:
                    self._hand_out([request], self._call(request.items))
                except Exception as alone:  # noqa: BLE001
                    request.future.set_exception(alone)
            return
        self._hand_out(batch, results)

    def _hand_out(self, batch: list[_Request[Item]], results: Sequence[Result] | Future) -> None:
        """Give each request its slice of the results; a Future (work `process` handed on, e.g. to a writer
        thread) is sliced when it is done, and an exception it ends with goes to every request of the batch."""
        if isinstance(results, Future):
            results.add_done_callback(lambda done: self._hand_out_done(batch, done))
            return
        results = list(results)
        expected = sum(len(r.items) for r in batch)
        if len(results) != expected:
            error = RuntimeError(f"{self.name!r}: process returned {len(results)} results for {expected} items")
            for request in batch:
                request.future.set_exception(error)
            return
        start = 0
        for request in batch:
            stop = start + len(request.items)
            request.future.set_result(results[start:stop])
            start = stop

    def _hand_out_done(self, batch: list[_Request[Item]], done: Future) -> None:
        try:
            results = done.result()
        except Exception as err:  # noqa: BLE001 - it belongs to the requests of this batch
            for request in batch:
                request.future.set_exception(err)
            return
        self._hand_out(batch, results)
