"""SMTP replies and commands as bytes: what :mod:`digest.transports.smtp_wire`'s
session reads and writes, without the session. Errors::

    SmtpError                   anything the client raises on purpose
    ├── SmtpReplyError          the server answered, but not with success
    │   └── SmtpAuthError       AUTH refused (535 …)
    ├── SmtpAuthUnavailable     the server offers no AUTH mechanism we may use
    └── SmtpConnectionError     (also a ConnectionError) refused, lost, TLS failed,
        │                       STARTTLS not offered, data sent between the STARTTLS
        │                       reply and the handshake; the session is closed
        ├── SmtpTimeout         (also a TimeoutError) no answer in time
        └── SmtpProtocolError   a reply we cannot parse: the session is out of step
    SmtpAddressError            (a ValueError) a mailbox that could inject commands;
                                raised before anything is written

``SmtpReplyError`` and ``SmtpConnectionError`` carry ``phase`` ("MAIL", "RCPT",
"DATA" …) and ``after_body``: true once the message body went to the socket, when
the server may have the message whatever happens next.
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass, field

MAX_REPLY_LINE = 2048  # RFC 5321 4.5.3.1.5: 512 octets; leave room for chatty servers
MAX_REPLY_LINES = 100
# C0 and C1 controls, DEL, and what would end the <path> early.
_BAD_IN_ADDRESS = re.compile(r"[\x00-\x1f\x7f-\x9f<>]")
_UNQUOTED_SPACE = re.compile(r"\s")
_QUOTED_LOCAL = re.compile(r'^"(?:[^"\\]|\\.)*"(?=@)')


class SmtpError(Exception):
    """Base of the errors this module raises on purpose (not SmtpAddressError)."""

    phase: str = ""
    after_body: bool = False


class SmtpReplyError(SmtpError):
    """A reply that is not success: ``code``, ``message`` (the server's text), ``phase``."""

    def __init__(self, code: int, message: str, phase: str, *, after_body: bool = False) -> None:
        super().__init__(f"{phase}: {code} {message}")
        self.code, self.message, self.phase, self.after_body = code, message, phase, after_body


class SmtpAuthError(SmtpReplyError):
    """The server refused our credentials (or the mechanism)."""


class SmtpAuthUnavailable(SmtpError):
    """The server does not offer the AUTH mechanism asked for; nothing was sent."""


class SmtpConnectionError(SmtpError, ConnectionError):
    """No usable connection: refused, lost, TLS failure, or a required feature missing."""


class SmtpTimeout(SmtpConnectionError, TimeoutError):
    """The server did not answer (or accept our bytes) within the timeout."""


class SmtpProtocolError(SmtpConnectionError):
    """A malformed or oversized reply: the session cannot be trusted any more."""


class SmtpAddressError(ValueError):
    """A mailbox with control characters, angle brackets or unquoted spaces."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str  # the lines' texts joined by "\n"


@dataclass(slots=True)
class Extensions:
    """What EHLO advertised (keywords upper-cased)."""

    keywords: dict[str, str] = field(default_factory=dict)  # keyword -> parameters
    auth: frozenset[str] = frozenset()
    max_size: int = 0  # RFC 1870 SIZE; 0 = no limit announced

    @classmethod
    def parse(cls, reply: Reply) -> Extensions:
        keywords: dict[str, str] = {}
        auth: set[str] = set()
        for line in reply.text.split("\n")[1:]:  # the first line is the server's name
            keyword, _, params = line.strip().partition(" ")
            keyword = keyword.upper()
            if not keyword:
                continue
            if keyword.startswith("AUTH="):  # pre-RFC 4954 servers: "AUTH=LOGIN PLAIN"
                keyword, params = "AUTH", f"{keyword[5:]} {params}"
            keywords[keyword] = params
            if keyword == "AUTH":
                auth.update(params.upper().split())
        size = keywords.get("SIZE", "").strip()
        return cls(keywords, frozenset(auth), int(size) if size.isdigit() else 0)


def check_address(address: str, *, role: str) -> None:
    """Refuse a mailbox that could end the command line or the path early.

    Raises :class:`SmtpAddressError`. A quoted local part may hold spaces.
    """
    if _BAD_IN_ADDRESS.search(address):
        raise SmtpAddressError(f"{role} address {address!r} contains a control character or <>")
    if _UNQUOTED_SPACE.search(_QUOTED_LOCAL.sub("", address, count=1)):
        raise SmtpAddressError(f"{role} address {address!r} contains unquoted white space")


def envelope(
    sender: str, recipient: str, data: bytes, extensions: Extensions, *, where: str
) -> tuple[bytes, bytes]:
    """The MAIL and RCPT command lines, with the SMTPUTF8 / 8BITMIME parameters the
    addresses and body need. Raises :class:`SmtpAddressError` for a non-ASCII address
    the server (``where``) cannot take."""
    params = ""
    if not (sender.isascii() and recipient.isascii()):
        if "SMTPUTF8" not in extensions.keywords:
            raise SmtpAddressError(
                f"non-ASCII address ({sender!r} → {recipient!r}) needs SMTPUTF8, "
                f"which {where} does not offer"
            )
        params += " SMTPUTF8"  # RFC 6531 3.4
    if not data.isascii() and "8BITMIME" in extensions.keywords:
        params += " BODY=8BITMIME"  # RFC 6152
    return (
        f"MAIL FROM:<{sender}>{params}\r\n".encode(),
        f"RCPT TO:<{recipient}>\r\n".encode(),
    )


async def read_reply(reader: asyncio.StreamReader, *, where: str) -> Reply:
    """Read one (possibly multi-line) reply. Raises :class:`SmtpProtocolError` for a
    malformed or over-long one; the stream's own errors pass through."""
    code, texts = b"", list[str]()
    while True:
        line = await reader.readuntil(b"\n")
        if len(line) > MAX_REPLY_LINE or len(texts) >= MAX_REPLY_LINES:
            raise SmtpProtocolError(f"{where} sent an over-long reply")
        line = line.rstrip(b"\r\n")
        this, sep = line[:3], line[3:4]
        if not (this.isdigit() and b"2" <= this[:1] <= b"5" and sep in (b" ", b"-", b"")):
            raise SmtpProtocolError(f"{where} sent a malformed reply line {line[:80]!r}")
        if code and this != code:
            raise SmtpProtocolError(f"{where} changed reply code mid-reply: {line!r}")
        code = this
        texts.append(line[4:].decode("utf-8", "replace"))
        if sep != b"-":
            return Reply(int(code), "\n".join(texts))


def refuse_early_data(reader: asyncio.StreamReader, where: str, *, handshake_done: bool) -> None:
    """Raise :class:`SmtpConnectionError` (phase "STARTTLS") if ``reader`` holds bytes
    no command asked for, after the ``220`` to STARTTLS or after the handshake.

    A server sends nothing between its ``220`` and the handshake (RFC 3207), nor
    before our EHLO. Such bytes came in clear, perhaps from a man in the middle, to
    be read as the first replies inside TLS (response injection, like CVE-2011-0411
    and aiosmtplib GHSA-vxj7-4xrp-5vr4): refused, never used. Bytes arriving once
    the clear-text reads stopped go to the TLS layer and fail the handshake.
    """
    # StreamReader has no public way to ask; ``_buffer`` is CPython's own (should it
    # ever go, this fails with AttributeError: closed, not open).
    buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
    if buffered:
        when = (
            "after the TLS handshake, before our EHLO"
            if handshake_done
            else "after its STARTTLS reply, before the TLS handshake"
        )
        error = SmtpConnectionError(
            f"{where} sent data {when}: refusing (possible response injection)"
        )
        raise lost(error, "STARTTLS", False)


def expect(reply: Reply, expected: int, phase: str) -> None:
    """Raise :class:`SmtpReplyError` unless ``reply.code`` is ``expected`` (a single
    digit means any reply of that class)."""
    ok = reply.code // 100 == expected if expected < 10 else reply.code == expected
    if not ok:
        raise SmtpReplyError(reply.code, reply.text, phase)


def lost(error: SmtpConnectionError, phase: str, after_body: bool) -> SmtpConnectionError:
    error.phase, error.after_body = phase, after_body
    return error


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


def prepare_data(data: bytes, *, canonical: bool = False) -> bytes:
    """The DATA body as it goes on the wire: CRLF line ends, dot-stuffed (RFC 5321
    4.5.2), ending in CRLF, then the ``.`` line.

    Other input costs three counts to check its line ends (only a bare CR or LF
    brings in the regex); ``canonical`` input (the byte templates' output contract)
    skips them: about 100 of the 160 µs this takes for a 63 KB message.
    """
    if not canonical:
        crlf = data.count(b"\r\n")
        if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
            data = _LINE_ENDS.sub(b"\r\n", data)
    data = data.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"
