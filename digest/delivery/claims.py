"""Claims on the delivery ledger, and the fence around every write after one.

A sender *claims* rows: it writes its owner id, a lease expiry and a fresh claim
token (``lease_token``) on them. Every later change it makes (mark ``sending``,
record the answer or a skip, set the batch key, renew, release) requires the row
to carry that owner and token still. A sender stopped past its lease (GC pause, VM
migration, SIGSTOP) finds that another sender has claimed or resolved its rows
since: its statements change nothing there, and the rows they return (RETURNING)
tell it which rows it lost. It must not send those, and stops. The fence's parts
(:data:`FENCE`, :data:`IDS`, :data:`TOKENS`, :func:`when`) are shared by the writes
after a claim: :mod:`digest.delivery.marks` before the network call, :mod:`digest.delivery.answers`
after it, :mod:`digest.delivery.unknowns` when resolving doubt.

Rows in ``sending`` or ``unknown`` whose sender is gone (its lease expired, or its
process on this host is dead) are *taken in doubt* (:func:`take_in_doubt`): they
become ``unknown``, claimed by the taker, who resolves them (``digest.delivery.unknowns``).

The hot path's statements are built once, with bind parameters (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, Text, bindparam, case, cast, func, select, update

from digest.delivery.ledger import D, Recipient, S
from digest.store.models import DeliveryState

_QUEUED = DeliveryState.queued.value
_SENDING = DeliveryState.sending.value
_UNKNOWN = DeliveryState.unknown.value
IDS: Any = bindparam("ids", expanding=True)
TOKENS: Any = bindparam("tokens", expanding=True)
# The fence: the row still carries the claim (bind ``owner`` and ``token``).
FENCE: tuple[Any, ...] = (
    D.c.lease_owner == bindparam("owner"),
    D.c.lease_token == bindparam("token"),
)


def new_token() -> int:
    """A claim token: random, so that a token names one claim across processes too
    (the fence checks owner and token; :func:`digest.delivery.answers.record` tells which
    rows it lost by the token alone)."""
    return secrets.randbelow(2**31 - 2) + 1


def when(name: str) -> Any:
    """A bound timestamp parameter (typed, so both drivers store it alike)."""
    return bindparam(name, type_=D.c.updated_at.type)


def claim(
    conn: Connection,
    *,
    edition_id: int,
    owner: str,
    limit: int,
    now: datetime,
    lease: timedelta,
) -> list[Recipient]:
    """Lease up to ``limit`` due, unleased queued rows to ``owner`` under a new claim
    token, in id order. Due: its retry time (``next_attempt_at``) and its local
    delivery time (``due_at``) are unset or not after ``now``.

    Rows that carry a ``batch_key`` (sent before under an idempotency key, outcome
    unknown or deferred) are claimed a whole group at a time, so the group goes out
    again as one request under the same key; the rest in id order. ``FOR UPDATE
    SKIP LOCKED`` on PostgreSQL lets any number of workers claim at once without
    waiting for or overlapping each other; on SQLite (which drops the clause)
    ``BEGIN IMMEDIATE`` serializes claims.
    """
    free = (
        D.c.edition_id == edition_id,
        D.c.state == _QUEUED,
        (D.c.next_attempt_at.is_(None)) | (D.c.next_attempt_at <= now),
        (D.c.due_at.is_(None)) | (D.c.due_at <= now),  # local delivery time
        (D.c.lease_until.is_(None)) | (D.c.lease_until < now),
    )
    token = new_token()
    taken = {"lease_owner": owner, "lease_until": now + lease, "lease_token": token}
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
    stmt = recipients().where(D.c.id.in_(ids)).order_by(D.c.batch_key, D.c.id)
    return [
        Recipient(d_id, s_id, email, name, categories_of(chosen), paused, key, token)
        for d_id, s_id, email, name, chosen, paused, key in conn.execute(stmt).all()
    ]


def recipients(*extra: Any) -> Select[Any]:
    """Delivery rows joined to their readers: the :class:`Recipient` fields but the
    token, in its order (categories as JSON text, see :func:`categories_of`), then
    ``extra``."""
    # Categories as their JSON text, decoded once per distinct value: a JSON decode
    # per row was a third of a 1,000-row claim.
    categories = cast(S.c.categories, Text)
    columns = (D.c.id, S.c.id, S.c.email, S.c.name, categories, S.c.paused_until, D.c.batch_key)
    return select(*columns, *extra).join(S, S.c.id == D.c.subscriber_id)


@functools.lru_cache(maxsize=4096)
def categories_of(text: str | None) -> tuple[str, ...]:
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


def renew(
    conn: Connection, *, owner: str, rows: Sequence[tuple[int, int]], until: datetime
) -> set[tuple[int, int]]:
    """Extend the leases of the rows ``(id, token)`` this sender holds; return those
    it still holds. The rest were taken by another sender after this one's lease
    expired: it has lost them."""
    if not rows:
        return set()
    params = {
        "ids": sorted({i for i, _ in rows}),
        "tokens": sorted({t for _, t in rows}),
        "owner": owner,
        "until": until,
    }
    wanted = set(rows)
    found = conn.execute(_renew_statement(), params).all()
    return {(int(i), int(t)) for i, t in found if (i, t) in wanted}


@functools.cache
def _renew_statement() -> Any:
    return (
        update(D)
        .where(
            D.c.id.in_(IDS),
            D.c.lease_owner == bindparam("owner"),
            D.c.lease_token.in_(TOKENS),
        )
        .values(lease_until=when("until"))
        .returning(D.c.id, D.c.lease_token)
    )


def release(conn: Connection, *, owner: str) -> int:
    """Give back the queued (and unresolved ``unknown``) rows ``owner`` holds but did
    not send (SIGTERM, stop, lost lease): another sender may claim them at once."""
    result = conn.execute(
        update(D)
        .where(D.c.lease_owner == owner, D.c.state.in_([_QUEUED, _UNKNOWN]))
        .values(lease_owner="", lease_until=None)
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
        D.c.state == _QUEUED,
        D.c.lease_owner != "",
        D.c.lease_owner != keep,
    )
    if owners is not None:
        if not owners:
            return 0
        stmt = stmt.where(D.c.lease_owner.in_(list(owners)))
    return int(conn.execute(stmt.values(lease_owner="", lease_until=None)).rowcount)


def take_in_doubt(
    conn: Connection,
    *,
    edition_id: int,
    owner: str,
    now: datetime,
    lease: timedelta,
    exclusive: bool,
    dead_owners: Sequence[str] = (),
) -> int:
    """Claim the rows whose sender is gone while their outcome is open: ``sending``
    rows (it died or lost its lease between the mark and the answer) and
    unresolved ``unknown`` rows. They become ``unknown``, held by ``owner``, who
    resolves them (``digest.delivery.unknowns``). Returns how many.

    ``exclusive``: this process holds the edition's send lease (SQLite), so every
    other sender is gone. Otherwise only rows whose lease expired, or whose owner
    is known dead (``dead_owners``), are taken.
    """
    doubt = (D.c.edition_id == edition_id) & D.c.state.in_([_SENDING, _UNKNOWN])
    doubt = doubt & (D.c.lease_owner != owner)
    if not exclusive:
        gone = (D.c.lease_until.is_(None)) | (D.c.lease_until < now)
        if dead_owners:
            gone = gone | D.c.lease_owner.in_(list(dead_owners))
        doubt = doubt & gone
    note = (
        f"outcome unknown: its sender stopped before recording the answer "
        f"(found {now:%Y-%m-%d %H:%M:%S} UTC)"
    )
    result = conn.execute(
        update(D)
        .where(doubt)
        .values(
            state=_UNKNOWN,
            detail=case((D.c.state == _SENDING, note), else_=D.c.detail),
            lease_owner=owner,
            lease_until=now + lease,
            lease_token=new_token(),
        )
    )
    return int(result.rowcount)
