"""A reader's life: sign up (double opt-in), confirm, change preferences, unsubscribe,
be forgotten. Each step writes the consent log; none sends mail (callers do).

Sign-up never reveals whether an address is known: the caller answers every
request alike, and :func:`request_subscription` only says whether a confirmation
email should go out now (at most one per address per ``resend_after`` window).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, SQLModel

from subscribers import consent
from subscribers.addresses import clean_name, normalize_email
from subscribers.bounces import SoftBounce as SoftBounce
from subscribers.bounces import count_soft_bounces as count_soft_bounces
from subscribers.bounces import is_erased
from subscribers.bounces import record_bounce as record_bounce
from subscribers.bounces import record_complaint as record_complaint
from subscribers.bounces import soft_bounce_window_start as soft_bounce_window_start
from subscribers.consent import Context
from subscribers.models import (
    ConsentAction,
    Subscriber,
    SubscriberStatus,
    SuppressionReason,
)
from subscribers.repository import MAX_CATEGORIES as MAX_CATEGORIES
from subscribers.repository import add, get_by_email, mark_unsubscribed
from subscribers.repository import clean_categories as clean_categories

MAX_PAUSE_WEEKS = 52


@dataclass(frozen=True, slots=True)
class SignupResult:
    subscriber: Subscriber
    send_confirmation: bool  # send the confirmation email now
    reason: str  # for logs and tests only; never shown to the person who asked


def request_subscription(
    session: Session,
    *,
    email: str,
    name: str,
    categories: Sequence[str],
    context: Context,
    now: datetime,
    resend_after: timedelta,
) -> SignupResult:
    """Record a sign-up request. Raises SubscriberInputError for a bad address.

    The reader's row is locked while deciding (``FOR UPDATE`` on PostgreSQL; SQLite
    transactions are already serialized), so concurrent requests for one address
    send at most one confirmation per window.
    """
    address = normalize_email(email)
    existing = get_by_email(session, email=address, for_update=True)
    if existing is None:
        created = add(
            session,
            email=address,
            name=name,
            status=SubscriberStatus.pending,
            source=context.source.value,
            now=now,
        )
        if created.created:
            subscriber = created.subscriber
            subscriber.categories = clean_categories(categories)
        else:  # another request inserted it first: decide as for a known address
            existing = get_by_email(session, email=address, for_update=True)
    if existing is not None and existing.status == SubscriberStatus.active:
        return SignupResult(existing, False, "already active")
    if existing is not None:
        subscriber = existing
        last = subscriber.confirmation_sent_at
        if last is not None and now - last < resend_after:
            return SignupResult(subscriber, False, "confirmation sent recently")
        if subscriber.status == SubscriberStatus.pending:
            subscriber.name = clean_name(name) or subscriber.name
            subscriber.categories = clean_categories(categories)
    subscriber.confirmation_sent_at = now
    subscriber.updated_at = now
    session.add(subscriber)
    suppressed = consent.suppression_of(session, email=address)
    detail = "confirmation email sent"
    if suppressed is not None:
        detail += f"; address suppressed ({suppressed.reason}) until confirmed"
    consent.record(
        session,
        subscriber_id=subscriber.id,
        email=address,
        action=ConsentAction.subscribed,
        context=context,
        now=now,
        detail=detail,
    )
    return SignupResult(subscriber, True, detail)


def confirm(
    session: Session, *, subscriber_id: int, context: Context, now: datetime
) -> Subscriber | None:
    """Activate after the double opt-in link; lifts a suppression, and says so in the log.

    Returns None when the reader does not exist (erased) or no confirmation is
    outstanding (they unsubscribed after the link was sent: an old link must not
    undo that). Confirming twice is harmless.
    """
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or is_erased(subscriber):
        return None
    if subscriber.status == SubscriberStatus.active:
        return subscriber
    if subscriber.confirmation_sent_at is None:
        return None
    suppressed = consent.suppression_of(session, email=subscriber.email)
    detail = "double opt-in confirmed"
    if suppressed is not None:
        consent.lift(session, email=subscriber.email)
        detail += f"; fresh opt-in lifts the suppression ({suppressed.reason})"
    subscriber.status = SubscriberStatus.active
    subscriber.confirmed_at = now
    subscriber.updated_at = now
    session.add(subscriber)
    consent.record(
        session,
        subscriber_id=subscriber.id,
        email=subscriber.email,
        action=ConsentAction.confirmed,
        context=context,
        now=now,
        detail=detail,
    )
    return subscriber


def unsubscribe(
    session: Session, *, subscriber_id: int, context: Context, now: datetime
) -> Subscriber | None:
    """Unsubscribe and suppress. Repeating it changes nothing. None for an unknown id."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or is_erased(subscriber):
        return None
    mark_unsubscribed(session, subscriber=subscriber, context=context, now=now)
    return subscriber


