"""When the moderation client tries a request again, and how long it waits first.

    from finesieve.client.retry import RETRY_STATUSES, wait_before_retry
    wait_before_retry(attempt=0, backoff=0.5, max_backoff=8.0)          # 0.25 to 0.5 s
    wait_before_retry(attempt=2, backoff=0.5, max_backoff=8.0)          # 1.0 to 2.0 s
    wait_before_retry(attempt=2, backoff=0.5, max_backoff=8.0, retry_after="3")   # 3.0 s: the server asked

Retried: connection errors and timeouts (httpx2.TransportError), 429 and 502/503/504. Never another 4xx: the same
request would get the same answer. Retrying a POST is safe because the client gives every message its id before
the first attempt, and the service stores one decision per id (a retry gets the stored one, `duplicate=True`).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0  # a Retry-After beyond this is capped: a client call should not hang for an hour


def wait_before_retry(
    attempt: int,
    backoff: float,
    max_backoff: float,
    *,
    retry_after: str | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (0-based): the server's Retry-After when it sent one,
    else exponential backoff (backoff * 2**attempt, at most max_backoff) with jitter: a uniform draw from its upper
    half, so clients that failed together do not retry together."""
    asked = retry_after_seconds(retry_after)
    if asked is not None:
        return min(asked, MAX_RETRY_AFTER_S)
    ceiling = min(max_backoff, backoff * 2**attempt)
    return ceiling * (0.5 + 0.5 * (rng or random).random())


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds: a number of seconds, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
