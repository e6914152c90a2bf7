"""One message from the bounce mailbox → a :class:`Report`: what kind it is, the
delivery events it carries (the webhook vocabulary, provider ``mailbox``), and
what may name our delivery (the addresses it was sent to, our Message-IDs).

========================================  =========================================
RFC 3464 ``multipart/report;              one event per recipient block: ``failed``
report-type=delivery-status``             5.x.x → bounced-hard, 4.x.x → bounced-soft;
                                          ``delayed`` → unknown ("delayed, not
                                          counted"); ``delivered``, ``relayed``,
                                          ``expanded`` → delivered
RFC 5965 ``report-type=feedback-report``  complained (``not-spam`` and
                                          ``auth-failure``: unknown)
a bounce-like subject or sender with an   bounced-hard (5xx) / bounced-soft (4xx)
SMTP status in its text
anything else                             kind ``unknown``, no events
========================================  =========================================

X.7.x statuses and block/policy/spam/reputation words mark a bounce ``policy``
(our reputation, not the reader's address). Event ids are ``mailbox:`` and a
SHA-256 of the bounce's own Message-ID (else its bytes) and the recipient, so the
same report read twice is stored, and applied, once. The size bound is the
caller's: read no more than ``[bounces] max_message_bytes``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from typing import Any, Literal

from digest.bounces import parse_text as t
from digest.webhooks.base import DeliveryEvent, EventType

PROVIDER = "mailbox"
Kind = Literal["dsn", "arf", "text", "unknown"]
_DELIVERED = {"delivered", "relayed", "expanded"}
_NOT_COMPLAINTS = {"not-spam", "auth-failure"}
MAX_DESCRIPTION = 500


@dataclass(frozen=True)
class Report:
    """What one message says (see the module docstring)."""

    kind: Kind
    events: tuple[DeliveryEvent, ...]
    verp_addresses: tuple[str, ...]  # the envelope recipient, then Delivered-To … To
    message_ids: tuple[str, ...]  # our Message-IDs in the returned headers or text
    summary: str  # one line for the operator
    subject: str = ""
    identity: str = ""  # SHA-256 of the bounce's own Message-ID, else of its bytes


@dataclass(frozen=True)
class _Context:
    identity: str  # what event ids hash: see Report.identity
    message_id: str  # our Message-ID, when the report returned one
    returned_to: str  # the returned message's To (the reader), when present
    subject: str


def classify(raw: bytes, *, envelope_recipient: str = "") -> Report:
    """Parse ``raw`` (one RFC 5322 message) into a :class:`Report`. Never raises for
    a malformed message: what cannot be read is kind ``unknown``."""
    message = message_from_bytes(raw, policy=compat32)  # headers read lazily: t.header
    subject = t.header(message, "Subject")
    verp = _verp_addresses(message, envelope_recipient)
    returned = _returned_headers(message)
    ids = t.our_message_ids(*returned, *_texts(message))
    returned_to = next((a for m in returned for a in t.addresses(m, "To")), "")
    own_id = t.header(message, "Message-ID")
    identity = hashlib.sha256(own_id.encode() if own_id else raw).hexdigest()
    context = _Context(identity, ids[0] if ids else "", returned_to, subject)
    kind: Kind = "unknown"
    events: list[DeliveryEvent] = []
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "message/delivery-status":
            kind, events = "dsn", _dsn_events(part, context)
            break
        if content_type == "message/feedback-report":
            kind, events = "arf", _arf_events(part, context)
            break
    if kind == "unknown" and t.looks_like_bounce(message):
        event = _text_event(message, context, set(verp))
        if event is not None:
            kind, events = "text", [event]
    return Report(
        kind=kind,
        events=tuple(events),
        verp_addresses=tuple(verp),
        message_ids=tuple(ids),
        summary=_summary(kind, events, subject),
        subject=subject,
        identity=identity,
    )


def event_id(identity: str, recipient: str) -> str:
    """``mailbox:`` + SHA-256 of the bounce's identity, ``:`` and the recipient."""
    return f"{PROVIDER}:{hashlib.sha256(f'{identity}:{recipient}'.encode()).hexdigest()}"


def _verp_addresses(message: Message, envelope_recipient: str) -> list[str]:
    found: list[str] = []
    candidates = [envelope_recipient.strip().strip("<>").lower()] if envelope_recipient else []
    for name in ("Delivered-To", "X-Original-To", "Envelope-To", "To"):
        candidates += t.addresses(message, name)
    for address in candidates:
        if address and address not in found:
            found.append(address)
    return found


def _returned_headers(message: Message) -> list[Message]:
    """The headers of the message that bounced: ``message/rfc822`` (its headers) or
    ``text/rfc822-headers`` parts."""
    found: list[Message] = []
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                found.append(payload[0])
        elif content_type in ("text/rfc822-headers", "message/rfc822-headers"):
            found.append(t.headers_of(_text_of(part)))
    return found


