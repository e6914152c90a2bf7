"""The SMTP transport against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from digest.errors import TransportUnavailable
from digest.transports.base import Outcome, OutgoingMessage
from digest.transports.pacing import TokenBucket
from digest.transports.smtp import SmtpTransport

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def message(i: int, recipient: str | None = None) -> OutgoingMessage:
    to = recipient or f"reader{i}@example.org"
    data = (
        f"From: digest@verdicts.example.com\r\nTo: {to}\r\nSubject: test {i}\r\n"
        f"Message-ID: <m{i}@verdicts.example.com>\r\n\r\nHello {i}\r\n"
        ".a line starting with a dot\r\n.\r\nend\r\n"
    ).encode()
    return OutgoingMessage(
        delivery_id=i,
        sender="bounces@verdicts.example.com",
        recipient=to,
        message_id=f"<m{i}@verdicts.example.com>",
        content=data,
        tag="2026-W48",
    )


class Recorder:
    """Accepts and records; scripted answers by recipient local part."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []
        self.sessions: list[Any] = []
        self.data_delay = 0.0

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if not any(s is session for s in self.sessions):
            self.sessions.append(session)
        if address.startswith("blocked@"):
            return "553 5.7.1 sender not allowed"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        local = address.split("@")[0]
        if local == "busy":
            return "451 4.3.0 try again later"
        if local == "nobody":
            return "550 5.1.1 no such user"
        if local == "slow":
            await asyncio.sleep(1.5)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        rcpt = envelope.rcpt_tos[0].split("@")[0]
        if rcpt == "spam":
            return "554 5.7.1 message refused as spam"
        if rcpt == "full":
            return "452 4.2.2 mailbox full"
        if rcpt == "drop":  # the connection dies after DATA, before the final reply
            server.transport.close()
            return "250 never seen"
        if rcpt == "hang":
            await asyncio.sleep(1.5)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return f"250 2.0.0 Ok: queued as Q{len(self.received)}"


class PipeliningRecorder(Recorder):
    """The same server, advertising RFC 2920 PIPELINING (aiosmtpd handles it, but does
    not say so): the transport then writes MAIL, RCPT and DATA together."""

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must do what aiosmtpd would
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"digest" and data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)


@pytest.fixture(params=["lockstep", "pipelining"])
def recorder(request: pytest.FixtureRequest) -> Recorder:
    return PipeliningRecorder() if request.param == "pipelining" else Recorder()


