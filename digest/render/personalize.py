"""Per-subscriber message bytes from a byte template built once per edition.

Building an :class:`email.message.EmailMessage` per subscriber costs milliseconds.
Instead :meth:`MessageTemplate.build` encodes everything edition-wide once — headers,
MIME framing and every static chunk of the quoted-printable bodies — and
:meth:`MessageTemplate.render` only encodes the few short per-subscriber values and
joins pre-encoded bytes.

Why joining QP chunks is sound (RFC 2045 6.7): every chunk is encoded as if it
started a line, and every chunk that does not end with a hard line break is closed
with a soft line break (``=`` CRLF), so the next chunk starts a fresh line too. A
soft line break decodes to nothing, so the decoded body is the plain concatenation.

Output contract: CRLF line endings; no line over 998 octets (RFC 5322 2.1.1); QP
lines at most 76 characters; headers folded at 78 where possible; each header once.
Decoded text parts equal :meth:`RenderedDigest.text_with` / ``html_with`` with line
breaks in canonical CRLF form (RFC 2046 4.1.1).
"""

from __future__ import annotations

import binascii
import hashlib
import html
from collections.abc import Mapping
from datetime import datetime
from email.utils import format_datetime

from digest.render.base import SLOT_NAMES, RenderedDigest, Slot
from digest.render.headers import (
    ATOM_TEXT,
    DOMAIN,
    address_header,
    checked_address,
    checked_feedback_id,
    checked_url,
    list_id_header,
    parse_mailbox,
    subject_header,
)

# Per-render values, by index: the template's pieces hold these ints where they go.
_TO, _DATE, _MESSAGE_ID, _UNSUB_HEADER = 0, 1, 2, 3  # _TO: the whole folded To line
_VALUE_BASE = 4  # then one entry per (slot name, html?) pair, see _value_index
_SOFT_BREAK = b"=\r\n"


Piece = bytes | int


class MessageTemplate:
    """One edition's message, pre-encoded; :meth:`render` fills in one subscriber."""

    __slots__ = ("digest", "edition_key", "from_address", "message_id_domain", "names", "pieces")

    def __init__(
        self,
        *,
        digest: RenderedDigest,
        pieces: tuple[Piece, ...],
        from_address: str,
        edition_key: str,
        message_id_domain: str,
        names: tuple[str, ...] = SLOT_NAMES,
    ) -> None:
        self.digest = digest
        self.names = names  # the slot names, in the order of the per-render values
        self.pieces = pieces
        self.from_address = from_address  # bare address, for the envelope MAIL FROM
        self.edition_key = edition_key
        self.message_id_domain = message_id_domain

    @classmethod
    def build(
        cls,
        digest: RenderedDigest,
        *,
        from_header: str,
        reply_to: str | None = None,
        list_id: str,
        edition_key: str,
        message_id_domain: str | None = None,
        feedback_id: str | None = None,
    ) -> MessageTemplate:
        """Encode the edition-wide parts once.

        ``from_header``/``reply_to`` are ``"Name <addr>"`` strings, ``list_id`` is
        ``"Name <id>"`` or a bare id (RFC 2919), ``message_id_domain`` defaults to the
        From address's domain. Raises ``ValueError`` for an unusable address, edition
        key, domain or an unknown slot name.
        """
        from_name, from_addr = parse_mailbox(from_header, "from_header")
        domain = message_id_domain or from_addr.rpartition("@")[2]
        if not DOMAIN.fullmatch(domain):
            raise ValueError(f"message_id_domain: not a domain name: {domain!r}")
        if not ATOM_TEXT.fullmatch(edition_key):
            raise ValueError(f"edition_key: must be dot-atom text, got {edition_key!r}")
        boundary = _boundary(digest, edition_key)
        names = slot_order(digest)
        pieces: list[Piece] = [address_header("From", from_name, from_addr), _TO]
        pieces += [subject_header(digest.subject), b"Date: ", _DATE]
        pieces += [b"\r\nMessage-ID: ", _MESSAGE_ID, b"\r\nMIME-Version: 1.0\r\n"]
        if reply_to is not None:
            pieces.append(address_header("Reply-To", *parse_mailbox(reply_to, "reply_to")))
        pieces += [list_id_header(list_id), b"List-Unsubscribe: ", _UNSUB_HEADER, b"\r\n"]
        # RFC 8058 3.1: one-click unsubscribe by POST to the List-Unsubscribe URI.
        pieces.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        if feedback_id:  # Gmail's Feedback-ID: campaign:customer:type:sender ids
            pieces.append(f"Feedback-ID: {checked_feedback_id(feedback_id)}\r\n".encode())
        pieces.append(
            f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'.encode()
        )
        for subtype, body, escape in (("plain", digest.text, False), ("html", digest.html, True)):
            pieces.append(
                f"--{boundary}\r\nContent-Type: text/{subtype}; charset=utf-8\r\n"
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode()
            )
            pieces += _qp_pieces(body, escape_html=escape, names=names)
            pieces.append(b"\r\n")  # RFC 2046 5.1.1: this CRLF belongs to the delimiter
        pieces.append(f"--{boundary}--\r\n".encode())
        return cls(
            digest=digest,
            pieces=_merge(pieces),
            from_address=from_addr,
            edition_key=edition_key,
            message_id_domain=domain,
            names=names,
        )

    def message_id(self, subscriber_id: int) -> str:
        """``<edition.sID.digest@domain>``: the same for a retry, so it is recognisable."""
        return f"<{self.edition_key}.s{int(subscriber_id)}.digest@{self.message_id_domain}>"

    def render(
        self,
        *,
        subscriber_id: int,
        to_email: str,
        to_name: str,
        unsubscribe_url: str,
        preferences_url: str,
        date: datetime,
        **extra: str,
    ) -> bytes:
        """The complete message for one subscriber (CRLF line endings).

        ``to_name`` may be anything (control characters become spaces); ``to_email``
        must be a normalized ASCII address and the URLs printable ASCII ``http(s)``
        URLs, else ``ValueError``. ``date`` must be timezone-aware. ``extra``: the
        values of the digest's other slots (``ref``, ``vote_<n>``), printable ASCII.
        """
        if date.tzinfo is None:
            raise ValueError("date: must be timezone-aware")
        unsub = checked_url(unsubscribe_url, "unsubscribe_url")
        prefs = checked_url(preferences_url, "preferences_url")
        values = [
            address_header("To", to_name, checked_address(to_email, "to_email")),
            format_datetime(date).encode("ascii"),
            self.message_id(subscriber_id).encode("ascii"),
            b"<" + unsub.encode("ascii") + b">",  # RFC 2369 3.2: URL in angle brackets
        ]
        given = {**extra, "unsubscribe_url": unsub, "preferences_url": prefs}
        for name in self.names:  # the order _value_index assumes
            value = given.get(name)
            if value is None or not value.isascii() or not value.isprintable():
                raise ValueError(f"slot {name!r}: a printable ASCII value is needed")
            values.append(_qp_value(value))
            values.append(_qp_value(html.escape(value, quote=True)))  # as base.fill
        return b"".join([p if isinstance(p, bytes) else values[p] for p in self.pieces])

    def html_for(self, *, unsubscribe_url: str, preferences_url: str) -> str:
        """The decoded, personalized HTML (for previews); see ``RenderedDigest.html_with``."""
        values = {"unsubscribe_url": unsubscribe_url, "preferences_url": preferences_url}
        return self.digest.html_with(values)


