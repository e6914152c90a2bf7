"""What providers report about a reader: a hard bounce, soft bounces past the limit,
a complaint; and the rule that counts soft bounces.

:mod:`digest.delivery.events` and :mod:`digest.delivery.refusals` call these; each writes
the consent log and the suppression list like the rest of
:mod:`subscribers.lifecycle` (which re-exports them), and sends no mail.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlmodel import Session

from subscribers.consent import Context
from subscribers.models import (
    ConsentAction,
    ConsentSource,
    Subscriber,
    SubscriberStatus,
    SuppressionReason,
)
from subscribers.repository import block


def is_erased(subscriber: Subscriber) -> bool:
    """Forgotten (:func:`subscribers.lifecycle.forget`): only a placeholder address left."""
    return subscriber.email.endswith("@erased.invalid")


def record_bounce(
    session: Session,
    *,
    subscriber_id: int,
    hard: bool,
    detail: str,
    now: datetime,
    source: ConsentSource = ConsentSource.webhook,
) -> bool:
    """A provider reported the address dead: a hard bounce, or (``hard=False``) soft
    bounces past the limit. Status ``bounced``, address suppressed, consent log
    action ``bounced`` from source ``webhook`` with ``detail``.

    Only an active or pending reader changes: one who unsubscribed, complained or
    was erased is already not mailed, and bouncing twice logs once. Returns
    whether anything changed (False also for an unknown id).
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or is_erased(subscriber):
        return False
    if subscriber.status not in (SubscriberStatus.active, SubscriberStatus.pending):
        return False
    kind = "hard bounce" if hard else "soft bounces"
    block(
        session,
        subscriber,
        status=SubscriberStatus.bounced,
        reason=SuppressionReason.bounced,
        action=ConsentAction.bounced,
        context=Context(source),
        now=now,
        detail=f"{kind}: {detail}" if detail else kind,
    )
    return True


def record_complaint(session: Session, *, subscriber_id: int, detail: str, now: datetime) -> bool:
    """The reader marked a message as spam (a feedback-loop report): status
    ``complained``, address suppressed (a complaint outranks an unsubscribe or a
    bounce), consent log action ``complained`` from source ``webhook``.

    Returns whether anything changed (False for an unknown, erased or already
    complained reader).
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or is_erased(subscriber):
        return False
    if subscriber.status == SubscriberStatus.complained:
        return False
    block(
        session,
        subscriber,
        status=SubscriberStatus.complained,
        reason=SuppressionReason.complained,
        action=ConsentAction.complained,
        context=Context(ConsentSource.webhook),
        now=now,
        detail=detail,
    )
    return True


def soft_bounce_window_start(
    subscriber: Subscriber, *, now: datetime, window: timedelta
) -> datetime:
    """Since when soft bounces count toward the limit: the window, but never before
    the reader's last confirmation (a fresh opt-in starts the count afresh)."""
    start = now - window
    confirmed = subscriber.confirmed_at
    return max(start, confirmed) if confirmed is not None else start


@dataclass(frozen=True, slots=True)
class SoftBounce:
    """One temporary delivery failure reported for a reader."""

    at: datetime  # when it happened
    message: str  # names the message that bounced (retries of one message share it)


def count_soft_bounces(bounces: Iterable[SoftBounce]) -> int:
    """How many of ``bounces`` count toward ``soft_bounce_limit``.

    A provider retries a deferred message for up to three days and may report each
    failed attempt, and a mailbox that is full today is full for every message
    today. So, taken in time order, a bounce counts only when neither its message
    nor its day (UTC) has counted one already: Mailman's bounce score, which adds
    at most one bounce per day, plus one per message. Three temporary failures of
    one message count once; three messages bounced on one day count once.
    """
    counted = 0
    days: set[date] = set()
    messages: set[str] = set()
    for bounce in sorted(bounces, key=lambda b: _utc(b.at)):
        day = _utc(bounce.at).date()
        if day in days or bounce.message in messages:
            continue
        days.add(day)
        messages.add(bounce.message)
        counted += 1
    return counted


def _utc(when: datetime) -> datetime:
    """An aware time in UTC; a naive one is taken to be UTC already."""
    return when.astimezone(UTC) if when.tzinfo is not None else when.replace(tzinfo=UTC)
