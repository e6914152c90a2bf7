"""The operator's desk: an edition exactly as one reader gets it, test sends, approval.

Every message here is one reader's copy from :mod:`digest.desk.reader_copy`, built
with the sender's own code and inert personal links (``…/u/42.preview-only``) that
verify as nothing, so clicking one in a preview or a test email changes nothing.
Nothing here touches the delivery ledger: a preview never sends, and a test send is
never recorded as a delivery or counted in an edition's figures. Approval runs the
pre-flight (:mod:`digest.desk.preflight`) first.

The reader-copy names (:class:`EditionContent`, :class:`Viewer`, :func:`build`,
:func:`edition_content`, :func:`viewer_for`, :func:`parse`, :func:`inert_urls`,
:data:`INERT_TOKEN`) are importable from here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

from digest.config.runtime import Runtime
from digest.desk.preflight import PreflightReport, run_preflight
from digest.desk.reader_copy import INERT_TOKEN as INERT_TOKEN
from digest.desk.reader_copy import EditionContent as EditionContent
from digest.desk.reader_copy import Viewer as Viewer
from digest.desk.reader_copy import build as build
from digest.desk.reader_copy import edition_content as edition_content
from digest.desk.reader_copy import inert_urls as inert_urls
from digest.desk.reader_copy import parse as parse
from digest.desk.reader_copy import viewer_for as viewer_for
from digest.editions import lifecycle as editions
from digest.editions import shaping
from digest.editions.segments import Skip, segment_for
from digest.errors import DigestError
from digest.store import audit
from digest.store.db import session_scope
from digest.store.models import Comparison, Edition
from digest.transports.base import OutgoingMessage, SendResult
from subscribers.addresses import normalize_email
from subscribers.errors import SubscriberInputError

TEST_PREFIX = "[TEST] "
TEST_TAG = "test"  # the outbox folder / provider tag of test sends, never an edition's
MAX_TEST_ADDRESSES = 10


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


def _part(message: EmailMessage, subtype: str) -> bytes:
    part = message.get_body(preferencelist=(subtype,))
    payload = part.get_payload(decode=True) if part is not None else None
    return payload if isinstance(payload, bytes) else b""


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
    rt: Runtime, *, key: str, by: str, now: datetime, force: bool = False, via: str = "cli"
) -> Approval:
    """Run the pre-flight on ``key``, then approve it (``editions.approve``).

    Raises DigestError naming the errors when the pre-flight finds any and ``force``
    is false; and whatever ``editions.approve`` raises (unknown key, no approval
    needed, deadline passed). Warnings never block. The approval is for the version
    the pre-flight checked: an edit in between refuses it. Recorded in the audit log
    (``via``: desk, cli or api)."""
    with session_scope(rt.engine) as session:
        found = editions.get(session, key=key)
        checked = shaping.revision_of(session, found) if found is not None else 0
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
        if shaping.revision_of(session, edition) != checked:
            raise DigestError(
                f"edition {key} was edited while it was being checked: nothing was "
                "approved; check the new version and approve again"
            )
        forced = " despite pre-flight errors" if report.errors else ""
        audit.record(
            session, actor=by, via=via, action="edition.approve", target=f"edition:{key}",
            detail=f"approved revision {checked}{forced}", now=now,
        )  # fmt: skip
    return Approval(edition, report, forced=bool(report.errors))
