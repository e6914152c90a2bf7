"""The operator's desk: an edition exactly as one reader gets it, test sends, approval.

Everything here builds messages with :func:`digest.delivery.messages.message_factory`, the
function the sender uses, so a preview is the delivered message but for the two
personal links. Those carry *inert* tokens (``…/u/42.preview-only``): they look
like the reader's links and verify as nothing, so clicking one in a preview or a
test email changes nothing. Nothing here touches the delivery ledger: a preview
never sends, and a test send is never recorded as a delivery or counted in an
edition's figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from functools import partial
from typing import TYPE_CHECKING

from digest import pipeline
from digest.config.runtime import Runtime, sender_address
from digest.delivery import messages
from digest.delivery.ledger import Recipient
from digest.editions import lifecycle as editions
from digest.editions.segments import Skip, distinct_categories, segment_for
from digest.errors import DigestError
from digest.store.db import session_scope
from digest.store.models import Comparison, Edition
from digest.transports.base import OutgoingMessage, SendResult
from subscribers.addresses import normalize_email
from subscribers.errors import SubscriberInputError
from subscribers.models import SubscriberStatus
from subscribers.repository import get_by_email

if TYPE_CHECKING:
    from digest.desk.preflight import PreflightReport

INERT_TOKEN = "preview-only"  # noqa: S105  (never a valid tag: verify() refuses it)
TEST_PREFIX = "[TEST] "
TEST_TAG = "test"  # the outbox folder / provider tag of test sends, never an edition's
MAX_TEST_ADDRESSES = 10
SAMPLE_NAME = "Preview Reader"


@dataclass(frozen=True, slots=True)
class EditionContent:
    """An edition's comparisons; ``edition`` is None for the next one, not composed yet."""

    key: str
    edition: Edition | None
    comparisons: tuple[Comparison, ...]

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(distinct_categories([c.category for c in self.comparisons]))


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose copy to build: a subscriber (their categories, their id in the links) or
    a segment (a set of categories; empty = all) for a sample reader."""

    label: str
    recipient: Recipient
    note: str = ""  # e.g. "unsubscribed: gets nothing"


@dataclass(frozen=True, slots=True)
class Preview:
    content: EditionContent
    viewer: Viewer
    message: OutgoingMessage | None  # None when the reader gets nothing (``skipped``)
    skipped: str = ""

    @property
    def parsed(self) -> EmailMessage:
        assert self.message is not None
        return parse(self.message.data)

    @property
    def comparisons(self) -> tuple[Comparison, ...]:
        """The comparisons in this reader's copy, in edition order."""
        segment = segment_for(self.viewer.recipient.categories, self.content.categories)
        return tuple(c for c in self.content.comparisons if c.category in segment)

    @property
    def subject(self) -> str:
        return str(self.parsed["Subject"]) if self.message else ""

    @property
    def html(self) -> bytes:
        """The decoded HTML part, byte for byte as the reader's client gets it."""
        return _part(self.parsed, "html") if self.message else b""

    @property
    def text(self) -> str:
        return _part(self.parsed, "plain").decode("utf-8") if self.message else ""

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The raw top-level header lines (unfolded), in message order."""
        if self.message is None:
            return []
        head = self.message.data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
        out: list[tuple[str, str]] = []
        for line in head.split("\r\n"):
            if line[:1] in (" ", "\t") and out:
                out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
            else:
                name, _, value = line.partition(":")
                out.append((name, value.strip()))
        return out


def parse(data: bytes) -> EmailMessage:
    """A message's bytes as the email package reads them (modern policy)."""
    return message_from_bytes(data, policy=policy.default)  # type: ignore[return-value,unused-ignore]


def _part(message: EmailMessage, subtype: str) -> bytes:
    part = message.get_body(preferencelist=(subtype,))
    payload = part.get_payload(decode=True) if part is not None else None
    return payload if isinstance(payload, bytes) else b""


def inert_urls(rt: Runtime, subscriber_id: int) -> dict[str, str]:
    """The reader's personal links with tokens that do nothing."""
    base = rt.config.site.base_url.rstrip("/")
    token = f"{int(subscriber_id)}.{INERT_TOKEN}"
    return {"unsubscribe_url": f"{base}/u/{token}", "preferences_url": f"{base}/p/{token}"}


def edition_content(rt: Runtime, key: str | None) -> EditionContent:
    """The edition ``key``; None or ``"next"``: this week's, composed or not (read-only).
    Raises DigestError for an unknown key or when there is nothing to preview."""
    if key in (None, "", "next"):
        next_key, comparisons = pipeline.preview_comparisons(rt)
        return EditionContent(next_key, pipeline.find_edition(rt, next_key), tuple(comparisons))
    assert key is not None
    with session_scope(rt.engine) as session:
        edition = editions.get(session, key=key)
        if edition is None:
            raise DigestError(f"there is no edition {key}: 'digest status' lists them")
        return EditionContent(
            key, edition, tuple(editions.comparisons_of(session, edition=edition))
        )


def viewer_for(rt: Runtime, *, email: str = "", categories: Sequence[str] = ()) -> Viewer:
    """A subscriber by address, else a sample reader of ``categories`` (empty: all).
    Raises DigestError for an address that is not a subscriber."""
    if not email:
        label = "Sample reader: " + (", ".join(categories) or "all categories")
        sample = f"preview@{sender_address(rt.config).rpartition('@')[2]}"
        return Viewer(label, Recipient(0, 0, sample, SAMPLE_NAME, tuple(categories)))
    with session_scope(rt.engine) as session:
        try:
            found = get_by_email(session, email=email)
        except SubscriberInputError:
            found = None
        if found is None or found.id is None:
            raise DigestError(f"{email} is not a subscriber: 'digest subscribers list' lists them")
        recipient = Recipient(
            0, found.id, found.email, found.name, tuple(found.categories), found.paused_until
        )
        status = found.status
    note = "" if status == SubscriberStatus.active else f"{status}: gets no digest"
    return Viewer(
        f"{found.email} ({', '.join(found.categories) or 'all categories'})", recipient, note
    )


