"""One message from the bounce mailbox, applied: ``digest bounces ingest`` (a Postfix
pipe) and the mailbox poll call :func:`ingest`.

The message is classified (:func:`digest.bounces.parse.classify`), then matched:

1. a VERP address (``bounces+<token>@…``, :mod:`digest.delivery.verp`) that
   verifies names the delivery row exactly: each event gets that delivery's
   Message-ID, so :func:`digest.delivery.matching.match_event` finds it;
2. a VERP address that does not verify is forged or garbled: the events are kept
   but name nobody (their address and Message-ID go to ``raw``), so a stranger
   cannot suppress a reader by mailing the bounce address;
3. else our Message-ID in the returned headers, else the address, as for webhooks.

Then :func:`digest.delivery.events.apply` stores and applies them in one
transaction with the ``[webhooks]`` soft-bounce rule: hard, soft (counted), a
complaint, a policy block (the reader is left alone) act exactly as a provider's
event would. A message nobody can classify is stored as one ``unknown`` event, so
it is counted. The database unreachable raises ``OperationalError`` (the caller
retries later); nothing is half-applied.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlmodel import Session

from digest.bounces.parse import PROVIDER, Report, classify, event_id
from digest.config.runtime import Runtime, sender_address
from digest.delivery.events import ApplySummary, BouncePolicy, apply
from digest.delivery.verp import SEPARATOR, delivery_of_any, verp_keys
from digest.errors import DigestError
from digest.store.db import session_scope
from digest.store.models import Delivery, Edition
from digest.webhooks.base import DeliveryEvent, EventType

Outcome = Literal["applied", "duplicate", "unknown", "unmatched"]


class BounceTooLarge(DigestError):
    """A message over ``[bounces] max_message_bytes``: not read, not applied."""


@dataclass(frozen=True)
class Ingested:
    """What :func:`ingest` did with one message."""

    kind: Outcome
    report: Report
    outcomes: list[str]  # what applying each new event did
    line: str  # one line for the operator


def ingest(rt: Runtime, raw: bytes, *, envelope_recipient: str = "") -> Ingested:
    """Classify, match and apply one message; see the module docstring. Raises
    :class:`BounceTooLarge` over ``[bounces] max_message_bytes``."""
    limit = rt.config.bounces.max_message_bytes
    if len(raw) > limit:
        raise BounceTooLarge(
            f"bounce message of {len(raw)} bytes is over [bounces] max_message_bytes "
            f"({limit}); not read"
        )
    report = classify(raw, envelope_recipient=envelope_recipient)
    events = list(report.events) or [_unknown_event(report)]
    with session_scope(rt.engine) as session:
        events = _matched(rt, session, report, events)
        summary = apply(session, events, now=rt.now(), policy=BouncePolicy.of(rt.config.webhooks))
    kind = _kind(report, summary)
    return Ingested(kind, report, list(summary.outcomes), _line(kind, report, summary))


def _unknown_event(report: Report) -> DeliveryEvent:
    return DeliveryEvent(
        provider=PROVIDER,
        event_id=event_id(report.identity, ""),
        type=EventType.unknown,
        message_id=report.message_ids[0] if report.message_ids else "",
        description=f"unclassifiable bounce-mailbox message: {report.subject[:200]}",
        raw={"kind": report.kind, "subject": report.subject[:200]},
    )


def _matched(
    rt: Runtime, session: Session, report: Report, events: list[DeliveryEvent]
) -> list[DeliveryEvent]:
    """``events`` with the VERP delivery's Message-ID, or naming nobody when the
    VERP token is forged; unchanged without VERP."""
    bounce_address = rt.config.email.bounce_address
    if not bounce_address:
        return events
    keys = verp_keys(rt)
    local, _, domain = bounce_address.lower().rpartition("@")
    claimed = [a for a in report.verp_addresses if a.startswith(local + SEPARATOR)]
    claimed = [a for a in claimed if a.endswith("@" + domain)]
    for address in claimed:
        delivery_id = delivery_of_any(address, bounce_address, keys)
        message_id = _message_id(rt, session, delivery_id) if delivery_id else None
        if message_id is not None:
            return [dataclasses.replace(e, message_id=message_id) for e in events]
    if claimed:  # a token that does not verify (forged, or of a deleted delivery)
        return [_anonymous(e, claimed[0]) for e in events]
    return events


def _anonymous(event: DeliveryEvent, address: str) -> DeliveryEvent:
    raw = {
        **event.raw,
        "unverified_verp": address,
        "claimed_recipient": event.recipient,
        "claimed_message_id": event.message_id,
    }
    return dataclasses.replace(event, recipient="", message_id="", raw=raw)


def _message_id(rt: Runtime, session: Session, delivery_id: int) -> str | None:
    """The Message-ID delivery ``delivery_id`` was sent with (``MessageTemplate.message_id``:
    ``<{edition key}.s{subscriber id}.digest@{the From address's domain}>``)."""
    stmt = (
        select(Edition.key, Delivery.subscriber_id)  # type: ignore[call-overload]
        .join(Delivery, Delivery.edition_id == Edition.id)
        .where(Delivery.id == delivery_id)
    )
    row = session.execute(stmt).first()
    if row is None:
        return None
    domain = sender_address(rt.config).rpartition("@")[2]
    return f"<{row[0]}.s{int(row[1])}.digest@{domain}>"


def _kind(report: Report, summary: ApplySummary) -> Outcome:
    if not report.events:
        return "unknown"
    if summary.received and summary.duplicates == summary.received:
        return "duplicate"
    return "applied" if summary.matched else "unmatched"


def _line(kind: Outcome, report: Report, summary: ApplySummary) -> str:
    if kind == "duplicate":
        return f"duplicate: already ingested ({report.summary})"
    if kind == "unknown":
        counted = "counted" if summary.duplicates == 0 else "already counted"
        return f"unknown: not a bounce or complaint this can read ({counted}): {report.summary}"
    outcomes = "; ".join(summary.outcomes) or "nothing new"
    return f"{kind}: {report.summary} → {outcomes}"
