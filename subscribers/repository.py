"""Subscriber storage: add, list, remove, count. All functions take keywords.

CSV import and export live in :mod:`subscribers.csvio`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session

from subscribers.addresses import clean_name, normalize_email
from subscribers.models import Subscriber, SubscriberStatus


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
    now: datetime,
) -> AddResult:
    """Add a reader, or return the existing one unchanged (``created=False``).

    Raises :class:`~subscribers.errors.SubscriberInputError` for a bad address.
    """
    address = normalize_email(email)
    row = new_row(email=address, name=name, status=status, source=source, now=now)
    table = Subscriber.__table__  # type: ignore[attr-defined]
    stmt = insert_ignoring_duplicates(session).values(**row).returning(table.c.id)
    created = session.execute(stmt).first() is not None
    subscriber = get_by_email(session, email=address)
    assert subscriber is not None  # just inserted or already there
    return AddResult(subscriber=subscriber, created=created)


def new_row(
    *, email: str, name: str | None, status: SubscriberStatus, source: str, now: datetime
) -> dict[str, Any]:
    """Column values for a new subscriber (``email`` already normalized)."""
    return {
        "email": email,
        "name": clean_name(name),
        "status": status.value,
        "source": source,
        "created_at": now,
        "updated_at": now,
    }


def get_by_email(session: Session, *, email: str) -> Subscriber | None:
    stmt = select(Subscriber).where(Subscriber.email == normalize_email(email))  # type: ignore[arg-type]
    return session.execute(stmt).scalar_one_or_none()


def list_subscribers(
    session: Session,
    *,
    status: SubscriberStatus | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Sequence[Subscriber]:
    stmt = select(Subscriber).order_by(Subscriber.id).offset(offset)  # type: ignore[arg-type]
    if status is not None:
        stmt = stmt.where(Subscriber.status == status.value)  # type: ignore[arg-type]
    if limit is not None:
        stmt = stmt.limit(limit)
    return session.execute(stmt).scalars().all()


def count_by_status(session: Session) -> dict[str, int]:
    stmt = select(Subscriber.status, func.count()).group_by(Subscriber.status)  # type: ignore[call-overload]
    return {str(status): int(n) for status, n in session.execute(stmt)}


def remove(session: Session, *, email: str, now: datetime, source: str = "cli") -> bool:
    """Unsubscribe a reader (the row stays, so the address stays suppressed).

    Returns False when the address is unknown or already unsubscribed.
    """
    subscriber = get_by_email(session, email=email)
    if subscriber is None or subscriber.status == SubscriberStatus.unsubscribed:
        return False
    subscriber.status = SubscriberStatus.unsubscribed
    subscriber.source = subscriber.source or source
    subscriber.updated_at = now
    session.add(subscriber)
    return True
