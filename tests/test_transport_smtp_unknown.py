"""SMTP "maybe delivered": a connection lost (or ``data_timeout`` expired) after the
message body was sent is ``unknown`` for that message only; the final reply waits
``data_timeout``, not the per-command ``timeout``; a 5.7.x refusal stays ``rejected``.

Against the aiosmtpd sink of ``tests/smtp_sink.py``, lockstep and pipelined.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from digest.transports.base import Outcome, OutgoingMessage, SendResult
from digest.transports.smtp import SmtpTransport
from tests.smtp_sink import SmtpSink


def message(i: int, recipient: str | None = None) -> OutgoingMessage:
    to = recipient or f"reader{i}@example.org"
    data = (
        f"From: digest@verdicts.example.com\r\nTo: {to}\r\nSubject: test {i}\r\n"
        f"Message-ID: <m{i}@verdicts.example.com>\r\n\r\nHello {i}\r\n"
    ).encode()
    return OutgoingMessage(i, "bounces@verdicts.example.com", to, f"<m{i}@x>", data, crlf=True)


@pytest.fixture(params=["lockstep", "pipelining"])
def sink(request: pytest.FixtureRequest) -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        server.handler.pipelining = request.param == "pipelining"
        yield server


def transport(sink: SmtpSink, **kw: Any) -> SmtpTransport:
    kw.setdefault("timeout", 5)
    return SmtpTransport(host="127.0.0.1", port=sink.port, security="none", **kw)


async def send_dropping(
    sink: SmtpSink, dropped: str, messages: list[OutgoingMessage], *, gone_after_drop: bool = False
) -> tuple[SmtpTransport, list[SendResult]]:
    """Send ``messages`` as one batch on one connection; the sink keeps ``dropped``'s
    message and drops the connection (and, ``gone_after_drop``, stops listening)."""
    sink.handler.drop.add(dropped)
    t = transport(sink, connections=1, batch_size=len(messages))
    await t.open()
    if gone_after_drop:
        sink.handler.gone_after_drop = True  # the server stops listening with the drop
    results = await t.send_batch(messages)
    await t.close()
    return t, results


async def test_a_connection_dropped_after_data_is_unknown_for_that_message_only(
    sink: SmtpSink,
) -> None:
    t, results = await send_dropping(
        sink, "reader2@example.org", [message(1), message(2), message(3)]
    )

    assert [r.outcome for r in results] == [Outcome.sent, Outcome.unknown, Outcome.sent]
    assert "after the message body was sent" in results[1].detail
    assert "maybe delivered" in results[1].detail
    # The server kept the dropped message: resending it would be a second copy.
    assert sink.handler.per_recipient() == {f"reader{i}@example.org": 1 for i in (1, 2, 3)}
    assert t.sessions == 2  # the message after the lost one went on a new connection
    session = t._slots[0].session
    assert session is None or session.pipelining is sink.handler.pipelining


async def test_a_message_after_the_lost_one_is_deferred_when_it_cannot_go(
    sink: SmtpSink,
) -> None:
    messages = [message(1), message(2)]
    _, results = await send_dropping(sink, "reader1@example.org", messages, gone_after_drop=True)
    assert results[0].outcome is Outcome.unknown
    assert results[1].outcome is Outcome.deferred  # never written anywhere: not unknown
    assert "connect" in results[1].detail


async def test_the_final_reply_waits_for_data_timeout_not_timeout(sink: SmtpSink) -> None:
    sink.handler.delay["slow@example.org"] = 1.0
    t = transport(sink, connections=1, timeout=0.3, data_timeout=5)
    started = time.monotonic()
    [result] = await t.send_batch([message(1, "slow@example.org")])
    await t.close()
    assert result.outcome is Outcome.sent, result
    assert time.monotonic() - started >= 1.0


async def test_data_timeout_expiring_is_unknown(sink: SmtpSink) -> None:
    sink.handler.delay["slow@example.org"] = 1.5
    t = transport(sink, connections=1, timeout=5, data_timeout=0.3)
    [result] = await t.send_batch([message(1, "slow@example.org")])
    [after] = await t.send_batch([message(2)])
    await t.close()
    assert result.outcome is Outcome.unknown
    assert "0.3 s" in result.detail and "maybe delivered" in result.detail
    assert after.outcome is Outcome.sent


def test_data_timeout_defaults_to_ten_minutes_and_is_checked() -> None:
    assert SmtpTransport(host="127.0.0.1").data_timeout == 600
    with pytest.raises(ValueError, match="data_timeout"):
        SmtpTransport(host="127.0.0.1", data_timeout=0)


@pytest.mark.parametrize(
    "reply",
    [
        "550 5.7.1 Message rejected due to DMARC policy of verdicts.example.com",
        "554 5.7.1 Missing Message-ID header: refused by local policy",
    ],
)
async def test_a_5_7_refusal_stays_rejected_with_the_servers_words(
    sink: SmtpSink, reply: str
) -> None:
    sink.handler.refuse["policy@example.org"] = reply
    t = transport(sink, connections=1)
    [result] = await t.send_batch([message(1, "policy@example.org")])
    [ok] = await t.send_batch([message(2)])
    await t.close()
    assert result.outcome is Outcome.rejected
    assert reply in result.detail and result.detail.startswith("DATA: ")
    assert result.bounce == ""  # the message was refused, not the address
    assert ok.outcome is Outcome.sent
