"""Recording answers on the delivery ledger, fenced by the claim that sent them.

An answer is stored only on rows the sending claim (owner and token, see
:mod:`digest.delivery.claims`) still holds. An answer that arrives for a row another sender
has taken meanwhile never overwrites it; it is returned as *late* and logged, so
the information is not lost ("row 12 was answered sent by the server after our
lease expired").

``unknown`` answers (maybe delivered) are stored as ``unknown``, still held by the
sender, which resolves them in the same run (:mod:`digest.delivery.unknowns`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from digest.delivery import refusals
from digest.delivery.claims import FENCE, IDS, when
from digest.delivery.ledger import D, RetryPolicy
from digest.store.models import DeliveryState
from digest.transports.base import Outcome, SendResult

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Recorded:
    """Counts by resulting state, and the answers that came too late to store."""

    tally: dict[str, int] = field(default_factory=dict)
    late: list[SendResult] = field(default_factory=list)


@functools.cache
def _record_statements() -> tuple[Any, Any]:
    """Answers: one for many rows alike (ids), one per row (executemany). Both are
    fenced by the claim."""
    answer = {
        "state": bindparam("b_state"),
        "provider_id": bindparam("b_provider_id"),
        "detail": bindparam("b_detail"),
        "next_attempt_at": when("b_next"),
        "transport": bindparam("b_transport"),
        "lease_owner": bindparam("b_owner"),  # kept on ``unknown`` rows: ours to resolve
        "lease_until": when("b_until"),
        "updated_at": when("now"),
    }
    alike = update(D).where(D.c.id.in_(IDS), *FENCE).values(**answer)
    each = update(D).where(D.c.id == bindparam("b_id"), *FENCE).values(**answer)
    return alike, each


def record(
    conn: Connection,
    *,
    results: Sequence[SendResult],
    attempts: dict[int, int],
    owner: str,
    token: int,
    transport: str,
    policy: RetryPolicy,
    now: datetime,
    lease: timedelta,
    started_at: datetime | None = None,
) -> Recorded:
    """Store each answer on its row, if the claim (``owner``, ``token``) still holds
    it; return counts by resulting state and the answers too late to store.

    ``started_at``: when the edition started sending (deferrals give up
    ``policy.give_up_after`` later).
    """
    out = Recorded()
    if not results:
        return out
    give_up_at = (started_at or now) + policy.give_up_after
    # Rows with the same answer (a provider's one request id and text for a whole
    # batch) take one UPDATE … WHERE id IN (…); the rest one executemany. At 1,000
    # rows, a statement per row took 32 ms, one IN statement ~5 ms (docs/BENCHMARKS.md).
    alike: dict[tuple[str, str, str, datetime | None, str], list[int]] = {}
    for r in results:
        state, detail, next_at = next_state(
            r, attempts.get(r.delivery_id, 1), policy, now, give_up_at
        )
        key = (state, r.provider_id[:200], detail[:2000], next_at, r.transport or transport)
        alike.setdefault(key, []).append(r.delivery_id)
    alike_stmt, each_stmt = _record_statements()
    singles: list[dict[str, object]] = []
    fence = {"owner": owner, "token": token, "now": now}
    stored = 0  # rows the fenced statements changed (both drivers sum executemany)
    for (state, provider_id, detail, next_at, via), ids in alike.items():
        held = state == DeliveryState.unknown.value
        row: dict[str, object] = {"b_state": state, "b_provider_id": provider_id}
        row |= {"b_detail": detail, "b_next": next_at, "b_transport": via, **fence}
        row |= {"b_owner": owner if held else "", "b_until": now + lease if held else None}
        if len(ids) > 1:
            stored += conn.execute(alike_stmt, {**row, "ids": ids}).rowcount
        else:
            singles.append({**row, "b_id": ids[0]})
    if singles:
        stored += conn.execute(each_stmt, singles).rowcount
    late = _late(conn, results, owner, token) if stored < len(results) else set()
    out.late = [r for r in results if r.delivery_id in late]
    for (state, *_), ids in alike.items():
        kept = sum(1 for i in ids if i not in late)
        if kept:
            out.tally[state] = out.tally.get(state, 0) + kept
    for r in out.late:
        log.warning(
            "delivery %s was answered %s by the server after this sender lost its lease "
            "(%s); another sender holds the row now, so the answer is not stored",
            r.delivery_id,
            r.outcome.value,
            r.detail or r.provider_id or "no detail",
        )
    return out


def _late(conn: Connection, results: Sequence[SendResult], owner: str, token: int) -> set[int]:
    """The rows of ``results`` the fenced statements did not change: after them, a row
    this claim answered still carries its token (and no other owner). Only asked
    when the statements changed fewer rows than answered (a lost lease)."""
    ids = [r.delivery_id for r in results]
    mine = (D.c.lease_token == token) & D.c.lease_owner.in_(["", owner])
    stmt = select(D.c.id).where(D.c.id.in_(ids), ~mine)
    return {int(i) for i in conn.execute(stmt).scalars()}


def next_state(
    result: SendResult, attempts: int, policy: RetryPolicy, now: datetime, give_up_at: datetime
) -> tuple[str, str, datetime | None]:
    """The state, detail and retry time an answer gives its row."""
    outcome = result.outcome
    if outcome in (Outcome.sent, Outcome.queued):
        return DeliveryState.sent.value, result.detail, None
    if outcome is Outcome.rejected and refusals.suppresses(result):  # 5.1.x, Postmark 406
        return DeliveryState.bounced.value, result.detail, None
    if outcome in (Outcome.rejected, Outcome.failed):
        return DeliveryState.failed.value, result.detail, None
    if outcome is Outcome.unknown:  # resolved in this run: provider search, then policy
        return DeliveryState.unknown.value, f"outcome unknown: {result.detail}", None
    if now >= give_up_at:
        return (
            DeliveryState.failed.value,
            f"still deferred after {policy.give_up_after} ({attempts} attempts); last "
            f"answer: {result.detail}",
            None,
        )
    delay = policy.delay(attempts, result.retry_after)
    return (
        DeliveryState.queued.value,
        f"deferred: {result.detail}",
        now + timedelta(seconds=delay),
    )


@functools.cache
def _skip_statement() -> Any:
    return (
        update(D)
        .where(D.c.id == bindparam("b_id"), *FENCE)
        .values(
            state=DeliveryState.skipped.value,
            detail=bindparam("b_detail"),
            lease_owner="",
            lease_until=None,
            updated_at=when("now"),
        )
    )


def record_skips(
    conn: Connection, *, skips: Sequence[tuple[int, str]], owner: str, token: int, now: datetime
) -> int:
    """Mark ``(delivery id, reason)`` rows skipped (they were ``sending``), those the
    claim still holds; return how many (the fenced statement changes no other row;
    both drivers sum an executemany's row counts)."""
    if not skips:
        return 0
    fence = {"owner": owner, "token": token, "now": now}
    rows = [{"b_id": i, "b_detail": reason, **fence} for i, reason in skips]
    return int(conn.execute(_skip_statement(), rows).rowcount)
