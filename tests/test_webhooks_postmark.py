"""Postmark webhook adapter: the shared cases plus Postmark's own mapping."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from digest.webhooks.base import EventType, WebhookRejected, WebhookRequest
from digest.webhooks.postmark import ENV_CREDENTIALS, ENV_CREDENTIALS_OLD, PostmarkWebhook
from tests.webhook_cases import NOW, WebhookCases, json_body, make_request

URL = "https://digest.example.com/webhooks/postmark"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bounce(**changes: Any) -> dict[str, Any]:
    """The bounce webhook example from
    https://postmarkapp.com/developer/webhooks/bounce-webhook (fields as documented)."""
    payload: dict[str, Any] = {
        "RecordType": "Bounce",
        "MessageStream": "outbound",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "Test",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": {"a_key": "a_value", "b_key": "b_value"},
        "ServerID": 23,
        "Description": (
            "The server was unable to deliver your message (ex: unknown user, mailbox not found)."
        ),
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "John@Example.com",
        "From": "sender@example.com",
        "BouncedAt": "2019-11-05T16:33:54.9070259Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Test subject",
        "Content": "<Full dump of bounce>",
    }
    payload.update(changes)
    return payload


def spam_complaint() -> dict[str, Any]:
    """https://postmarkapp.com/developer/webhooks/spam-complaint-webhook"""
    return {
        "RecordType": "SpamComplaint",
        "MessageStream": "outbound",
        "ID": 42,
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Name": "Spam complaint",
        "Tag": "Test",
        "MessageID": "00000000-0000-0000-0000-000000000000",
        "Metadata": {"a_key": "a_value", "b_key": "b_value"},
        "ServerID": 1234,
        "Description": "",
        "Details": "Test spam complaint details",
        "Email": "john@example.com",
        "From": "sender@example.com",
        "BouncedAt": "2019-11-05T16:33:54.9070259Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": False,
        "Subject": "Test subject",
        "Content": "<Abuse report dump>",
    }


def delivery() -> dict[str, Any]:
    """https://postmarkapp.com/developer/webhooks/delivery-webhook"""
    return {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": "john@example.com",
        "Tag": "welcome-email",
        "DeliveredAt": "2019-11-05T16:33:54.9070259Z",
        "Details": "Test delivery webhook details",
        "Metadata": {"a_key": "a_value"},
    }


def subscription_change(**changes: Any) -> dict[str, Any]:
    """https://postmarkapp.com/developer/webhooks/subscription-change-webhook"""
    payload: dict[str, Any] = {
        "RecordType": "SubscriptionChange",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 123456,
        "MessageStream": "outbound",
        "ChangedAt": "2020-02-01T10:53:34.416071Z",
        "Recipient": "bounced-address@wildbit.com",
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": "HardBounce",
        "Tag": "my-tag",
        "Metadata": {"example": "value", "example_2": "value"},
    }
    payload.update(changes)
    return payload