def html_part_bytes(html_pieces: tuple[str | Slot, ...], values: Mapping[str, str]) -> bytes:
    """The body of the HTML part exactly as :meth:`MessageTemplate.render` puts it on
    the wire (quoted-printable, CRLF), the slots filled with ``values``. Its length
    is what Gmail's clipping and ``[edition] max_html_bytes`` measure."""
    order = (
        *SLOT_NAMES,
        *sorted({p.name for p in html_pieces if isinstance(p, Slot)} - set(SLOT_NAMES)),
    )
    names = {_value_index(name, escape_html=True, names=order): name for name in order}
    return b"".join(
        p if isinstance(p, bytes) else _qp_value(html.escape(values[names[p]], quote=True))
        for p in _qp_pieces(html_pieces, escape_html=True, names=order)
    )


def slot_order(digest: RenderedDigest) -> tuple[str, ...]:
    """The footer's slots first, then the digest's other slots, sorted."""
    return (*SLOT_NAMES, *sorted(set(digest.slot_names) - set(SLOT_NAMES)))


def _value_index(name: str, *, escape_html: bool, names: tuple[str, ...]) -> int:
    return _VALUE_BASE + 2 * names.index(name) + int(escape_html)


def _qp_pieces(
    body: tuple[str | Slot, ...], *, escape_html: bool, names: tuple[str, ...]
) -> list[Piece]:
    """Encode static chunks now; slots become indexes into the per-render values."""
    out: list[Piece] = []
    for i, piece in enumerate(body):
        last = i == len(body) - 1
        if isinstance(piece, Slot):
            if piece.name not in names:
                raise ValueError(f"unknown slot {piece.name!r} (known: {', '.join(names)})")
            out.append(_value_index(piece.name, escape_html=escape_html, names=names))
            if not last:
                out.append(_SOFT_BREAK)
            continue
        text = piece.replace("\r\n", "\n").replace("\r", "\n")
        encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")
        out.append(encoded)
        if encoded and not last and not encoded.endswith(b"\r\n"):
            out.append(_SOFT_BREAK)
    return out


def _qp_value(value: str) -> bytes:
    """QP for a one-line value that starts a fresh line (the caller adds the soft break)."""
    # istext=False encodes any CR/LF, so every b"\n" in the output is a soft break.
    return binascii.b2a_qp(value.encode("utf-8"), istext=False).replace(b"\n", b"\r\n")


def _merge(pieces: list[Piece]) -> tuple[Piece, ...]:
    """Join adjacent byte pieces so render() joins as few items as possible."""
    out: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, bytes) and out and isinstance(out[-1], bytes):
            out[-1] += piece
        elif piece != b"":
            out.append(piece)
    return tuple(out)


def _boundary(digest: RenderedDigest, edition_key: str) -> str:
    """Deterministic; "=_" can never occur in QP output (RFC 2045 6.7: "=" + 2 hex)."""
    h = hashlib.sha256(edition_key.encode())
    for piece in (digest.subject, *digest.text, *digest.html):
        h.update(repr(piece).encode("utf-8", "surrogatepass"))
    return f"=_digest_{h.hexdigest()[:32]}"