def _texts(message: Message) -> list[str]:
    """Every text part's words (a copy of the returned message is often inline)."""
    return [
        _text_of(p)
        for p in message.walk()
        if not p.is_multipart() and p.get_content_maintype() == "text"
    ]


def _own_texts(part: Message) -> list[str]:
    """The bounce's own text parts, not those of the message it returns (a digest's
    text may hold numbers that look like reply codes)."""
    if part.get_content_maintype() == "message":
        return []
    if part.is_multipart():
        payload = part.get_payload()
        children = payload if isinstance(payload, list) else []
        return [
            text for child in children if isinstance(child, Message) for text in _own_texts(child)
        ]
    return [_text_of(part)] if part.get_content_maintype() == "text" else []


def _text_of(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError):
        return ""
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except (LookupError, ValueError):  # an unknown or malformed charset name
        return payload.decode("utf-8", errors="replace")


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a ``message/delivery-status`` or ``feedback-report`` part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    if isinstance(payload, str):
        return [t.headers_of(block) for block in payload.replace("\r\n", "\n").split("\n\n")]
    return []


def _address_field(value: str) -> str:
    """``rfc822; ada@example.org`` → ``ada@example.org``."""
    _, _, address = value.rpartition(";")
    return address.strip().strip("<>").lower()


def _dsn_events(part: Message, context: _Context) -> list[DeliveryEvent]:
    blocks = _blocks(part)
    reporting = t.header(blocks[0], "Reporting-MTA") if blocks else ""
    events: list[DeliveryEvent] = []
    for block in blocks[1:]:
        recipient = _address_field(
            t.header(block, "Final-Recipient") or t.header(block, "Original-Recipient")
        )
        action = t.header(block, "Action").lower()
        if not recipient or not action:
            continue
        diagnostic = t.header(block, "Diagnostic-Code").partition(";")[2].strip()
        status = t.status_in(t.header(block, "Status")) or t.status_in(diagnostic)
        raw = {"kind": "dsn", "action": action, "status": status, "reporting_mta": reporting}
        words = diagnostic or f"{action} {status}".strip()
        if action in _DELIVERED:
            events.append(_event(context, EventType.delivered, recipient, status, words, raw))
        elif action == "delayed":
            why = f"delayed, not counted: {words}"
            events.append(_event(context, EventType.unknown, recipient, status, why, raw))
        elif action == "failed":
            soft = status.startswith("4")
            kind = EventType.bounced_soft if soft else EventType.bounced_hard
            policy = t.is_policy(status, diagnostic)
            events.append(_event(context, kind, recipient, status, words, raw, policy=policy))
    return events


def _arf_events(part: Message, context: _Context) -> list[DeliveryEvent]:
    blocks = _blocks(part)
    report = blocks[0] if blocks else Message()
    feedback = t.header(report, "Feedback-Type").lower() or "abuse"
    recipient = _address_field(t.header(report, "Original-Rcpt-To")) or context.returned_to
    kind = EventType.unknown if feedback in _NOT_COMPLAINTS else EventType.complained
    agent = t.header(report, "User-Agent")
    words = f"feedback report ({feedback})" + (f" from {agent}" if agent else "")
    raw = {"kind": "arf", "feedback_type": feedback, "user_agent": agent}
    return [_event(context, kind, recipient, "", words, raw)]


def _text_event(message: Message, context: _Context, exclude: set[str]) -> DeliveryEvent | None:
    for text in _own_texts(message):
        status = t.text_status(text)
        if status is None:
            continue
        recipient = t.recipient_near(text, status.line, exclude) or context.returned_to
        kind = EventType.bounced_hard if status.permanent else EventType.bounced_soft
        code = status.code if "." in status.code else ""
        raw = {"kind": "text", "status": status.code}
        policy = t.is_policy(code, status.line)
        return _event(context, kind, recipient, code, status.line, raw, policy=policy)
    return None


def _event(
    context: _Context,
    kind: EventType,
    recipient: str,
    status: str,
    words: str,
    raw: dict[str, Any],
    *,
    policy: bool = False,
) -> DeliveryEvent:
    return DeliveryEvent(
        provider=PROVIDER,
        event_id=event_id(context.identity, recipient),
        type=kind,
        recipient=recipient,
        message_id=context.message_id,
        smtp_status=status,
        description=" ".join(words.split())[:MAX_DESCRIPTION],
        policy=policy and kind in (EventType.bounced_hard, EventType.bounced_soft),
        raw={**raw, "subject": context.subject[:200]},
    )


def _summary(kind: Kind, events: list[DeliveryEvent], subject: str) -> str:
    if not events:
        return f"{kind}: no delivery events (subject {subject[:80]!r})"
    parts = [
        f"{e.type.value} {e.recipient or '(no address)'}"
        + (f" {e.smtp_status}" if e.smtp_status else "")
        + (" policy" if e.policy else "")
        for e in events
    ]
    return f"{kind}: " + "; ".join(parts)
