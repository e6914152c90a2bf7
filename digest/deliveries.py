"""The delivery ledger: one row per (edition, subscriber), moved through its states.

::

    queued ──mark_sending──► sending ──record──► sent | failed | skipped
       ▲                        │                   (deferred → queued, later)
       └── policy "resend" ── unknown ◄── found in sending by a later run,
                                          or connection lost mid-DATA

Rules (see DESIGN.md, "Deliveries are a ledger"):
- rows are planned in bulk SQL, unique per (edition, subscriber);
- a row is marked ``sending`` and committed *before* the network call, and its
  answer recorded after it, so a crash leaves at most the in-flight rows in doubt;
- suppression is re-checked in the same statement that marks a row ``sending``;
- ``unknown`` rows are resolved by ``[send] unknown_policy``: ``resend`` (default:
  nobody is missed; a reader may get a second copy with the same Message-ID) or
  ``skip`` (nobody gets two; a reader may get none). Never silently.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Text, bindparam, case, cast, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from digest.models import Delivery, DeliveryState, Edition, EditionStatus
from digest.transports.base import Outcome, SendResult
from subscribers.models import Subscriber, SubscriberStatus

D = Delivery.__table__  # type: ignore[attr-defined]
S = Subscriber.__table__  # type: ignore[attr-defined]
E = Edition.__table__  # type: ignore[attr-defined]
PENDING = (DeliveryState.queued.value, DeliveryState.sending.value, DeliveryState.unknown.value)


@dataclass(frozen=True, slots=True)
class Recipient:
    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    categories: tuple[str, ...] = ()  # the reader's choice; empty = all
    paused_until: datetime | None = None
    batch_key: str = ""  # the idempotency key of the request that last carried it


def plan(
    conn: Connection,
    *,
    edition_id: int,
    now: datetime,
    due_for: Callable[[str], datetime | None] | None = None,
) -> int:
    """Create a queued row for every active subscriber (once per edition); return rows.

    ``due_for`` (local delivery time, :mod:`digest.localtime`): each row whose reader
    has a time zone is due at ``due_for(zone)``; the rest (and every row without
    ``due_for``) are due at once (``due_at`` NULL). See :func:`due_at_expression`.
    """
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    active = S.c.status == SubscriberStatus.active.value
    names = ["edition_id", "subscriber_id", "state", "updated_at"]
    values = [literal(edition_id), S.c.id, literal(DeliveryState.queued.value), literal(now)]
    due_at = due_at_expression(conn, due_for, active) if due_for else None
    if due_at is not None:
        names, values = [*names, "due_at"], [*values, due_at]
    stmt = dialect.insert(D).from_select(names, select(*values).where(active))
    conn.execute(stmt.on_conflict_do_nothing(index_elements=["edition_id", "subscriber_id"]))
    planned = conn.execute(
        select(func.count()).select_from(D).where(D.c.edition_id == edition_id)
    ).scalar_one()
    conn.execute(
        update(E)
        .where(E.c.id == edition_id)
        .values(planned_at=now, planned_count=planned, status=EditionStatus.sending.value)
    )
    return int(planned)


def due_at_expression(
    conn: Connection, due_for: Callable[[str], datetime | None], readers: Any
) -> Any | None:
    """``CASE subscriber.time_zone WHEN zone THEN instant … END`` (NULL: due at once)
    over the distinct zones of ``readers``, or None when none of them has a zone
    with an instant. An instant in the past is kept, so the row is due at once and
    the ledger says when it would have been due.

    Set in the very ``INSERT … SELECT`` that plans the ledger: on PostgreSQL, a
    million rows in 30 zones planned in 13 s, where a separate ``UPDATE`` per zone
    (or per instant) added 14–31 s and one ``UPDATE … FROM subscriber`` 8–13 s.
    Two bound parameters per zone: a few hundred zones stay within SQLite's limit
    (32766 since 3.32).
    """
    names = conn.execute(
        select(S.c.time_zone).distinct().where(readers, S.c.time_zone != "")
    ).scalars()
    due = {str(n): d for n in names if (d := due_for(str(n))) is not None}
    if not due:
        return None
    whens = {zone: literal(instant, D.c.due_at.type) for zone, instant in sorted(due.items())}
    return case(whens, value=S.c.time_zone)


def recover(
    conn: Connection,
    *,
    edition_id: int,
    policy: str,
    now: datetime,
    exclusive: bool,
    dead_owners: Sequence[str] = (),
) -> int:
    """Resolve rows left in ``sending`` by senders that are gone; return the count.

    ``exclusive``: this process holds the edition's send lease (SQLite), so no live
    sender can have a row in ``sending``: all of them are in doubt. Otherwise
    (workers on PostgreSQL) only rows whose lease expired, or whose owner is
    known dead (``dead_owners``), are.
    """
    in_doubt = (D.c.edition_id == edition_id) & D.c.state.in_(
        [DeliveryState.sending.value, DeliveryState.unknown.value]
    )
    if not exclusive:
        gone = (D.c.lease_until.is_(None)) | (D.c.lease_until < now)
        if dead_owners:
            gone = gone | D.c.lease_owner.in_(list(dead_owners))
        in_doubt = in_doubt & gone
    note = f"outcome unknown after an interrupted run ({now:%Y-%m-%d %H:%M:%S} UTC): "
    values: dict[str, object]
    if policy == "skip":
        values = {"state": DeliveryState.skipped.value, "detail": note + "skipped by policy"}
    else:
        values = {
            "state": DeliveryState.queued.value,
            "next_attempt_at": None,
            "detail": note + "re-queued by policy (same Message-ID)",
        }
    result = conn.execute(
        update(D).where(in_doubt).values(updated_at=now, lease_owner="", lease_until=None, **values)
    )
    return int(result.rowcount)


def lease_owners(conn: Connection, *, edition_id: int) -> list[str]:
    """The senders holding leases on this edition's rows."""
    stmt = (
        select(D.c.lease_owner)
        .where(D.c.edition_id == edition_id, D.c.lease_owner != "")
        .distinct()
    )
    return [str(o) for o in conn.execute(stmt).scalars()]


