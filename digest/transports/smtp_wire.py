"""A small SMTP client session on asyncio streams (RFC 5321, 2920, 3207, 4954).

Just what :mod:`digest.transports.smtp` needs: connect (plain, implicit TLS or
STARTTLS), EHLO, AUTH PLAIN/LOGIN, one-recipient transactions (pipelined when the
server offers PIPELINING), RSET and QUIT. Every read has a timeout. Errors::

    SmtpError                   anything this module raises on purpose
    ├── SmtpReplyError          the server answered, but not with success
    │   └── SmtpAuthError       AUTH refused (535 …)
    └── SmtpConnectionError     (also a ConnectionError) refused, lost, TLS failed,
        │                       STARTTLS not offered; the session is closed
        ├── SmtpTimeout         (also a TimeoutError) no answer in time
        └── SmtpProtocolError   a reply we cannot parse: the session is out of step
    SmtpAddressError            (a ValueError) a mailbox that could inject commands;
                                raised before anything is written

``SmtpReplyError`` and ``SmtpConnectionError`` carry ``phase`` ("MAIL", "RCPT",
"DATA" …) and ``after_body``: true once the message body went to the socket, when
the server may have the message whatever happens next.

Timeouts: ``timeout`` bounds connecting and each command's reply; the reply to the
end of the message body (the final ``.``) has its own, ``data_timeout``, because a
server may scan and queue the message before it answers: RFC 5321 4.5.3.2.6 ("DATA
Termination: 10 minutes") asks a client to wait that long, and giving up sooner
turns a message the server keeps into a "maybe delivered" one.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass, field

MAX_REPLY_LINE = 2048  # RFC 5321 4.5.3.1.5: 512 octets; leave room for chatty servers
MAX_REPLY_LINES = 100
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
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


def tls_context(*, validate_certs: bool, ca_path: str | None) -> ssl.SSLContext:
    """A client context: system CAs plus ``ca_path`` (a PEM bundle); without
    ``validate_certs`` neither the chain nor the host name is checked."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = validate_certs
    context.verify_mode = ssl.CERT_REQUIRED if validate_certs else ssl.CERT_NONE
    if ca_path is not None:
        context.load_verify_locations(cafile=ca_path)
    return context


def default_local_hostname() -> str:
    """The EHLO name when none is configured: the FQDN, an address literal if it is an IP."""
    name = socket.getfqdn()
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name
    return f"[{address}]" if address.version == 4 else f"[IPv6:{address}]"


def check_address(address: str, *, role: str) -> None:
    """Refuse a mailbox that could end the command line or the path early.

    Raises :class:`SmtpAddressError`. A quoted local part may hold spaces.
    """
    if _BAD_IN_ADDRESS.search(address):
        raise SmtpAddressError(f"{role} address {address!r} contains a control character or <>")
    if _UNQUOTED_SPACE.search(_QUOTED_LOCAL.sub("", address, count=1)):
        raise SmtpAddressError(f"{role} address {address!r} contains unquoted white space")


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


