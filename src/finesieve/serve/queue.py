"""The review queue: lease the next item to a reviewer, record the decision, undo or release it, and count it all.

    from sqlalchemy.orm import Session
    from finesieve.serve import queue
    with Session(engine) as session, session.begin():
        item = queue.lease_next(session, "ana", lease_s=600)        # None when nothing is waiting
    with Session(engine) as session, session.begin():
        queue.decide(session, item.id, "ana", violation=True, category="spam", note=None)
    with Session(engine) as session:
        numbers = queue.stats(session)                              # the JSON of GET /v1/review/stats

Each function works inside the caller's transaction and writes its action to the audit log there; the caller
commits. A lease is taken by a conditional UPDATE (`... WHERE id = ? AND (pending OR lease expired)`) whose row
count says whether this reviewer won the item, so two reviewers never hold one item on either database; PostgreSQL
first picks its candidate with `SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent reviewers pass over each other's
rows instead of queueing on them, and SQLite serialises writers (WAL, busy timeout) so the conditional UPDATE is
atomic there too. An expired lease is simply available again. Order: `due_at` ascending, which is priority plus
waiting time (`finesieve.serve.store.AGE_SCALE_S`: one priority point is worth an hour of waiting, so failures
come first, then higher scores, and anything that waits long enough overtakes newer items).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Float, and_, case, func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from finesieve.data.errors import FinesieveError
from finesieve.serve import store
from finesieve.serve.db import Message, ReviewItem, utcnow

CANDIDATES = 16  # items tried per round on SQLite before asking the database again
LEASE_ROUNDS = 50  # rounds before giving up (only reached when other reviewers keep winning every candidate)
REASONS = ("flagged", "audit", "failure")


class ItemNotFound(FinesieveError, LookupError):
    """No review item has this id (HTTP 404)."""


class LeaseConflict(FinesieveError):
    """The caller may not act on the item now: someone else holds it, the lease expired, or it is decided (409)."""


def _available(now: datetime) -> ColumnElement[bool]:
    return or_(ReviewItem.state == "pending", and_(ReviewItem.state == "leased", ReviewItem.lease_expires_at <= now))


def _rowcount(result) -> int:
    return cast(CursorResult, result).rowcount or 0


def _get(session: Session, item_id: int) -> ReviewItem:
    item = session.get(ReviewItem, item_id, populate_existing=True)
    if item is None:
        raise ItemNotFound(f"no review item with id {item_id}: take items from POST /v1/review/next")
    return item


def lease_next(session: Session, reviewer: str, lease_s: float, *, now: datetime | None = None) -> ReviewItem | None:
    """The item `reviewer` should look at now, leased to them for `lease_s` seconds; None when nothing waits.

    A reviewer who already holds an unexpired lease gets that item back (a reload does not take a second one).
    """
    now = now or utcnow()
    held = session.scalar(
        select(ReviewItem)
        .where(ReviewItem.state == "leased", ReviewItem.lease_owner == reviewer, ReviewItem.lease_expires_at > now)
        .order_by(ReviewItem.due_at, ReviewItem.id)
        .limit(1)
    )
    if held is not None:
        return held
    postgres = session.get_bind().dialect.name == "postgresql"
    expires = now + timedelta(seconds=lease_s)
    for _ in range(LEASE_ROUNDS):
        query = select(ReviewItem.id).where(_available(now)).order_by(ReviewItem.due_at, ReviewItem.id)
        if postgres:
            query = query.limit(1).with_for_update(skip_locked=True)
        else:
            query = query.limit(CANDIDATES)
        candidates = list(session.scalars(query))
        if not candidates:
            return None
        for item_id in candidates:
            taken = session.execute(
                update(ReviewItem)
                .where(ReviewItem.id == item_id, _available(now))
                .values(state="leased", lease_owner=reviewer, lease_expires_at=expires)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(taken) == 1:
                store.audit(session, reviewer, "review_lease", {"item_id": item_id, "lease_s": lease_s})
                return _get(session, item_id)
    raise LeaseConflict(f"could not lease an item in {LEASE_ROUNDS} rounds: other reviewers took every one; retry")


def _why_not_held(item: ReviewItem, reviewer: str, now: datetime) -> str:
    if item.state == "decided":
        return f"review item {item.id} is already decided (by {item.reviewer}): take the next item"
    if item.state == "pending" or item.lease_owner is None:
        return f"review item {item.id} is not leased to {reviewer!r}: take it with POST /v1/review/next first"
    if item.lease_owner != reviewer:
        return f"review item {item.id} is leased to another reviewer: take the next item"
    return f"your lease on review item {item.id} expired at {item.lease_expires_at:%H:%M:%S} UTC: take the next item"


def decide(
    session: Session,
    item_id: int,
    reviewer: str,
    violation: bool,
    category: str | None,
    note: str | None,
    *,
    now: datetime | None = None,
) -> ReviewItem:
    """Record `reviewer`'s decision on an item they hold an unexpired lease on (else LeaseConflict)."""
    now = now or utcnow()
    item = _get(session, item_id)
    held = and_(
        ReviewItem.id == item_id,
        ReviewItem.state == "leased",
        ReviewItem.lease_owner == reviewer,
        ReviewItem.lease_expires_at > now,
    )
    result = session.execute(
        update(ReviewItem)
        .where(held)
        .values(
            state="decided",
            violation=violation,
            decided_category=category,
            note=note,
            reviewer=reviewer,
            decided_at=now,
            lease_owner=None,
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        raise LeaseConflict(_why_not_held(item, reviewer, now))
    store.audit(session, reviewer, "review_decide", {"item_id": item_id, "violation": violation, "category": category})
    return _get(session, item_id)


def undo(
    session: Session, item_id: int, reviewer: str, *, window_s: float, lease_s: float, now: datetime | None = None
) -> ReviewItem:
    """Take back `reviewer`'s own decision made within `window_s` seconds: the item is leased to them again."""
    now = now or utcnow()
    item = _get(session, item_id)
    result = session.execute(
        update(ReviewItem)
        .where(
            ReviewItem.id == item_id,
            ReviewItem.state == "decided",
            ReviewItem.reviewer == reviewer,
            ReviewItem.decided_at >= now - timedelta(seconds=window_s),
        )
        .values(
            state="leased",
            lease_owner=reviewer,
            lease_expires_at=now + timedelta(seconds=lease_s),
            violation=None,
            decided_category=None,
            note=None,
            reviewer=None,
            decided_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        if item.state != "decided":
            why = f"review item {item_id} is not decided, so there is nothing to undo"
        elif item.reviewer != reviewer:
            why = f"review item {item_id} was decided by another reviewer: only they may undo it"
        else:
            why = f"the decision on review item {item_id} is older than the {window_s:g} s undo window"
        raise LeaseConflict(why)
    store.audit(session, reviewer, "review_undo", {"item_id": item_id})
    return _get(session, item_id)


def release(session: Session, item_id: int, reviewer: str, *, now: datetime | None = None) -> ReviewItem:
    """Give a leased item back to the pool unjudged (only its lease holder may, expired or not, if nobody took it)."""
    now = now or utcnow()
    item = _get(session, item_id)
    result = session.execute(
        update(ReviewItem)
        .where(ReviewItem.id == item_id, ReviewItem.state == "leased", ReviewItem.lease_owner == reviewer)
        # due_at = now: a skipped item goes behind the items already waiting (its priority no longer counts), so
        # "skip" then "next" shows another item rather than the same one again.
        .values(state="pending", lease_owner=None, lease_expires_at=None, due_at=now)
        .execution_options(synchronize_session=False)
    )
    if _rowcount(result) != 1:
        raise LeaseConflict(_why_not_held(item, reviewer, now))
    store.audit(session, reviewer, "review_release", {"item_id": item_id})
    return _get(session, item_id)


# -------------------------------------------------------------------------------------------------- views


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def item_view(item: ReviewItem, message: Message | None, categories: list[str], *, now: datetime | None = None) -> dict:
    """The JSON of one review item (the ITEM of the review API): the item, its message and the decision form's
    categories. The text is the stored redacted text (None after retention); the raw text was never stored."""
    now = now or utcnow()
    return {
        "item_id": item.id,
        "message_id": item.message_id,
        "reason": item.reason,
        "priority": item.priority,
        "state": item.state,
        "lease_owner": item.lease_owner,
        "lease_expires_at": _iso(item.lease_expires_at),
        "created_at": _iso(item.created_at),
        "age_s": max(0.0, (now - item.created_at).total_seconds()),
        "violation": item.violation,
        "decided_category": item.decided_category,
        "note": item.note,
        "reviewer": item.reviewer,
        "decided_at": _iso(item.decided_at),
        "message": None
        if message is None
        else {
            "text": message.text,
            "action": message.action,
            "category": message.category,
            "score": message.score,
            "category_scores": dict(message.category_scores or {}),
            "stage_scores": dict(message.stage_scores or {}),
            "decided_by": message.decided_by,
            "rules_fired": list(message.rules_fired or []),
            "model": message.model,
            "model_version": message.model_version,
            "failure": message.failure,
        },
        "categories": list(categories),
    }


def _seconds_between(later, earlier, dialect: str) -> ColumnElement:
    """`later - earlier` in seconds, in the database's own date arithmetic."""
    if dialect == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def stats(session: Session, *, now: datetime | None = None) -> dict:
    """The queue's numbers (the JSON of GET /v1/review/stats); rates are None while nothing they divide by exists.

    queue_precision       decided `flagged` items judged violations / decided `flagged` items
    overturn_rate         decided `flagged` items judged not violations / decided `flagged` items (1 - precision)
    audit_violation_rate  decided `audit` items judged violations / decided `audit` items: violations among
                          delivered messages, sampled at random, so the unbiased signal of what the model misses
    by_reason             items not yet decided (pending or leased), per reason
    """
    now = now or utcnow()
    dialect = session.get_bind().dialect.name
    by_state = dict(session.execute(select(ReviewItem.state, func.count()).group_by(ReviewItem.state)).all())
    open_by_reason = dict(
        session.execute(
            select(ReviewItem.reason, func.count()).where(ReviewItem.state != "decided").group_by(ReviewItem.reason)
        ).all()
    )
    oldest = session.scalar(select(func.min(ReviewItem.created_at)).where(ReviewItem.state == "pending"))
    decided = ReviewItem.state == "decided"
    violations = func.sum(case((ReviewItem.violation.is_(True), 1), else_=0))
    judged = dict(
        (reason, (total, int(v or 0)))
        for reason, total, v in session.execute(
            select(ReviewItem.reason, func.count(), violations).where(decided).group_by(ReviewItem.reason)
        ).all()
    )
    flagged_total, flagged_violations = judged.get("flagged", (0, 0))
    audit_total, audit_violations = judged.get("audit", (0, 0))
    mean_s = session.scalar(
        select(func.avg(_seconds_between(ReviewItem.decided_at, ReviewItem.created_at, dialect).cast(Float))).where(
            decided
        )
    )
    day_start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    recent = [
        at
        for at in session.scalars(select(ReviewItem.decided_at).where(decided, ReviewItem.decided_at >= day_start))
        if at is not None
    ]
    hours = [day_start + timedelta(hours=h) for h in range(24)]
    per_hour = dict.fromkeys(hours, 0)
    for at in recent:
        hour = at.replace(minute=0, second=0, microsecond=0)
        if hour in per_hour:  # a clock a little ahead of `now` must not add a 25th hour
            per_hour[hour] += 1
    return {
        "pending": by_state.get("pending", 0),
        "leased": by_state.get("leased", 0),
        "decided": by_state.get("decided", 0),
        "by_reason": {reason: open_by_reason.get(reason, 0) for reason in REASONS},
        "oldest_pending_age_s": (now - oldest).total_seconds() if oldest is not None else None,
        "decisions_last_hour": sum(1 for at in recent if at >= now - timedelta(hours=1)),
        "decisions_per_hour": [{"hour": h.isoformat(), "decisions": per_hour[h]} for h in hours],
        "queue_precision": _share(flagged_violations, flagged_total),
        "overturn_rate": _share(flagged_total - flagged_violations, flagged_total),
        "audit_violation_rate": _share(audit_violations, audit_total),
        "mean_seconds_to_decision": float(mean_s) if mean_s is not None else None,
    }
