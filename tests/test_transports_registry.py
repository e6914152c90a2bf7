"""Building transports from the ``[transport]`` table: kinds, keys, secrets, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from digest.config import AdapterConfig
from digest.config.registry import build_transport
from digest.errors import ConfigError, TransportUnavailable
from digest.transports import TRANSPORTS
from digest.transports.base import Outcome, OutgoingMessage
from digest.transports.memory import MemoryTransport
from digest.transports.outbox import OutboxTransport
from digest.transports.smtp import SmtpTransport

SOURCE = Path("/etc/digest/config.toml")


def cfg(kind: str, **options: Any) -> AdapterConfig:
    return AdapterConfig(section="transport", kind=kind, options=options, source=SOURCE)


def test_registry_kinds() -> None:
    from digest.transports.mailgun import MailgunTransport
    from digest.transports.postmark import PostmarkTransport
    from digest.transports.resend import ResendTransport
    from digest.transports.sendgrid import SendGridTransport

    assert {
        "outbox": OutboxTransport,
        "smtp": SmtpTransport,
        "memory": MemoryTransport,
        "postmark": PostmarkTransport,
        "resend": ResendTransport,
        "sendgrid": SendGridTransport,
        "mailgun": MailgunTransport,
    } == TRANSPORTS
    for cls in TRANSPORTS.values():
        assert TRANSPORTS[cls.kind] is cls


def test_builds_each_kind(tmp_path: Path) -> None:
    outbox = build_transport(cfg("outbox", path=tmp_path), {})
    assert isinstance(outbox, OutboxTransport)
    assert (outbox.concurrency, outbox.max_batch) == (1, 200)
    smtp = build_transport(cfg("smtp", host="mail.example.org", connections=3), {})
    assert isinstance(smtp, SmtpTransport)
    assert (smtp.concurrency, smtp.max_batch) == (3, 1)
    memory = build_transport(cfg("memory", max_batch=10), {})
    assert isinstance(memory, MemoryTransport) and memory.max_batch == 10


def test_password_comes_from_the_environment() -> None:
    table = cfg("smtp", host="mail.example.org", username="digest")
    with pytest.raises(ConfigError, match="DIGEST_SMTP_PASSWORD"):
        build_transport(table, {})
    smtp = build_transport(table, {"DIGEST_SMTP_PASSWORD": "s3cret"})
    assert isinstance(smtp, SmtpTransport) and smtp.username == "digest"
    with pytest.raises(ConfigError, match="unknown key"):
        build_transport(cfg("smtp", host="h", username="u", password="in-the-file"), {})


def test_unknown_kind() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown kind 'smtps'.*mailgun, memory, outbox, postmark, resend, sendgrid, smtp",
    ) as info:
        build_transport(cfg("smtps", host="h"), {})
    assert str(SOURCE) in str(info.value)


def test_unknown_key_with_hint() -> None:
    with pytest.raises(ConfigError, match=r"key 'conections'.*did you mean 'connections'"):
        build_transport(cfg("smtp", host="h", conections=2), {})


def test_missing_required_key() -> None:
    with pytest.raises(ConfigError, match=r"key 'host'.*required"):
        build_transport(cfg("smtp"), {})


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"security": "ssl"}, "security"),
        ({"port": 70000}, "port"),
        ({"rate_per_second": -2}, "rate_per_second"),
        ({"validate_certs": "no"}, "validate_certs"),
    ],
)
def test_bad_values_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        build_transport(cfg("smtp", host="h", **options), {})


def test_bad_outbox_and_memory_values() -> None:
    with pytest.raises(ConfigError, match="key 'html_preview'"):
        build_transport(cfg("outbox", path="x", html_preview="yes"), {})
    with pytest.raises(ConfigError, match="key 'max_batch'"):
        build_transport(cfg("memory", max_batch=0), {})


async def test_memory_scripts_outcomes() -> None:
    t = MemoryTransport(reject=["No@example.org"], defer=["later@example.org"], max_batch=5)
    await t.open()
    batch = [
        OutgoingMessage(i, "s@example.org", to, f"<{i}@x>", b"x\r\n")
        for i, to in enumerate(["ok@example.org", "no@example.org", "later@example.org"])
    ]
    results = await t.send_batch(batch)
    assert [r.outcome for r in results] == [Outcome.sent, Outcome.rejected, Outcome.deferred]
    assert [m.recipient for m in t.sent] == ["ok@example.org"]
    assert len(t.handed) == 3
    with pytest.raises(ValueError, match="max_batch"):
        await t.send_batch(batch * 2)
    await t.close()
    assert t.closed
    with pytest.raises(TransportUnavailable):
        await MemoryTransport(unavailable=True).open()
