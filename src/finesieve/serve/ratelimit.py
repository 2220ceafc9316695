"""Rate limits: a token bucket per API key, and a cap on failed logins per username and per client address.

    from finesieve.serve.ratelimit import KeyBuckets, LoginGuard
    buckets = KeyBuckets(per_s=1000, burst=2000)
    wait_s = buckets.take("billing-app")          # 0.0: go ahead; > 0: refused, retry after this many seconds
    guard = LoginGuard(failures=5, window_s=60)
    wait_s = guard.blocked("ana", "10.0.0.7")     # > 0 once 5 failures for the name or the address in a minute
    guard.failed("ana", "10.0.0.7")

The state lives in this process's memory: with several workers (`uvicorn --workers N`) each process keeps its own
buckets, so a key may make up to N times its rate and a guesser up to N times the failures; put the limit in the
proxy in front (or a shared store) where that matters. Time comes from `time.monotonic`, so a clock change does not
refill a bucket; `now` may be passed to test without sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

MAX_TRACKED = 100_000  # names and addresses remembered at most; beyond it the idlest are forgotten


@dataclass
class _Bucket:
    tokens: float
    at: float


class KeyBuckets:
    """One token bucket per name: `burst` tokens at most, refilled at `per_s` tokens a second; one request costs one."""

    def __init__(self, per_s: float, burst: float):
        self.per_s = per_s
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, name: str, *, now: float | None = None) -> float:
        """Spend one token of `name`'s bucket: 0.0 if there was one, else the seconds until there is."""
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                if len(self._buckets) >= MAX_TRACKED:
                    self._buckets.clear()  # every bucket refills to full anyway once idle for burst / per_s
                bucket = self._buckets[name] = _Bucket(tokens=self.burst, at=now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.per_s)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.per_s


class LoginGuard:
    """At most `failures` failed logins per username and per client address within `window_s` seconds."""

    def __init__(self, failures: int, window_s: float = 60.0):
        self.failures = failures
        self.window_s = window_s
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._seen.setdefault(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def blocked(self, username: str, client: str, *, now: float | None = None) -> float:
        """Seconds until a login for this name from this address may be tried again; 0.0 when it may now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            wait = 0.0
            for key in (f"user:{username}", f"client:{client}"):
                times = self._recent(key, now)
                if len(times) >= self.failures:
                    wait = max(wait, times[-self.failures] + self.window_s - now)
            return wait

    def failed(self, username: str, client: str, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._seen) >= MAX_TRACKED:
                self._seen.clear()
            for key in (f"user:{username}", f"client:{client}"):
                self._recent(key, now).append(now)


def retry_after(wait_s: float) -> str:
    """The Retry-After header's value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
