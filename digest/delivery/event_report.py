"""What ``digest status`` shows the operator about provider events and refusals:
bounces, complaints and policy blocks per edition, and notices still waiting for
the operator (an SNS subscription to confirm).

Policy blocks count both sources: events a provider's webhook flagged ``policy``
and send-time refusals with a 5.7.x status (:func:`digest.delivery.refusals.send_time_blocks`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlmodel import Session

from digest.delivery.refusals import send_time_blocks
from digest.store.models import Delivery, DeliveryEventRecord, Edition
from digest.webhooks.base import EventType

E = DeliveryEventRecord.__table__  # type: ignore[attr-defined]
NOTICE_PREFIX = "notice:"  # event ids of operator notices (see store.store_notice)
PENDING_NOTICE = "subscription confirmation pending"  # such a notice's outcome, until done

# Event types counted for the operator, and under which name.
_COUNTED = {
    EventType.bounced_hard: "hard",
    EventType.bounced_soft: "soft",
    EventType.complained: "complaints",
}


@dataclass(frozen=True, slots=True)
class Attention:
    """What ``digest status`` shows the operator about provider events."""

    # (edition key, or "" for events that matched no delivery) → counts of
    # "hard", "soft", "complaints", "policy"; newest editions first
    per_edition: list[tuple[str, dict[str, int]]]
    policy_blocks: int
    notices: list[tuple[str, str]]  # (provider, what to do): pending SNS confirmations


def attention(session: Session, *, editions: int = 8) -> Attention:
    """Bounces, complaints and policy blocks (webhook and send-time) per edition
    (the ``editions`` newest with any), and notices still waiting for the operator."""
    key = func.coalesce(Edition.key, "")
    stmt = (
        select(key, E.c.type, E.c.policy, func.count())
        .select_from(E)
        .outerjoin(Delivery, Delivery.id == E.c.delivery_id)
        .outerjoin(Edition, Edition.id == Delivery.edition_id)  # type: ignore[arg-type]
        .where(
            E.c.type.in_([t.value for t in _COUNTED]) | E.c.policy.is_(True),
        )
        .group_by(key, E.c.type, E.c.policy)
    )
    tallies: dict[str, dict[str, int]] = {}
    for edition_key, kind, policy, n in session.execute(stmt):
        tally = tallies.setdefault(
            str(edition_key), dict.fromkeys([*_COUNTED.values(), "policy"], 0)
        )
        tally["policy" if policy else _COUNTED[EventType(kind)]] += int(n)
    for edition_key, blocks in send_time_blocks(session.connection()).items():
        tally = tallies.setdefault(edition_key, dict.fromkeys([*_COUNTED.values(), "policy"], 0))
        tally["policy"] += blocks.at_send
    per_edition = sorted(tallies.items(), key=lambda kv: kv[0], reverse=True)[:editions]
    policy_blocks = sum(t["policy"] for t in tallies.values())
    pending = select(E.c.provider, E.c.outcome).where(
        E.c.event_id.startswith(NOTICE_PREFIX), E.c.outcome.startswith(PENDING_NOTICE)
    )
    notices = [(str(p), str(o)) for p, o in session.execute(pending.order_by(E.c.id))]
    return Attention(per_edition, policy_blocks, notices)
