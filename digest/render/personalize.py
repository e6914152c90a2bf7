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

import base64
import binascii
import hashlib
import html
import re
from collections.abc import Mapping
from datetime import datetime
from email.policy import SMTP
from email.utils import format_datetime, getaddresses

from digest.render.base import SLOT_NAMES, RenderedDigest, Slot

# Per-render values, by index: the template's pieces hold these ints where they go.
_TO, _DATE, _MESSAGE_ID, _UNSUB_HEADER = 0, 1, 2, 3  # _TO: the whole folded To line
_VALUE_BASE = 4  # then one entry per (slot name, html?) pair, see _value_index
_SOFT_BREAK = b"=\r\n"
_MAX_LINE = 78  # RFC 5322 2.1.1: "SHOULD be no more than 78 characters"
# C0, DEL, C1 and the Unicode line/paragraph separators: never allowed in a header.
_CONTROLS = {c: " " for c in (*range(32), *range(127, 160), 0x2028, 0x2029)}
# A normalized, ASCII dot-atom address (RFC 5322 3.4.1 without quoted local parts).
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_ATOM_TEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_URL = re.compile(r"https?://[!#-;=?-~]+")  # printable ASCII except space, '"', "<", ">"
_MAX_URL = 900  # keeps "List-Unsubscribe: <url>" under 998 octets


Piece = bytes | int


class MessageTemplate:
    """One edition's message, pre-encoded; :meth:`render` fills in one subscriber."""

    __slots__ = ("digest", "edition_key", "from_address", "message_id_domain", "pieces")

    def __init__(
        self,
        *,
        digest: RenderedDigest,
        pieces: tuple[Piece, ...],
        from_address: str,
        edition_key: str,
        message_id_domain: str,
    ) -> None:
        self.digest = digest
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
        from_name, from_addr = _parse_mailbox(from_header, "from_header")
        domain = message_id_domain or from_addr.rpartition("@")[2]
        if not _DOMAIN.fullmatch(domain):
            raise ValueError(f"message_id_domain: not a domain name: {domain!r}")
        if not _ATOM_TEXT.fullmatch(edition_key):
            raise ValueError(f"edition_key: must be dot-atom text, got {edition_key!r}")
        boundary = _boundary(digest, edition_key)
        pieces: list[Piece] = [_address_header("From", from_name, from_addr), _TO]
        pieces += [_subject_header(digest.subject), b"Date: ", _DATE]
        pieces += [b"\r\nMessage-ID: ", _MESSAGE_ID, b"\r\nMIME-Version: 1.0\r\n"]
        if reply_to is not None:
            pieces.append(_address_header("Reply-To", *_parse_mailbox(reply_to, "reply_to")))
        pieces += [_list_id_header(list_id), b"List-Unsubscribe: ", _UNSUB_HEADER, b"\r\n"]
        # RFC 8058 3.1: one-click unsubscribe by POST to the List-Unsubscribe URI.
        pieces.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        if feedback_id:  # Gmail's Feedback-ID: campaign:customer:type:sender ids
            pieces.append(f"Feedback-ID: {_checked_feedback_id(feedback_id)}\r\n".encode())
        pieces.append(
            f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'.encode()
        )
        for subtype, body, escape in (("plain", digest.text, False), ("html", digest.html, True)):
            pieces.append(
                f"--{boundary}\r\nContent-Type: text/{subtype}; charset=utf-8\r\n"
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode()
            )
            pieces += _qp_pieces(body, escape_html=escape)
            pieces.append(b"\r\n")  # RFC 2046 5.1.1: this CRLF belongs to the delimiter
        pieces.append(f"--{boundary}--\r\n".encode())
        return cls(
            digest=digest,
            pieces=_merge(pieces),
            from_address=from_addr,
            edition_key=edition_key,
            message_id_domain=domain,
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
    ) -> bytes:
        """The complete message for one subscriber (CRLF line endings).

        ``to_name`` may be anything (control characters become spaces); ``to_email``
        must be a normalized ASCII address and the URLs printable ASCII ``http(s)``
        URLs, else ``ValueError``. ``date`` must be timezone-aware.
        """
        if date.tzinfo is None:
            raise ValueError("date: must be timezone-aware")
        unsub = _checked_url(unsubscribe_url, "unsubscribe_url")
        prefs = _checked_url(preferences_url, "preferences_url")
        values = [
            _address_header("To", to_name, _checked_address(to_email, "to_email")),
            format_datetime(date).encode("ascii"),
            self.message_id(subscriber_id).encode("ascii"),
            b"<" + unsub.encode("ascii") + b">",  # RFC 2369 3.2: URL in angle brackets
        ]
        urls = {"unsubscribe_url": unsub, "preferences_url": prefs}
        for name in SLOT_NAMES:  # the order _value_index assumes
            values.append(_qp_value(urls[name]))
            values.append(_qp_value(html.escape(urls[name], quote=True)))  # as base.fill
        return b"".join([p if isinstance(p, bytes) else values[p] for p in self.pieces])

    def html_for(self, *, unsubscribe_url: str, preferences_url: str) -> str:
        """The decoded, personalized HTML (for previews); see ``RenderedDigest.html_with``."""
        values = {"unsubscribe_url": unsubscribe_url, "preferences_url": preferences_url}
        return self.digest.html_with(values)