def release_claims(
    conn: Connection, *, edition_id: int, owners: Sequence[str] | None = None, keep: str = ""
) -> int:
    """Free queued rows claimed by ``owners`` (all other senders when None)."""
    stmt = update(D).where(
        D.c.edition_id == edition_id,
        D.c.state == DeliveryState.queued.value,
        D.c.lease_owner != "",
        D.c.lease_owner != keep,
    )
    if owners is not None:
        if not owners:
            return 0
        stmt = stmt.where(D.c.lease_owner.in_(list(owners)))
    return int(conn.execute(stmt.values(lease_owner="", lease_until=None)).rowcount)


def claim(
    conn: Connection,
    *,
    edition_id: int,
    owner: str,
    limit: int,
    now: datetime,
    lease: timedelta,
) -> list[Recipient]:
    """Lease up to ``limit`` due, unleased queued rows to ``owner``, in id order. Due:
    its retry time (``next_attempt_at``) and its local delivery time (``due_at``)
    are unset or not after ``now``.

    Rows that carry a ``batch_key`` (sent before under an idempotency key, outcome
    unknown or deferred) are claimed a whole group at a time, so the group goes out
    again as one request under the same key; the rest in id order. ``FOR UPDATE
    SKIP LOCKED`` on PostgreSQL lets any number of workers claim at once without
    waiting for or overlapping each other; on SQLite (which drops the clause)
    ``BEGIN IMMEDIATE`` serializes claims.
    """
    free = (
        D.c.edition_id == edition_id,
        D.c.state == DeliveryState.queued.value,
        (D.c.next_attempt_at.is_(None)) | (D.c.next_attempt_at <= now),
        (D.c.due_at.is_(None)) | (D.c.due_at <= now),  # local delivery time
        (D.c.lease_until.is_(None)) | (D.c.lease_until < now),
    )
    taken = {"lease_owner": owner, "lease_until": now + lease}
    ids = _claim_groups(conn, free=free, taken=taken, limit=limit)
    if len(ids) < limit:
        loose = (
            select(D.c.id)
            .where(*free, D.c.batch_key == "")
            .order_by(D.c.id)
            .limit(limit - len(ids))
            .with_for_update(skip_locked=True)
        )
        take = update(D).where(D.c.id.in_(loose.scalar_subquery())).values(**taken)
        ids += [int(i) for i in conn.execute(take.returning(D.c.id)).scalars().all()]
    if not ids:
        return []
    # Categories as their JSON text, decoded once per distinct value: a JSON decode
    # per row was a third of a 1,000-row claim.
    categories = cast(S.c.categories, Text)
    stmt = (
        select(D.c.id, S.c.id, S.c.email, S.c.name, categories, S.c.paused_until, D.c.batch_key)
        .join(S, S.c.id == D.c.subscriber_id)
        .where(D.c.id.in_(ids))
        .order_by(D.c.batch_key, D.c.id)
    )
    return [
        Recipient(d_id, s_id, email, name, _categories(chosen), paused, key)
        for d_id, s_id, email, name, chosen, paused, key in conn.execute(stmt).all()
    ]


