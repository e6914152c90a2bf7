"""Resolving ``unknown`` deliveries: ask the provider first, then apply the policy.

A row is ``unknown`` when its message may or may not have arrived: the transport
said so (an SMTP connection lost after DATA, an HTTP 5xx or timeout after the
request was sent), or a run found it in ``sending`` after its sender died or lost
its lease (:func:`digest.delivery.claims.take_in_doubt`). The sender holding such rows
resolves them within its run:

1. if the transport can ask its provider (``reconcile``, the
   :class:`~digest.transports.base.Reconciler` protocol), it waits a short settle
   time after the attempt, then asks; what the provider has becomes ``sent``
   (with the provider's id, "found by the provider's message search");
2. the rest goes to ``[send] unknown_policy``: ``resend`` queues it again (same
   Message-ID; an idempotent provider drops the repeat through the batch key),
   or fails it after ``max_attempts``; ``skip`` skips it (the reader got at most
   one copy).

Every write is fenced by the holder's claim (owner and token).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from digest.delivery.claims import FENCE, categories_of, recipients, when
from digest.delivery.ledger import D, Recipient, RetryPolicy
from digest.delivery.run import MessageFactory
from digest.store.models import DeliveryState
from digest.transports.base import InDoubt, Outcome, OutgoingMessage, SendResult

log = logging.getLogger(__name__)
_UNKNOWN = DeliveryState.unknown.value
FOUND = "found by the provider's message search after an unknown outcome"


@dataclass(slots=True)
class Resolution:
    """How a run's unknown rows were resolved."""

    reconciled: int = 0  # the provider had them: sent
    resent: int = 0  # policy "resend": queued again
    skipped: int = 0  # policy "skip"
    failed: int = 0  # policy "resend", but out of attempts
    ids: list[int] = field(default_factory=list)  # the rows resolved (no longer held)


@dataclass(frozen=True, slots=True)
class _Row:
    recipient: Recipient
    updated_at: datetime
    attempts: int
    detail: str


def held_unknown(conn: Connection, *, edition_id: int, owner: str) -> list[_Row]:
    """The ``unknown`` rows of the edition ``owner`` holds. Not locked: the provider
    is asked outside any transaction, and :func:`_apply` re-reads them under lock."""
    stmt = (
        recipients(D.c.lease_token, D.c.updated_at, D.c.attempts, D.c.detail)
        .where(D.c.edition_id == edition_id, D.c.state == _UNKNOWN, D.c.lease_owner == owner)
        .order_by(D.c.id)
    )
    return [
        _Row(Recipient(i, s, e, n, categories_of(c), p, k, t), u, int(a), str(d))
        for i, s, e, n, c, p, k, t, u, a, d in conn.execute(stmt).all()
    ]


async def resolve(
    engine: Engine,
    *,
    edition_id: int,
    tag: str,
    owner: str,
    transport: object,
    build: MessageFactory,
    policy: RetryPolicy,
    settle: float,
    lease: timedelta,
    clock: Callable[[], datetime],
) -> Resolution:
    """Resolve every ``unknown`` row ``owner`` holds on the edition (see the module
    docstring). ``settle``: seconds to let the provider index a message before it
    is searched for (only when the transport can search)."""
    with engine.connect() as conn:
        rows = held_unknown(conn, edition_id=edition_id, owner=owner)
    if not rows:
        return Resolution()
    found = await _ask(
        transport, rows, tag=tag, build=build, settle=settle, lease=lease, clock=clock
    )
    with engine.begin() as conn:
        return _apply(conn, rows, found, owner=owner, policy=policy, now=clock())


async def _ask(
    transport: object,
    rows: Sequence[_Row],
    *,
    tag: str,
    build: MessageFactory,
    settle: float,
    lease: timedelta,
    clock: Callable[[], datetime],
) -> dict[int, SendResult]:
    """What the provider accounts for, by delivery id ({} when it cannot be asked)."""
    reconcile: Any = getattr(transport, "reconcile", None)
    if reconcile is None:
        return {}
    newest = max(r.updated_at for r in rows)
    wait = settle - (clock() - newest).total_seconds()
    if wait > 0:
        await asyncio.sleep(wait)
    built = build([r.recipient for r in rows], clock())
    when = {r.recipient.delivery_id: r.updated_at - lease for r in rows}
    items = [
        InDoubt(m.delivery_id, m.recipient, m.message_id, tag, when[m.delivery_id])
        for m in built
        if isinstance(m, OutgoingMessage)
    ]
    try:
        answers: list[SendResult] = await reconcile(items)
    except Exception as exc:  # the provider cannot be asked: the policy decides
        log.warning("could not ask the provider about %d unknown deliveries: %s", len(items), exc)
        return {}
    return {a.delivery_id: a for a in answers if a.outcome in (Outcome.sent, Outcome.queued)}


def _apply(
    conn: Connection,
    rows: Sequence[_Row],
    found: dict[int, SendResult],
    *,
    owner: str,
    policy: RetryPolicy,
    now: datetime,
) -> Resolution:
    # Re-read under lock: only rows still held by the same claim are resolved.
    ids = [r.recipient.delivery_id for r in rows]
    mine = (
        select(D.c.id, D.c.lease_token)
        .where(D.c.id.in_(ids), D.c.state == _UNKNOWN, D.c.lease_owner == owner)
        .with_for_update()
    )
    still = {(int(i), int(t)) for i, t in conn.execute(mine).all()}
    done = Resolution()
    params: list[dict[str, object]] = []
    for r in rows:
        rid, token = r.recipient.delivery_id, r.recipient.token
        if (rid, token) not in still:
            continue
        done.ids.append(rid)
        state, provider_id, detail = _verdict(r, found.get(rid), policy, done)
        params.append(
            {
                "b_id": rid,
                "token": token,
                "owner": owner,
                "now": now,
                "b_state": state,
                "b_provider_id": provider_id,
                "b_detail": detail[:2000],
            }
        )
    if params:
        conn.execute(_resolve_statement(), params)
    return done


def _verdict(
    row: _Row, answer: SendResult | None, policy: RetryPolicy, done: Resolution
) -> tuple[str, str, str]:
    """The state, provider id and detail that resolve ``row``; counted in ``done``."""
    if answer is not None:
        done.reconciled += 1
        return DeliveryState.sent.value, answer.provider_id[:200], f"{FOUND} ({row.detail})"
    if policy.unknown_policy == "skip":
        done.skipped += 1
        return (
            DeliveryState.skipped.value,
            "",
            f"{row.detail}; skipped by [send] unknown_policy = 'skip': the reader got at "
            "most one copy",
        )
    if row.attempts >= policy.max_attempts:
        done.failed += 1
        detail = f"gave up after {row.attempts} attempts, each outcome unknown; {row.detail}"
        return DeliveryState.failed.value, "", detail
    done.resent += 1
    detail = f"{row.detail}; re-queued by [send] unknown_policy = 'resend' (same Message-ID)"
    return DeliveryState.queued.value, "", detail


@functools.cache
def _resolve_statement() -> Any:
    return (
        update(D)
        .where(D.c.id == bindparam("b_id"), D.c.state == _UNKNOWN, *FENCE)
        .values(
            state=bindparam("b_state"),
            provider_id=bindparam("b_provider_id"),
            detail=bindparam("b_detail"),
            next_attempt_at=None,
            lease_owner="",
            lease_until=None,
            updated_at=when("now"),
        )
    )
