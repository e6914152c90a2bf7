"""STARTTLS response injection (CVE-2011-0411's mirror image; aiosmtplib
GHSA-vxj7-4xrp-5vr4): bytes that arrive in clear text after the server's ``220`` to
STARTTLS must never be read as if they came inside TLS.

A small asyncio SMTP server on loopback with a real (self-signed) certificate
plays a man in the middle: it answers ``STARTTLS`` with the ``220`` and two
forged reply lines in one write, then does its side of the TLS handshake. It
records every line it receives, and whether it came over TLS. The same server,
behaving, shows the client still works over STARTTLS.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from digest.errors import TransportUnavailable
from digest.transports import smtp_wire
from digest.transports.base import Outcome, OutgoingMessage
from digest.transports.smtp import SmtpTransport
from digest.transports.smtp_codec import SmtpConnectionError
from tests.test_transport_smtp import make_cert

HOST = "127.0.0.1"
INJECTED = b"250-XINJECTED\r\n250 AUTH PLAIN XINJECTED\r\n"
REFUSAL = (
    "sent data after its STARTTLS reply, before the TLS handshake: "
    "refusing (possible response injection)"
)


class StarttlsServer:
    """An SMTP server that offers STARTTLS; ``after_220`` is written right after the
    ``220`` (in the same write, or in a later one with ``split``)."""

    CLEAR_EHLO = b"250-inject.example\r\n250-STARTTLS\r\n250-XCLEARONLY\r\n250 AUTH LOGIN\r\n"
    TLS_EHLO = b"250-inject.example\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n"

    def __init__(self, context: ssl.SSLContext, *, after_220: bytes = b"", split: bool = False):
        self.context, self.after_220, self.split = context, after_220, split
        self.lines: list[tuple[bool, bytes]] = []  # (over TLS, line)
        self.messages: list[bytes] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    @property
    def verbs(self) -> list[str]:
        return [line.split(b" ")[0].strip().decode().upper() for _, line in self.lines]

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, HOST, 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:  # a client that is still connected
            writer.transport.abort()
        async with asyncio.timeout(5):
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.append(writer)
        try:
            await self._session(reader, writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass  # the client hung up, or refused the handshake
        finally:
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = False
        writer.write(b"220 inject.example ESMTP\r\n")
        while line := await reader.readline():
            self.lines.append((tls, line))
            verb = line.split(b" ")[0].strip().upper()
            if verb == b"EHLO":
                writer.write(self.TLS_EHLO if tls else self.CLEAR_EHLO)
            elif verb == b"STARTTLS" and not tls:
                if self.split:
                    writer.write(b"220 Go ahead\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    writer.write(self.after_220)
                else:
                    writer.write(b"220 Go ahead\r\n" + self.after_220)  # ONE write
                await writer.drain()
                await writer.start_tls(self.context)
                tls = True
            elif verb == b"AUTH":
                writer.write(b"235 2.7.0 Authenticated\r\n")
            elif verb in (b"MAIL", b"RCPT", b"RSET"):
                writer.write(b"250 2.0.0 Ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                body = b""
                while (chunk := await reader.readuntil(b"\r\n")) != b".\r\n":
                    body += chunk
                self.messages.append(body)
                writer.write(b"250 2.0.0 Ok: queued as INJ1\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"502 5.5.2 Error: command not recognized\r\n")


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    cert_path, key_path = make_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return cert_path, context


@pytest.fixture
async def injecting(cert: tuple[Path, ssl.SSLContext]) -> AsyncIterator[StarttlsServer]:
    server = StarttlsServer(cert[1], after_220=INJECTED)
    yield server
    await server.stop()


@pytest.fixture
async def honest(cert: tuple[Path, ssl.SSLContext]) -> AsyncIterator[StarttlsServer]:
    server = StarttlsServer(cert[1])
    yield server
    await server.stop()


async def connect(port: int, cert: Path) -> smtp_wire.SmtpSession:
    context = smtp_wire.tls_context(validate_certs=True, ca_path=str(cert))
    return await smtp_wire.connect(
        HOST, port, security="starttls", timeout=5, local_hostname="client.example", context=context
    )


def message() -> OutgoingMessage:
    data = b"From: digest@verdicts.example.com\r\nSubject: t\r\n\r\nHello\r\n"
    return OutgoingMessage(1, "bounces@verdicts.example.com", "reader@example.org", "<m1@x>", data)


async def test_injected_replies_after_the_220_are_refused(
    injecting: StarttlsServer, cert: tuple[Path, ssl.SSLContext]
) -> None:
    port = await injecting.start()
    with pytest.raises(SmtpConnectionError) as info:
        await connect(port, cert[0])
    assert str(info.value) == f"{HOST}:{port} {REFUSAL}"  # one line
    assert info.value.phase == "STARTTLS"
    await asyncio.sleep(0.1)  # anything the client might still send would arrive now
    assert injecting.verbs == ["EHLO", "STARTTLS"]  # nothing after: no EHLO over TLS
    assert not any(tls for tls, _ in injecting.lines)


async def test_transport_sends_no_auth_and_no_mail_after_an_injection(
    injecting: StarttlsServer, cert: tuple[Path, ssl.SSLContext]
) -> None:
    port = await injecting.start()
    t = SmtpTransport(
        host=HOST,
        port=port,
        security="starttls",
        username="digest",
        password="s3cret",
        ca_path=cert[0],
        timeout=5,
    )
    with pytest.raises(TransportUnavailable, match="possible response injection") as info:
        await t.open()
    assert "\n" not in str(info.value)
    [result] = await t.send_batch([message()])
    assert result.outcome is Outcome.deferred  # never sent: the next run tries again
    assert "possible response injection" in result.detail
    await t.close()
    await asyncio.sleep(0.1)
    assert injecting.verbs == ["EHLO", "STARTTLS"] * 2  # open, then the send: nothing more
    assert injecting.messages == []


async def test_injection_in_a_later_segment_breaks_the_handshake(
    cert: tuple[Path, ssl.SSLContext],
) -> None:
    """Bytes arriving after the client stopped reading in clear go to the TLS layer,
    which cannot take them: the handshake fails, and nothing more is sent."""
    server = StarttlsServer(cert[1], after_220=INJECTED, split=True)
    port = await server.start()
    try:
        with pytest.raises(SmtpConnectionError):
            await connect(port, cert[0])
        await asyncio.sleep(0.1)
        assert server.verbs == ["EHLO", "STARTTLS"]
    finally:
        await server.stop()


async def test_honest_server_works_over_starttls_and_the_clear_ehlo_is_forgotten(
    honest: StarttlsServer, cert: tuple[Path, ssl.SSLContext]
) -> None:
    port = await honest.start()
    session = await connect(port, cert[0])
    # RFC 3207 4.2: only what the server said inside TLS counts.
    assert "XCLEARONLY" not in session.extensions.keywords
    assert session.extensions.auth == {"PLAIN"}
    assert session.pipelining
    await session.login("digest", "s3cret")
    reply = await session.send("bounces@verdicts.example.com", "reader@example.org", b"Hi\r\n")
    assert reply.code == 250
    await session.quit()
    assert honest.verbs == ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"]
    assert [tls for tls, _ in honest.lines] == [False, False] + [True] * 6
    assert honest.messages == [b"Hi\r\n"]


async def test_honest_server_through_the_transport(
    honest: StarttlsServer, cert: tuple[Path, ssl.SSLContext]
) -> None:
    port = await honest.start()
    t = SmtpTransport(
        host=HOST,
        port=port,
        security="starttls",
        username="digest",
        password="s3cret",
        ca_path=cert[0],
        timeout=5,
        connections=1,
    )
    await t.open()
    [result] = await t.send_batch([message()])
    await t.close()
    assert result.outcome is Outcome.sent and result.provider_id == "INJ1"
    assert honest.verbs.count("AUTH") == 1 and len(honest.messages) == 1