class TestPostmarkWebhook(WebhookCases):
    adapter_class = PostmarkWebhook
    good_env: ClassVar[Mapping[str, str]] = {ENV_CREDENTIALS: "hookuser:s3cret-pa55"}
    required_env = (ENV_CREDENTIALS,)
    has_replay_key = False
    extra_malformed_bodies = (b"[]", b'[{"RecordType": "Bounce"}]', b'{"Foo": 1}')

    def signed_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        return self.signed_raw_request(json_body(payload), now=now)

    def signed_raw_request(self, body: bytes, *, now: datetime) -> WebhookRequest:
        return make_request(body, basic("hookuser", "s3cret-pa55"), url=URL)

    def unsigned_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        return make_request(json_body(payload), url=URL)

    def badly_signed_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        return make_request(json_body(payload), basic("hookuser", "wrong"), url=URL)

    def stale_request(self, payload: Any, *, now: datetime) -> WebhookRequest | None:
        return None  # basic auth only: no timestamp to be stale

    def sample_hard_bounce(self) -> Any:
        return bounce()

    def sample_complaint(self) -> Any:
        return spam_complaint()

    def sample_policy_block(self) -> Any:
        return bounce(
            ID=77,
            Type="Blocked",
            TypeCode=100006,
            Name="ISP block",
            Details="smtp;554 5.7.1 Service unavailable; Client host blocked using Spamhaus",
        )

    def sample_unknown_kind(self) -> Any:
        # A reactivation: nothing to apply. (Open and Click are opened / clicked.)
        return {
            "RecordType": "SubscriptionChange",
            "SuppressSending": False,
            "MessageID": "m-1",
            "Recipient": "a@example.com",
        }

    expected_hard_bounce: ClassVar[Mapping[str, Any]] = {
        "type": EventType.bounced_hard,
        "recipient": "john@example.com",
        "event_id": "4323372036854775807",
        "provider_message_id": "883953f4-6105-42a2-a16a-77a8eac79483",
        "message_id": "",
        "smtp_status": "5.1.1",
        "occurred_at": datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC),
        "policy": False,
    }
    expected_complaint: ClassVar[Mapping[str, Any]] = {
        "type": EventType.complained,
        "recipient": "john@example.com",
        "event_id": "42",
        "provider_message_id": "00000000-0000-0000-0000-000000000000",
    }
    expected_policy_block: ClassVar[Mapping[str, Any]] = {
        "type": EventType.bounced_soft,
        "policy": True,
        "smtp_status": "5.7.1",
        "event_id": "77",
    }

    # -- Postmark specifics ------------------------------------------------------------

    def test_previous_credentials_are_accepted_during_rotation(self) -> None:
        adapter = PostmarkWebhook(
            credentials="new-user:new-pass", previous_credentials="hookuser:s3cret-pa55"
        )
        for user, password in (("new-user", "new-pass"), ("hookuser", "s3cret-pa55")):
            request = make_request(json_body(bounce()), basic(user, password), url=URL)
            adapter.verify(request, now=NOW)
        crossed = make_request(json_body(bounce()), basic("new-user", "s3cret-pa55"), url=URL)
        self.assert_rejected_by(adapter, crossed)

    def assert_rejected_by(self, adapter: PostmarkWebhook, request: WebhookRequest) -> None:
        with pytest.raises(WebhookRejected) as info:
            adapter.verify(request, now=NOW)
        assert info.value.status == 401

    @pytest.mark.parametrize(
        "header",
        [
            "Bearer abc",
            "Basic",
            "Basic !!!not-base64!!!",
            "Basic " + base64.b64encode(b"x").decode(),
        ],
    )
    def test_malformed_authorization_is_401(self, header: str) -> None:
        request = make_request(json_body(bounce()), {"Authorization": header}, url=URL)
        self.assert_rejected_by(PostmarkWebhook(credentials="hookuser:s3cret-pa55"), request)

    def test_wrong_user_with_right_password_is_rejected(self) -> None:
        request = make_request(json_body(bounce()), basic("other", "s3cret-pa55"), url=URL)
        self.assert_rejected_by(PostmarkWebhook(credentials="hookuser:s3cret-pa55"), request)

    @pytest.mark.parametrize("value", ["no-colon", ":password", "user:"])
    def test_malformed_credentials_name_the_variable(self, value: str) -> None:
        with pytest.raises(ValueError, match=ENV_CREDENTIALS):
            PostmarkWebhook(credentials=value)
        with pytest.raises(ValueError, match=ENV_CREDENTIALS_OLD):
            PostmarkWebhook(credentials="a:b", previous_credentials=value)

    def test_password_may_contain_colons_and_commas(self) -> None:
        adapter = PostmarkWebhook(credentials="u:pa:ss,word")
        adapter.verify(make_request(b"{}", basic("u", "pa:ss,word"), url=URL), now=NOW)

    @pytest.mark.parametrize(
        ("bounce_type", "expected", "policy"),
        [
            ("HardBounce", EventType.bounced_hard, False),
            ("BadEmailAddress", EventType.bounced_hard, False),
            ("SoftBounce", EventType.bounced_soft, False),
            ("Transient", EventType.bounced_soft, False),
            ("DnsError", EventType.bounced_soft, False),
            ("Blocked", EventType.bounced_soft, True),
            ("DMARCPolicy", EventType.bounced_soft, True),
            ("SpamNotification", EventType.bounced_soft, True),
            ("AutoResponder", EventType.unknown, False),
            ("AddressChange", EventType.unknown, False),
            ("ChallengeVerification", EventType.unknown, False),
            ("TemplateRenderingFailed", EventType.unknown, False),
            ("SomethingNew", EventType.unknown, False),
        ],
    )
    def test_bounce_type_table(self, bounce_type: str, expected: EventType, policy: bool) -> None:
        # Inactive false: Postmark still mails the address (see the test below).
        changes = {"Type": bounce_type, "Details": "smtp;550 rejected", "Inactive": False}
        event = self.only_event(bounce(**changes))
        assert (event.type, event.policy) == (expected, policy)

    @pytest.mark.parametrize("bounce_type", ["SoftBounce", "Transient", "DnsError", "HardBounce"])
    def test_an_address_postmark_deactivated_is_a_hard_bounce(self, bounce_type: str) -> None:
        # Postmark refuses every later send to an inactive address (ErrorCode 406,
        # "inactive recipient"): the reader is as good as bounced.
        event = self.only_event(bounce(Type=bounce_type, Details="smtp;452 mailbox full"))
        assert (event.type, event.policy) == (EventType.bounced_hard, False)
        if bounce_type != "HardBounce":
            assert "Postmark deactivated the address" in event.description

    def test_manually_deactivated_is_a_hard_bounce(self) -> None:
        event = self.only_event(bounce(Type="ManuallyDeactivated", Details=""))
        assert (event.type, event.policy) == (EventType.bounced_hard, False)

    @pytest.mark.parametrize("bounce_type", ["Blocked", "DMARCPolicy", "SpamNotification"])
    def test_a_policy_block_stays_one_even_when_inactive(self, bounce_type: str) -> None:
        event = self.only_event(bounce(Type=bounce_type, Details="smtp;550 5.7.1 blocked"))
        assert (event.type, event.policy) == (EventType.bounced_soft, True)

    def test_hard_bounce_with_5_7_status_is_policy_but_still_hard(self) -> None:
        details = "smtp;550 5.7.1 Message rejected due to local policy"
        event = self.only_event(bounce(Details=details))
        assert (event.type, event.policy, event.smtp_status) == (
            EventType.bounced_hard,
            True,
            "5.7.1",
        )
        assert event.description == details

    def test_delivery(self) -> None:
        event = self.only_event(delivery())
        assert event.type is EventType.delivered
        assert event.recipient == "john@example.com"
        assert event.event_id == (
            "Delivery:883953f4-6105-42a2-a16a-77a8eac79483:john@example.com:"
            "2019-11-05T16:33:54.9070259Z"
        )
        assert event.occurred_at == datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("reason", "expected"),
        [
            ("HardBounce", EventType.bounced_hard),
            ("SpamComplaint", EventType.complained),
            ("ManualSuppression", EventType.unsubscribed),
            ("NewReason", EventType.unsubscribed),
        ],
    )
    def test_subscription_change_suppression(self, reason: str, expected: EventType) -> None:
        event = self.only_event(subscription_change(SuppressionReason=reason))
        assert event.type is expected
        assert event.recipient == "bounced-address@wildbit.com"
        assert event.event_id.startswith("SubscriptionChange:")

    def test_subscription_reactivation_is_unknown(self) -> None:
        change = subscription_change(
            SuppressSending=False, SuppressionReason=None, MessageID=None, Tag=None
        )
        event = self.only_event(change)
        assert event.type is EventType.unknown
        assert event.event_id == (
            "SubscriptionChange::bounced-address@wildbit.com:2020-02-01T10:53:34.416071Z"
        )

    def test_our_message_id_comes_from_metadata(self) -> None:
        ours = "<2025-W10.s42.digest@digest.example.com>"
        event = self.only_event(bounce(Metadata={"delivery_id": "7", "message_id": ours}))
        assert event.message_id == ours
        assert event.provider_message_id == "883953f4-6105-42a2-a16a-77a8eac79483"

    def test_bounce_without_record_type_as_in_the_docs_curl_example(self) -> None:
        legacy = bounce()
        del legacy["RecordType"]
        assert self.only_event(legacy).type is EventType.bounced_hard

    def test_unparseable_date_is_none_not_an_error(self) -> None:
        assert self.only_event(bounce(BouncedAt="yesterday")).occurred_at is None
