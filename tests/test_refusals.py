"""Refusals at send time: a 5.7.x policy refusal suppresses nobody and raises an
incident in ``digest check`` and ``digest status``; a 5.1.x refusal or a provider's
"inactive recipient" (``SendResult.bounce == "hard"``) suppresses the reader."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import Engine, select

from digest.delivery.events import attention
from digest.delivery.ledger import Recipient
from digest.delivery.refusals import is_policy_refusal, suppresses
from digest.delivery.refusals import suppress_refused as suppress_hard_bounces
from digest.ops import policy_incidents
from digest.store.db import session_scope
from digest.store.models import Delivery, DeliveryEventRecord, DeliveryState, Edition, EditionStatus
from digest.transports.base import Outcome, SendResult
from subscribers import consent
from subscribers.models import Subscriber, SubscriberStatus
from subscribers.repository import add
from tests.scheduling_support import OPERATOR, Site, at
from tests.smtp_sink import RecordingHandler, SmtpSink

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
KEY = "2026-W48"
BERLIN = ZoneInfo("Europe/Berlin")
DMARC = (
    "550 5.7.26 Unauthenticated email from test.example is not accepted due to "
    "domain's DMARC policy"
)
INACTIVE = (
    "Postmark 406: You tried to send to recipient(s) that have been marked as inactive. "
    "Found inactive addresses: r0@example.com."
)


# -- the rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("detail", "policy"),
    [
        (DMARC, True),
        ("550-5.7.1 [203.0.113.9] Our system has detected an unusual rate", True),
        ("554 5.7.1 Message rejected: missing Message-ID header", True),
        ("550 5.1.1 <r0@example.com>: no such user", False),
        ("451 4.7.1 Greylisted, try again later", False),  # temporary: retried
        ("550 rejected", False),
    ],
)
def test_a_policy_refusal_is_a_5_7_status(detail: str, policy: bool) -> None:
    assert is_policy_refusal(detail) is policy


@pytest.mark.parametrize(
    ("result", "suppressed"),
    [
        (SendResult(1, Outcome.rejected, detail="550 5.1.1 no such user"), True),
        (SendResult(1, Outcome.rejected, detail=INACTIVE, bounce="hard"), True),
        (SendResult(1, Outcome.rejected, detail=DMARC), False),
        (SendResult(1, Outcome.rejected, detail="550 5.7.1 see 5.1.1"), False),
        (SendResult(1, Outcome.deferred, detail="452 4.2.2 mailbox full"), False),
        (SendResult(1, Outcome.failed, detail="500 internal error"), False),
    ],
)
def test_which_refusals_suppress(result: SendResult, suppressed: bool) -> None:
    assert suppresses(result) is suppressed


# -- suppress_hard_bounces (the send loop calls it after recording a batch) -----------


def _reader(engine: Engine, email: str) -> int:
    with session_scope(engine) as session:
        subscriber = add(session, email=email, now=NOW - timedelta(days=30)).subscriber
        assert subscriber.id is not None
        return subscriber.id


def _status(engine: Engine, subscriber_id: int) -> str:
    with session_scope(engine) as session:
        found = session.get(Subscriber, subscriber_id)
        assert found is not None
        return str(found.status)


def test_an_inactive_recipient_answer_suppresses_the_reader(engine: Engine) -> None:
    # Postmark's ErrorCode 406: the transport says bounce="hard"; the words carry no
    # 5.1.x status (before, the reader stayed active and was mailed every week).
    sid = _reader(engine, "r0@example.com")
    chosen = [Recipient(7, sid, "r0@example.com", "")]
    result = SendResult(7, Outcome.rejected, detail=INACTIVE, bounce="hard")
    suppress_hard_bounces(engine, [result], chosen, NOW)
    assert _status(engine, sid) == SubscriberStatus.bounced
    with session_scope(engine) as session:
        suppressed = consent.suppression_of(session, email="r0@example.com")
        [logged] = consent.history(session, email="r0@example.com")[-1:]
    assert suppressed is not None and suppressed.reason == "bounced"
    assert logged.source == "smtp" and "inactive" in logged.detail


def test_a_policy_refusal_suppresses_nobody(engine: Engine) -> None:
    blocked, gone = _reader(engine, "r0@example.com"), _reader(engine, "r1@example.com")
    chosen = [Recipient(1, blocked, "r0@example.com", ""), Recipient(2, gone, "r1@example.com", "")]
    results = [
        SendResult(1, Outcome.rejected, detail=DMARC),
        SendResult(2, Outcome.rejected, detail="550 5.1.1 no such user"),
    ]
    suppress_hard_bounces(engine, results, chosen, NOW)
    assert _status(engine, blocked) == SubscriberStatus.active
    assert _status(engine, gone) == SubscriberStatus.bounced


# -- incidents ------------------------------------------------------------------------


@pytest.fixture
def ledger(engine: Engine) -> tuple[Engine, int]:
    """Edition 2026-W48 with three readers: one refused for DMARC at send time, one
    failed for another reason, one sent."""
    with session_scope(engine) as session:
        edition = Edition(key=KEY, status=EditionStatus.sent, cutoff=NOW, composed_at=NOW)
        session.add(edition)
        session.flush()
        assert edition.id is not None
        rows = [(DeliveryState.failed, DMARC), (DeliveryState.failed, "500 oops"), ("sent", "")]
        for i, (state, detail) in enumerate(rows):
            reader = add(session, email=f"r{i}@example.com", now=NOW).subscriber
            assert reader.id is not None
            session.add(
                Delivery(
                    edition_id=edition.id,
                    subscriber_id=reader.id,
                    state=state,
                    detail=detail,
                    updated_at=NOW,
                )
            )
        edition_id = edition.id
    return engine, edition_id


def test_a_send_time_policy_refusal_is_an_incident_for_a_week(
    ledger: tuple[Engine, int],
) -> None:
    engine, _ = ledger
    with engine.connect() as conn:
        [incident] = policy_incidents.incidents(conn, now=NOW + timedelta(hours=1))
        later = policy_incidents.incidents(conn, now=NOW + timedelta(days=6, hours=23))
        gone = policy_incidents.incidents(conn, now=NOW + timedelta(days=7, minutes=1))
    assert incident.name == f"policy:{KEY}"
    assert "1 message of edition 2026-W48 refused for policy reasons (5.7.26)" in (incident.summary)
    assert "nobody was suppressed" in incident.summary
    assert "DMARC policy" not in incident.summary  # the server's words stay in the row
    assert [i.name for i in later] == [f"policy:{KEY}"]
    assert gone == []  # one old block does not alert for ever


def test_webhook_policy_blocks_join_the_editions_incident(ledger: tuple[Engine, int]) -> None:
    engine, _ = ledger
    with session_scope(engine) as session:
        delivery = session.execute(
            select(Delivery).where(Delivery.state == "sent")  # type: ignore[arg-type]
        ).scalar_one()
        for n, delivery_id in enumerate([delivery.id, None]):
            session.add(
                DeliveryEventRecord(
                    provider="postmark",
                    event_id=f"p{n}",
                    type="bounced-soft",
                    delivery_id=delivery_id,
                    smtp_status="5.7.1",
                    policy=True,
                    raw={},
                    received_at=NOW,
                )
            )
    with engine.connect() as conn:
        found = policy_incidents.incidents(conn, now=NOW)
    assert [i.name for i in found] == [f"policy:{KEY}", "policy:unmatched"]
    assert "2 messages of edition 2026-W48" in found[0].summary
    assert "(5.7.1, 5.7.26)" in found[0].summary
    assert "1 at send time and 1 by webhook" in found[0].summary


def test_status_counts_send_time_policy_refusals(ledger: tuple[Engine, int]) -> None:
    engine, _ = ledger
    with session_scope(engine) as session:
        needs = attention(session)
    assert needs.policy_blocks == 1
    assert needs.per_edition == [(KEY, {"hard": 0, "soft": 0, "complaints": 0, "policy": 1})]


# -- through the CLI, with a real SMTP server that refuses one reader for DMARC -------


class DmarcRefusingHandler(RecordingHandler):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if "r0@example.com" in envelope.rcpt_tos:
            return DMARC
        result: str = await super().handle_DATA(server, session, envelope)
        return result


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    server = SmtpSink()
    server.handler = DmarcRefusingHandler()
    server.controller.handler = server.handler
    with server:
        yield server


def _operator_subjects(sink: SmtpSink) -> list[str]:
    with sink.handler.lock:
        received = [m for m in sink.handler.messages if OPERATOR in m.rcpt_tos]
    return [" ".join(str(message_from_bytes(m.data)["Subject"]).split()) for m in received]


def test_digest_check_names_an_smtp_policy_refusal_once(
    tmp_path: Path, sqlite_url: str, sink: SmtpSink
) -> None:
    smtp = {"kind": "smtp", "host": "127.0.0.1", "port": sink.port, "security": "none"}
    site = Site(tmp_path, sqlite_url, transport=smtp)
    site.readers(2)
    with time_machine.travel(at(BERLIN, 2026, 11, 23, 10, 0), tick=False) as clock:
        site.publish(at(BERLIN, 2026, 11, 20, 14, 0))
        sent = site.cli("run")
        assert sent.exit_code in (0, 1), sent.stdout
        with session_scope(site.rt.engine) as session:
            rows = {d.subscriber_id: d for d in session.execute(select(Delivery)).scalars()}
            readers = {s.email: s for s in session.execute(select(Subscriber)).scalars()}
        r0 = readers["r0@example.com"]
        assert rows[r0.id].state == DeliveryState.failed and "5.7.26" in rows[r0.id].detail
        assert r0.status == SubscriberStatus.active  # suppresses nobody
        clock.shift(3600)
        check = site.cli("check")
        again = site.cli("check")
        status = site.cli("status")
        assert check.exit_code == again.exit_code == 1, check.stdout
        assert "refused for policy reasons (5.7.26)" in check.stdout
        assert "refused for policy reasons" in status.stdout
        subjects = _operator_subjects(sink)
        assert len(subjects) == 1 and "policy reasons" in subjects[0]  # once
        clock.shift(8 * 86400)
        over = site.cli("check")
    assert over.exit_code == 0, over.stdout
    assert "resolved:" in _operator_subjects(sink)[-1]
