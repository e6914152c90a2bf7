"""The consent log and the suppression list.

Every change to a reader's consent goes through :func:`record`, so the log is the
proof of consent (GDPR Art. 7) and the history an operator can show. Suppression
is kept apart from the subscriber row and keyed by a hash of the normalized
address: erasing a reader keeps the hash, so an import or a sign-up can never
quietly resurrect an address that unsubscribed, bounced hard or complained.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
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


def suppress(
    session: Session, *, email: str, reason: SuppressionReason, source: str, now: datetime
) -> None:
    """Add the address to the suppression list (a later reason replaces an earlier one)."""
    table = Suppression.__table__  # type: ignore[attr-defined]
    values = {
        "email_hash": email_hash(email),
        "reason": reason.value,
        "source": source,
        "created_at": now,
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(**values)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["email_hash"],
            set_={"reason": reason.value, "source": source, "created_at": now},
        )
    )


def suppression_of(session: Session, *, email: str) -> Suppression | None:
    """The suppression entry for this normalized address, if any."""
    return session.get(Suppression, email_hash(email))


def suppressed_hashes(session: Session, *, hashes: list[str]) -> set[str]:
    """Which of ``hashes`` are suppressed (for bulk imports)."""
    if not hashes:
        return set()
    stmt = select(Suppression.email_hash).where(  # type: ignore[call-overload]
        Suppression.email_hash.in_(hashes)  # type: ignore[attr-defined]
    )
    return {str(h) for h in session.execute(stmt).scalars()}


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
