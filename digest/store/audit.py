"""The audit log: who did what, when, through what, on which edition or reader.

Every state change made by a person or an API key (desk, CLI, API) calls
:func:`record` in the same transaction as the change, so the log holds exactly
what happened. Targets are named by kind and key: ``edition:2026-W48``,
``reader:12`` (by id, never by address, so forgetting a reader leaves no address
here), ``operator:3``, ``api-key:2``, ``import:<file>``.
"""

from __future__ import annotations

import csv
import getpass
import io
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from digest.store.desk_models import AuditEvent
from subscribers.sqltypes import utcnow

VIA = ("desk", "cli", "api")
DETAIL_LIMIT = 2000
CSV_FIELDS = ("at", "actor", "via", "action", "target", "detail")


def cli_actor() -> str:
    """The person behind a command: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def record(
    session: Session,
    *,
    actor: str,
    via: str,
    action: str,
    target: str = "",
    detail: str = "",
    now: datetime | None = None,
) -> AuditEvent:
    """Add one entry (flushed with the caller's transaction, never on its own)."""
    if via not in VIA:
        raise ValueError(f"audit via must be one of {', '.join(VIA)}, not {via!r}")
    event = AuditEvent(
        at=now or utcnow(),
        actor=actor[:320],
        via=via,
        action=action[:60],
        target=target[:200],
        detail=detail[:DETAIL_LIMIT],
    )
    session.add(event)
    return event


def recent(
    session: Session,
    *,
    limit: int = 200,
    target: str = "",
    action: str = "",
    before_id: int | None = None,
) -> Sequence[AuditEvent]:
    """Newest first; ``target`` / ``action`` narrow it (exact match)."""
    stmt = select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(limit)
    if target:
        stmt = stmt.where(col(AuditEvent.target) == target)
    if action:
        stmt = stmt.where(col(AuditEvent.action) == action)
    if before_id is not None:
        stmt = stmt.where(col(AuditEvent.id) < before_id)
    return session.execute(stmt).scalars().all()


def to_csv(events: Sequence[AuditEvent]) -> str:
    """The entries as CSV (UTC ISO times), formula-safe: a cell that a spreadsheet
    would run (``=``, ``+``, ``-``, ``@``) gets a leading apostrophe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_FIELDS)
    for e in events:
        row = [e.at.isoformat(), e.actor, e.via, e.action, e.target, e.detail]
        writer.writerow([_inert(cell) for cell in row])
    return buffer.getvalue()


def _inert(cell: str) -> str:
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell
