"""Bounce-mailbox messages → reports and events (:mod:`digest.bounces.parse`), and the
VERP address that names a delivery (:mod:`digest.delivery.verp`). No database."""

from __future__ import annotations

import pytest

from digest.bounces.parse import Report, classify
from digest.delivery.verp import delivery_of, delivery_of_any, token, verp_sender
from digest.webhooks.base import EventType
from tests import bounce_samples as samples

KEY = b"k" * 32
VERP = verp_sender("bounces@test.example", 42, KEY)
OURS = "<2026-W48.s7.digest@test.example>"
READER = "nobody@example.org"


def only_event(report: Report) -> tuple[EventType, str, str, bool, str]:
    [event] = report.events
    assert event.provider == "mailbox" and event.event_id.startswith("mailbox:")
    return event.type, event.recipient, event.smtp_status, event.policy, event.message_id


def test_verp_address_round_trips_and_survives_lower_case() -> None:
    assert VERP.startswith("bounces+16-") and VERP.endswith("@test.example")
    local = VERP.partition("@")[0]
    assert local == local.lower() and len(local) <= 30
    assert delivery_of(VERP, "bounces@test.example", KEY) == 42
    assert delivery_of(VERP.upper(), "Bounces@Test.Example", KEY) == 42
    assert delivery_of(f"<{VERP}>", "bounces@test.example", KEY) == 42
    assert (
        token(0, KEY).startswith("0-")
        and delivery_of_any(VERP, "bounces@test.example", (b"x", KEY)) == 42
    )


@pytest.mark.parametrize(
    "address",
    [
        VERP.replace("bounces+16-", "bounces+17-"),  # another id, the same tag
        VERP[:-14] + ("a" if VERP[-14] != "a" else "b") + VERP[-13:],  # one tag char changed
        VERP.replace("@test.example", "@other.example"),
        "bounces@test.example",
        "bounces+016-" + VERP.split("-", 1)[1],  # a leading zero: another spelling
        "ada@example.org",
        "bounces+zz@test.example",
        "",
    ],
)
def test_anything_but_a_signed_token_names_no_delivery(address: str) -> None:
    assert delivery_of(address, "bounces@test.example", KEY) is None
    assert delivery_of(VERP, "bounces@test.example", b"another key") is None


def test_postfix_dsn_is_a_hard_bounce_with_our_message_id() -> None:
    raw = samples.postfix_dsn(VERP, OURS, READER)
    report = classify(raw, envelope_recipient=VERP.upper())
    assert report.kind == "dsn"
    assert only_event(report) == (EventType.bounced_hard, READER, "5.1.1", False, OURS)
    assert report.verp_addresses[0] == VERP  # the envelope recipient first, lower-cased
    assert report.message_ids == (OURS,)
    [event] = report.events
    assert "User unknown in virtual mailbox table" in event.description
    assert report.summary == f"dsn: bounced-hard {READER} 5.1.1"


def test_exim_text_bounce_finds_the_failed_address_above_the_answer() -> None:
    report = classify(samples.exim_text(VERP, OURS, READER))
    assert report.kind == "text"
    assert only_event(report) == (EventType.bounced_hard, READER, "5.1.1", False, OURS)
    assert VERP in report.verp_addresses  # from Envelope-to and To


def test_gmail_dsn_with_the_whole_message_returned() -> None:
    report = classify(samples.gmail_dsn(VERP, OURS, READER))
    assert report.kind == "dsn"
    assert only_event(report) == (EventType.bounced_hard, READER, "5.1.1", False, OURS)
    assert "does not exist" in report.events[0].description


def test_a_4xx_failure_is_a_soft_bounce() -> None:
    raw = samples.postfix_dsn(
        VERP, OURS, READER, status="4.2.2", diagnostic="452 4.2.2 <{r}>: Mailbox full"
    )
    assert only_event(classify(raw)) == (EventType.bounced_soft, READER, "4.2.2", False, OURS)


def test_a_delay_notice_is_kept_but_not_counted() -> None:
    raw = samples.postfix_dsn(
        VERP,
        OURS,
        READER,
        action="delayed",
        status="4.4.1",
        diagnostic="connect to mx.example.org[203.0.113.5]:25: Connection timed out",
        subject="Delayed Mail (still being retried)",
    )
    report = classify(raw)
    assert only_event(report)[0] is EventType.unknown
    assert report.events[0].description.startswith("delayed, not counted: connect to")


def test_a_5_7_1_block_is_a_policy_bounce() -> None:
    raw = samples.postfix_dsn(
        VERP,
        OURS,
        READER,
        status="5.7.1",
        diagnostic="554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked "
        "using zen.spamhaus.org",
    )
    assert only_event(classify(raw)) == (EventType.bounced_hard, READER, "5.7.1", True, OURS)


def test_policy_words_without_an_x7_status_are_a_policy_bounce_too() -> None:
    raw = samples.postfix_dsn(
        VERP, OURS, READER, status="5.0.0", diagnostic="550 5.0.0 Message rejected as spam"
    )
    assert only_event(classify(raw))[3] is True


def test_status_from_the_diagnostic_when_the_field_is_missing() -> None:
    raw = samples.postfix_dsn(VERP, OURS, READER).replace(b"Status: 5.1.1\r\n", b"")
    assert only_event(classify(raw))[:3] == (EventType.bounced_hard, READER, "5.1.1")


def test_arf_complaint_names_the_reader() -> None:
    report = classify(samples.arf_complaint("bounces@test.example", OURS, READER))
    assert report.kind == "arf"
    assert only_event(report) == (EventType.complained, READER, "", False, OURS)
    assert "abuse" in report.events[0].description


def test_arf_without_original_rcpt_to_takes_the_returned_to() -> None:
    raw = samples.arf_complaint("bounces@test.example", OURS, READER, rcpt_header=False)
    assert only_event(classify(raw))[:2] == (EventType.complained, READER)


def test_arf_not_spam_is_no_complaint() -> None:
    raw = samples.arf_complaint("bounces@test.example", OURS, READER, feedback="not-spam")
    assert only_event(classify(raw))[0] is EventType.unknown


def test_an_out_of_office_reply_is_unknown_with_no_events() -> None:
    report = classify(samples.unclassifiable("bounces@test.example"))
    assert (report.kind, report.events, report.message_ids) == ("unknown", (), ())
    assert report.subject == "Out of office: Test Weekly"
    assert "no delivery events" in report.summary


def test_garbage_is_unknown_not_an_exception() -> None:
    for raw in (b"", b"\x00\xff" * 100, b"Subject: Undelivered Mail\r\n\r\nno status here\r\n"):
        assert classify(raw).kind == "unknown"
    broken_charset = (
        b"From: MAILER-DAEMON@x\r\nSubject: Undelivered Mail\r\n"
        b'Content-Type: text/plain; charset="ut\x00f"\r\n\r\n550 5.1.1 <a@example.org> no user\r\n'
    )
    assert classify(broken_charset).summary == "text: bounced-hard a@example.org 5.1.1"


def test_the_same_bounce_gives_the_same_event_id_and_another_bounce_another() -> None:
    first = classify(samples.postfix_dsn(VERP, OURS, READER)).events[0].event_id
    again = classify(samples.postfix_dsn(VERP, OURS, READER)).events[0].event_id
    other = classify(samples.postfix_dsn(VERP, OURS, READER, queue_id="7F8E9D")).events[0]
    assert first == again != other.event_id
