"""The small SMTP client (``digest.transports.smtp_wire``) against real loopback servers.

aiosmtpd checks what a real server makes of our bytes (dot-stuffing, line ends);
a scripted asyncio server plays what aiosmtpd will not: replies held back until
the whole pipelined group has arrived, DATA accepted despite a refused RCPT,
multi-line and malformed replies, a server that dies or goes silent.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from digest.transports import smtp_codec, smtp_wire
from digest.transports.smtp_codec import (
    SmtpAddressError,
    SmtpAuthError,
    SmtpConnectionError,
    SmtpProtocolError,
    SmtpReplyError,
    SmtpTimeout,
)
from digest.transports.smtp_wire import SmtpSession, prepare_data
from tests.smtp_sink import free_port
from tests.test_transport_smtp import make_cert

HOST = "127.0.0.1"
SENDER = "bounces@verdicts.example.com"


class Fake:
    """A scripted SMTP server. ``ehlo`` lists the extension lines; ``rcpt`` maps a
    recipient's local part to its reply; ``after_body`` is the final reply, or
    "die" / "silent". With ``hold`` it answers MAIL and RCPT only once DATA has
    arrived: a lockstep client would wait for ever."""

    def __init__(self, *, ehlo: tuple[str, ...] = ("PIPELINING",)) -> None:
        self.ehlo = list(ehlo)
        self.greeting: bytes | None = b"220 fake.example ESMTP\r\n"
        self.rcpt: dict[str, str] = {"nobody": "550 5.1.1 no such user"}
        self.data_despite_refusal = False
        self.hold = False
        self.after_body = "250-2.0.0 Ok\r\n250 2.0.0 queued as F{n}"
        self.ehlo_reply: str | None = None
        self.auth: list[str] = []  # AUTH command arguments
        self.auth_steps: list[tuple[bytes, str]] = []  # (expected line, reply) of AUTH LOGIN
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.lines: list[bytes] = []  # every command line, in order
        self.messages: list[bytes] = []  # bodies as received (still dot-stuffed)
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, HOST, 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        self.stopping.set()  # handlers end on their own: a cancelled one is logged
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.greeting is None:
            await self.stopping.wait()
            return
        writer.write(self.greeting or b"")
        held: list[str] = []
        mail_ok = rcpt_ok = False
        while line := await self._line(reader):
            self.lines.append(line)
            if self.auth_steps:
                expected, reply = self.auth_steps.pop(0)
                if line != expected:
                    self.auth_steps, reply = [], "535 5.7.8 authentication failed"
                writer.write(f"{reply}\r\n".encode())
                continue
            verb, _, arg = line.decode().strip().partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                reply = self.ehlo_reply or "\r\n".join(
                    [f"250-fake.example greets {arg}"]
                    + [f"250-{e}" for e in self.ehlo[:-1]]
                    + [f"250 {self.ehlo[-1]}" if self.ehlo else "250 HELP"]
                )
            elif verb == "HELO":
                reply = "250 fake.example"
            elif verb == "AUTH":
                reply = self._auth(arg)
            elif verb == "MAIL":
                mail_ok, rcpt_ok = True, False
                reply = "250 2.1.0 Ok"
            elif verb == "RCPT":
                local = arg.split("<", 1)[1].split("@", 1)[0]
                reply = self.rcpt.get(local, "250 2.1.5 Ok")
                rcpt_ok = rcpt_ok or reply.startswith("2")
            elif verb == "DATA":
                if self.hold:
                    writer.write("".join(f"{r}\r\n" for r in held).encode())
                    held.clear()
                if not (mail_ok and rcpt_ok) and not self.data_despite_refusal:
                    reply = "554 5.5.1 Error: no valid recipients"
                else:
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    body = await self._body(reader)
                    self.messages.append(body)
                    if self.after_body == "die":
                        writer.transport.abort()
                        return
                    if self.after_body == "silent":
                        await self.stopping.wait()
                        return
                    reply = self.after_body.format(n=len(self.messages))
                mail_ok = rcpt_ok = False
            elif verb == "RSET":
                mail_ok = rcpt_ok = False
                reply = "250 2.0.0 Ok"
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                return
            else:
                reply = "502 5.5.2 Error: command not recognized"
            if self.hold and verb in ("MAIL", "RCPT"):
                held.append(reply)
            else:
                writer.write(f"{reply}\r\n".encode())

    async def _line(self, reader: asyncio.StreamReader) -> bytes:
        """The next line, or b"" at EOF or when the test is over."""
        read = asyncio.ensure_future(reader.readline())
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait((read, stop), return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not read.done():
            read.cancel()
            return b""
        return read.result()

    def _auth(self, arg: str) -> str:
        self.auth.append(arg)
        if arg.upper() == "LOGIN":
            user, password = base64.b64encode(b"digest"), base64.b64encode(b"s3cret")
            self.auth_steps = [
                (user + b"\r\n", "334 UGFzc3dvcmQ6"),
                (password + b"\r\n", "235 2.7.0 Authenticated"),
            ]
            return "334 VXNlcm5hbWU6"
        return "504 5.5.4 mechanism not supported"

    async def _body(self, reader: asyncio.StreamReader) -> bytes:
        chunks = []
        while (line := await reader.readuntil(b"\r\n")) != b".\r\n":
            chunks.append(line)
        return b"".join(chunks)


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    server = Fake()
    yield server
    await server.stop()


async def session_for(fake: Fake, *, timeout: float = 2) -> SmtpSession:
    port = await fake.start()
    return await smtp_wire.connect(
        HOST, port, security="none", timeout=timeout, local_hostname="client.example"
    )


async def test_multiline_replies_and_extensions(fake: Fake) -> None:
    fake.ehlo = ["PIPELINING", "SIZE 10240000", "AUTH=LOGIN PLAIN", "8BITMIME", "STARTTLS"]
    session = await session_for(fake)
    ext = session.extensions
    assert session.pipelining
    assert ext.max_size == 10240000
    assert ext.auth == {"LOGIN", "PLAIN"}
    assert {"8BITMIME", "STARTTLS"} <= ext.keywords.keys()
    reply = await session.send(SENDER, "a@example.org", b"Subject: x\r\n\r\nhi\r\n")
    assert reply.code == 250
    assert reply.text == "2.0.0 Ok\n2.0.0 queued as F1"
    await session.quit()
    assert not session.is_connected


async def test_pipelined_group_is_one_write(fake: Fake) -> None:
    """The server answers MAIL and RCPT only after DATA has arrived: a client that
    waited for each reply would time out."""
    fake.hold = True
    session = await session_for(fake, timeout=1)
    for i in range(3):
        reply = await session.send(SENDER, f"r{i}@example.org", b"Subject: x\r\n\r\nhi\r\n")
        assert reply.code == 250
    assert len(fake.messages) == 3
    await session.quit()


async def test_refused_rcpt_in_a_pipeline_reads_the_data_reply(fake: Fake) -> None:
    fake.hold = True
    session = await session_for(fake)
    with pytest.raises(SmtpReplyError) as info:
        await session.send(SENDER, "nobody@example.org", b"x\r\n")
    assert (info.value.code, info.value.phase, info.value.after_body) == (550, "RCPT", False)
    assert session.is_connected  # the 554 to DATA was read: still in step
    await session.rset()
    reply = await session.send(SENDER, "ok@example.org", b"Subject: x\r\n\r\nhi\r\n")
    assert reply.code == 250 and reply.text.endswith("F1")
    commands = [line.split()[0] for line in fake.lines[1:]]
    assert commands == b"MAIL RCPT DATA RSET MAIL RCPT DATA".split()
    await session.quit()


async def test_data_accepted_despite_a_refused_rcpt_is_ended_with_a_lone_dot(fake: Fake) -> None:
    fake.data_despite_refusal = True
    session = await session_for(fake)
    with pytest.raises(SmtpReplyError) as info:
        await session.send(SENDER, "nobody@example.org", b"Subject: secret\r\n\r\nbody\r\n")
    assert info.value.code == 550
    assert fake.messages == [b""]  # RFC 2920 3.1: not a byte of the message
    await session.rset()
    assert (await session.send(SENDER, "ok@example.org", b"x\r\n")).code == 250
    await session.quit()


async def test_lockstep_without_pipelining(fake: Fake) -> None:
    fake.ehlo = ["8BITMIME"]
    session = await session_for(fake)
    assert not session.pipelining
    with pytest.raises(SmtpReplyError) as info:
        await session.send(SENDER, "nobody@example.org", b"x\r\n")
    assert info.value.phase == "RCPT"
    assert [line.split()[0] for line in fake.lines[1:]] == [b"MAIL", b"RCPT"]
    await session.rset()
    assert (await session.send(SENDER, "ok@example.org", "é\r\n".encode())).code == 250
    assert fake.lines[-3].endswith(b"BODY=8BITMIME\r\n")  # 8-bit body, server offers it
    await session.quit()


async def test_421_closes_the_session(fake: Fake) -> None:
    fake.rcpt["busy"] = "421 4.3.2 shutting down"
    session = await session_for(fake)
    with pytest.raises(SmtpReplyError) as info:
        await session.send(SENDER, "busy@example.org", b"x\r\n")
    assert (info.value.code, info.value.phase) == (421, "RCPT")
    assert not session.is_connected


@pytest.mark.parametrize(
    "address",
    [
        "x@example.org\r\nRCPT TO:<victim@example.org>",
        "x@example.org\n",
        "x\r@example.org",
        "x\x00@example.org",
        "x\x85@example.org",
        "x@example.org> SIZE=1",
        "<x@example.org",
        "x y@example.org",
        "",
    ],
)
async def test_dangerous_addresses_are_refused_before_writing(fake: Fake, address: str) -> None:
    session = await session_for(fake)
    written = len(fake.lines)
    for sender, recipient in ((address, "ok@example.org"), (SENDER, address)):
        if sender == "":  # the null reverse-path <> is a valid sender
            continue
        with pytest.raises(SmtpAddressError):
            await session.send(sender, recipient, b"x\r\n")
    assert len(fake.lines) == written
    assert (await session.send(SENDER, '"x y"@example.org', b"x\r\n")).code == 250
    await session.quit()


def test_check_address_allows_the_null_sender_and_quoted_spaces() -> None:
    smtp_wire.check_address("", role="sender")
    smtp_wire.check_address('"john doe"@example.org', role="recipient")
    with pytest.raises(SmtpAddressError):
        smtp_wire.check_address('"john\r\ndoe"@example.org', role="recipient")


async def test_server_dying_after_the_body_is_after_body(fake: Fake) -> None:
    fake.after_body = "die"
    session = await session_for(fake)
    with pytest.raises(SmtpConnectionError) as info:
        await session.send(SENDER, "ok@example.org", b"x\r\n")
    assert info.value.after_body and info.value.phase == "DATA"
    assert fake.messages == [b"x\r\n"]
    assert not session.is_connected


async def test_silent_server_times_out_after_the_body(fake: Fake) -> None:
    fake.after_body = "silent"
    session = await session_for(fake, timeout=0.3)
    with pytest.raises(SmtpTimeout) as info:
        await session.send(SENDER, "ok@example.org", b"x\r\n")
    assert info.value.after_body
    assert not session.is_connected


async def test_server_that_never_greets_times_out(fake: Fake) -> None:
    fake.greeting = None
    with pytest.raises(SmtpTimeout):
        await session_for(fake, timeout=0.3)


async def test_refused_connection() -> None:
    with pytest.raises(SmtpConnectionError, match="cannot connect"):
        await smtp_wire.connect(
            HOST, free_port(), security="none", timeout=2, local_hostname="client.example"
        )


@pytest.mark.parametrize(
    "greeting",
    [
        b"hello there\r\n",
        b"220-first\r\n250 second\r\n",
        b"2200 too many digits\r\n",
        b"220 " + b"x" * 5000 + b"\r\n",
    ],
)
async def test_malformed_replies_are_protocol_errors(fake: Fake, greeting: bytes) -> None:
    fake.greeting = greeting
    with pytest.raises(SmtpProtocolError):
        await session_for(fake)


async def test_greeting_refused(fake: Fake) -> None:
    fake.greeting = b"554 5.3.2 no service for you\r\n"
    with pytest.raises(SmtpReplyError) as info:
        await session_for(fake)
    assert (info.value.code, info.value.phase) == (554, "connect")


async def test_helo_when_ehlo_is_unknown(fake: Fake) -> None:
    fake.ehlo_reply = "500 5.5.1 what?"
    session = await session_for(fake)
    assert not session.pipelining
    assert [line.split()[0] for line in fake.lines] == [b"EHLO", b"HELO"]
    assert (await session.send(SENDER, "ok@example.org", b"x\r\n")).code == 250
    await session.quit()


async def test_starttls_required_but_not_offered(fake: Fake) -> None:
    port = await fake.start()
    context = smtp_wire.tls_context(validate_certs=True, ca_path=None)
    with pytest.raises(SmtpConnectionError, match="does not offer STARTTLS"):
        await smtp_wire.connect(
            HOST,
            port,
            security="starttls",
            timeout=2,
            local_hostname="client.example",
            context=context,
        )


async def test_auth_login_when_plain_is_not_offered(fake: Fake) -> None:
    fake.ehlo = ["AUTH LOGIN"]
    session = await session_for(fake)
    await session.login("digest", "s3cret")
    assert fake.auth == ["LOGIN"]
    await session.quit()


async def test_auth_login_after_plain_is_not_supported(fake: Fake) -> None:
    fake.ehlo = ["AUTH PLAIN LOGIN"]
    session = await session_for(fake)
    await session.login("digest", "s3cret")  # the fake answers PLAIN with 504
    assert [a.split()[0] for a in fake.auth] == ["PLAIN", "LOGIN"]
    await session.quit()


async def test_auth_refused(fake: Fake) -> None:
    fake.ehlo = ["AUTH LOGIN"]
    session = await session_for(fake)
    with pytest.raises(SmtpAuthError) as info:
        await session.login("digest", "wrong")
    assert info.value.phase == "AUTH"
    session.close()


async def test_no_usable_auth_mechanism(fake: Fake) -> None:
    fake.ehlo = ["AUTH CRAM-MD5"]
    session = await session_for(fake)
    with pytest.raises(smtp_wire.SmtpError, match="CRAM-MD5"):
        await session.login("digest", "s3cret")
    session.close()


async def test_size_limit_is_checked_before_sending(fake: Fake) -> None:
    fake.ehlo = ["PIPELINING", "SIZE 100"]
    session = await session_for(fake)
    with pytest.raises(SmtpReplyError) as info:
        await session.send(SENDER, "ok@example.org", b"x" * 200 + b"\r\n")
    assert (info.value.code, info.value.phase) == (552, "SIZE")
    assert len(fake.lines) == 1  # only EHLO
    await session.quit()


# Against aiosmtpd: what a real server reconstructs from our bytes.


class Keep:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.contents.append(bytes(envelope.content))
        return "250 2.0.0 Ok: queued as K1"


@pytest.fixture
def aiosmtpd_server() -> Iterator[tuple[int, Keep]]:
    handler = Keep()
    port = free_port()
    controller = Controller(handler, hostname=HOST, port=port)
    controller.start()
    yield port, handler
    controller.stop()


async def send_to(port: int, data: bytes) -> None:
    session = await smtp_wire.connect(
        HOST, port, security="none", timeout=5, local_hostname="client.example"
    )
    reply = await session.send(SENDER, "reader@example.org", data)
    assert reply.code == 250
    await session.quit()


async def test_dot_stuffing_arrives_intact(aiosmtpd_server: tuple[int, Keep]) -> None:
    port, handler = aiosmtpd_server
    data = (
        b"From: a@example.org\r\nSubject: dots\r\n\r\n.first body line\r\n"
        b"..two dots\r\n.\r\nmiddle\r\n. space\r\n...\r\nlast\r\n."
    )
    await send_to(port, data)
    [got] = handler.contents
    assert got == data + b"\r\n"  # a final line end is added, nothing else changes
    parsed = message_from_bytes(got, policy=policy.SMTP)
    assert parsed["Subject"] == "dots"
    payload = parsed.get_payload()
    assert isinstance(payload, str)
    assert payload.startswith(".first body line\r\n..two dots\r\n.\r\n")


async def test_bare_line_ends_are_normalized(aiosmtpd_server: tuple[int, Keep]) -> None:
    port, handler = aiosmtpd_server
    await send_to(port, b"Subject: lf\n\n.dot\nmac\rold\r\nok\n")
    assert handler.contents == [b"Subject: lf\r\n\r\n.dot\r\nmac\r\nold\r\nok\r\n"]


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b".a\r\n.\r\n", b"..a\r\n..\r\n.\r\n"),
        (b"a\r\n.b", b"a\r\n..b\r\n.\r\n"),
        (b"a\nb\rc", b"a\r\nb\r\nc\r\n.\r\n"),
        (b"a\n.b\r\n", b"a\r\n..b\r\n.\r\n"),
        (b"a\r\r\n", b"a\r\n\r\n.\r\n"),
        (b"", b".\r\n"),
    ],
)
def test_prepare_data(data: bytes, wire: bytes) -> None:
    assert prepare_data(data) == wire
    if b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b""):
        # What a caller vouches is canonical CRLF goes out the same without the check.
        assert prepare_data(data, canonical=True) == wire


def test_canonical_input_skips_the_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    """The common case stays cheap: three counts and one bytes.replace, no regex."""
    calls: list[bytes] = []
    real = smtp_codec._LINE_ENDS

    class Spy:
        def sub(self, repl: bytes, data: bytes) -> bytes:
            calls.append(data)
            return real.sub(repl, data)

    monkeypatch.setattr(smtp_codec, "_LINE_ENDS", Spy())
    prepare_data(b"Subject: x\r\n\r\n" + b"line\r\n" * 1000)
    assert calls == []
    assert prepare_data(b"Subject: x\n\nline\n") == b"Subject: x\r\n\r\nline\r\n.\r\n"
    assert len(calls) == 1


# TLS: implicit (port 465 style) and STARTTLS, with the certificate checked or not.


@pytest.fixture
def implicit_tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, Keep]]:
    cert, key = make_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = Keep()
    port = free_port()
    controller = Controller(handler, hostname=HOST, port=port, ssl_context=context)
    controller.start()
    yield port, cert, handler
    controller.stop()


async def tls_session(port: int, context: ssl.SSLContext) -> SmtpSession:
    return await smtp_wire.connect(
        HOST, port, security="tls", timeout=5, local_hostname="client.example", context=context
    )


async def test_implicit_tls(implicit_tls_server: tuple[int, Path, Keep]) -> None:
    port, cert, handler = implicit_tls_server
    trusted = smtp_wire.tls_context(validate_certs=True, ca_path=str(cert))
    session = await tls_session(port, trusted)
    reply = await session.send(SENDER, "reader@example.org", b"Subject: tls\r\n\r\nx\r\n")
    assert reply.code == 250
    await session.quit()
    assert handler.contents == [b"Subject: tls\r\n\r\nx\r\n"]


async def test_implicit_tls_untrusted_certificate(
    implicit_tls_server: tuple[int, Path, Keep],
) -> None:
    port, _, _ = implicit_tls_server
    with pytest.raises(SmtpConnectionError, match="certificate verify failed"):
        await tls_session(port, smtp_wire.tls_context(validate_certs=True, ca_path=None))
    unchecked = smtp_wire.tls_context(validate_certs=False, ca_path=None)
    session = await tls_session(port, unchecked)  # validate_certs = false: anything goes
    await session.quit()
