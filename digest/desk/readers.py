"""Readers on the operator's desk, without HTTP: search, one reader's record, add,
unsubscribe, resend the confirmation, export and forget, on :mod:`subscribers`
(nothing here activates a suppressed address). Every change goes to the audit log
with the target ``reader:<id>``, never the address. No mail is sent here: the
caller sends the confirmation to the address :func:`add` or
:func:`resend_confirmation` returns. Consent events from the desk have the source
``cli`` (the operator's hand); the audit log says who, through the desk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, func, or_, select, update
from sqlmodel import Session, col

from digest.config.runtime import Runtime
from digest.engagement import votes
from digest.errors import DigestError
from digest.store import audit
from digest.store.db import session_scope
from digest.store.models import AuditEvent, Delivery, DeliveryEventRecord, Edition
from subscribers import consent, lifecycle, repository
from subscribers.addresses import normalize_email
from subscribers.bounces import is_erased
from subscribers.consent import Context
from subscribers.errors import SubscriberInputError
from subscribers.models import (
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    Subscriber,
    SubscriberStatus,
    Suppression,
)

PER_PAGE = 50
DESK = Context(ConsentSource.desk)  # an operator on the desk; who: the audit log
STATUSES = tuple(s.value for s in SubscriberStatus)


class ReaderRefused(DigestError):
    """The change cannot be made as asked (bad address, missing source, wrong status)."""


@dataclass(frozen=True, slots=True)
class Found:
    readers: Sequence[Subscriber]
    total: int
    page: int
    pages: int


@dataclass(slots=True)
class Record:
    reader: Subscriber
    paused: bool
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    consent_log: list[ConsentEvent] = field(default_factory=list)
    suppression: Suppression | None = None
    audit: Sequence[AuditEvent] = ()


@dataclass(frozen=True, slots=True)
class Added:
    reader_id: int
    created: bool
    confirm_to: str  # the address to send a confirmation to now; "" for none


def target(reader_id: int) -> str:
    return f"reader:{reader_id}"


def _audit(
    session: Session, actor: str, action: str, reader_id: int, detail: str, now: datetime
) -> None:
    audit.record(session, actor=actor, via="desk", action=f"reader.{action}",
                 target=target(reader_id), detail=detail, now=now)  # fmt: skip


def counts(session: Session) -> dict[str, int]:
    """Readers per status, every status named (0 when none)."""
    found = repository.count_by_status(session)
    return {s: found.get(s, 0) for s in STATUSES}


def search(
    session: Session, *, q: str = "", status: str = "", category: str = "", page: int = 1
) -> Found:
    """Readers whose address or name holds ``q`` (any case), of ``status``, who get
    ``category`` (readers of every category too); :data:`PER_PAGE` a page, by id."""
    stmt = select(Subscriber)
    if q.strip():
        pattern = "%" + _like(q.strip().lower()) + "%"
        stmt = stmt.where(
            or_(
                func.lower(col(Subscriber.email)).like(pattern, escape="\\"),
                func.lower(col(Subscriber.name)).like(pattern, escape="\\"),
            )
        )
    if status in STATUSES:
        stmt = stmt.where(col(Subscriber.status) == status)
    if category.strip():
        text = cast(Subscriber.categories, String)
        wanted = "%" + _like(json.dumps(category.strip())) + "%"
        stmt = stmt.where(or_(text == "[]", text.like(wanted, escape="\\")))
    total = int(session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one())
    pages = max(1, -(-total // PER_PAGE))
    page = min(max(1, page), pages)
    ordered = stmt.order_by(col(Subscriber.id)).offset((page - 1) * PER_PAGE).limit(PER_PAGE)
    return Found(session.execute(ordered).scalars().all(), total, page, pages)


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def record(session: Session, reader_id: int, *, now: datetime) -> Record | None:
    """The reader, their deliveries, consent log, suppression and audit entries."""
    reader = session.get(Subscriber, reader_id)
    if reader is None:
        return None
    events = select(ConsentEvent).where(
        or_(
            col(ConsentEvent.subscriber_id) == reader_id,
            col(ConsentEvent.email_hash) == consent.email_hash(reader.email),
        )
    )
    return Record(
        reader,
        lifecycle.is_paused(reader, now),
        deliveries(session, reader_id),
        list(session.execute(events.order_by(col(ConsentEvent.id))).scalars()),
        consent.suppression_of(session, email=reader.email),
        audit.recent(session, target=target(reader_id), limit=50),
    )


def deliveries(session: Session, reader_id: int) -> list[dict[str, Any]]:
    stmt = (
        select(Edition.key, Delivery.state, Delivery.attempts, Delivery.detail, Delivery.updated_at)  # type: ignore[call-overload]
        .join(Edition, col(Edition.id) == col(Delivery.edition_id))
        .where(col(Delivery.subscriber_id) == reader_id)
        .order_by(col(Delivery.id))
    )
    return [
        {"edition": k, "state": str(s), "attempts": a, "detail": d, "updated_at": u.isoformat()}
        for k, s, a, d, u in session.execute(stmt)
    ]


def add(
    rt: Runtime,
    *,
    email: str,
    name: str,
    categories: Sequence[str],
    consented: bool,
    stated_source: str,
    actor: str,
) -> Added:
    """Add a reader: pending (a confirmation to send), or active when the operator
    states where the consent came from. An existing address changes nothing.
    Raises :class:`ReaderRefused` (a bad or suppressed address, no source)."""
    stated = " ".join(stated_source.split())[:150]
    if consented and not stated:
        raise ReaderRefused("say where this reader's consent came from, or add them as pending")
    now = rt.now()
    try:
        with session_scope(rt.engine) as session:
            known = repository.get_by_email(session, email=email)
            if known is not None and known.id is not None:
                return Added(known.id, False, "")
            if consented:
                added = repository.add(
                    session, email=email, name=name, categories=categories,
                    source=f"desk: {stated}", now=now,
                )  # fmt: skip
                reader, confirm_to = added.subscriber, ""
                detail = f"added as active on the operator desk; consent stated: {stated}"
                consent.record(
                    session, subscriber_id=reader.id, email=reader.email,
                    action=ConsentAction.subscribed, context=DESK, now=now, detail=detail,
                )  # fmt: skip
            else:
                signup = lifecycle.request_subscription(
                    session, email=email, name=name, categories=categories, context=DESK,
                    now=now, resend_after=timedelta(0),
                )  # fmt: skip
                reader, confirm_to = signup.subscriber, signup.subscriber.email
                detail = "added as pending on the operator desk; confirmation mail sent"
            session.flush()
            assert reader.id is not None
            _audit(session, actor, "add", reader.id, detail, now)
            return Added(reader.id, True, confirm_to)
    except SubscriberInputError as exc:
        raise ReaderRefused(str(exc)) from None


def _reader(session: Session, reader_id: int) -> Subscriber:
    reader = session.get(Subscriber, reader_id)
    if reader is None or is_erased(reader):
        raise ReaderRefused(f"there is no reader {reader_id} (or they were forgotten)")
    return reader


def unsubscribe(rt: Runtime, reader_id: int, *, actor: str) -> bool:
    """Unsubscribe and suppress; False when they already were."""
    now = rt.now()
    with session_scope(rt.engine) as session:
        reader = _reader(session, reader_id)
        if reader.status == SubscriberStatus.unsubscribed:
            return False
        was = str(reader.status)
        lifecycle.unsubscribe(session, subscriber_id=reader_id, context=DESK, now=now)
        _audit(session, actor, "unsubscribe", reader_id, f"unsubscribed (was {was})", now)
        return True


def resend_confirmation(rt: Runtime, reader_id: int, *, actor: str) -> str:
    """The address to send a fresh confirmation to (pending readers only, at most one
    per ``[web] confirm_resend_minutes``). Raises :class:`ReaderRefused`."""
    now = rt.now()
    wait = rt.config.web.confirm_resend_minutes
    with session_scope(rt.engine) as session:
        reader = _reader(session, reader_id)
        if reader.status != SubscriberStatus.pending:
            raise ReaderRefused(
                f"reader {reader_id} is {reader.status}: only a pending one confirms"
            )
        signup = lifecycle.request_subscription(
            session, email=reader.email, name=reader.name, categories=reader.categories,
            context=DESK, now=now, resend_after=timedelta(minutes=wait),
        )  # fmt: skip
        if not signup.send_confirmation:
            raise ReaderRefused(f"a confirmation went out less than {wait} minutes ago")
        _audit(session, actor, "resend-confirmation", reader_id, "confirmation mail sent", now)
        return reader.email


def export(rt: Runtime, reader_id: int, *, actor: str) -> dict[str, Any] | None:
    """Everything held about the reader (as ``digest subscribers export-data``)."""
    now = rt.now()
    with session_scope(rt.engine) as session:
        reader = session.get(Subscriber, reader_id)
        if reader is None:
            return None
        held = lifecycle.export_data(session, email=reader.email) or {}
        data: dict[str, Any] = {"email": reader.email, "subscriber": None, "consent_log": []}
        data |= {"suppression": None, **held, "deliveries": deliveries(session, reader_id)}
        _audit(session, actor, "export", reader_id, "exported everything held (JSON)", now)
        return data


def forget(rt: Runtime, reader_id: int, *, typed: str, actor: str) -> None:
    """Erase the reader once ``typed`` is their address. Raises :class:`ReaderRefused`
    (no such reader, a mismatch: then nothing changes)."""
    now = rt.now()
    with session_scope(rt.engine) as session:
        reader = _reader(session, reader_id)
        address = reader.email
        try:
            same = normalize_email(typed) == address
        except SubscriberInputError:
            same = False
        if not same:
            raise ReaderRefused("the address typed is not this reader's: nothing was erased")
        notes = scrub_deliveries(session, reader_id, address)
        events = scrub_provider_events(session, address)
        lifecycle.forget(session, email=address, context=DESK, now=now)
        detail = f"erased; {notes} delivery notes and {events} provider events scrubbed"
        _audit(session, actor, "forget", reader_id, detail, now)


def scrub_deliveries(session: Session, reader_id: int, address: str) -> int:
    """The address out of delivery notes; clicks deleted, votes anonymised (every forget)."""
    votes.forget_reader(session, reader_id)
    count, quoted = 0, re.compile(re.escape(address), re.IGNORECASE)
    stmt = select(Delivery).where(col(Delivery.subscriber_id) == reader_id)
    for delivery in session.execute(stmt).scalars():
        delivery.detail, found = quoted.subn("[erased]", delivery.detail)
        if found:
            session.add(delivery)
            count += 1
    return count


def scrub_provider_events(session: Session, address: str) -> int:
    """Provider events quote the address: keep the event, drop the address and payload."""
    table = DeliveryEventRecord.__table__  # type: ignore[attr-defined]
    scrubbed = {"recipient": "", "raw": {"erased": True}, "description": "[erased]"}
    result = session.execute(update(table).where(table.c.recipient == address).values(scrubbed))
    return int(result.rowcount)  # type: ignore[attr-defined]