async def connect(
    host: str,
    port: int,
    *,
    security: str,
    timeout: float,
    local_hostname: str,
    context: ssl.SSLContext | None = None,
    data_timeout: float | None = None,
) -> SmtpSession:
    """Open a session: TCP (or TLS for ``security="tls"``), greeting, EHLO, and for
    ``"starttls"`` STARTTLS plus a second EHLO. No silent downgrade: a server that
    does not offer STARTTLS is an :class:`SmtpConnectionError`. ``data_timeout``:
    seconds to wait for the reply to the end of a message (default: ``timeout``).

    Raises :class:`SmtpConnectionError` (or a subclass), or :class:`SmtpReplyError`
    for a refused greeting, EHLO/HELO or STARTTLS.
    """
    if security not in ("none", "starttls", "tls"):
        raise ValueError(f"security must be none, starttls or tls, got {security!r}")
    if security != "none" and context is None:
        raise ValueError(f"security={security!r} needs an SSL context")
    if not local_hostname or any(c.isspace() or not c.isprintable() for c in local_hostname):
        raise ValueError(f"local_hostname {local_hostname!r} is empty or has spaces or controls")
    where = f"{host}:{port}"
    implicit = context if security == "tls" else None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=implicit, ssl_handshake_timeout=timeout if implicit else None
            )
    except TimeoutError as exc:
        raise SmtpTimeout(f"no connection to {where} within {timeout:g} s") from exc
    except ssl.SSLError as exc:  # before OSError: SSLError is one
        raise SmtpConnectionError(f"TLS with {where} failed: {exc}") from exc
    except OSError as exc:
        raise SmtpConnectionError(f"cannot connect to {where}: {exc}") from exc
    session = SmtpSession(reader, writer, timeout=timeout, where=where, data_timeout=data_timeout)
    try:
        await session._handshake(local_hostname, host, context if security == "starttls" else None)
    except BaseException:
        session.close()
        raise
    return session