def html_part_bytes(html_pieces: tuple[str | Slot, ...], values: Mapping[str, str]) -> bytes:
    """The body of the HTML part exactly as :meth:`MessageTemplate.render` puts it on
    the wire (quoted-printable, CRLF), the slots filled with ``values``. Its length
    is what Gmail's clipping and ``[edition] max_html_bytes`` measure."""
    names = {_value_index(name, escape_html=True): name for name in SLOT_NAMES}
    return b"".join(
        p if isinstance(p, bytes) else _qp_value(html.escape(values[names[p]], quote=True))
        for p in _qp_pieces(html_pieces, escape_html=True)
    )


def check_sender(
    *, from_header: str, reply_to: str | None, list_id: str, feedback_id: str | None = None
) -> str:
    """Validate the edition-wide headers exactly as :meth:`MessageTemplate.build`
    will; return the bare From address. Raises ``ValueError`` naming the field."""
    if feedback_id:
        _checked_feedback_id(feedback_id)
    _, address = _parse_mailbox(from_header, "from")
    if reply_to is not None:
        _parse_mailbox(reply_to, "reply_to")
    _list_id_header(list_id)
    return address


def list_id_for(site_name: str, from_address_domain: str) -> str:
    """An RFC 2919 List-Id, e.g. ``The Verdict Weekly <the-verdict-weekly.example.com>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", site_name.lower()).strip("-") or "digest"
    return f"{site_name} <{slug}.{from_address_domain}>"


def _value_index(name: str, *, escape_html: bool) -> int:
    return _VALUE_BASE + 2 * SLOT_NAMES.index(name) + int(escape_html)


def _qp_pieces(body: tuple[str | Slot, ...], *, escape_html: bool) -> list[Piece]:
    """Encode static chunks now; slots become indexes into the per-render values."""
    out: list[Piece] = []
    for i, piece in enumerate(body):
        last = i == len(body) - 1
        if isinstance(piece, Slot):
            if piece.name not in SLOT_NAMES:
                raise ValueError(f"unknown slot {piece.name!r} (known: {', '.join(SLOT_NAMES)})")
            out.append(_value_index(piece.name, escape_html=escape_html))
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


def _clean(text: str) -> str:
    """Replace every control character by a space (header injection), then strip."""
    return text.translate(_CONTROLS).strip()


def _checked_feedback_id(value: str) -> str:
    if len(value) > 200 or not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError(f"feedback_id: printable ASCII without spaces, got {value!r}")
    return value


def _checked_address(address: str, what: str) -> str:
    if len(address) > 254 or not _ADDRESS.fullmatch(address):
        raise ValueError(f"{what}: not a normalized ASCII address: {address!r}")
    return address


def _checked_url(url: str, what: str) -> str:
    if len(url) > _MAX_URL or not _URL.fullmatch(url):
        raise ValueError(f"{what}: not a printable ASCII http(s) URL: {url[:100]!r}")
    return url


def _parse_mailbox(value: str, what: str) -> tuple[str, str]:
    pairs = getaddresses([_clean(value)])
    if len(pairs) != 1:
        raise ValueError(f"{what}: expected exactly one address, got {value!r}")
    name, address = pairs[0]
    return name, _checked_address(address, what)


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 "B" encoded-words of at most 68 characters, never splitting a character."""
    chunks: list[bytes] = []
    chunk = b""
    for char in text:
        encoded = char.encode("utf-8", "replace")
        if len(chunk) + len(encoded) > 42:  # 42 octets → 56 base64 chars → 68 in all
            chunks.append(chunk)
            chunk = b""
        chunk += encoded
    chunks.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(c).decode('ascii')}?=" for c in chunks]


def _phrase(name: str) -> list[str]:
    """A display name as header tokens: a quoted-string, or encoded-words (RFC 2047 5.3)."""
    name = _clean(name)
    if not name:
        return []
    if name.isascii() and "=?" not in name:
        quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(quoted) <= _MAX_LINE - len("Reply-To: "):  # fits on the header's first line
            return [quoted]
    return _encoded_words(name)  # encoded-words can be folded anywhere; quoted-strings not


def _fold(field: str, tokens: list[str]) -> bytes:
    """``Field: tok tok…`` CRLF, folded before a token that would pass 78 characters."""
    lines = [f"{field}:"]
    for token in tokens:
        if len(lines[-1]) + 1 + len(token) > _MAX_LINE and lines[-1] != f"{field}:":
            lines.append("")
        lines[-1] += " " + token
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _address_header(field: str, name: str, address: str) -> bytes:
    return _fold(field, [*_phrase(name), f"<{address}>"])


def _list_id_header(list_id: str) -> bytes:
    name, _, ident = _clean(list_id).rpartition("<")
    ident = ident.rstrip(">").strip()
    if not _ATOM_TEXT.fullmatch(ident) or "." not in ident:
        raise ValueError(f"list_id: expected 'Name <id.domain>', got {list_id!r}")
    return _fold("List-Id", [*_phrase(name), f"<{ident}>"])


def _subject_header(subject: str) -> bytes:
    subject = _clean(subject)
    if "=?" in subject or not subject.isascii():
        # Our own encoded-words: "=?" would otherwise be decoded as one, and the email
        # package's folder drops spaces between encoded-words it makes (CPython 3.11).
        return _fold("Subject", _encoded_words(subject))
    # ASCII: SMTP.fold keeps short values as they are and folds long ones at spaces
    # (encoding only a word too long for any line).
    folded: str = SMTP.fold("Subject", subject)
    return folded.encode("ascii")
