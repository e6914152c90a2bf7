"""A message as the fields a provider's API wants: :class:`MessageParts`.

:func:`message_parts` (behind :meth:`~digest.transports.http_base.HttpBatchTransport.parts`)
takes a digest message's fields from its shared and personal content, and a
transactional message's from its MIME bytes. For a JSON API a digest's HTML and
text can come pre-encoded (:func:`json_pieces`, once per segment, kept in a
:class:`DigestCache`; :func:`json_string`, per reader).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import formataddr
from html import escape as html_escape
from typing import Generic, TypeVar

import orjson

from digest.render.base import Piece, RenderedDigest, Slot
from digest.transports.base import OutgoingMessage, SharedContent

_CONTROL = dict.fromkeys([*range(32), *range(127, 160)])  # C0, DEL, C1 → removed
_PART_HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post", "List-Id", "Message-ID")

T = TypeVar("T")
Body = TypeVar("Body", str, str | orjson.Fragment)


@dataclass(frozen=True)  # no slots: a slotted frozen generic breaks A[str](...) on 3.11
class MessageParts(Generic[Body]):
    """One message as provider JSON fields want it (see :func:`message_parts`).

    ``html``/``text`` are ``str``, or with ``json_bodies=True`` a digest's
    body as a pre-encoded JSON string (``orjson.Fragment``) to put in
    ``ApiRequest.json`` as it is."""

    from_header: str
    to: str  # "Name <addr>" (control characters removed) or a bare address
    subject: str
    html: Body | None
    text: Body | None
    reply_to: str | None
    headers: Mapping[str, str]  # List-Unsubscribe(-Post), List-Id; Message-ID if allowed


class DigestCache(Generic[T]):
    """Something built once per digest segment (``shared.key``), for the digest object
    it was built from (the pipeline shares one per segment by reference); a few
    segments kept at most."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._entries: dict[str, tuple[RenderedDigest, T]] = {}

    def get(self, shared: SharedContent, build: Callable[[RenderedDigest], T]) -> T:
        entry = self._entries.get(shared.key)
        if entry is None or entry[0] is not shared.digest:
            if len(self._entries) >= self.size:
                self._entries.pop(next(iter(self._entries)))  # the oldest segment
            entry = self._entries[shared.key] = (shared.digest, build(shared.digest))
        return entry[1]


JsonPieces = tuple[bytes | Slot, ...]


def json_pieces(digest: RenderedDigest) -> tuple[JsonPieces, JsonPieces]:
    """The digest's HTML and text as JSON string contents (no quotes), slots kept.

    JSON escapes each character on its own, so the encoding of a concatenation is
    the concatenation of the encodings: the 60 KB of a message's bodies are encoded
    once per segment, and each reader only adds a few escaped values
    (:func:`json_string`). Measured: a Postmark batch of 500 took ~60 ms in
    ``orjson.dumps`` with plain strings, about 5 ms so (docs/BENCHMARKS.md)."""

    def encode(pieces: tuple[Piece, ...]) -> JsonPieces:
        return tuple(p if isinstance(p, Slot) else orjson.dumps(p)[1:-1] for p in pieces)

    return encode(digest.html), encode(digest.text)


def json_string(
    pieces: JsonPieces, values: Mapping[str, str], *, escape_html: bool
) -> orjson.Fragment:
    """One reader's body as a JSON string, equal to ``orjson.dumps(fill(...))``."""
    out = [b'"']
    for piece in pieces:
        if isinstance(piece, Slot):
            value = values[piece.name]
            value = html_escape(value, quote=True) if escape_html else value
            out.append(orjson.dumps(value)[1:-1])
        else:
            out.append(piece)
    out.append(b'"')
    return orjson.Fragment(b"".join(out))


def message_parts(
    message: OutgoingMessage,
    *,
    custom_message_id: bool,
    json_bodies: bool,
    cache: DigestCache[tuple[JsonPieces, JsonPieces]],
) -> MessageParts[str] | MessageParts[str | orjson.Fragment]:
    """The message as fields: from shared/personal content, or (transactional
    messages) from ``data`` parsed once with the email package.

    ``custom_message_id``: the API lets us set the Message-ID header (else it is left
    out). ``json_bodies``: a digest message's HTML and text come as pre-encoded JSON
    strings (:func:`json_string`, from ``cache``), for a JSON API's request body."""
    shared, personal = message.shared, message.personal
    if shared is None or personal is None:
        parts = _parts_from_mime(message)
        if not custom_message_id:
            headers = {k: v for k, v in parts.headers.items() if k != "Message-ID"}
            parts = replace(parts, headers=headers)
        return parts
    values = personal.values
    headers = {"List-Id": shared.list_id}
    if custom_message_id:
        headers["Message-ID"] = message.message_id
    if "unsubscribe_url" in values:
        # RFC 8058: one-click unsubscribe needs both headers.
        headers["List-Unsubscribe"] = f"<{values['unsubscribe_url']}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    common = {
        "from_header": shared.from_header,
        "to": to_header(personal.to_name, message.recipient),
        "subject": shared.digest.subject,
    }
    if json_bodies:
        html_pieces, text_pieces = cache.get(shared, json_pieces)
        return MessageParts[str | orjson.Fragment](
            **common,
            html=json_string(html_pieces, values, escape_html=True),
            text=json_string(text_pieces, values, escape_html=False),
            reply_to=shared.reply_to,
            headers=headers,
        )
    return MessageParts[str](
        **common,
        html=shared.digest.html_with(values),
        text=shared.digest.text_with(values),
        reply_to=shared.reply_to,
        headers=headers,
    )


def to_header(name: str, address: str) -> str:
    """``"Name <addr>"`` for the To field, control characters removed (no header
    injection through a reader's name); a bare address when there is no name."""
    clean = name.translate(_CONTROL).strip()
    return formataddr((clean, address.translate(_CONTROL))) if clean else address


def _parts_from_mime(message: OutgoingMessage) -> MessageParts[str]:
    parsed = message_from_bytes(message.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    html = parsed.get_body(("html",))
    text = parsed.get_body(("plain",))
    headers = {name: str(parsed[name]) for name in _PART_HEADERS if parsed[name] is not None}
    headers.setdefault("Message-ID", message.message_id)
    return MessageParts(
        from_header=str(parsed["From"] or message.sender),
        to=str(parsed["To"] or message.recipient).translate(_CONTROL),
        subject=str(parsed["Subject"] or ""),
        html=html.get_content() if isinstance(html, EmailMessage) else None,
        text=text.get_content() if isinstance(text, EmailMessage) else None,
        reply_to=str(parsed["Reply-To"]) if parsed["Reply-To"] is not None else None,
        headers=headers,
    )