class SmtpSession:
    """One connected SMTP session; one command sequence at a time (no locking)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        timeout: float,
        where: str,
        data_timeout: float | None = None,
    ) -> None:
        self._reader, self._writer = reader, writer
        self.timeout, self.where = timeout, where
        self.data_timeout = timeout if data_timeout is None else data_timeout
        self.extensions = Extensions()
        self.greeting = Reply(0, "")
        self._closed = False

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.extensions.keywords

    @property
    def is_connected(self) -> bool:
        """False once closed, or once the server hung up (EOF with nothing left to read)."""
        return not (self._closed or self._writer.is_closing() or self._reader.at_eof())

    async def login(self, username: str, password: str) -> None:
        """AUTH PLAIN (RFC 4616), or LOGIN when PLAIN is not offered or not accepted (504).

        Raises :class:`SmtpAuthError` when refused, :class:`SmtpError` when the server
        offers neither mechanism.
        """
        offered = self.extensions.auth
        if "PLAIN" not in offered and "LOGIN" not in offered:
            names = " ".join(sorted(offered)) or "no AUTH at all"
            raise SmtpError(f"{self.where} offers no AUTH PLAIN or LOGIN ({names})")
        if "PLAIN" in offered:
            token = _b64(b"\0" + username.encode() + b"\0" + password.encode())
            reply = await self._command(b"AUTH PLAIN " + token + b"\r\n", "AUTH")
            if reply.code == 235:
                return
            if reply.code != 504 or "LOGIN" not in offered:
                raise SmtpAuthError(reply.code, reply.text, "AUTH")
        reply = await self._command(b"AUTH LOGIN\r\n", "AUTH")
        for secret in (username, password):
            if reply.code != 334:
                break
            reply = await self._command(_b64(secret.encode()) + b"\r\n", "AUTH")
        if reply.code != 235:
            raise SmtpAuthError(reply.code, reply.text, "AUTH")

    async def send(
        self, sender: str, recipient: str, data: bytes, *, canonical: bool = False
    ) -> Reply:
        """One transaction: MAIL, RCPT, DATA, body. Returns the final 2xx reply.

        With PIPELINING the three commands go in one write and all three replies are
        read (RFC 2920 3.1: a refused MAIL/RCPT still leaves a DATA reply; if DATA was
        accepted anyway, a lone "." ends it). Raises :class:`SmtpAddressError` before
        writing anything, :class:`SmtpReplyError` for a refusal (the session stays
        usable: RSET it), :class:`SmtpConnectionError` when the session is gone.
        """
        check_address(sender, role="sender")
        check_address(recipient, role="recipient")
        if not recipient:
            raise SmtpAddressError("recipient address is empty")
        body = prepare_data(data, canonical=canonical)
        limit = self.extensions.max_size
        if limit and len(body) > limit:
            raise SmtpReplyError(
                552, f"message of {len(body)} bytes is over the server's SIZE {limit}", "SIZE"
            )
        mail, rcpt = self._envelope(sender, recipient, data)
        if self.pipelining:
            await self._write(mail + rcpt + b"DATA\r\n", "MAIL")
            await self._pipelined_replies()
        else:
            _expect(await self._command(mail, "MAIL"), 2, "MAIL")
            _expect(await self._command(rcpt, "RCPT"), 2, "RCPT")
            _expect(await self._command(b"DATA\r\n", "DATA"), 354, "DATA")
        # From the first byte of the body on, the server may end up with the message.
        await self._write(body, "DATA", after_body=True)
        reply = await self._read_reply("DATA", after_body=True, timeout=self.data_timeout)
        if reply.code // 100 != 2:
            raise SmtpReplyError(reply.code, reply.text, "DATA", after_body=True)
        return reply

    async def _pipelined_replies(self) -> None:
        refused: SmtpReplyError | None = None
        for phase in ("MAIL", "RCPT", "DATA"):
            reply = await self._read_reply(phase)
            if reply.code == 421:  # closing: no further replies will come
                raise SmtpReplyError(421, reply.text, phase)
            if refused is None and phase != "DATA" and reply.code // 100 != 2:
                refused = SmtpReplyError(reply.code, reply.text, phase)
        if refused is not None:
            if reply.code == 354:  # RFC 2920 3.1: DATA accepted anyway; end it empty
                await self._write(b".\r\n", "DATA")
                await self._read_reply("DATA")
            raise refused
        _expect(reply, 354, "DATA")

    async def rset(self) -> None:
        """RSET (RFC 5321 4.1.1.5); raises :class:`SmtpError` unless answered 2xx."""
        _expect(await self._command(b"RSET\r\n", "RSET"), 2, "RSET")

    async def quit(self) -> None:
        """QUIT and close; errors are swallowed (we are leaving anyway)."""
        try:
            if self.is_connected:
                await self._command(b"QUIT\r\n", "QUIT")
        except SmtpError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection without a word; safe to call twice."""
        self._closed = True
        self._writer.close()

    async def _handshake(self, name: str, host: str, starttls: ssl.SSLContext | None) -> None:
        self.greeting = await self._read_reply("connect")
        _expect(self.greeting, 220, "connect")
        await self._hello(name)
        if starttls is None:
            return
        if "STARTTLS" not in self.extensions.keywords:
            raise SmtpConnectionError(
                f"{self.where} does not offer STARTTLS; not continuing without TLS"
            )
        _expect(await self._command(b"STARTTLS\r\n", "STARTTLS"), 220, "STARTTLS")
        try:
            await self._writer.start_tls(
                starttls, server_hostname=host, ssl_handshake_timeout=self.timeout
            )
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise SmtpConnectionError(f"TLS with {self.where} failed: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            raise SmtpConnectionError(f"STARTTLS with {self.where} failed: {exc}") from exc
        self.extensions = Extensions()  # RFC 3207 4.2: forget what was said in clear
        await self._hello(name)

    async def _hello(self, name: str) -> None:
        reply = await self._command(b"EHLO " + name.encode() + b"\r\n", "EHLO")
        if reply.code == 250:
            self.extensions = Extensions.parse(reply)
            return
        if reply.code // 100 != 5:
            raise SmtpReplyError(reply.code, reply.text, "EHLO")
        # RFC 5321 3.2: a server that does not know EHLO may still speak HELO.
        _expect(await self._command(b"HELO " + name.encode() + b"\r\n", "HELO"), 250, "HELO")

    def _envelope(self, sender: str, recipient: str, data: bytes) -> tuple[bytes, bytes]:
        params = ""
        if not (sender.isascii() and recipient.isascii()):
            if "SMTPUTF8" not in self.extensions.keywords:
                raise SmtpAddressError(
                    f"non-ASCII address ({sender!r} → {recipient!r}) needs SMTPUTF8, "
                    f"which {self.where} does not offer"
                )
            params += " SMTPUTF8"  # RFC 6531 3.4
        if not data.isascii() and "8BITMIME" in self.extensions.keywords:
            params += " BODY=8BITMIME"  # RFC 6152
        return (
            f"MAIL FROM:<{sender}>{params}\r\n".encode(),
            f"RCPT TO:<{recipient}>\r\n".encode(),
        )

    async def _command(self, line: bytes, phase: str) -> Reply:
        await self._write(line, phase)
        return await self._read_reply(phase)

    async def _write(self, data: bytes, phase: str, *, after_body: bool = False) -> None:
        if self._closed:
            raise _lost(SmtpConnectionError(f"{self.where}: session closed"), phase, after_body)
        self._writer.write(data)
        try:
            async with asyncio.timeout(self.timeout):
                await self._writer.drain()
        except TimeoutError as exc:
            self.close()
            error = SmtpTimeout(f"{self.where} did not take our data within {self.timeout:g} s")
            raise _lost(error, phase, after_body) from exc
        except OSError as exc:
            self.close()
            raise _lost(SmtpConnectionError(f"{self.where}: {exc}"), phase, after_body) from exc

    async def _read_reply(
        self, phase: str, *, after_body: bool = False, timeout: float | None = None
    ) -> Reply:
        error: SmtpConnectionError
        wait = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                reply = await self._read_lines()
        except TimeoutError as exc:
            self.close()
            error = SmtpTimeout(f"{self.where} did not answer within {wait:g} s")
            raise _lost(error, phase, after_body) from exc
        except asyncio.IncompleteReadError as exc:
            self.close()
            error = SmtpConnectionError(f"{self.where} closed the connection")
            raise _lost(error, phase, after_body) from exc
        except asyncio.LimitOverrunError as exc:
            self.close()
            error = SmtpProtocolError(f"{self.where} sent a reply line without an end")
            raise _lost(error, phase, after_body) from exc
        except SmtpProtocolError as exc:
            self.close()
            raise _lost(exc, phase, after_body) from None
        except OSError as exc:
            self.close()
            raise _lost(SmtpConnectionError(f"{self.where}: {exc}"), phase, after_body) from exc
        if reply.code == 421:  # RFC 5321 3.8: the server is closing the channel
            self.close()
        return reply

    async def _read_lines(self) -> Reply:
        code, texts = b"", list[str]()
        while True:
            line = await self._reader.readuntil(b"\n")
            if len(line) > MAX_REPLY_LINE or len(texts) >= MAX_REPLY_LINES:
                raise SmtpProtocolError(f"{self.where} sent an over-long reply")
            line = line.rstrip(b"\r\n")
            this, sep = line[:3], line[3:4]
            if not (this.isdigit() and b"2" <= this[:1] <= b"5" and sep in (b" ", b"-", b"")):
                raise SmtpProtocolError(f"{self.where} sent a malformed reply line {line[:80]!r}")
            if code and this != code:
                raise SmtpProtocolError(f"{self.where} changed reply code mid-reply: {line!r}")
            code = this
            texts.append(line[4:].decode("utf-8", "replace"))
            if sep != b"-":
                return Reply(int(code), "\n".join(texts))


def _expect(reply: Reply, expected: int, phase: str) -> None:
    """Raise :class:`SmtpReplyError` unless ``reply.code`` is ``expected`` (a single
    digit means any reply of that class)."""
    ok = reply.code // 100 == expected if expected < 10 else reply.code == expected
    if not ok:
        raise SmtpReplyError(reply.code, reply.text, phase)


def _lost(error: SmtpConnectionError, phase: str, after_body: bool) -> SmtpConnectionError:
    error.phase, error.after_body = phase, after_body
    return error


def _b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)
