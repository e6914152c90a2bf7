"""Mailgun webhook adapter: the shared cases plus Mailgun's own mapping."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from digest.webhooks.base import EventType, WebhookRejected, WebhookRequest
from digest.webhooks.mailgun import DEFAULT_RETRY_WINDOW, ENV_SIGNING_KEY, MailgunWebhook
from tests.webhook_cases import NOW, STALE_SECONDS, WebhookCases, json_body, make_request

URL = "https://digest.example.com/webhooks/mailgun"
SIGNING_KEY = "key-0123456789abcdef0123456789abcdef"


def signature_block(*, at: datetime, key: str = SIGNING_KEY, token: str = "") -> dict[str, str]:
    """What Mailgun puts in ``signature``: HMAC-SHA256(key, timestamp + token), hex."""
    timestamp = str(int(at.timestamp()))
    token = token or secrets.token_hex(25)  # "randomly generated string with length of 50"
    digest = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": timestamp, "token": token, "signature": digest}


def envelope(event_data: Any, signature: dict[str, str] | None) -> WebhookRequest:
    body: dict[str, Any] = {"event-data": event_data}
    if signature is not None:
        body["signature"] = signature
    return make_request(json_body(body), url=URL)


def failed(**changes: Any) -> dict[str, Any]:
    """A permanent failure, shaped like the "failed" example in
    https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads"""
    event: dict[str, Any] = {
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": 1521233195.375624,
        "log-level": "error",
        "event": "failed",
        "severity": "permanent",
        "reason": "bounce",
        "envelope": {
            "sender": "bob@sandbox.mailgun.org",
            "transport": "smtp",
            "targets": "alice@example.com",
        },
        "flags": {"is-routed": False, "is-authenticated": True, "is-test-mode": False},
        "delivery-status": {
            "attempt-no": 1,
            "message": "5.1.1 The email account that you tried to reach does not exist.",
            "code": 550,
            "enhanced-code": "5.1.1",
            "description": "",
            "session-seconds": 0.0,
        },
        "message": {
            "headers": {
                "to": "Alice <alice@example.com>",
                "message-id": "20130503192659.13651.20287@sandbox.mailgun.org",
                "from": "Bob <bob@sandbox.mailgun.org>",
                "subject": "Test permanent_fail webhook",
            },
            "attachments": [],
            "size": 111,
        },
        "recipient": "Alice@Example.com",
        "recipient-domain": "example.com",
        "campaigns": [],
        "tags": ["my_tag_1"],
        "user-variables": {"my_var_1": "Mailgun Variable #1"},
    }
    event.update(changes)
    return event


def complained() -> dict[str, Any]:
    return {
        "id": "-Agny091SquKnsrW2NEKUA",
        "timestamp": 1521233123.501324,
        "log-level": "warn",
        "event": "complained",
        "envelope": {"sending-ip": "173.193.210.33"},
        "flags": {"is-test-mode": False},
        "message": {
            "headers": {
                "to": "Alice <alice@example.com>",
                "message-id": "20110215055645.25246.63817@sandbox.mailgun.org",
                "from": "Bob <bob@sandbox.mailgun.org>",
                "subject": "Test complained webhook",
            },
            "attachments": [],
            "size": 111,
        },
        "recipient": "alice@example.com",
        "campaigns": [],
        "tags": ["my_tag_1"],
        "user-variables": {},
    }


class TestMailgunWebhook(WebhookCases):
    adapter_class = MailgunWebhook
    good_env: ClassVar[Mapping[str, str]] = {ENV_SIGNING_KEY: SIGNING_KEY}
    required_env = (ENV_SIGNING_KEY,)
    has_replay_key = True
    extra_malformed_bodies = (b"[]", b"[{}]")

    def signed_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        return envelope(payload, signature_block(at=now))

    def signed_raw_request(self, body: bytes, *, now: datetime) -> WebhookRequest:
        return make_request(body, url=URL)  # the signature lives in the body

    def unsigned_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        return envelope(payload, None)

    def badly_signed_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        return envelope(payload, signature_block(at=now, key="key-somebody-else"))

    def stale_request(self, payload: Any, *, now: datetime) -> WebhookRequest | None:
        # Older than the retry window: a late retry inside it is accepted (below).
        too_old = now - timedelta(seconds=DEFAULT_RETRY_WINDOW + STALE_SECONDS)
        return envelope(payload, signature_block(at=too_old))

    def sample_hard_bounce(self) -> Any:
        return failed()

    def sample_complaint(self) -> Any:
        return complained()

    def sample_policy_block(self) -> Any:
        return failed(
            id="policy-1",
            reason="generic",
            **{
                "delivery-status": {
                    "code": 550,
                    "message": "5.7.1 Our system has detected an unusual rate of mail",
                    "description": "",
                }
            },
        )

    def sample_unknown_kind(self) -> Any:
        return {
            "id": "accepted-1",
            "timestamp": 1521243339.873676,
            "event": "accepted",
            "recipient": "alice@example.com",
            "client-info": {"client-type": "browser"},
        }

    expected_hard_bounce: ClassVar[Mapping[str, Any]] = {
        "type": EventType.bounced_hard,
        "recipient": "alice@example.com",
        "event_id": "G9Bn5sl1TC6nu79C8C0bwg@1521233195.375624",
        "message_id": "<20130503192659.13651.20287@sandbox.mailgun.org>",
        "provider_message_id": "20130503192659.13651.20287@sandbox.mailgun.org",
        "smtp_status": "5.1.1",
        "description": "5.1.1 The email account that you tried to reach does not exist.",
        "occurred_at": datetime.fromtimestamp(1521233195.375624, tz=UTC),
        "policy": False,
    }
    expected_complaint: ClassVar[Mapping[str, Any]] = {
        "type": EventType.complained,
        "recipient": "alice@example.com",
        "message_id": "<20110215055645.25246.63817@sandbox.mailgun.org>",
    }
    expected_policy_block: ClassVar[Mapping[str, Any]] = {
        "type": EventType.bounced_hard,
        "policy": True,
        "smtp_status": "5.7.1",
    }

    # -- Mailgun specifics -------------------------------------------------------------

    def test_replay_key_is_the_token_kept_for_the_whole_retry_window(self) -> None:
        block = signature_block(at=NOW, token="a" * 50)
        verified = self.adapter().verify(envelope(failed(), block), now=NOW)
        assert verified.replay_key == "a" * 50
        # A signature is accepted from 5 minutes ahead to the end of the retry
        # window behind: its token must stay recorded that long.
        assert verified.replay_ttl_seconds == DEFAULT_RETRY_WINDOW + 300

    @pytest.mark.parametrize("hours_late", [0.5, 1, 4, 7.5, 8])
    def test_a_retry_signed_hours_ago_is_accepted_within_the_retry_window(
        self, hours_late: float
    ) -> None:
        # Mailgun retries a POST not answered 200 for about 8 hours (5 min, 10 min,
        # 15 min, 1 h, 2 h, 4 h apart), and a retry may carry the first signature.
        block = signature_block(at=NOW - timedelta(hours=hours_late))
        verified = self.adapter().verify(envelope(failed(), block), now=NOW)
        assert verified.replay_key == block["token"]

    def test_a_late_retry_must_still_be_signed_right(self) -> None:
        late = NOW - timedelta(hours=2)
        self.assert_rejected(envelope(failed(), signature_block(at=late, key="key-other")))

    def test_older_than_the_retry_window_is_rejected(self) -> None:
        block = signature_block(at=NOW - timedelta(seconds=DEFAULT_RETRY_WINDOW + 1))
        assert self.assert_rejected(envelope(failed(), block)) == 401

    def test_custom_retry_window(self) -> None:
        adapter = MailgunWebhook(signing_key=SIGNING_KEY, retry_window_seconds=3600)
        adapter.verify(envelope(failed(), signature_block(at=NOW - timedelta(minutes=59))), now=NOW)
        with pytest.raises(WebhookRejected):
            adapter.verify(
                envelope(failed(), signature_block(at=NOW - timedelta(minutes=61))), now=NOW
            )
        assert adapter.verify(
            envelope(failed(), signature_block(at=NOW)), now=NOW
        ).replay_ttl_seconds == (3600 + 300)

    @pytest.mark.parametrize("window", [0, 299, 3 * 86400 + 1, True, "8h"])
    def test_a_bad_retry_window_is_named(self, window: Any) -> None:
        with pytest.raises(ValueError, match="retry_window_seconds"):
            MailgunWebhook(signing_key=SIGNING_KEY, retry_window_seconds=window)

    def test_parent_signature_is_accepted(self) -> None:
        block = signature_block(at=NOW, key="key-subaccount")
        parent = signature_block(at=NOW, token=block["token"])
        block["parent-signature"] = parent["signature"]
        self.adapter().verify(envelope(failed(), block), now=NOW)

    def test_integer_timestamp_is_accepted(self) -> None:
        block: dict[str, Any] = signature_block(at=NOW)
        block["timestamp"] = int(block["timestamp"])
        self.adapter().verify(envelope(failed(), block), now=NOW)

    def test_future_timestamp_beyond_tolerance_is_rejected(self) -> None:
        later = signature_block(at=NOW + timedelta(seconds=STALE_SECONDS))
        self.assert_rejected(envelope(failed(), later))

    def test_custom_tolerance(self) -> None:
        adapter = MailgunWebhook(
            signing_key=SIGNING_KEY, tolerance_seconds=60, retry_window_seconds=60
        )
        request = envelope(failed(), signature_block(at=NOW - timedelta(seconds=120)))
        with pytest.raises(WebhookRejected):
            adapter.verify(request, now=NOW)
        ahead = envelope(failed(), signature_block(at=NOW + timedelta(seconds=120)))
        with pytest.raises(WebhookRejected):
            MailgunWebhook(signing_key=SIGNING_KEY, tolerance_seconds=60).verify(ahead, now=NOW)

    @pytest.mark.parametrize(
        "block",
        [
            "not an object",
            {"timestamp": "1", "token": "t"},
            {"timestamp": "1", "signature": "s"},
            {"token": "t", "signature": "s"},
            {"timestamp": None, "token": "t", "signature": "s"},
        ],
    )
    def test_incomplete_signature_block_is_401(self, block: Any) -> None:
        request = make_request(json_body({"signature": block, "event-data": failed()}), url=URL)
        assert self.assert_rejected(request) == 401

    def test_token_swapped_into_another_request_is_rejected(self) -> None:
        block = signature_block(at=NOW)
        block["token"] = "b" * 50
        self.assert_rejected(envelope(failed(), block))

    @pytest.mark.parametrize("event_data", [None, "x", [], {"no-event": True}])
    def test_signed_but_without_event_data_is_400(self, event_data: Any) -> None:
        request = envelope(event_data, signature_block(at=NOW))
        adapter = self.adapter()
        adapter.verify(request, now=NOW)
        with pytest.raises(WebhookRejected) as info:
            adapter.parse(request)
        assert info.value.status == 400

    @pytest.mark.parametrize(
        ("changes", "expected", "policy"),
        [
            ({"severity": "permanent", "reason": "bounce"}, EventType.bounced_hard, False),
            ({"severity": "permanent", "reason": "suppress-bounce"}, EventType.bounced_hard, False),
            ({"severity": "temporary", "reason": "generic"}, EventType.bounced_soft, False),
            ({"severity": None, "reason": "generic"}, EventType.bounced_soft, False),
            ({"severity": "permanent", "reason": "espblock"}, EventType.bounced_hard, True),
            ({"severity": "temporary", "reason": "espblock"}, EventType.bounced_soft, True),
            (
                {"severity": "permanent", "reason": "suppress-complaint"},
                EventType.complained,
                False,
            ),
            (
                {"severity": "permanent", "reason": "suppress-unsubscribe"},
                EventType.unsubscribed,
                False,
            ),
        ],
    )
    def test_failed_table(self, changes: dict[str, Any], expected: EventType, policy: bool) -> None:
        event = self.only_event(failed(**changes))
        assert (event.type, event.policy) == (expected, policy)

    def test_enhanced_code_4_7_is_policy_on_a_temporary_failure(self) -> None:
        status = {"code": 421, "enhanced-code": "4.7.0", "message": "try again later"}
        event = self.only_event(failed(severity="temporary", **{"delivery-status": status}))
        assert (event.type, event.policy, event.smtp_status) == (
            EventType.bounced_soft,
            True,
            "4.7.0",
        )

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("delivered", EventType.delivered),
            ("unsubscribed", EventType.unsubscribed),
            ("complained", EventType.complained),
            ("accepted", EventType.unknown),
            ("rejected", EventType.unknown),
            ("opened", EventType.opened),
            ("clicked", EventType.clicked),
            ("stored", EventType.unknown),
        ],
    )
    def test_event_table(self, name: str, expected: EventType) -> None:
        event = self.only_event(failed(event=name))
        assert event.type is expected
        assert event.policy is False

    def test_our_message_id_comes_from_user_variables(self) -> None:
        ours = "<2025-W10.s42.digest@digest.example.com>"
        event = self.only_event(failed(**{"user-variables": {"digest_message_id": ours}}))
        assert event.message_id == ours
        assert event.provider_message_id == "20130503192659.13651.20287@sandbox.mailgun.org"

    def test_message_id_already_bracketed_is_kept(self) -> None:
        message = {"headers": {"message-id": "<abc@digest.example.com>"}}
        assert self.only_event(failed(message=message)).message_id == "<abc@digest.example.com>"

    def test_event_without_message_or_status_still_parses(self) -> None:
        event = self.only_event({"event": "failed", "recipient": "A@B.example"})
        assert event.type is EventType.bounced_soft
        assert (event.message_id, event.smtp_status, event.occurred_at) == ("", "", None)
        assert event.event_id == "failed::A@B.example"
