"""What verified provider events do to the ledger and the readers (both backends)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import Engine, func, select

from digest.cli.output import print_attention
from digest.delivery.events import ApplySummary, BouncePolicy, apply, attention, parse_message_id
from digest.store.db import session_scope
from digest.store.models import Delivery, DeliveryEventRecord, DeliveryState
from digest.webhooks.base import DeliveryEvent, EventType
from subscribers.models import (
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    Subscriber,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
)
from subscribers.repository import add
from tests.webhook_site import ADA, KEY, NOW, seed_sent_delivery

POLICY = BouncePolicy(soft_bounce_limit=3, soft_bounce_window=timedelta(days=30))


@dataclass
class Ledger:
    engine: Engine
    subscriber_id: int
    delivery_id: int

    @property
    def message_id(self) -> str:
        return f"<{KEY}.s{self.subscriber_id}.digest@test.example>"

    def apply(self, *events: DeliveryEvent, now: datetime = NOW) -> ApplySummary:
        with session_scope(self.engine) as session:
            return apply(session, events, now=now, policy=POLICY)

    def subscriber(self) -> Subscriber:
        with session_scope(self.engine) as session:
            found = session.get(Subscriber, self.subscriber_id)
            assert found is not None
            return found

    def delivery(self) -> Delivery:
        with session_scope(self.engine) as session:
            found = session.get(Delivery, self.delivery_id)
            assert found is not None
            return found

    def rows(self, model: Any) -> list[Any]:
        with session_scope(self.engine) as session:
            return list(session.execute(select(model)).scalars())

    def count(self, model: Any) -> int:
        with session_scope(self.engine) as session:
            return int(session.execute(select(func.count()).select_from(model)).scalar_one())


@pytest.fixture
def ledger(engine: Engine) -> Ledger:
    """One reader (Ada) with one sent delivery of edition 2026-W48 (provider id pm-1)."""
    ids = seed_sent_delivery(engine, transport="postmark", provider_id="pm-1")
    return Ledger(engine, *ids)


def event(kind: EventType, event_id: str = "e1", **fields: Any) -> DeliveryEvent:
    values: dict[str, Any] = {
        "provider": "postmark",
        "event_id": event_id,
        "type": kind,
        "recipient": ADA,
        "occurred_at": NOW,
        "raw": {"id": event_id},
    }
    values.update(fields)
    return DeliveryEvent(**values)


def hard_bounce(ledger: Ledger, event_id: str = "e1", **fields: Any) -> DeliveryEvent:
    fields.setdefault("message_id", ledger.message_id)
    fields.setdefault("smtp_status", "5.1.1")
    fields.setdefault("description", "mailbox does not exist")
    return event(EventType.bounced_hard, event_id, **fields)


def test_our_message_id_parses_back_to_edition_and_reader() -> None:
    assert parse_message_id("<2026-W48.s42.digest@example.com>") == ("2026-W48", 42)
    assert parse_message_id("2026-W48.s42.digest@example.com") == ("2026-W48", 42)
    assert parse_message_id("<abc123.confirm@example.com>") is None
    assert parse_message_id("<14c5d75ce93.dfd.64b469@ismtpd-555>") is None


def test_hard_bounce_suppresses_the_reader_and_marks_the_delivery(ledger: Ledger) -> None:
    summary = ledger.apply(hard_bounce(ledger))
    assert (summary.received, summary.matched, summary.changed) == (1, 1, 1)
    assert ledger.subscriber().status == SubscriberStatus.bounced
    [suppression] = ledger.rows(Suppression)
    assert suppression.reason == SuppressionReason.bounced and suppression.source == "webhook"
    [logged] = [e for e in ledger.rows(ConsentEvent) if e.action == ConsentAction.bounced]
    assert logged.source == ConsentSource.webhook
    assert "postmark" in logged.detail and "5.1.1" in logged.detail
    delivery = ledger.delivery()
    assert delivery.state == DeliveryState.bounced and "5.1.1" in delivery.detail
    [row] = ledger.rows(DeliveryEventRecord)
    assert (row.delivery_id, row.subscriber_id) == (ledger.delivery_id, ledger.subscriber_id)
    assert row.type == "bounced-hard" and row.raw == {"id": "e1"} and row.received_at == NOW


def test_the_same_event_twice_is_applied_once(ledger: Ledger) -> None:
    ledger.apply(hard_bounce(ledger))
    again = ledger.apply(hard_bounce(ledger), now=NOW + timedelta(minutes=5))
    assert (again.duplicates, again.changed) == (1, 0)
    assert ledger.count(DeliveryEventRecord) == 1
    bounced = [e for e in ledger.rows(ConsentEvent) if e.action == ConsentAction.bounced]
    assert len(bounced) == 1


def test_a_duplicate_inside_one_batch_is_applied_once(ledger: Ledger) -> None:
    summary = ledger.apply(hard_bounce(ledger), hard_bounce(ledger))
    assert (summary.received, summary.duplicates) == (2, 1)
    assert ledger.count(DeliveryEventRecord) == 1


def test_soft_bounces_suppress_only_at_the_limit(ledger: Ledger) -> None:
    def soft(n: int) -> DeliveryEvent:
        # Three messages, on three days: each counts.
        when = NOW - timedelta(days=3 - n)
        return event(EventType.bounced_soft, f"soft-{n}", smtp_status="4.2.2", occurred_at=when)

    ledger.apply(soft(1), soft(2))
    assert ledger.subscriber().status == SubscriberStatus.active
    assert ledger.count(Suppression) == 0
    assert ledger.delivery().state == DeliveryState.sent  # a soft bounce is no verdict
    summary = ledger.apply(soft(3))
    assert summary.changed == 1
    assert ledger.subscriber().status == SubscriberStatus.bounced
    [logged] = [e for e in ledger.rows(ConsentEvent) if e.action == ConsentAction.bounced]
    assert "3 soft bounces within 30 days" in logged.detail


def test_temporary_failures_of_one_message_count_once(ledger: Ledger) -> None:
    # The provider retried one message for three days and reported every failed
    # attempt: one message, one soft bounce (it suppressed the reader before).
    retries = [
        event(
            EventType.bounced_soft,
            f"retry-{n}",
            message_id=ledger.message_id,
            smtp_status="4.2.2",
            description="mailbox full",
            occurred_at=NOW - timedelta(days=2 - n),
        )
        for n in range(3)
    ]
    summary = ledger.apply(*retries)
    assert summary.changed == 0 and summary.duplicates == 0
    assert ledger.subscriber().status == SubscriberStatus.active
    assert ledger.count(Suppression) == 0
    assert summary.outcomes[-1] == "soft bounce; 1 of 3 counted within the window"


def test_soft_bounces_on_one_day_count_once(ledger: Ledger) -> None:
    # Three different messages (a welcome mail, two provider ids) refused within one
    # day: a full mailbox is full for all of them (Mailman: one bounce a day).
    same_day = [
        event(EventType.bounced_soft, "a", provider_message_id="pm-x", occurred_at=NOW),
        event(
            EventType.bounced_soft,
            "b",
            provider_message_id="pm-y",
            occurred_at=NOW + timedelta(hours=5),
        ),
        event(EventType.bounced_soft, "c", occurred_at=NOW + timedelta(hours=10)),
    ]
    summary = ledger.apply(*same_day)
    assert summary.changed == 0
    assert ledger.subscriber().status == SubscriberStatus.active


def test_a_message_bounced_on_two_days_and_another_count_twice(ledger: Ledger) -> None:
    first = event(EventType.bounced_soft, "d1", message_id=ledger.message_id, occurred_at=NOW)
    retry = event(
        EventType.bounced_soft,
        "d2",
        message_id=ledger.message_id,
        occurred_at=NOW + timedelta(days=1),
    )
    other = event(
        EventType.bounced_soft,
        "o1",
        provider_message_id="pm-z",
        occurred_at=NOW + timedelta(days=1),
    )
    summary = ledger.apply(first, retry, other, now=NOW + timedelta(days=1, hours=1))
    assert summary.outcomes[-1] == "soft bounce; 2 of 3 counted within the window"
    assert ledger.subscriber().status == SubscriberStatus.active


def test_soft_bounces_outside_the_window_do_not_count(ledger: Ledger) -> None:
    old = NOW - timedelta(days=31)
    ledger.apply(
        event(EventType.bounced_soft, "old-1", occurred_at=old),
        event(EventType.bounced_soft, "old-2", occurred_at=old),
        event(EventType.bounced_soft, "new-1"),
    )
    assert ledger.subscriber().status == SubscriberStatus.active


def test_policy_block_never_suppresses_and_is_counted_for_the_operator(ledger: Ledger) -> None:
    block = hard_bounce(ledger, "p1", smtp_status="5.7.1", policy=True)
    summary = ledger.apply(block)
    assert (summary.policy, summary.changed) == (1, 0)
    assert ledger.subscriber().status == SubscriberStatus.active
    assert ledger.count(Suppression) == 0
    assert not [e for e in ledger.rows(ConsentEvent) if e.action == ConsentAction.bounced]
    [row] = ledger.rows(DeliveryEventRecord)
    assert row.policy is True and "policy" in row.outcome
    with session_scope(ledger.engine) as session:
        needs = attention(session)
    assert needs.policy_blocks == 1
    assert needs.per_edition == [(KEY, {"hard": 0, "soft": 0, "complaints": 0, "policy": 1})]
    console = Console(record=True, width=200)
    print_attention(console, needs)
    shown = console.export_text()
    assert "policy blocks: 1" in shown and "SPF/DKIM/DMARC" in shown


def test_soft_policy_blocks_do_not_count_toward_the_limit(ledger: Ledger) -> None:
    blocks = [
        event(EventType.bounced_soft, f"p{n}", smtp_status="4.7.1", policy=True) for n in range(4)
    ]
    ledger.apply(*blocks)
    assert ledger.subscriber().status == SubscriberStatus.active


def test_complaint_suppresses_and_is_logged(ledger: Ledger) -> None:
    ledger.apply(event(EventType.complained, "c1", message_id=ledger.message_id))
    assert ledger.subscriber().status == SubscriberStatus.complained
    [suppression] = ledger.rows(Suppression)
    assert suppression.reason == SuppressionReason.complained
    [logged] = [e for e in ledger.rows(ConsentEvent) if e.action == ConsentAction.complained]
    assert logged.source == ConsentSource.webhook
    assert ledger.delivery().state == DeliveryState.sent  # it was delivered


def test_unsubscribe_event_unsubscribes_from_the_webhook(ledger: Ledger) -> None:
    ledger.apply(event(EventType.unsubscribed, "u1"))
    assert ledger.subscriber().status == SubscriberStatus.unsubscribed
    [logged] = [e for e in ledger.rows(ConsentEvent) if e.action == ConsentAction.unsubscribed]
    assert logged.source == ConsentSource.webhook


def test_unknown_event_is_stored_only(ledger: Ledger) -> None:
    summary = ledger.apply(event(EventType.unknown, "x1", raw={"RecordType": "Open"}))
    assert summary.changed == 0
    [row] = ledger.rows(DeliveryEventRecord)
    assert row.type == "unknown" and row.raw == {"RecordType": "Open"}
    assert ledger.subscriber().status == SubscriberStatus.active
    assert ledger.delivery().detail == ""


def test_an_unknown_address_is_stored_only(ledger: Ledger) -> None:
    ledger.apply(event(EventType.bounced_hard, "n1", recipient="nobody@example.com"))
    [row] = ledger.rows(DeliveryEventRecord)
    assert (row.delivery_id, row.subscriber_id) == (None, None)
    assert "no matching reader" in row.outcome
    assert ledger.count(Suppression) == 0


def test_matched_by_provider_message_id(ledger: Ledger) -> None:
    ledger.apply(hard_bounce(ledger, message_id="", recipient="", provider_message_id="pm-1"))
    [row] = ledger.rows(DeliveryEventRecord)
    assert row.delivery_id == ledger.delivery_id and row.recipient == ADA
    assert ledger.delivery().state == DeliveryState.bounced
    assert ledger.subscriber().status == SubscriberStatus.bounced


def test_a_batch_provider_id_shared_by_readers_is_matched_by_address(ledger: Ledger) -> None:
    """SendGrid/Mailgun: one provider id per request of many readers."""
    with session_scope(ledger.engine) as session:
        bob = add(session, email="bob@example.com", now=NOW).subscriber
        session.add(
            Delivery(
                edition_id=1,
                subscriber_id=bob.id or 0,
                state=DeliveryState.sent,
                transport="sendgrid",
                provider_id="pm-1",
                updated_at=NOW,
            )
        )
    ledger.apply(
        hard_bounce(ledger, message_id="", recipient="bob@example.com", provider_message_id="pm-1")
    )
    assert ledger.subscriber().status == SubscriberStatus.active  # Ada untouched
    with session_scope(ledger.engine) as session:
        bounced = session.execute(
            select(Subscriber).where(Subscriber.email == "bob@example.com")  # type: ignore[arg-type]
        ).scalar_one()
    assert bounced.status == SubscriberStatus.bounced


def test_matched_by_message_id_even_when_the_address_differs(ledger: Ledger) -> None:
    # The Message-ID names the delivery; the provider may report a forwarding address.
    ledger.apply(hard_bounce(ledger, recipient="ada.forward@example.org"))
    [row] = ledger.rows(DeliveryEventRecord)
    assert row.delivery_id == ledger.delivery_id
    assert ledger.subscriber().status == SubscriberStatus.bounced


def test_matched_by_address_alone(ledger: Ledger) -> None:
    ledger.apply(hard_bounce(ledger, message_id="", recipient="ADA@example.com"))
    [row] = ledger.rows(DeliveryEventRecord)
    assert (row.delivery_id, row.subscriber_id) == (None, ledger.subscriber_id)
    assert ledger.subscriber().status == SubscriberStatus.bounced
    assert ledger.delivery().state == DeliveryState.sent  # no delivery named


def test_delivered_notes_the_delivery_and_settles_a_row_in_doubt(ledger: Ledger) -> None:
    with session_scope(ledger.engine) as session:
        row = session.get(Delivery, ledger.delivery_id)
        assert row is not None
        row.state = DeliveryState.unknown
        session.add(row)
    ledger.apply(event(EventType.delivered, "d1", message_id=ledger.message_id))
    delivery = ledger.delivery()
    assert delivery.state == DeliveryState.sent and "delivered" in delivery.detail
    assert ledger.subscriber().status == SubscriberStatus.active


def test_a_bounce_of_an_already_unsubscribed_reader_changes_nothing(ledger: Ledger) -> None:
    ledger.apply(event(EventType.unsubscribed, "u1"))
    summary = ledger.apply(hard_bounce(ledger, "b1"))
    assert summary.changed == 0
    assert ledger.subscriber().status == SubscriberStatus.unsubscribed


def test_attention_counts_per_edition(ledger: Ledger) -> None:
    ledger.apply(
        event(EventType.bounced_soft, "s1", message_id=ledger.message_id),
        event(EventType.complained, "c1", message_id=ledger.message_id),
        event(EventType.bounced_hard, "h1", recipient="nobody@example.com"),
    )
    with session_scope(ledger.engine) as session:
        needs = attention(session)
    assert dict(needs.per_edition) == {
        KEY: {"hard": 0, "soft": 1, "complaints": 1, "policy": 0},
        "": {"hard": 1, "soft": 0, "complaints": 0, "policy": 0},
    }
    assert needs.policy_blocks == 0
