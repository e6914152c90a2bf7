"""Header lines for the byte template (:mod:`digest.render.personalize`), and the
checks their values pass: addresses, display names, List-Id, Subject, URLs.

Output contract: CRLF line endings; headers folded at 78 characters where possible
(RFC 5322 2.1.1), never over 998; display names as quoted-strings or RFC 2047
encoded-words; control characters in any value become spaces (header injection).
Every check raises ``ValueError`` naming the field.
"""

from __future__ import annotations

import base64
import re
from email.policy import SMTP
from email.utils import getaddresses

_MAX_LINE = 78  # RFC 5322 2.1.1: "SHOULD be no more than 78 characters"
# C0, DEL, C1 and the Unicode line/paragraph separators: never allowed in a header.
_CONTROLS = {c: " " for c in (*range(32), *range(127, 160), 0x2028, 0x2029)}
# A normalized, ASCII dot-atom address (RFC 5322 3.4.1 without quoted local parts).
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
ATOM_TEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_URL = re.compile(r"https?://[!#-;=?-~]+")  # printable ASCII except space, '"', "<", ">"
_MAX_URL = 900  # keeps "List-Unsubscribe: <url>" under 998 octets


def check_sender(
    *, from_header: str, reply_to: str | None, list_id: str, feedback_id: str | None = None
) -> str:
    """Validate the edition-wide headers exactly as :meth:`MessageTemplate.build`
    will; return the bare From address. Raises ``ValueError`` naming the field."""
    if feedback_id:
        checked_feedback_id(feedback_id)
    _, address = parse_mailbox(from_header, "from")
    if reply_to is not None:
        parse_mailbox(reply_to, "reply_to")
    list_id_header(list_id)
    return address


def list_id_for(site_name: str, from_address_domain: str) -> str:
    """An RFC 2919 List-Id, e.g. ``The Verdict Weekly <the-verdict-weekly.example.com>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", site_name.lower()).strip("-") or "digest"
    return f"{site_name} <{slug}.{from_address_domain}>"


def _clean(text: str) -> str:
    """Replace every control character by a space (header injection), then strip."""
    return text.translate(_CONTROLS).strip()


def checked_feedback_id(value: str) -> str:
    if len(value) > 200 or not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError(f"feedback_id: printable ASCII without spaces, got {value!r}")
    return value


def checked_address(address: str, what: str) -> str:
    if len(address) > 254 or not _ADDRESS.fullmatch(address):
        raise ValueError(f"{what}: not a normalized ASCII address: {address!r}")
    return address


def checked_url(url: str, what: str) -> str:
    if len(url) > _MAX_URL or not _URL.fullmatch(url):
        raise ValueError(f"{what}: not a printable ASCII http(s) URL: {url[:100]!r}")
    return url


def parse_mailbox(value: str, what: str) -> tuple[str, str]:
    pairs = getaddresses([_clean(value)])
    if len(pairs) != 1:
        raise ValueError(f"{what}: expected exactly one address, got {value!r}")
    name, address = pairs[0]
    return name, checked_address(address, what)


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


def address_header(field: str, name: str, address: str) -> bytes:
    return _fold(field, [*_phrase(name), f"<{address}>"])


def list_id_header(list_id: str) -> bytes:
    name, _, ident = _clean(list_id).rpartition("<")
    ident = ident.rstrip(">").strip()
    if not ATOM_TEXT.fullmatch(ident) or "." not in ident:
        raise ValueError(f"list_id: expected 'Name <id.domain>', got {list_id!r}")
    return _fold("List-Id", [*_phrase(name), f"<{ident}>"])


def subject_header(subject: str) -> bytes:
    subject = _clean(subject)
    if "=?" in subject or not subject.isascii():
        # Our own encoded-words: "=?" would otherwise be decoded as one, and the email
        # package's folder drops spaces between encoded-words it makes (CPython 3.11).
        return _fold("Subject", _encoded_words(subject))
    # ASCII: SMTP.fold keeps short values as they are and folds long ones at spaces
    # (encoding only a word too long for any line).
    folded: str = SMTP.fold("Subject", subject)
    return folded.encode("ascii")