@functools.lru_cache(maxsize=4096)
def _categories(text: str | None) -> tuple[str, ...]:
    """A reader's chosen categories from their stored JSON text (None/null: all)."""
    value = json.loads(text) if text else None
    return tuple(str(c) for c in value) if isinstance(value, list) else ()


def _claim_groups(
    conn: Connection, *, free: tuple[Any, ...], taken: dict[str, object], limit: int
) -> list[int]:
    """Claim whole ``batch_key`` groups, oldest first, up to about ``limit`` rows (at
    least one group). No SKIP LOCKED here: a worker racing for the same group waits,
    then finds it leased (the conditions are re-checked after the wait) and takes
    none of it, so a group is never split between two senders."""
    sizes = conn.execute(
        select(D.c.batch_key, func.count())
        .where(*free, D.c.batch_key > "")  # an index range: only the keyed rows
        .group_by(D.c.batch_key)
        .order_by(func.min(D.c.id))
    ).all()
    keys: list[str] = []
    total = 0
    for key, size in sizes:
        if keys and total + int(size) > limit:
            break
        keys.append(str(key))
        total += int(size)
    if not keys:
        return []
    stmt = update(D).where(*free, D.c.batch_key.in_(keys)).values(**taken).returning(D.c.id)
    return [int(i) for i in conn.execute(stmt).scalars().all()]


def set_batch_key(conn: Connection, *, ids: Sequence[int], key: str) -> None:
    """Remember the idempotency key of the request about to carry rows ``ids``.
    Commit before the network call, like ``mark_sending``."""
    conn.execute(update(D).where(D.c.id.in_(list(ids))).values(batch_key=key))


def renew(conn: Connection, *, owner: str, until: datetime) -> None:
    """Extend the leases of every row ``owner`` holds (queued or sending)."""
    conn.execute(update(D).where(D.c.lease_owner == owner).values(lease_until=until))


def release(conn: Connection, *, owner: str) -> int:
    """Give back the queued rows ``owner`` claimed but did not send (SIGTERM, stop)."""
    result = conn.execute(
        update(D)
        .where(D.c.lease_owner == owner, D.c.state == DeliveryState.queued.value)
        .values(lease_owner="", lease_until=None)
    )
    return int(result.rowcount)


