"""The fenced writes between a claim and the network call: mark ``sending``, set
the batch key. Commit both before sending.

Each changes only the rows the claim (owner and token, :mod:`digest.delivery.claims`) still
holds and returns them (RETURNING): a row asked for and not returned is lost to
another sender, and must not be sent.

The hot path's statements are built once, with bind parameters (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from digest.delivery.claims import FENCE, IDS, TOKENS, when
from digest.delivery.ledger import D, S
from digest.store.models import DeliveryState
from subscribers.models import SubscriberStatus


@dataclass(frozen=True, slots=True)
class Marked:
    """What :func:`mark_sending` did: ``{id: (attempt, token)}`` marked ``sending``
    (send these, and only these), ``{id: token}`` skipped (reader no longer active).
    A row asked for and in neither is lost: another sender holds it now."""

    sending: dict[int, tuple[int, int]]
    skipped: dict[int, int]


def mark_sending(
    conn: Connection,
    *,
    rows: Sequence[tuple[int, int]],
    owner: str,
    now: datetime,
    lease: timedelta,
) -> Marked:
    """Mark ``owner``'s queued rows ``(id, token)`` ``sending``; skip those whose
    reader is no longer active. A row whose claim changed (another sender took it,
    or it was resolved meanwhile) is left alone and left out of the answer.
    Commit before the network call."""
    skip, send = _mark_statements()
    wanted = set(rows)
    params = {
        "ids": sorted({i for i, _ in rows}),
        "tokens": sorted({t for _, t in rows}),
        "owner": owner,
        "now": now,
    }
    skipped = {int(i): int(t) for i, t in conn.execute(skip, params) if (i, t) in wanted}
    marked = conn.execute(send, {**params, "until": now + lease}).all()
    return Marked({int(i): (int(a), int(t)) for i, a, t in marked if (i, t) in wanted}, skipped)


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
    # Rows of several claims at once (a group commit): any of their tokens.
    mine = (
        D.c.id.in_(IDS),
        D.c.state == DeliveryState.queued.value,
        D.c.lease_owner == bindparam("owner"),
        D.c.lease_token.in_(TOKENS),
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
            updated_at=when("now"),
        )
        .returning(D.c.id, D.c.lease_token)
    )
    send = (
        update(D)
        .where(*mine)
        .values(
            state=DeliveryState.sending.value,
            attempts=D.c.attempts + 1,
            lease_until=when("until"),
            updated_at=when("now"),
        )
        .returning(D.c.id, D.c.attempts, D.c.lease_token)
    )
    return skip, send


def set_batch_key(
    conn: Connection, *, ids: Sequence[int], key: str, owner: str, token: int
) -> set[int]:
    """Remember the idempotency key of the request about to carry rows ``ids``;
    return the rows still held (send only those). Commit before the network call."""
    params = {"ids": list(ids), "key": key, "owner": owner, "token": token}
    return {int(i) for i in conn.execute(_batch_key_statement(), params).scalars()}


@functools.cache
def _batch_key_statement() -> Any:
    return (
        update(D)
        .where(D.c.id.in_(IDS), *FENCE)
        .values(batch_key=bindparam("key"))
        .returning(D.c.id)
    )
