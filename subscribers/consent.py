"""The consent log and the suppression list.

Every change to a reader's consent goes through :func:`record`, so the log is the
proof of consent (GDPR Art. 7) and the history an operator can show. Suppression
is kept apart from the subscriber row and keyed by a hash of the normalized
address: erasing a reader keeps the hash, so an import or a sign-up can never
quietly resurrect an address that unsubscribed, bounced hard or complained.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session

from subscribers.models import (
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    Suppression,
    SuppressionReason,
)

MAX_USER_AGENT = 500


def email_hash(normalized_email: str) -> str:
    """SHA-256 hex of an already normalized address."""
    return hashlib.sha256(normalized_email.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Context:
    """Where a consent decision came from: source, and the request when there is one."""

    source: ConsentSource
    ip: str = ""
    user_agent: str = ""
    consent_version: str = ""


def record(
    session: Session,
    *,
    subscriber_id: int | None,
    email: str,
    action: ConsentAction,
    context: Context,
    now: datetime,
    detail: str = "",
) -> ConsentEvent:
    """Append one event to the consent log."""
    event = ConsentEvent(
        subscriber_id=subscriber_id,
        email_hash=email_hash(email),
        action=action,
        source=context.source,
        ip=context.ip[:64],
        user_agent=context.user_agent[:MAX_USER_AGENT],
        consent_version=context.consent_version[:40],
        detail=detail,
        created_at=now,
    )
    session.add(event)
    return event


def event_row(
    *,
    subscriber_id: int | None,
    email: str,
    action: ConsentAction,
    context: Context,
    now: datetime,
    detail: str = "",
) -> dict[str, Any]:
    """Column values of one consent event, for bulk inserts (imports)."""
    return {
        "subscriber_id": subscriber_id,
        "email_hash": email_hash(email),
        "action": action.value,
        "source": context.source.value,
        "ip": context.ip[:64],
        "user_agent": context.user_agent[:MAX_USER_AGENT],
        "consent_version": context.consent_version[:40],
        "detail": detail,
        "created_at": now,
    }


def suppress(
    session: Session, *, email: str, reason: SuppressionReason, source: str, now: datetime
) -> None:
    """Add the address to the suppression list (a later reason replaces an earlier one)."""
    values = {"reason": reason.value, "source": source[:40], "created_at": now}
    stmt = _insert_suppression(session).values(email_hash=email_hash(email), **values)
    session.execute(stmt.on_conflict_do_update(index_elements=["email_hash"], set_=values))


def suppress_many(
    session: Session,
    *,
    entries: Iterable[tuple[str, SuppressionReason]],
    source: str,
    now: datetime,
) -> None:
    """Suppress many ``(normalized address, reason)`` pairs; existing entries stay as they are."""
    rows = [
        {"email_hash": email_hash(e), "reason": r.value, "source": source[:40], "created_at": now}
        for e, r in entries
    ]
    if rows:
        stmt = _insert_suppression(session).on_conflict_do_nothing(index_elements=["email_hash"])
        session.execute(stmt, rows)


def _insert_suppression(session: Session) -> Any:
    """A dialect ``INSERT`` (with ``on_conflict_*``) into the suppression table."""
    table = Suppression.__table__  # type: ignore[attr-defined]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt: Insert = dialect.insert(table)
    return stmt


def suppression_of(session: Session, *, email: str) -> Suppression | None:
    """The suppression entry for this normalized address, if any."""
    return session.get(Suppression, email_hash(email))


def suppressed_hashes(session: Session, *, hashes: list[str]) -> set[str]:
    """Which of ``hashes`` are suppressed (for bulk imports)."""
    return set(suppression_reasons(session, hashes=hashes))


def suppression_reasons(session: Session, *, hashes: Sequence[str]) -> dict[str, str]:
    """``{hash: reason}`` for those of ``hashes`` that are suppressed (one query)."""
    if not hashes:
        return {}
    table = Suppression.__table__  # type: ignore[attr-defined]
    stmt = select(table.c.email_hash, table.c.reason).where(table.c.email_hash.in_(hashes))
    return {str(h): str(r) for h, r in session.execute(stmt)}


def lift(session: Session, *, email: str) -> None:
    """Remove a suppression: only after a fresh double opt-in confirmation."""
    table = Suppression.__table__  # type: ignore[attr-defined]
    session.execute(delete(table).where(table.c.email_hash == email_hash(email)))


def history(session: Session, *, email: str) -> list[ConsentEvent]:
    """Every consent event for this address, oldest first."""
    stmt = (
        select(ConsentEvent)
        .where(ConsentEvent.email_hash == email_hash(email))  # type: ignore[arg-type]
        .order_by(ConsentEvent.id)  # type: ignore[arg-type]
    )
    return list(session.execute(stmt).scalars())
