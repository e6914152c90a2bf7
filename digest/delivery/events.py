"""What a verified provider event does: store it once, match it to a delivery and a
reader, and apply its effect.

:func:`apply` runs inside the caller's transaction (the route commits the replay
key and the events together, or neither). Every event is stored in
``delivery_event``; ``(provider, event_id)`` is unique, so an event delivered twice
is applied once, even by two web workers at the same moment (``INSERT … ON CONFLICT
DO NOTHING``: the second waits for the first and then inserts nothing).

Matching (:mod:`digest.delivery.matching`): our Message-ID names the delivery,
else the provider's message id; the reader is the delivery's, else the one with
the event's address; an event nobody matches is stored only. The event rows and
operator notices: :mod:`digest.delivery.event_store`. What ``digest status`` shows from
the stored events is :mod:`digest.delivery.event_report`.

Effects (``policy=True`` events never touch a reader: a reputation or DNS problem
on our side is not the reader's fault; ``digest status`` and ``digest check`` show
them instead, see :mod:`digest.ops.policy_incidents`):

==============  ==============================================================
bounced-hard    delivery ``bounced`` (if it was sent); reader bounced, suppressed
bounced-soft    counted (at most once per message and once per day, see
                :func:`subscribers.bounces.count_soft_bounces`);
                ``soft_bounce_limit`` within the window → as a hard bounce
complained      reader complained, suppressed
unsubscribed    reader unsubscribed (source ``webhook``)
delivered       noted on the delivery (an ``unknown`` row becomes ``sent``);
                counted: ``engagement_count`` kind ``delivered`` of its edition
opened          the provider's open tracking: counted (``provider_open``) for
                the matched delivery's edition; nothing else
clicked         the same, ``provider_click``
unknown         stored only
==============  ==============================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from digest.config import WebhooksConfig
from digest.delivery.event_report import Attention, attention
from digest.delivery.event_store import store_event
from digest.delivery.matching import Match, match_event, parse_message_id
from digest.engagement.counter import PROVIDER_KINDS, count_provider_event
from digest.store.models import Delivery, DeliveryEventRecord, DeliveryState
from digest.webhooks.base import DeliveryEvent, EventType
from subscribers import bounces, lifecycle
from subscribers.consent import Context
from subscribers.models import ConsentSource, Subscriber

__all__ = [
    "ApplySummary",
    "Attention",
    "BouncePolicy",
    "apply",
    "attention",
    "parse_message_id",
]

E = DeliveryEventRecord.__table__  # type: ignore[attr-defined]
MAX_DETAIL = 2000  # a delivery's detail keeps the newest notes up to this length


@dataclass(frozen=True, slots=True)
class BouncePolicy:
    """``[webhooks] soft_bounce_limit`` soft bounces within ``soft_bounce_window``."""

    soft_bounce_limit: int = 3
    soft_bounce_window: timedelta = timedelta(days=30)

    @classmethod
    def of(cls, rules: WebhooksConfig) -> BouncePolicy:
        """The ``[webhooks]`` rule, for the webhook route and the bounce mailbox alike."""
        return cls(rules.soft_bounce_limit, timedelta(days=rules.soft_bounce_window_days))


@dataclass
class ApplySummary:
    """What one batch did (the route answers it as JSON)."""

    received: int = 0
    duplicates: int = 0  # already stored: not applied again
    matched: int = 0  # matched to a delivery or a reader
    changed: int = 0  # readers whose status changed
    policy: int = 0
    outcomes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "matched": self.matched,
            "changed": self.changed,
            "policy": self.policy,
        }


def apply(
    session: Session, events: Sequence[DeliveryEvent], *, now: datetime, policy: BouncePolicy
) -> ApplySummary:
    """Store and apply ``events`` in the caller's transaction; see the module docstring."""
    summary = ApplySummary(received=len(events))
    for event in events:
        match = match_event(session, event)
        row_id = store_event(session, event, match, now)
        if row_id is None:
            summary.duplicates += 1
            continue
        summary.matched += match.delivery is not None or match.subscriber is not None
        summary.policy += event.policy
        outcome, changed = _effect(session, event, match, now, policy)
        summary.changed += changed
        summary.outcomes.append(outcome)
        session.execute(E.update().where(E.c.id == row_id).values(outcome=outcome))
    return summary