def update_preferences(
    session: Session,
    *,
    subscriber_id: int,
    categories: Sequence[str],
    pause_weeks: int,
    context: Context,
    now: datetime,
) -> Subscriber | None:
    """Set the categories (none = all) and a pause of ``pause_weeks`` weeks (0 = none).

    Raises ValueError for a pause outside 0..52 weeks. None for an unknown id.
    """
    if not 0 <= pause_weeks <= MAX_PAUSE_WEEKS:
        raise ValueError(f"a pause is 0 to {MAX_PAUSE_WEEKS} weeks, not {pause_weeks}")
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or is_erased(subscriber):
        return None
    subscriber.categories = clean_categories(categories)
    subscriber.paused_until = now + timedelta(weeks=pause_weeks) if pause_weeks else None
    subscriber.updated_at = now
    session.add(subscriber)
    detail = json.dumps({"categories": subscriber.categories, "pause_weeks": pause_weeks})
    consent.record(
        session,
        subscriber_id=subscriber.id,
        email=subscriber.email,
        action=ConsentAction.preferences_changed,
        context=context,
        now=now,
        detail=detail,
    )
    return subscriber


def forget(session: Session, *, email: str, context: Context, now: datetime) -> bool:
    """Erase a reader's personal data, keeping only the address hash for suppression.

    The consent log keeps its events (what happened, when) but loses IP and user
    agent. Returns False when the address is unknown.
    """
    address = normalize_email(email)
    subscriber = get_by_email(session, email=address)
    if subscriber is None:
        return False
    for event in consent.history(session, email=address):
        event.ip, event.user_agent = "", ""
        session.add(event)
    consent.suppress(
        session,
        email=address,
        reason=SuppressionReason.erased,
        source=context.source.value,
        now=now,
    )
    consent.record(
        session,
        subscriber_id=subscriber.id,
        email=address,
        action=ConsentAction.erased,
        context=Context(context.source),
        now=now,
    )
    subscriber.email = f"erased-{subscriber.id}@erased.invalid"
    subscriber.name = ""
    subscriber.categories = []
    subscriber.time_zone = ""
    subscriber.status = SubscriberStatus.unsubscribed
    subscriber.paused_until = None
    subscriber.updated_at = now
    session.add(subscriber)
    return True


def export_data(session: Session, *, email: str) -> dict[str, Any] | None:
    """Everything this package holds about one reader, as JSON-ready data."""
    address = normalize_email(email)
    subscriber = get_by_email(session, email=address)
    events = consent.history(session, email=address)
    suppression = consent.suppression_of(session, email=address)
    if subscriber is None and not events and suppression is None:
        return None
    return {
        "subscriber": _plain(subscriber) if subscriber else None,
        "consent_log": [_plain(e) for e in events],
        "suppression": _plain(suppression) if suppression else None,
    }


def is_paused(subscriber: Subscriber, now: datetime) -> bool:
    return subscriber.paused_until is not None and subscriber.paused_until > now


def _plain(row: SQLModel) -> dict[str, Any]:
    """A row's columns in table order, times as ISO 8601 (not ``model_dump``: the enum
    fields hold plain strings read from the database, which pydantic warns about)."""
    values = {c.name: getattr(row, c.name) for c in row.__table__.columns}  # type: ignore[attr-defined]
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