def mark_sending(
    conn: Connection, *, ids: Sequence[int], owner: str, now: datetime, lease: timedelta
) -> dict[int, int]:
    """Mark ``owner``'s queued rows ``sending``; skip those whose reader is no longer
    active. A row whose lease another sender took over is left alone.

    Returns ``{delivery id: attempt number}`` for the rows that may be sent now.
    Commit before the network call.
    """
    skip, send = _mark_statements()
    params = {"ids": list(ids), "owner": owner, "now": now}
    conn.execute(skip, params)
    rows = conn.execute(send, {**params, "until": now + lease}).all()
    return {int(i): int(a) for i, a in rows}


# The hot path's statements are built once, with bind parameters: building a Core
# statement per call (and its cache key) cost more than SQLite ran it — 40 % of an
# SMTP send at one message a batch was mark_sending, most of it construction.
_IDS: Any = bindparam("ids", expanding=True)


def _when(name: str) -> Any:
    return bindparam(name, type_=D.c.updated_at.type)


@functools.cache
def _mark_statements() -> tuple[Any, Any]:
    # Correlated EXISTS on the primary key: a plain IN (inactive ids) scans every
    # inactive reader on each call (37 ms per statement at 1M readers, see
    # docs/BENCHMARKS.md); this is a single index lookup per row.
    inactive = (
        select(S.c.id)
        .where(S.c.id == D.c.subscriber_id, S.c.status != SubscriberStatus.active.value)
        .exists()
    )
    mine = (
        D.c.id.in_(_IDS),
        D.c.state == DeliveryState.queued.value,
        D.c.lease_owner == bindparam("owner"),
    )
    skip = (
        update(D)
        .where(*mine)
        .where(inactive)
        .values(
            state=DeliveryState.skipped.value,
            detail="reader no longer active at send time (unsubscribed or suppressed)",
            lease_owner="",
            lease_until=None,
            updated_at=_when("now"),
        )
    )
    send = (
        update(D)
        .where(*mine)
        .values(
            state=DeliveryState.sending.value,
            attempts=D.c.attempts + 1,
            lease_until=_when("until"),
            updated_at=_when("now"),
        )
        .returning(D.c.id, D.c.attempts)
    )
    return skip, send


@functools.cache
def _record_statements() -> tuple[Any, Any]:
    """Answers: one for many rows alike (ids), one per row (executemany)."""
    answer = {
        "state": bindparam("b_state"),
        "provider_id": bindparam("b_provider_id"),
        "detail": bindparam("b_detail"),
        "next_attempt_at": _when("b_next"),
        "transport": bindparam("b_transport"),
        "lease_owner": "",
        "lease_until": None,
        "updated_at": _when("now"),
    }
    alike = update(D).where(D.c.id.in_(_IDS)).values(**answer)
    each = update(D).where(D.c.id == bindparam("b_id")).values(**answer)
    return alike, each


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How answers that are not final are retried.

    A *deferred* message (SMTP 4xx, throttling, a timeout before DATA) is retried
    with exponential backoff (capped at ``max_backoff_seconds``) until
    ``give_up_after`` has passed since the edition started sending, like an MTA's
    queue lifetime: a server that throttles for hours slows the edition down but
    fails nobody. An *unknown* outcome is retried at most ``max_attempts`` times.
    """

    max_attempts: int
    backoff_seconds: float
    unknown_policy: str
    give_up_after: timedelta = timedelta(hours=72)
    max_backoff_seconds: float = 900.0

    def delay(self, attempts: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, never sooner than ``retry_after``."""
        base = min(
            self.backoff_seconds * 2 ** min(max(attempts - 1, 0), 30), self.max_backoff_seconds
        )
        jittered: float = base * (0.5 + random.random() / 2)  # noqa: S311  (not crypto)
        return max(retry_after or 0.0, jittered)


