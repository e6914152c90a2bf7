"""Subscriber storage: add, look up, list, unsubscribe, count. All functions take keywords.

The one rule every write here keeps: nothing *activates* an address that is
suppressed (it unsubscribed, bounced hard, complained or was erased). Only a
fresh double opt-in confirmation may lift a suppression
(:func:`subscribers.lifecycle.confirm`), and it says so in the consent log.

CSV import and export live in :mod:`subscribers.csvio`; the reader's own steps
(sign-up, confirm, preferences, erasure) in :mod:`subscribers.lifecycle`; the bulk SQL
the import uses in :mod:`subscribers.bulk` (:func:`bulk_insert` and
:func:`select_where_in` are importable from here too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session

from subscribers import consent
from subscribers.addresses import clean_name, normalize_email
from subscribers.bulk import SQLITE_ROWS_PER_STATEMENT as SQLITE_ROWS_PER_STATEMENT
from subscribers.bulk import bulk_insert as bulk_insert
from subscribers.bulk import select_where_in as select_where_in
from subscribers.consent import Context
from subscribers.errors import SubscriberInputError
from subscribers.models import (
    ConsentAction,
    ConsentSource,
    Subscriber,
    SubscriberStatus,
    SuppressionReason,
)

MAX_CATEGORIES = 50
# Statuses that mean "do not mail": an import or an add never turns them back into active.
BLOCKED_STATUSES = frozenset(
    {SubscriberStatus.unsubscribed, SubscriberStatus.bounced, SubscriberStatus.complained}
)


class AddressSuppressed(SubscriberInputError):
    """Refused: the address is suppressed, and only the reader's own confirmation lifts that."""

    def __init__(self, email: str, reason: str) -> None:
        super().__init__(
            f"{email} is suppressed ({reason}) and stays so: not added. Only the reader's own "
            "sign-up, confirmed by the double opt-in link, can lift that."
        )
        self.email = email
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AddResult:
    subscriber: Subscriber
    created: bool