def _effect(
    session: Session, event: DeliveryEvent, match: Match, now: datetime, policy: BouncePolicy
) -> tuple[str, bool]:
    """Apply one new event; return (what it did, whether a reader changed)."""
    delivery, subscriber = match.delivery, match.subscriber
    note = _describe(event)
    if delivery is not None:
        _note_delivery(delivery, event, note, now)
        session.add(delivery)
    if event.type is EventType.unknown:
        return "stored only (unknown event kind)", False
    if event.type in PROVIDER_KINDS:  # delivered, opened, clicked: counted per edition
        if delivery is None:
            return "stored only (no matching delivery)", False
        count_provider_event(session.connection(), edition_id=delivery.edition_id, kind=event.type)
        return ("delivery noted" if event.type is EventType.delivered else "counted"), False
    if event.policy:
        return f"policy block, reader left alone: {note}", False
    if subscriber is None or subscriber.id is None:
        return f"stored only (no matching reader): {note}", False
    sid = subscriber.id
    if event.type is EventType.bounced_soft:
        return _soft_bounce(session, subscriber, note, now, policy)
    if event.type is EventType.bounced_hard:
        changed = bounces.record_bounce(session, subscriber_id=sid, hard=True, detail=note, now=now)
        return (
            "reader suppressed (hard bounce)" if changed else "reader already not mailed"
        ), changed
    if event.type is EventType.complained:
        changed = bounces.record_complaint(session, subscriber_id=sid, detail=note, now=now)
        return (
            "reader suppressed (complaint)" if changed else "reader already complained"
        ), changed
    before = subscriber.status  # EventType.unsubscribed
    lifecycle.unsubscribe(
        session, subscriber_id=sid, context=Context(ConsentSource.webhook), now=now
    )
    changed = before != subscriber.status
    return ("reader unsubscribed" if changed else "reader already unsubscribed"), changed


def _soft_bounce(
    session: Session, subscriber: Subscriber, note: str, now: datetime, policy: BouncePolicy
) -> tuple[str, bool]:
    """Count this address's soft bounces in the window (this one included, already
    stored), at most one per message and one per day
    (:func:`subscribers.bounces.count_soft_bounces`); at the limit the reader is
    suppressed as bounced."""
    since = bounces.soft_bounce_window_start(subscriber, now=now, window=policy.soft_bounce_window)
    when = func.coalesce(E.c.occurred_at, E.c.received_at)
    stmt = (
        select(when, E.c.delivery_id, E.c.message_id, E.c.provider_message_id, E.c.id)
        .where(
            E.c.recipient == subscriber.email,
            E.c.type == EventType.bounced_soft.value,
            E.c.policy.is_(False),
            when >= since,
        )
        .order_by(when, E.c.id)
    )
    count = bounces.count_soft_bounces(
        bounces.SoftBounce(at, _message_key(*row)) for at, *row in session.execute(stmt)
    )
    limit = policy.soft_bounce_limit
    if count < limit:
        return f"soft bounce; {count} of {limit} counted within the window", False
    days = policy.soft_bounce_window.days
    detail = f"{count} soft bounces within {days} days (last: {note})"
    assert subscriber.id is not None
    changed = bounces.record_bounce(
        session, subscriber_id=subscriber.id, hard=False, detail=detail, now=now
    )
    return (f"reader suppressed ({detail})" if changed else "reader already not mailed"), changed


def _message_key(delivery_id: int | None, message_id: str, provider_id: str, row_id: int) -> str:
    """What names the message a soft bounce is about: its delivery, else our
    Message-ID, else the provider's id, else only the event itself."""
    if delivery_id is not None:
        return f"delivery:{delivery_id}"
    if message_id:
        return f"message:{message_id}"
    return f"provider:{provider_id}" if provider_id else f"event:{row_id}"


def _note_delivery(delivery: Delivery, event: DeliveryEvent, note: str, now: datetime) -> None:
    """Note the event on its delivery row. A hard bounce (policy blocks included: the
    message did not arrive) of a sent message marks it ``bounced``; a delivered or
    bounced event for a row in doubt (``unknown``: the sender died before recording
    the answer) proves it was sent. Opens and clicks are only counted."""
    if event.type in (EventType.unknown, EventType.opened, EventType.clicked):
        return
    doubtful = delivery.state == DeliveryState.unknown
    if event.type is EventType.bounced_hard and (doubtful or delivery.state == DeliveryState.sent):
        delivery.state = DeliveryState.bounced
    elif event.type is EventType.delivered and doubtful:
        delivery.state = DeliveryState.sent
    line = f"{now:%Y-%m-%d %H:%M} {event.type.value}: {note}"
    detail = f"{delivery.detail}\n{line}" if delivery.detail else line
    delivery.detail = detail[-MAX_DETAIL:]
    delivery.updated_at = now


def _describe(event: DeliveryEvent) -> str:
    """One line for logs and details: provider, SMTP status, the provider's words."""
    parts = [event.provider]
    if event.smtp_status:
        parts.append(event.smtp_status)
    if event.policy:
        parts.append("policy")
    text = " ".join(event.description.split())[:300]
    return f"{' '.join(parts)}: {text}" if text else " ".join(parts)
