"""Which delivery and which reader a provider event is about.

Our Message-ID (``<{edition key}.s{subscriber id}.digest@{domain}>``, see
``MessageTemplate.message_id``) names the delivery; else the provider's message id
equals ``delivery.provider_id`` (with the address, for batch providers); else no
delivery. The reader is the delivery's, else the one with the event's address; an
event nobody matches is stored only (:mod:`digest.delivery.events`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session

from digest.store.models import Delivery, Edition
from digest.webhooks.base import DeliveryEvent
from subscribers.models import Subscriber

# MessageTemplate.message_id: <{edition key}.s{subscriber id}.digest@{domain}>
_OUR_MESSAGE_ID = re.compile(r"<?(?P<key>[^<>@\s]+)\.s(?P<sid>\d{1,18})\.digest@[^<>@\s]+>?")


@dataclass(frozen=True, slots=True)
class Match:
    delivery: Delivery | None
    subscriber: Subscriber | None


NO_MATCH = Match(None, None)


def parse_message_id(message_id: str) -> tuple[str, int] | None:
    """``(edition key, subscriber id)`` from one of our Message-IDs, else None."""
    found = _OUR_MESSAGE_ID.fullmatch(message_id.strip())
    return (found["key"], int(found["sid"])) if found else None


def match_event(session: Session, event: DeliveryEvent) -> Match:
    """The event's delivery and reader. The reader's row is locked (PostgreSQL; SQLite
    transactions are serialized already) so that two workers applying events for
    one reader at once take turns: the soft-bounce count then sees both."""
    delivery: Delivery | None = None
    ours = parse_message_id(event.message_id) if event.message_id else None
    if ours is not None:
        stmt = (
            select(Delivery)
            .join(Edition, Edition.id == Delivery.edition_id)  # type: ignore[arg-type]
            .where(Edition.key == ours[0], Delivery.subscriber_id == ours[1])  # type: ignore[arg-type]
        )
        delivery = session.execute(stmt).scalar_one_or_none()
    if delivery is None and event.provider_message_id:
        delivery = _by_provider_id(session, event)
    if delivery is not None:
        return Match(delivery, _reader(session, delivery.subscriber_id))
    address = event.recipient.strip().lower()
    if ours is not None:  # our message without a ledger row: the welcome email
        subscriber = _reader(session, ours[1])
        if subscriber is not None and address in ("", subscriber.email):
            return Match(None, subscriber)
    if address:
        by_address = select(Subscriber).where(Subscriber.email == address)  # type: ignore[arg-type]
        return Match(None, session.execute(by_address.with_for_update()).scalar_one_or_none())
    return NO_MATCH


def _by_provider_id(session: Session, event: DeliveryEvent) -> Delivery | None:
    """Batch providers (SendGrid, Mailgun) give one id to a whole request of up to
    1,000 readers: the id alone names the request, the address names the reader."""
    by_provider = select(Delivery).where(Delivery.provider_id == event.provider_message_id)  # type: ignore[arg-type]
    address = event.recipient.strip().lower()
    if address:
        by_provider = by_provider.join(
            Subscriber,
            Subscriber.id == Delivery.subscriber_id,  # type: ignore[arg-type]
        ).where(Subscriber.email == address)  # type: ignore[arg-type]
    candidates = session.execute(by_provider.limit(2)).scalars().all()
    return candidates[0] if len(candidates) == 1 else None


def _reader(session: Session, subscriber_id: int) -> Subscriber | None:
    return session.get(Subscriber, subscriber_id, with_for_update=True)
