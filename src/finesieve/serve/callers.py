"""Who is calling: an API key's caller, looked up in the database and remembered for a few seconds.

    from finesieve.serve.callers import CallerCache
    callers = CallerCache(engine, ttl_s=5.0)
    caller = callers.cached(key) or callers.lookup(key)   # cached: no I/O; lookup: one indexed query
    caller.may_use("spam")                                 # the models the key was created for

A key is looked up on every request, and a query per request was a large share of a one-message request's time
under load, so a found key is trusted for `ttl_s` seconds before the database is asked again. The price is stated in
the `key_cache_s` setting: a key revoked (`finesieve serve-key revoke`, from another process) stops working
within that time. Unknown keys are never cached, so a key created a moment ago works at once.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from finesieve.serve import store

MAX_ENTRIES = 10_000  # keys remembered at once; past this the cache starts afresh (keys are few, this is a bound)


class CallerCache:
    def __init__(self, engine: Engine, ttl_s: float):
        self.engine = engine
        self.ttl_s = ttl_s
        self._found: dict[str, tuple[store.Caller, float]] = {}  # sha256 of the key -> (caller, expires at)
        self._lock = threading.Lock()

    def cached(self, key: str) -> store.Caller | None:
        """The caller of a key found within the last `ttl_s` seconds, without I/O; None otherwise."""
        hit = self._found.get(store.hash_key(key))
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def lookup(self, key: str) -> store.Caller | None:
        """The key's caller from the database (blocking); remembered when found. None: unknown or revoked."""
        with Session(self.engine) as session:
            caller = store.find_caller(session, key)
        if caller is not None and self.ttl_s > 0:
            with self._lock:
                if len(self._found) >= MAX_ENTRIES:
                    self._found.clear()
                self._found[store.hash_key(key)] = (caller, time.monotonic() + self.ttl_s)
        return caller
