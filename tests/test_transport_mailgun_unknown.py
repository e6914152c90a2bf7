"""Mailgun: a request that may have been accepted is ``unknown`` for every reader of
it, and the Events API settles it by the ``v:digest_delivery_id`` variable we send.

Against the loopback fake (``tests/provider_fakes_sendgrid_mailgun.py``), which can
accept a request, log one ``accepted`` event per recipient and answer 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from digest.errors import TransportUnavailable
from digest.transports import mailgun as mailgun_module
from digest.transports.base import InDoubt, Outcome
from tests.provider_fakes import Recorded, Recorder, fake_provider, in_doubt
from tests.provider_fakes import send_and_reconcile as send_then_reconcile
from tests.provider_fakes import send_once as send
from tests.provider_fakes_sendgrid_mailgun import MAILGUN_DOMAIN, MAILGUN_PATH, mailgun_app, message
from tests.provider_fakes_sendgrid_mailgun import MAILGUN_KEY as TOKEN
from tests.provider_fakes_sendgrid_mailgun import mailgun_transport as transport

EVENTS = f"/v3/{MAILGUN_DOMAIN}/events"


@pytest.fixture
def fake() -> Iterator[tuple[Recorder, str]]:
    yield from fake_provider(mailgun_app, TOKEN)


def searches(rec: Recorder) -> list[Recorded]:
    return rec.gets(EVENTS)


def test_a_request_answered_500_after_acceptance_is_unknown_and_sent_once(
    fake: tuple[Recorder, str],
) -> None:
    rec, url = fake
    rec.accept_then(500)
    messages = [message(i) for i in range(1, 21)]
    results = asyncio.run(send(transport(url), messages))
    assert [r.outcome for r in results] == [Outcome.unknown] * 20
    assert len(rec.posts(MAILGUN_PATH)) == 1
    assert rec.accepted == {m.recipient: 1 for m in messages}


def test_reconcile_finds_the_accepted_events(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.accept_then(500)
    messages = [message(i) for i in range(1, 4)]
    sent, found = asyncio.run(send_then_reconcile(transport(url), messages))

    assert [r.outcome for r in sent] == [Outcome.unknown] * 3
    mailgun_id = rec.stored[0]["message"]["headers"]["message-id"]
    assert [(r.delivery_id, r.outcome, r.provider_id) for r in found] == [
        (i, Outcome.queued, mailgun_id) for i in (1, 2, 3)
    ]
    assert all("events API" in r.detail for r in found)
    first = searches(rec)[0]
    assert first.query["event"] == "accepted"
    assert first.query["recipient"] == "reader1@example.org"
    assert first.query["limit"] == "300"
    assert int(first.query["begin"]) < int(first.query["end"])
    assert first.headers["authorization"].startswith("Basic ")


def test_an_event_for_another_delivery_does_not_count(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.accept_then(500)
    sent_one = message(1)
    asyncio.run(send(transport(url), [sent_one]))
    other = InDoubt(99, sent_one.recipient, "<other@x>", "2026-W48", datetime.now(UTC))
    found = asyncio.run(transport(url).reconcile([other]))
    assert found == []


def test_reconcile_follows_pages(
    fake: tuple[Recorder, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, url = fake
    target = message(1)
    for n in range(3):  # earlier acceptances of other deliveries to the same address
        rec.stored.append(
            {
                "event": "accepted",
                "timestamp": datetime.now(UTC).timestamp(),
                "recipient": target.recipient,
                "user-variables": {"digest_delivery_id": str(100 + n)},
            }
        )
    rec.accept_then(500)
    asyncio.run(send(transport(url), [target]))
    monkeypatch.setattr(mailgun_module, "EVENTS_LIMIT", 2)
    found = asyncio.run(transport(url).reconcile([in_doubt(target)]))
    assert [r.delivery_id for r in found] == [1]
    assert len(searches(rec)) == 2  # the second page held it


def test_a_failing_search_decides_nothing(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.accept_then(500)
    messages = [message(1), message(2)]
    rec.script(2, 502, body={"message": "bad gateway"})  # 1 = the send, 2 = first search
    _, found = asyncio.run(send_then_reconcile(transport(url, concurrency=1), messages))
    assert [r.delivery_id for r in found] == [2]


def test_reconcile_with_a_refused_key_is_unavailable(fake: tuple[Recorder, str]) -> None:
    _, url = fake
    with pytest.raises(TransportUnavailable, match="DIGEST_MAILGUN_API_KEY"):
        asyncio.run(transport(url, api_key="wrong").reconcile([in_doubt(message(1))]))
