"""Telling the operators (``[operators] emails``): drafts to approve and incidents.

An incident (:class:`~digest.ops.health.Incident`) is stored as an :class:`Alert` row
named after it. Its name and summary never hold a URL's credential: every URL in
them is redacted when the incident is made (:func:`digest.common.redaction.redact_text`),
and again when a stored row is read for an email or a listing (rows written by an
older version). :func:`sync` opens rows for new incidents, resolves the ones that
went away, and emails each opening and each resolution once: the right to send a
notice is taken with a conditional ``UPDATE`` (``notified_at IS NULL``), so the
scheduler and a cron ``digest check`` racing on the same incident send one email.
A notice that cannot be sent is given back and tried at the next check.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from digest.common.redaction import redact_text
from digest.config.runtime import Runtime
from digest.errors import DigestError
from digest.render.transactional import EmailTemplates, build_transactional
from digest.render.view import site_view
from digest.store.models import Alert
from digest.transports.base import Outcome, OutgoingMessage

log = logging.getLogger(__name__)

A = Alert.__table__  # type: ignore[attr-defined]
OPERATOR = EmailTemplates(
    html="emails/operator.mjml.j2",
    text="emails/operator.txt.j2",
    subject="emails/operator_subject.txt.j2",
)
TAG = "operators"  # outbox folder


@dataclass(frozen=True, slots=True)
class Incident:
    """Something that needs a human. ``name`` is stable while it lasts."""

    name: str  # e.g. "feed:examples/feed.json", "missed:2026-W48", "paused:2026-W48"
    summary: str  # one sentence

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", redact_text(self.name))
        object.__setattr__(self, "summary", redact_text(self.summary))


async def notify(rt: Runtime, subject: str, lines: Sequence[str], link: str = "") -> bool:
    """Email ``subject`` and ``lines`` to every operator. True when all were accepted
    (or there is nobody to tell: that is logged); False when a send failed."""
    recipients = rt.config.operators.emails
    if not recipients:
        log.warning("no [operators] emails configured; not emailed: %s", subject)
        return True
    messages = [_message(rt, to, subject, lines, link) for to in recipients]
    try:
        return await _send(rt, messages)
    except DigestError as exc:
        log.error("operator notice not sent (%s): %s", type(exc).__name__, subject)
        return False


async def _send(rt: Runtime, messages: list[OutgoingMessage]) -> bool:
    transport = rt.transport()
    await transport.open()
    try:
        results = await transport.send_batch(messages)
    finally:
        await transport.close()
    return all(r.outcome in (Outcome.sent, Outcome.queued) for r in results)


def _message(
    rt: Runtime, to: str, subject: str, lines: Sequence[str], link: str
) -> OutgoingMessage:
    cfg = rt.config
    site = site_view(
        name=cfg.site.name, base_url=cfg.site.base_url, postal_address=cfg.site.postal_address
    )
    sender = cfg.email.transactional_address  # not list mail: [email] transactional_from
    message_id = f"<{secrets.token_hex(16)}.operators@{sender.rpartition('@')[2]}>"
    data = build_transactional(
        rt.templates,
        OPERATOR,
        {"site": site, "subject": subject, "lines": list(lines), "link": link},
        from_header=cfg.email.transactional_header,
        reply_to=cfg.email.reply_to,
        to_address=to,
        message_id=message_id,
        date=rt.now(),
    )
    return OutgoingMessage(0, sender, to, message_id, data, TAG)


async def sync(rt: Runtime, incidents: Sequence[Incident], *, now: datetime) -> list[str]:
    """Record ``incidents`` as open alerts, resolve the rest, email each change once.
    Returns the subjects emailed (for the log and the caller's report)."""
    with rt.engine.begin() as conn:
        _open(conn, incidents, now)
        _resolve(conn, {i.name for i in incidents}, now)
    sent: list[str] = []
    for name, summary, resolved in _unnotified(rt):
        if not _take(rt, name, now):
            continue  # another process is sending this one
        subject = f"resolved: {summary}" if resolved else f"needs attention: {summary}"
        lines = [
            summary,
            "Run 'digest status' for details; 'digest check' exits 0 once it is fixed.",
        ]
        if await notify(rt, subject, lines):
            sent.append(subject)
        else:
            _give_back(rt, name)
    return sent


def _open(conn: Connection, incidents: Sequence[Incident], now: datetime) -> None:
    for incident in incidents:
        row = conn.execute(select(A.c.resolved_at).where(A.c.name == incident.name)).first()
        if row is None:
            conn.execute(
                insert(A).values(
                    name=incident.name, detail=incident.summary, opened_at=now, last_seen_at=now
                )
            )
        elif row.resolved_at is not None:  # it came back: a new incident, a new notice
            conn.execute(
                update(A)
                .where(A.c.name == incident.name)
                .values(
                    detail=incident.summary,
                    opened_at=now,
                    last_seen_at=now,
                    resolved_at=None,
                    notified_at=None,
                )
            )
        else:
            conn.execute(
                update(A)
                .where(A.c.name == incident.name)
                .values(detail=incident.summary, last_seen_at=now)
            )


def _resolve(conn: Connection, current: set[str], now: datetime) -> None:
    gone = select(A.c.name, A.c.notified_at).where(A.c.resolved_at.is_(None))
    for name, notified_at in conn.execute(gone).all():
        if name in current:
            continue
        if notified_at is None:  # over before anyone was told: nothing to say
            conn.execute(update(A).where(A.c.name == name).values(resolved_at=now, notified_at=now))
        else:
            conn.execute(
                update(A).where(A.c.name == name).values(resolved_at=now, notified_at=None)
            )


def _unnotified(rt: Runtime) -> list[tuple[str, str, bool]]:
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(A.c.name, A.c.detail, A.c.resolved_at).where(A.c.notified_at.is_(None))
        ).all()
    return [(r.name, redact_text(r.detail), r.resolved_at is not None) for r in rows]


def _take(rt: Runtime, name: str, now: datetime) -> bool:
    with rt.engine.begin() as conn:
        result = conn.execute(
            update(A).where(A.c.name == name, A.c.notified_at.is_(None)).values(notified_at=now)
        )
    return bool(result.rowcount)


def _give_back(rt: Runtime, name: str) -> None:
    with rt.engine.begin() as conn:
        conn.execute(update(A).where(A.c.name == name).values(notified_at=None))


def open_alerts(conn: Connection) -> list[tuple[str, str, datetime]]:
    """Open alerts: (name, summary, opened_at), oldest first."""
    stmt = (
        select(A.c.name, A.c.detail, A.c.opened_at)
        .where(A.c.resolved_at.is_(None))
        .order_by(A.c.opened_at)
    )
    return [(redact_text(r.name), redact_text(r.detail), r.opened_at) for r in conn.execute(stmt)]
