"""Substitution-template sending, shared by providers that take one body per request
and per-recipient values (SendGrid personalizations, Mailgun recipient-variables).

The segment's rendered digest gets the provider's tags where its personal slots
are (:func:`tag_digest`, once per segment: :class:`TaggedCache`), batches are
grouped by segment (:func:`segment_chunks`, :func:`send_grouped`), and each
reader contributes only their values (:meth:`TaggedDigest.values_for`).
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from digest.render.base import RenderedDigest, Slot, fill
from digest.transports.base import OutgoingMessage, SendResult
from digest.transports.http_base import HttpBatchTransport
from digest.transports.parts import DigestCache

TagMaker = Callable[[str, bool, str], str]  # (slot name, for HTML?, salt) -> tag


@dataclass(frozen=True, slots=True)
class TaggedDigest:
    """A digest with provider tags where its personal slots were.

    ``tags`` maps ``(slot name, for_html)`` to the tag; only slots the digest uses
    are present. ``extra`` maps each further name asked for (values the provider
    substitutes elsewhere, e.g. in headers) to its tag. Built by :func:`tag_digest`,
    which guarantees each tag occurs in ``subject``/``html``/``text`` exactly where a
    slot was, and extra tags nowhere."""

    subject: str
    html: str
    text: str
    tags: Mapping[tuple[str, bool], str]
    extra: Mapping[str, str] = field(default_factory=dict)

    def values_for(self, values: Mapping[str, str]) -> dict[str, str]:
        """Tag → value for one reader: HTML tags get the value HTML-escaped exactly as
        :meth:`RenderedDigest.html_with` does. ``KeyError`` for a missing slot value."""
        out: dict[str, str] = {}
        for (name, for_html), tag in self.tags.items():
            value = values[name]
            out[tag] = html.escape(value, quote=True) if for_html else value
        return out


class TaggedCache(DigestCache[TaggedDigest]):
    """Tagged content per segment (:class:`DigestCache`)."""


def tag_digest(
    digest: RenderedDigest, make_tag: TagMaker, *, extra: Sequence[str] = (), attempts: int = 8
) -> TaggedDigest:
    """Put ``make_tag(name, for_html, salt)`` where each slot is; try further salts
    while a tag would also match text of the edition (feed text is not ours).

    Raises ``ValueError`` when no salt gives unambiguous tags."""
    names = sorted({p.name for p in (*digest.html, *digest.text) if isinstance(p, Slot)})
    for attempt in range(attempts):
        salt = f"{attempt}" if attempt else ""
        tags = {(n, h): make_tag(n, h, salt) for n in names for h in (False, True)}
        extras = {name: make_tag(name, False, salt) for name in extra}
        html_text, html_at = _join(digest.html, {n: tags[(n, True)] for n in names})
        text, text_at = _join(digest.text, {n: tags[(n, False)] for n in names})
        every = [*tags.values(), *extras.values()]
        if all(
            _occurrences(body, tag) == at.get(tag, set())
            for body, at in ((html_text, html_at), (text, text_at))
            for tag in every
        ) and not any(tag in digest.subject for tag in every):
            used = {key: tag for key, tag in tags.items() if tag in html_at or tag in text_at}
            return TaggedDigest(digest.subject, html_text, text, used, extras)
    raise ValueError("cannot choose substitution tags that do not occur in the edition's text")


def segment_chunks(messages: Sequence[OutgoingMessage], size: int) -> list[list[int]]:
    """Indexes of ``messages`` grouped for one request each: same ``shared.key`` (one
    body per segment), at most ``size``, no address twice (providers key per-reader
    data by address). A message without shared content goes alone."""
    open_chunks: dict[str, tuple[list[int], set[str]]] = {}
    out: list[list[int]] = []
    for i, message in enumerate(messages):
        if message.shared is None or message.personal is None:
            out.append([i])
            continue
        chunk = open_chunks.get(message.shared.key)
        address = message.recipient.lower()
        if chunk is None or len(chunk[0]) >= size or address in chunk[1]:
            chunk = ([], set())
            open_chunks[message.shared.key] = chunk
            out.append(chunk[0])
        chunk[0].append(i)
        chunk[1].add(address)
    return out


async def send_grouped(
    transport: HttpBatchTransport,
    messages: Sequence[OutgoingMessage],
    send_chunk: Callable[[Sequence[OutgoingMessage]], Awaitable[list[SendResult]]],
) -> list[SendResult]:
    """Send each :func:`segment_chunks` group with ``send_chunk`` (concurrently; the
    base bounds requests in flight) and return the results in ``messages`` order."""
    chunks = segment_chunks(messages, transport.max_batch)
    answers = await asyncio.gather(*(send_chunk([messages[i] for i in c]) for c in chunks))
    results: list[SendResult | None] = [None] * len(messages)
    for chunk, answer in zip(chunks, answers, strict=True):
        for i, result in zip(chunk, answer, strict=True):
            results[i] = result
    return [r for r in results if r is not None]


def _join(
    pieces: tuple[str | Slot, ...], tags: Mapping[str, str]
) -> tuple[str, dict[str, set[int]]]:
    """``fill`` with tags (no escaping), plus where each tag was put."""
    at: dict[str, set[int]] = {}
    offset = 0
    for piece in pieces:
        if isinstance(piece, Slot):
            at.setdefault(tags[piece.name], set()).add(offset)
            offset += len(tags[piece.name])
        else:
            offset += len(piece)
    return fill(pieces, tags, escape_html=False), at


def _occurrences(body: str, tag: str) -> set[int]:
    found: set[int] = set()
    start = body.find(tag)
    while start >= 0:
        found.add(start)
        start = body.find(tag, start + 1)  # overlapping matches count too
    return found
