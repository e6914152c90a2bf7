"""The ``delivery_event`` table: one row per provider event, written once.

``(provider, event_id)`` is unique and rows are inserted with ``ON CONFLICT DO
NOTHING``, so an event delivered twice (or by two web workers at once) is stored,
and so applied (:mod:`digest.delivery.events`), once. Operator notices (an SNS
subscription handshake) are rows too, under event id ``notice:<key>``
(:data:`digest.delivery.event_report.NOTICE_PREFIX`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from digest.delivery.event_report import NOTICE_PREFIX
from digest.delivery.matching import NO_MATCH, Match
from digest.store.models import DeliveryEventRecord
from digest.webhooks.base import DeliveryEvent, EventType

E = DeliveryEventRecord.__table__  # type: ignore[attr-defined]
MAX_KEY = 200  # event ids longer than the column are stored as their SHA-256


def store_notice(
    session: Session,
    *,
    provider: str,
    key: str,
    description: str,
    raw: dict[str, Any],
    now: datetime,
) -> bool:
    """Store a provider notice that is not a delivery event (an SNS subscription
    handshake) for the operator, once per ``key``: type ``unknown``, event id
    ``notice:<key>``, ``description`` as its outcome. Returns whether it was new."""
    event = DeliveryEvent(
        provider=provider,
        event_id=NOTICE_PREFIX + key,
        type=EventType.unknown,
        description=description,
        raw=raw,
    )
    return store_event(session, event, NO_MATCH, now, outcome=description) is not None


def update_notice(session: Session, *, provider: str, key: str, outcome: str) -> None:
    """Say what became of a notice (e.g. "confirmed automatically")."""
    stmt = E.update().where(E.c.provider == provider, E.c.event_id == NOTICE_PREFIX + key)
    session.execute(stmt.values(outcome=outcome))


def store_event(
    session: Session, event: DeliveryEvent, match: Match, now: datetime, *, outcome: str = ""
) -> int | None:
    """Insert the event row; None when ``(provider, event_id)`` is already stored."""
    recipient = event.recipient.strip().lower()
    if not recipient and match.subscriber is not None:
        recipient = match.subscriber.email
    values = {
        "provider": event.provider[:40],
        "event_id": _key(event),
        "type": event.type.value,
        "recipient": recipient[:320],
        "message_id": event.message_id,
        "provider_message_id": event.provider_message_id[:200],
        "delivery_id": match.delivery.id if match.delivery is not None else None,
        "subscriber_id": match.subscriber.id if match.subscriber is not None else None,
        "smtp_status": event.smtp_status[:20],
        "description": event.description,
        "policy": event.policy,
        "outcome": outcome,
        "raw": _jsonable(event.raw),
        "occurred_at": event.occurred_at,
        "received_at": now,
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(E)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(E.c.id)
    )
    row_id = session.execute(stmt).scalar()
    return int(row_id) if row_id is not None else None


def _key(event: DeliveryEvent) -> str:
    """The event id as stored: verbatim, or its hash when too long or missing."""
    if event.event_id and len(event.event_id) <= MAX_KEY:
        return event.event_id
    basis = event.event_id or json.dumps(_jsonable(event.raw), sort_keys=True)
    return "sha256:" + hashlib.sha256(basis.encode("utf-8")).hexdigest()


def _jsonable(raw: Any) -> Any:
    """The raw payload as plain JSON values (mappings from a provider may be exotic)."""
    return json.loads(json.dumps(raw, default=str))