def record(
    conn: Connection,
    *,
    results: Sequence[SendResult],
    attempts: dict[int, int],
    transport: str,
    policy: RetryPolicy,
    now: datetime,
    started_at: datetime | None = None,
) -> dict[str, int]:
    """Store each answer on its row; return counts by resulting state.

    ``started_at``: when the edition started sending (deferrals give up
    ``policy.give_up_after`` later).
    """
    give_up_at = (started_at or now) + policy.give_up_after
    # Rows with the same answer (a provider's one request id and text for a whole
    # batch) take one UPDATE … WHERE id IN (…); the rest one executemany. At 1,000
    # rows, a statement per row took 32 ms, one IN statement ~5 ms (docs/BENCHMARKS.md).
    alike: dict[tuple[str, str, str, datetime | None, str], list[int]] = {}
    for r in results:
        state, detail, next_at = _next_state(
            r, attempts.get(r.delivery_id, 1), policy, now, give_up_at
        )
        key = (state, r.provider_id[:200], detail[:2000], next_at, r.transport or transport)
        alike.setdefault(key, []).append(r.delivery_id)
    alike_stmt, each_stmt = _record_statements()
    singles: list[dict[str, object]] = []
    tally: dict[str, int] = {}
    for (state, provider_id, detail, next_at, via), ids in alike.items():
        tally[state] = tally.get(state, 0) + len(ids)
        row: dict[str, object] = {"b_state": state, "b_provider_id": provider_id}
        row |= {"b_detail": detail, "b_next": next_at, "b_transport": via, "now": now}
        if len(ids) > 1:
            conn.execute(alike_stmt, {**row, "ids": ids})
        else:
            singles.append({**row, "b_id": ids[0]})
    if singles:
        conn.execute(each_stmt, singles)
    return tally


# RFC 3463: 5.1.x is a bad destination address (no such mailbox, bad domain): a
# hard bounce, whoever reports it.
_HARD_BOUNCE = re.compile(r"\b5\.1\.\d{1,3}\b")


def is_hard_bounce(detail: str) -> bool:
    """True when a refusal carries a 5.1.x status (bad mailbox or domain)."""
    return bool(_HARD_BOUNCE.search(detail))


def _next_state(
    result: SendResult, attempts: int, policy: RetryPolicy, now: datetime, give_up_at: datetime
) -> tuple[str, str, datetime | None]:
    outcome = result.outcome
    if outcome in (Outcome.sent, Outcome.queued):
        return DeliveryState.sent.value, result.detail, None
    if outcome is Outcome.rejected and is_hard_bounce(result.detail):
        return DeliveryState.bounced.value, result.detail, None
    if outcome in (Outcome.rejected, Outcome.failed):
        return DeliveryState.failed.value, result.detail, None
    if outcome is Outcome.unknown and policy.unknown_policy == "skip":
        return (
            DeliveryState.skipped.value,
            f"outcome unknown, skipped by policy: {result.detail}",
            None,
        )
    if outcome is Outcome.deferred and now >= give_up_at:
        return (
            DeliveryState.failed.value,
            f"still deferred after {policy.give_up_after} ({attempts} attempts); last "
            f"answer: {result.detail}",
            None,
        )
    if outcome is not Outcome.deferred and attempts >= policy.max_attempts:
        return (
            DeliveryState.failed.value,
            f"gave up after {attempts} attempts; last answer: {result.detail}",
            None,
        )
    delay = policy.delay(attempts, result.retry_after)
    label = "deferred" if outcome is Outcome.deferred else "outcome unknown, re-queued"
    return DeliveryState.queued.value, f"{label}: {result.detail}", now + timedelta(seconds=delay)


def skip_queued(conn: Connection, *, edition_id: int, reason: str, now: datetime) -> int:
    """Mark every queued row of the edition skipped (the edition was cancelled)."""
    result = conn.execute(
        update(D)
        .where(D.c.edition_id == edition_id, D.c.state == DeliveryState.queued.value)
        .values(
            state=DeliveryState.skipped.value,
            detail=reason,
            lease_owner="",
            lease_until=None,
            updated_at=now,
        )
    )
    return int(result.rowcount)


