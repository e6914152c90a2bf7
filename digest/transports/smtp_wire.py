"""A small SMTP client session on asyncio streams (RFC 5321, 2920, 3207, 4954).

Just what :mod:`digest.transports.smtp` needs: connect (plain, implicit TLS or
STARTTLS, refusing clear-text bytes read past its ``220``: ``refuse_early_data``),
EHLO, AUTH (PLAIN, LOGIN, XOAUTH2: :mod:`digest.transports.smtp_auth`), one-recipient
transactions (pipelined when the server offers PIPELINING), RSET and QUIT. Every
read has a timeout. The errors, replies and command lines are
:mod:`digest.transports.smtp_codec`'s (its docstring draws the error tree).

Timeouts: ``timeout`` bounds connecting and each command's reply; the reply to the
end of the message body (the final ``.``) has its own, ``data_timeout``, because a
server may scan and queue the message before it answers: RFC 5321 4.5.3.2.6 ("DATA
Termination: 10 minutes") asks a client to wait that long, and giving up sooner
turns a message the server keeps into a "maybe delivered" one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl

from digest.transports import smtp_auth
from digest.transports.smtp_codec import (
    Extensions,
    Reply,
    SmtpAddressError,
    SmtpConnectionError,
    SmtpError,
    SmtpProtocolError,
    SmtpReplyError,
    SmtpTimeout,
    check_address,
    envelope,
    expect,
    lost,
    prepare_data,
    read_reply,
    refuse_early_data,
)


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

    async def login(self, username: str, secret: str, *, mechanism: str = "auto") -> None:
        """AUTH with a password (or for ``"xoauth2"`` an access token); the mechanisms
        and errors: :mod:`digest.transports.smtp_auth`."""
        auth = smtp_auth.authenticate
        await auth(self._command, self.extensions.auth, self.where, username, secret, mechanism)

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
        mail, rcpt = envelope(sender, recipient, data, self.extensions, where=self.where)
        if self.pipelining:
            await self._write(mail + rcpt + b"DATA\r\n", "MAIL")
            await self._pipelined_replies()
        else:
            expect(await self._command(mail, "MAIL"), 2, "MAIL")
            expect(await self._command(rcpt, "RCPT"), 2, "RCPT")
            expect(await self._command(b"DATA\r\n", "DATA"), 354, "DATA")
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
        expect(reply, 354, "DATA")

    async def rset(self) -> None:
        """RSET (RFC 5321 4.1.1.5); raises :class:`SmtpError` unless answered 2xx."""
        expect(await self._command(b"RSET\r\n", "RSET"), 2, "RSET")

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
        expect(self.greeting, 220, "connect")
        await self._hello(name)
        if starttls is None:
            return
        if "STARTTLS" not in self.extensions.keywords:
            raise SmtpConnectionError(
                f"{self.where} does not offer STARTTLS; not continuing without TLS"
            )
        expect(await self._command(b"STARTTLS\r\n", "STARTTLS"), 220, "STARTTLS")
        self.extensions = Extensions()  # RFC 3207 4.2: forget what was said in clear
        # start_tls() stops the clear-text reads before it yields (bar a full write
        # buffer); the check after the handshake catches what came in between.
        refuse_early_data(self._reader, self.where, handshake_done=False)
        try:
            await self._writer.start_tls(
                starttls, server_hostname=host, ssl_handshake_timeout=self.timeout
            )
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise SmtpConnectionError(f"TLS with {self.where} failed: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            raise SmtpConnectionError(f"STARTTLS with {self.where} failed: {exc}") from exc
        refuse_early_data(self._reader, self.where, handshake_done=True)
        await self._hello(name)

    async def _hello(self, name: str) -> None:
        reply = await self._command(b"EHLO " + name.encode() + b"\r\n", "EHLO")
        if reply.code == 250:
            self.extensions = Extensions.parse(reply)
            return
        if reply.code // 100 != 5:
            raise SmtpReplyError(reply.code, reply.text, "EHLO")
        # RFC 5321 3.2: a server that does not know EHLO may still speak HELO.
        expect(await self._command(b"HELO " + name.encode() + b"\r\n", "HELO"), 250, "HELO")

    async def _command(self, line: bytes, phase: str) -> Reply:
        await self._write(line, phase)
        return await self._read_reply(phase)

    async def _write(self, data: bytes, phase: str, *, after_body: bool = False) -> None:
        if self._closed:
            raise lost(SmtpConnectionError(f"{self.where}: session closed"), phase, after_body)
        self._writer.write(data)
        try:
            async with asyncio.timeout(self.timeout):
                await self._writer.drain()
        except TimeoutError as exc:
            self.close()
            error = SmtpTimeout(f"{self.where} did not take our data within {self.timeout:g} s")
            raise lost(error, phase, after_body) from exc
        except OSError as exc:
            self.close()
            raise lost(SmtpConnectionError(f"{self.where}: {exc}"), phase, after_body) from exc

    async def _read_reply(
        self, phase: str, *, after_body: bool = False, timeout: float | None = None
    ) -> Reply:
        error: SmtpConnectionError
        wait = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                reply = await read_reply(self._reader, where=self.where)
        except TimeoutError as exc:
            self.close()
            error = SmtpTimeout(f"{self.where} did not answer within {wait:g} s")
            raise lost(error, phase, after_body) from exc
        except asyncio.IncompleteReadError as exc:
            self.close()
            error = SmtpConnectionError(f"{self.where} closed the connection")
            raise lost(error, phase, after_body) from exc
        except asyncio.LimitOverrunError as exc:
            self.close()
            error = SmtpProtocolError(f"{self.where} sent a reply line without an end")
            raise lost(error, phase, after_body) from exc
        except SmtpProtocolError as exc:
            self.close()
            raise lost(exc, phase, after_body) from None
        except OSError as exc:
            self.close()
            raise lost(SmtpConnectionError(f"{self.where}: {exc}"), phase, after_body) from exc
        if reply.code == 421:  # RFC 5321 3.8: the server is closing the channel
            self.close()
        return reply