def build(
    rt: Runtime,
    content: EditionContent,
    recipient: Recipient,
    *,
    now: datetime,
    subject_prefix: str = "",
) -> OutgoingMessage | Skip:
    """One reader's message through the sender's own factory, with inert links.
    Raises RenderError / DigestTooLarge exactly as sending would."""
    factory = messages.message_factory(
        rt,
        content.key,
        content.comparisons,
        render=pipeline.render,
        urls=partial(inert_urls, rt),
        subject_prefix=subject_prefix,
    )
    (result,) = factory([recipient], now)
    return result


def preview(rt: Runtime, content: EditionContent, viewer: Viewer) -> Preview:
    """The message ``viewer`` would get now, or why they get none. Never sends."""
    result = build(rt, content, viewer.recipient, now=rt.now())
    if isinstance(result, Skip):
        return Preview(content, viewer, None, result.reason)
    return Preview(content, viewer, result, viewer.note)


def test_messages(
    rt: Runtime, content: EditionContent, viewer: Viewer, addresses: Sequence[str]
) -> list[OutgoingMessage]:
    """``viewer``'s copy for each address, ``[TEST]`` in the subject, a Message-ID of
    its own (never the real delivery's: clients drop a repeated one). Raises
    DigestError for a bad address or a viewer who would get nothing."""
    targets = _addresses(addresses)
    base = dataclasses.replace(viewer.recipient, paused_until=None)  # a pause is no reason here
    out: list[OutgoingMessage] = []
    for address in targets:
        recipient = dataclasses.replace(base, email=address)
        result = build(rt, content, recipient, now=rt.now(), subject_prefix=TEST_PREFIX)
        if isinstance(result, Skip):
            raise DigestError(f"{viewer.label} gets nothing from {content.key}: {result.reason}")
        out.append(_as_test(result))
    return out


async def send_tests(
    rt: Runtime, messages: Sequence[OutgoingMessage], *, guard: asyncio.Lock | None = None
) -> list[SendResult]:
    """Send through the configured transport, outside the ledger. Raises TransportError
    when the transport cannot work at all; per-message answers are returned."""
    transport = rt.transport()
    results: list[SendResult] = []
    async with guard or contextlib.nullcontext():
        await transport.open()
        try:
            step = max(1, transport.max_batch)
            for start in range(0, len(messages), step):
                results += await transport.send_batch(list(messages[start : start + step]))
        finally:
            await transport.close()
    return results


def _addresses(raw: Sequence[str]) -> list[str]:
    found: list[str] = []
    for chunk in raw:
        for item in chunk.replace(",", " ").split():
            try:
                address = normalize_email(item)
            except SubscriberInputError as exc:
                raise DigestError(f"not an address for a test send: {item!r} ({exc})") from None
            if address not in found:
                found.append(address)
    if not found:
        raise DigestError("give at least one address to send the test to")
    if len(found) > MAX_TEST_ADDRESSES:
        raise DigestError(f"at most {MAX_TEST_ADDRESSES} addresses per test send")
    return found


def _as_test(message: OutgoingMessage) -> OutgoingMessage:
    """A fresh Message-ID in the header block, the test tag, no delivery id."""
    domain = message.message_id.rstrip(">").rpartition("@")[2]
    new_id = f"<{message.tag}.test.{secrets.token_hex(8)}.digest@{domain}>"
    head, sep, body = message.data.partition(b"\r\n\r\n")
    old = b"\r\nMessage-ID: " + message.message_id.encode("ascii") + b"\r\n"
    if old not in head:
        raise DigestError("the message has no Message-ID header to replace")
    head = head.replace(old, b"\r\nMessage-ID: " + new_id.encode("ascii") + b"\r\n", 1)
    return dataclasses.replace(
        message, delivery_id=0, message_id=new_id, content=head + sep + body, tag=TEST_TAG
    )


@dataclass(frozen=True, slots=True)
class Approval:
    edition: Edition
    report: PreflightReport
    forced: bool  # approved despite pre-flight errors


def approve_edition(
    rt: Runtime, *, key: str, by: str, now: datetime, force: bool = False
) -> Approval:
    """Run the pre-flight on ``key``, then approve it (``editions.approve``).

    Raises DigestError naming the errors when the pre-flight finds any and ``force``
    is false; and whatever ``editions.approve`` raises (unknown key, no approval
    needed, deadline passed). Warnings never block."""
    from digest.desk.preflight import run_preflight  # preflight builds with this module

    report = run_preflight(rt, key=key)
    if report.errors and not force:
        listed = "; ".join(f.describe() for f in report.errors[:5])
        more = f" (and {len(report.errors) - 5} more)" if len(report.errors) > 5 else ""
        raise DigestError(
            f"edition {key} fails the pre-flight with {len(report.errors)} error(s): "
            f"{listed}{more}. Fix them, or approve with --force"
        )
    with session_scope(rt.engine) as session:
        edition = editions.approve(session, key=key, by=by, now=now)
    return Approval(edition, report, forced=bool(report.errors))