@pytest.fixture
def plain_server(recorder: Recorder) -> Iterator[int]:
    port = free_port()
    controller = Controller(
        recorder,
        hostname=HOST,
        port=port,
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    yield port
    controller.stop()


def make_cert(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(recorder: Recorder, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    cert, key = make_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = free_port()
    controller = Controller(
        recorder,
        hostname=HOST,
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    controller.start()
    yield port, cert
    controller.stop()


def transport(port: int, **kw: Any) -> SmtpTransport:
    kw.setdefault("security", "none")
    return SmtpTransport(host=HOST, port=port, timeout=kw.pop("timeout", 5), **kw)


async def send_all(t: SmtpTransport, messages: list[OutgoingMessage]) -> list[Any]:
    batches = await asyncio.gather(*(t.send_batch([m]) for m in messages))
    return [result for batch in batches for result in batch]


async def test_sends_byte_for_byte_and_reuses_connections(
    plain_server: int, recorder: Recorder
) -> None:
    t = transport(plain_server, connections=3)
    await t.open()
    messages = [message(i) for i in range(12)]
    results = await send_all(t, messages)
    await t.close()
    await t.close()  # safe twice
    assert [r.outcome for r in results] == [Outcome.sent] * 12
    assert [r.delivery_id for r in results] == list(range(12))
    assert all(r.provider_id.startswith("Q") for r in results)
    assert len(recorder.sessions) <= 3
    assert t.sessions <= 3
    got = {rcpt[0]: content for _, rcpt, content in recorder.received}
    for m in messages:
        assert got[m.recipient] == m.data
    assert {sender for sender, _, _ in recorder.received} == {"bounces@verdicts.example.com"}


async def test_a_batch_of_five_goes_out_in_one_call(plain_server: int, recorder: Recorder) -> None:
    t = transport(plain_server, connections=2, batch_size=5)
    await t.open()
    messages = [message(i) for i in range(5)]
    with pytest.raises(ValueError, match="max_batch=5"):
        await t.send_batch([*messages, message(5)])
    results = await t.send_batch(messages)
    await t.close()
    assert t.max_batch == 5
    assert [r.outcome for r in results] == [Outcome.sent] * 5
    assert {rcpt[0] for _, rcpt, _ in recorder.received} == {m.recipient for m in messages}
    assert t.sessions <= 2  # open()'s connection, and the one the batch took


async def test_classifies_refusals(plain_server: int, recorder: Recorder) -> None:
    t = transport(plain_server, connections=1)
    await t.open()
    cases = {
        "busy@example.org": Outcome.deferred,  # 451 at RCPT
        "nobody@example.org": Outcome.rejected,  # 550 at RCPT
        "spam@example.org": Outcome.rejected,  # 554 after DATA
        "full@example.org": Outcome.deferred,  # 452 after DATA
        "ok@example.org": Outcome.sent,
    }
    for i, (address, expected) in enumerate(cases.items()):
        [result] = await t.send_batch([message(i, address)])
        assert result.outcome is expected, (address, result)
    [nobody] = await t.send_batch([message(9, "nobody@example.org")])
    assert "550" in nobody.detail and "no such user" in nobody.detail
    blocked = OutgoingMessage(99, "blocked@example.org", "x@example.org", "<b@x>", b"x\r\n")
    [mail] = await t.send_batch([blocked])
    assert mail.outcome is Outcome.failed and "553" in mail.detail
    session = t._slots[0].session
    assert session is not None
    assert session.pipelining is isinstance(recorder, PipeliningRecorder)
    await t.close()
    assert t.sessions == 1  # refusals are answers: RSET and keep the session
    assert [rcpt for _, rcpt, _ in recorder.received] == [["ok@example.org"]]


@pytest.mark.parametrize(
    ("sender", "recipient"),
    [
        ("bounces@verdicts.example.com", "x@example.org\r\nRCPT TO:<victim@example.org>"),
        ("bounces@verdicts.example.com", "x@example.org> NOTIFY=NEVER"),
        ("bounces@verdicts.example.com\n", "x@example.org"),
        ("bounces@verdicts.example.com", "x\x00@example.org"),
        ("bounces@verdicts.example.com", "x y@example.org"),
    ],
)
async def test_addresses_that_could_inject_are_rejected_unsent(
    plain_server: int, recorder: Recorder, sender: str, recipient: str
) -> None:
    t = transport(plain_server, connections=1)
    await t.open()
    bad = OutgoingMessage(7, sender, recipient, "<i@x>", b"Subject: x\r\n\r\nx\r\n")
    [result] = await t.send_batch([bad])
    assert result.outcome is Outcome.rejected
    assert "address" in result.detail
    [ok] = await t.send_batch([message(8)])
    await t.close()
    assert ok.outcome is Outcome.sent
    assert t.sessions == 1  # nothing reached the wire: the session was never disturbed
    assert [rcpt for _, rcpt, _ in recorder.received] == [["reader8@example.org"]]


async def test_disconnect_after_data_is_unknown_then_reconnects(
    plain_server: int, recorder: Recorder
) -> None:
    t = transport(plain_server, connections=1)
    await t.open()
    [lost] = await t.send_batch([message(1, "drop@example.org")])
    assert lost.outcome is Outcome.unknown
    [after] = await t.send_batch([message(2)])
    assert after.outcome is Outcome.sent
    assert t.sessions == 2
    await t.close()


async def test_timeouts_before_and_after_data(plain_server: int) -> None:
    t = transport(plain_server, connections=1, timeout=0.5, data_timeout=0.5)
    [before] = await t.send_batch([message(1, "slow@example.org")])
    assert before.outcome is Outcome.deferred
    [after] = await t.send_batch([message(2, "hang@example.org")])
    assert after.outcome is Outcome.unknown
    [ok] = await t.send_batch([message(3)])
    assert ok.outcome is Outcome.sent
    await t.close()


async def test_unreachable_server() -> None:
    port = free_port()  # nothing listens here
    t = transport(port)
    with pytest.raises(TransportUnavailable, match=f"{HOST}:{port}"):
        await t.open()
    [result] = await t.send_batch([message(1)])
    assert result.outcome is Outcome.deferred
    await t.close()


async def test_auth_on_loopback_without_tls(plain_server: int, recorder: Recorder) -> None:
    t = transport(plain_server, username="digest", password="s3cret")
    await t.open()
    [result] = await t.send_batch([message(1)])
    assert result.outcome is Outcome.sent
    await t.close()


async def test_starttls_and_auth(tls_server: tuple[int, Path], recorder: Recorder) -> None:
    port, cert = tls_server
    t = transport(port, security="starttls", username="digest", password="s3cret", ca_path=cert)
    await t.open()
    results = await send_all(t, [message(i) for i in range(4)])
    assert [r.outcome for r in results] == [Outcome.sent] * 4
    await t.close()
    assert len(recorder.received) == 4


async def test_wrong_password_fails_at_open(tls_server: tuple[int, Path]) -> None:
    port, cert = tls_server
    t = transport(port, security="starttls", username="digest", password="nope", ca_path=cert)
    with pytest.raises(TransportUnavailable, match="DIGEST_SMTP_PASSWORD") as info:
        await t.open()
    assert f"{HOST}:{port}" in str(info.value)
    await t.close()


async def test_untrusted_certificate_fails_at_open(tls_server: tuple[int, Path]) -> None:
    port, _ = tls_server
    t = transport(port, security="starttls", username="digest", password="s3cret")
    with pytest.raises(TransportUnavailable, match="certificate"):
        await t.open()
    await t.close()


async def test_starttls_not_offered_is_no_silent_downgrade(
    plain_server: int, recorder: Recorder
) -> None:
    t = transport(plain_server, security="starttls")
    with pytest.raises(TransportUnavailable, match="does not offer STARTTLS"):
        await t.open()
    [result] = await t.send_batch([message(1)])
    await t.close()
    assert result.outcome is Outcome.deferred
    assert recorder.received == []


async def test_reconnects_after_max_messages(plain_server: int, recorder: Recorder) -> None:
    t = transport(plain_server, connections=1, max_messages_per_connection=2)
    for i in range(5):
        [result] = await t.send_batch([message(i)])
        assert result.outcome is Outcome.sent
    await t.close()
    assert t.sessions == 3
    assert len(recorder.sessions) == 3


async def test_rate_limit_shared_by_connections(plain_server: int) -> None:
    t = transport(plain_server, connections=4, rate_per_second=20)
    start = time.monotonic()
    results = await send_all(t, [message(i) for i in range(10)])
    elapsed = time.monotonic() - start
    await t.close()
    assert all(r.outcome is Outcome.sent for r in results)
    assert t.bucket.granted == 10
    assert elapsed >= 0.35  # 1 token at once, then 9 at 20/s ≈ 0.45 s


async def test_token_bucket_counts_waits() -> None:
    now = [0.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(10, clock=lambda: now[0], sleep=fake_sleep)
    for _ in range(5):
        await bucket.acquire()
    assert bucket.granted == 5
    assert sum(slept) == pytest.approx(0.4)
    unlimited = TokenBucket(0)
    for _ in range(100):
        await unlimited.acquire()
    assert unlimited.granted == 100


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"security": "ssl"}, "security"),
        ({"port": 0}, "port"),
        ({"port": "25"}, "port"),
        ({"connections": 0}, "connections"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 101}, "batch_size"),
        ({"rate_per_second": -1}, "rate_per_second"),
        ({"timeout": 0}, "timeout"),
        ({"validate_certs": "yes"}, "validate_certs"),
        ({"username": "u"}, "username"),
        (
            {"username": "u", "password": "p", "security": "none", "host": "mail.example.org"},
            "security",
        ),
    ],
)
def test_bad_keywords(kwargs: dict[str, Any], key: str) -> None:
    args: dict[str, Any] = {"host": "mail.example.org", **kwargs}
    with pytest.raises(ValueError, match=key):
        SmtpTransport(**args)


async def test_throughput_is_reported(
    plain_server: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Measured, not asserted: messages per second with 4 connections."""
    t = transport(plain_server, connections=4)
    await t.open()
    n = 400
    start = time.perf_counter()
    results = await send_all(t, [message(i) for i in range(n)])
    elapsed = time.perf_counter() - start
    await t.close()
    assert all(r.outcome is Outcome.sent for r in results)
    with capsys.disabled():
        print(f"\nSMTP to aiosmtpd, 4 connections: {n / elapsed:.0f} msgs/s")
