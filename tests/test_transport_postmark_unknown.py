"""Postmark: a batch that may have been accepted is ``unknown`` (never resent blindly),
and the outbound message search settles it; an inactive recipient is a hard bounce.

Against the loopback fake of Postmark (``tests/provider_fakes.py``), which can accept
and store a batch and then answer 500, and serves the documented search over what
it stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from digest.errors import TransportUnavailable
from digest.transports import postmark as postmark_module
from digest.transports.base import InDoubt, Outcome, OutgoingMessage, SendResult
from digest.transports.postmark import PostmarkTransport
from tests.provider_fakes import POSTMARK_TOKEN as TOKEN
from tests.provider_fakes import (
    Recorded,
    Recorder,
    digest_message,
    fake_provider,
    postmark_app,
    send_and_reconcile,
)
from tests.provider_fakes import in_doubt as attempted_in_doubt
from tests.provider_fakes import postmark_transport as transport
from tests.provider_fakes import send_once as send

ATTEMPTED = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def fake() -> Iterator[tuple[Recorder, str]]:
    yield from fake_provider(postmark_app, TOKEN)


def in_doubt(message: OutgoingMessage) -> InDoubt:
    return attempted_in_doubt(message, ATTEMPTED)


async def send_then_reconcile(
    t: PostmarkTransport, messages: list[OutgoingMessage], items: list[InDoubt] | None = None
) -> tuple[list[Outcome], list[SendResult]]:
    sent, found = await send_and_reconcile(t, messages, items, attempted=ATTEMPTED)
    return [r.outcome for r in sent], found


def searches(rec: Recorder) -> list[Recorded]:
    return rec.gets("/messages/outbound")


def test_a_batch_answered_500_after_acceptance_is_unknown_and_sent_once(
    fake: tuple[Recorder, str],
) -> None:
    rec, url = fake
    rec.accept_then(500)
    messages = [digest_message(i) for i in range(1, 21)]
    results = asyncio.run(send(transport(url), messages))

    assert [r.outcome for r in results] == [Outcome.unknown] * 20
    assert all("HTTP 500" in r.detail and "not sent again" in r.detail for r in results)
    assert len(rec.posts("/email/batch")) == 1  # exactly one request: no blind retry
    assert rec.accepted == {m.recipient: 1 for m in messages}


@pytest.mark.parametrize("status", [500, 502, 504, 520])
def test_statuses_after_which_postmark_may_have_it_are_unknown(
    fake: tuple[Recorder, str], status: int
) -> None:
    rec, url = fake
    rec.script(2, status, body={"ErrorCode": 100, "Message": "oops"})
    results = asyncio.run(send(transport(url), [digest_message(1)]))
    assert results[0].outcome is Outcome.unknown and f"HTTP {status}" in results[0].detail
    assert len(rec.posts("/email/batch")) == 1


@pytest.mark.parametrize(
    ("status", "headers"), [(503, {}), (503, {"Retry-After": "0"}), (429, {}), (408, {})]
)
def test_statuses_that_took_nothing_are_retried(
    fake: tuple[Recorder, str], status: int, headers: dict[str, str]
) -> None:
    rec, url = fake
    rec.script(2, status, headers, {"ErrorCode": 100, "Message": "not now"})
    results = asyncio.run(send(transport(url), [digest_message(1)]))
    assert results[0].outcome is Outcome.queued
    assert len(rec.posts("/email/batch")) == 2 and sum(rec.accepted.values()) == 1


def test_unreachable_is_deferred_not_unknown() -> None:
    results = asyncio.run(
        transport("http://127.0.0.1:9", max_attempts=2).send_batch([digest_message(1)])
    )
    assert results[0].outcome is Outcome.deferred and "nothing was sent" in results[0].detail


def test_reconcile_finds_the_accepted_messages(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.accept_then(500)
    messages = [digest_message(i) for i in range(1, 6)]
    outcomes, found = asyncio.run(send_then_reconcile(transport(url), messages))

    assert outcomes == [Outcome.unknown] * 5
    ids = {m["Metadata"]["delivery_id"]: m["MessageID"] for m in rec.stored}
    assert [(r.delivery_id, r.outcome, r.provider_id) for r in found] == [
        (m.delivery_id, Outcome.queued, ids[str(m.delivery_id)]) for m in messages
    ]
    assert all("outbound message search" in r.detail for r in found)
    assert len(rec.posts("/email/batch")) == 1
    first = searches(rec)[0]
    assert first.headers["x-postmark-server-token"] == TOKEN
    assert first.headers["accept"] == "application/json"


def test_the_search_has_the_documented_shape(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.accept_then(500)
    message = digest_message(7)
    asyncio.run(send_then_reconcile(transport(url, message_stream="weekly"), [message]))
    [search] = searches(rec)
    assert search.query == {
        "count": "50",
        "offset": "0",
        "recipient": "reader7@example.org",
        "messagestream": "weekly",
        "metadata_delivery_id": "7",
        "tag": "2026-W48",
        "fromdate": "2026-11-22",
    }


def test_reconcile_leaves_out_what_postmark_does_not_have(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.accept_then(500)
    messages = [digest_message(i) for i in range(1, 4)]
    never_sent = digest_message(9)
    items = [in_doubt(m) for m in [*messages, never_sent]]
    _, found = asyncio.run(send_then_reconcile(transport(url), messages, items))
    assert [r.delivery_id for r in found] == [1, 2, 3]


def test_a_failing_or_oversized_search_decides_nothing(
    fake: tuple[Recorder, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, url = fake
    rec.accept_then(500)
    messages = [digest_message(1), digest_message(2)]
    rec.script(3, 500, body={"ErrorCode": 100, "Message": "search down"})  # 1 probe, 2 batch
    _, found = asyncio.run(send_then_reconcile(transport(url, concurrency=1), messages))
    assert [r.delivery_id for r in found] == [2]

    monkeypatch.setattr(postmark_module, "MAX_ANSWER_BYTES", 100)
    t = transport(url)
    found_again = asyncio.run(t.reconcile([in_doubt(m) for m in messages]))
    assert found_again == []


def test_reconcile_stops_at_its_deadline(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.accept_then(500)
    messages = [digest_message(1), digest_message(2)]
    rec.hold[4] = 5.0  # the second search hangs
    t = transport(url, concurrency=1, reconcile_seconds=0.5)
    started = time.monotonic()
    _, found = asyncio.run(send_then_reconcile(t, messages))
    assert [r.delivery_id for r in found] == [1]
    assert time.monotonic() - started < 3


def test_reconcile_with_a_refused_token_is_unavailable(fake: tuple[Recorder, str]) -> None:
    _, url = fake
    t = transport(url, api_key="wrong")
    with pytest.raises(TransportUnavailable, match="DIGEST_POSTMARK_SERVER_TOKEN"):
        asyncio.run(t.reconcile([in_doubt(digest_message(1))]))


def test_inactive_recipient_is_a_hard_bounce(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.reject["reader2@example.org"] = "Inactive recipients are ones that have bounced."
    results = asyncio.run(send(transport(url), [digest_message(i) for i in range(1, 4)]))
    assert [(r.outcome, r.bounce) for r in results] == [
        (Outcome.queued, ""),
        (Outcome.rejected, "hard"),
        (Outcome.queued, ""),
    ]
    assert "406" in results[1].detail and "inactive" in results[1].detail


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("inf", None),
        ("nan", None),
        ("-inf", None),
        ("1e400", None),
        ("1e12", 86_400.0),
        ("-5", 0.0),
        ("2.5", 2.5),
    ],
)
def test_no_retry_after_can_hold_the_gate_shut_for_ever(header: str, seconds: float | None) -> None:
    from digest.transports.api import retry_after

    assert retry_after(header) == seconds