def insert_ignoring_duplicates(session: Session) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING`` for subscribers, on SQLite or PostgreSQL."""
    dialect = session.get_bind().dialect.name
    table = Subscriber.__table__  # type: ignore[attr-defined]
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=["email"])
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["email"])
    raise NotImplementedError(f"unsupported database dialect {dialect!r}")


def add(
    session: Session,
    *,
    email: str,
    name: str = "",
    status: SubscriberStatus = SubscriberStatus.active,
    source: str = "cli",
    categories: Sequence[str] = (),
    time_zone: str = "",
    now: datetime,
) -> AddResult:
    """Add a reader, or return the existing one unchanged (``created=False``).

    Raises :class:`~subscribers.errors.SubscriberInputError` for a bad address or
    ``time_zone`` (see :func:`clean_time_zone`), and :class:`AddressSuppressed` (a
    subclass) when ``status`` is active and the address is suppressed or belongs to
    an unsubscribed, bounced or complained reader. A ``pending`` row may be created
    for a suppressed address: it is not mailed until the reader confirms.
    """
    address = normalize_email(email)
    if status == SubscriberStatus.active:
        refuse_if_suppressed(session, email=address)
    row = new_row(
        email=address,
        name=name,
        status=status,
        source=source,
        now=now,
        categories=categories,
        time_zone=clean_time_zone(time_zone),
    )
    table = Subscriber.__table__  # type: ignore[attr-defined]
    stmt = insert_ignoring_duplicates(session).values(**row).returning(table.c.id)
    created = session.execute(stmt).first() is not None
    subscriber = get_by_email(session, email=address)
    assert subscriber is not None  # just inserted or already there
    return AddResult(subscriber=subscriber, created=created)


def refuse_if_suppressed(session: Session, *, email: str) -> None:
    """Raise :class:`AddressSuppressed` unless the normalized ``email`` may be activated."""
    entry = consent.suppression_of(session, email=email)
    if entry is not None:
        raise AddressSuppressed(email, str(entry.reason))
    existing = get_by_email(session, email=email)
    if existing is not None and existing.status in BLOCKED_STATUSES:
        raise AddressSuppressed(email, str(existing.status))


def new_row(
    *,
    email: str,
    name: str | None,
    status: SubscriberStatus,
    source: str,
    now: datetime,
    categories: Sequence[str] = (),
    created_at: datetime | None = None,
    time_zone: str = "",
) -> dict[str, Any]:
    """Column values for a new subscriber (``email`` already normalized, ``time_zone``
    already checked by :func:`clean_time_zone`)."""
    return {
        "email": email,
        "name": clean_name(name),
        "status": status.value,
        "source": source[:200],
        "categories": clean_categories(categories),
        "time_zone": time_zone,
        "created_at": created_at or now,
        "updated_at": now,
    }


def clean_categories(categories: Sequence[str]) -> list[str]:
    """Trimmed, de-duplicated, bounded category names, in the order given."""
    seen: dict[str, None] = {}
    for raw in categories:
        name = clean_name(raw)
        if name:
            seen.setdefault(name, None)
    return list(seen)[:MAX_CATEGORIES]


@lru_cache(maxsize=1024)
def clean_time_zone(value: str) -> str:
    """``value`` trimmed, when it is an IANA time zone name (``America/New_York``)
    that :mod:`zoneinfo` can load; ``""`` (the site's zone) stays ``""``.

    Raises :class:`~subscribers.errors.SubscriberInputError` naming the value (and a
    name differing only in case, if there is one). Cached: an import of a million
    rows checks each distinct zone once.
    """
    name = value.strip()
    if not name:
        return ""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        close = [z for z in available_timezones() if z.lower() == name.lower()]
        hint = f"did you mean {close[0]!r}?" if close else "an IANA name: 'America/New_York'"
        raise SubscriberInputError(f"unknown time zone {name!r} ({hint})") from None
    return name


def get_by_email(session: Session, *, email: str, for_update: bool = False) -> Subscriber | None:
    """The reader with this address; ``for_update`` locks the row (PostgreSQL)."""
    stmt = select(Subscriber).where(Subscriber.email == normalize_email(email))  # type: ignore[arg-type]
    if for_update:
        stmt = stmt.with_for_update()
    return session.execute(stmt).scalar_one_or_none()


def list_subscribers(
    session: Session,
    *,
    status: SubscriberStatus | None = None,
    limit: int | None = None,
    offset: int = 0,
    after_id: int | None = None,
) -> Sequence[Subscriber]:
    """Subscribers by id; ``after_id`` pages by key (stable while rows are added)."""
    stmt = select(Subscriber).order_by(Subscriber.id).offset(offset)  # type: ignore[arg-type]
    if status is not None:
        stmt = stmt.where(Subscriber.status == status.value)  # type: ignore[arg-type]
    if after_id is not None:
        stmt = stmt.where(Subscriber.id > after_id)  # type: ignore[arg-type,operator]
    if limit is not None:
        stmt = stmt.limit(limit)
    return session.execute(stmt).scalars().all()


def count_by_status(session: Session) -> dict[str, int]:
    stmt = select(Subscriber.status, func.count()).group_by(Subscriber.status)  # type: ignore[call-overload]
    return {str(status): int(n) for status, n in session.execute(stmt)}


def mark_unsubscribed(
    session: Session, *, subscriber: Subscriber, context: Context, now: datetime
) -> bool:
    """Unsubscribe ``subscriber``, suppress the address and log it.

    Returns False when the reader was already unsubscribed (then only a missing
    suppression entry is added, e.g. for rows older than the suppression list).
    """
    if subscriber.status == SubscriberStatus.unsubscribed:
        if consent.suppression_of(session, email=subscriber.email) is None:
            consent.suppress(
                session,
                email=subscriber.email,
                reason=SuppressionReason.unsubscribed,
                source=context.source.value,
                now=now,
            )
        return False
    block(
        session,
        subscriber,
        status=SubscriberStatus.unsubscribed,
        reason=SuppressionReason.unsubscribed,
        action=ConsentAction.unsubscribed,
        context=context,
        now=now,
    )
    return True


def block(
    session: Session,
    subscriber: Subscriber,
    *,
    status: SubscriberStatus,
    reason: SuppressionReason,
    action: ConsentAction,
    context: Context,
    now: datetime,
    detail: str = "",
) -> None:
    """Stop mailing a reader: set ``status``, suppress the address for ``reason`` and
    log ``action``. Any confirmation link still in flight no longer applies, so an
    old link cannot undo this; only a fresh sign-up issues a new one."""
    subscriber.status = status
    subscriber.confirmation_sent_at = None
    subscriber.updated_at = now
    session.add(subscriber)
    consent.suppress(
        session, email=subscriber.email, reason=reason, source=context.source.value, now=now
    )
    consent.record(
        session,
        subscriber_id=subscriber.id,
        email=subscriber.email,
        action=action,
        context=context,
        now=now,
        detail=detail,
    )


def remove(session: Session, *, email: str, now: datetime, source: str = "cli") -> bool:
    """Unsubscribe a reader by address; the row stays and the address is suppressed.

    ``source`` is a :class:`ConsentSource` value. Returns False when the address is
    unknown or already unsubscribed.
    """
    subscriber = get_by_email(session, email=email)
    if subscriber is None:
        return False
    return mark_unsubscribed(
        session, subscriber=subscriber, context=Context(ConsentSource(source)), now=now
    )