def edition_state(conn: Connection, *, edition_id: int) -> tuple[str, str]:
    """The edition's status and note, as a sender checks them between batches."""
    status, note = conn.execute(
        select(E.c.status, E.c.status_note).where(E.c.id == edition_id)
    ).one()
    return str(status), str(note)


def pause_edition(conn: Connection, *, edition_id: int, note: str) -> None:
    """Pause a sending edition (a run that saw too many errors)."""
    conn.execute(
        update(E)
        .where(
            E.c.id == edition_id,
            E.c.status.in_([EditionStatus.composed.value, EditionStatus.sending.value]),
        )
        .values(status=EditionStatus.paused.value, status_note=note)
    )


def record_skips(conn: Connection, *, skips: Sequence[tuple[int, str]], now: datetime) -> int:
    """Mark ``(delivery id, reason)`` rows skipped (they were ``sending``)."""
    if skips:
        stmt = (
            update(D)
            .where(D.c.id == bindparam("b_id"))
            .values(
                state=DeliveryState.skipped.value,
                detail=bindparam("b_detail"),
                lease_owner="",
                lease_until=None,
                updated_at=now,
            )
        )
        conn.execute(stmt, [{"b_id": i, "b_detail": reason} for i, reason in skips])
    return len(skips)


def next_due(conn: Connection, *, edition_id: int, now: datetime) -> datetime | None:
    """When this sender should look again for queued rows it may claim: ``now`` if
    one is claimable already, else the earliest time an unleased row becomes due (the
    later of its retry time and its local delivery time), or None when every queued
    row is leased to another live sender (or none is queued)."""
    free = (D.c.lease_until.is_(None)) | (D.c.lease_until < now)
    retry, local = D.c.next_attempt_at, D.c.due_at
    ready = ((retry.is_(None)) | (retry <= now)) & ((local.is_(None)) | (local <= now))
    # The later of the two (NULL = no wait); typed by its first branch, a column.
    later = case(
        (retry.is_(None), local), (local.is_(None), retry), (retry > local, retry), else_=local
    )
    stmt = select(
        func.count(), func.sum(case((ready, 1), else_=0)), func.min(case((~ready, later)))
    ).where(D.c.edition_id == edition_id, D.c.state == DeliveryState.queued.value, free)
    queued, claimable, earliest = conn.execute(stmt).one()
    if not queued:
        return None
    if claimable or earliest is None:
        return now
    assert isinstance(earliest, datetime)
    return earliest


def due_later(conn: Connection, *, edition_id: int, now: datetime) -> tuple[int, datetime | None]:
    """Queued rows waiting for their reader's local delivery time (``due_at`` after
    ``now``), and the earliest such time (None when there are none)."""
    stmt = select(func.count(), func.min(D.c.due_at)).where(
        D.c.edition_id == edition_id,
        D.c.state == DeliveryState.queued.value,
        D.c.due_at > now,
    )
    waiting, earliest = conn.execute(stmt).one()
    return int(waiting), earliest if waiting else None


def counts(conn: Connection, *, edition_id: int) -> dict[str, int]:
    """Rows per state for one edition."""
    stmt = select(D.c.state, func.count()).where(D.c.edition_id == edition_id).group_by(D.c.state)
    return {str(state): int(n) for state, n in conn.execute(stmt)}


def finish_if_done(conn: Connection, *, edition_id: int, now: datetime) -> bool:
    """Mark the edition ``sent`` when no row is pending; return whether it is done."""
    pending = conn.execute(
        select(func.count())
        .select_from(D)
        .where(D.c.edition_id == edition_id, D.c.state.in_(PENDING))
    ).scalar_one()
    if pending:
        return False
    conn.execute(
        update(E)
        .where(E.c.id == edition_id, E.c.status != EditionStatus.sent.value)
        .values(status=EditionStatus.sent.value, finished_at=now)
    )
    return True
