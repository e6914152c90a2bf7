"""Resend webhook adapter: the shared cases plus Svix's signature rules and Resend's mapping.

Signatures are computed here exactly as Svix documents ("Verifying Webhooks Manually"):
base64(HMAC-SHA256(base64decode(secret without "whsec_"), "{id}.{timestamp}.{body}")).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest

from digest.webhooks.base import EventType, WebhookRequest
from digest.webhooks.resend import ResendWebhook
from tests.webhook_cases import NOW, STALE_SECONDS, WebhookCases, json_body, make_request

KEY = b"the-resend-signing-key-32-bytes!"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"some-other-key-entirely-32-bytes").decode()
URL = "https://digest.example.com/webhooks/resend"


def svix_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def svix_request(
    body: bytes,
    *,
    at: datetime,
    secret: str = SECRET,
    msg_id: str | None = None,
    signature: str | None = None,
) -> WebhookRequest:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(int(at.timestamp()))
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": stamp,
        "svix-signature": signature or svix_signature(secret, msg_id, stamp, body),
    }
    return make_request(body, headers, url=URL)


def resend_event(kind: str, **data: Any) -> dict[str, Any]:
    """Resend's envelope as in its "Event Types" payload examples."""
    body: dict[str, Any] = {
        "type": kind,
        "created_at": "2025-03-04T11:59:58.126Z",
        "data": {
            "broadcast_id": "8b146471-e88e-4322-86af-016cd36fd216",
            "created_at": "2025-03-04T11:59:50.894719+00:00",
            "email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
            "from": "Digest <digest@example.com>",
            "to": ["Reader@Example.org"],
            "subject": "This week's comparisons",
            "tags": {"edition": "2025-W10"},
        },
    }
    body["data"].update(data)
    return body


class TestResendWebhook(WebhookCases):
    adapter_class = ResendWebhook
    good_env: ClassVar[Mapping[str, str]] = {"DIGEST_WEBHOOK_RESEND_SECRET": SECRET}
    required_env = ("DIGEST_WEBHOOK_RESEND_SECRET",)
    has_replay_key = True
    extra_malformed_bodies = (
        b"[]",
        b'{"data": {"email_id": "x"}}',
        b'{"type": 7, "data": {}}',
        b'{"type": "email.bounced"}',
        b'{"type": "email.bounced", "data": ["x"]}',
    )

    expected_hard_bounce: ClassVar[Mapping[str, Any]] = {
        "type": EventType.bounced_hard,
        "recipient": "reader@example.org",
        "provider_message_id": "56761188-7520-42d8-8898-ff6fc54ce618",
        "smtp_status": "5.1.1",
        "occurred_at": datetime.fromisoformat("2025-03-04T11:59:58.126+00:00"),
    }
    expected_complaint: ClassVar[Mapping[str, Any]] = {
        "type": EventType.complained,
        "recipient": "reader@example.org",
    }
    expected_policy_block: ClassVar[Mapping[str, Any]] = {
        "type": EventType.bounced_hard,
        "smtp_status": "5.7.1",
    }

    # -- hooks ---------------------------------------------------------------------------
    def signed_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        return svix_request(json_body(payload), at=now)

    def signed_raw_request(self, body: bytes, *, now: datetime) -> WebhookRequest:
        return svix_request(body, at=now)

    def unsigned_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        return make_request(json_body(payload), url=URL)

    def badly_signed_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        return svix_request(json_body(payload), at=now, secret=OTHER_SECRET)

    def stale_request(self, payload: Any, *, now: datetime) -> WebhookRequest | None:
        return svix_request(json_body(payload), at=now - timedelta(seconds=STALE_SECONDS))

    def sample_hard_bounce(self) -> Any:
        return resend_event(
            "email.bounced",
            bounce={
                "diagnosticCode": ["smtp; 550 5.1.1 user unknown"],
                "message": "The recipient's email provider sent a hard bounce message.",
                "subType": "General",
                "type": "Permanent",
            },
        )

    def sample_complaint(self) -> Any:
        return resend_event("email.complained")

    def sample_policy_block(self) -> Any:
        return resend_event(
            "email.bounced",
            bounce={
                "diagnosticCode": ["smtp; 550 5.7.1 Message rejected due to local policy"],
                "message": "The recipient's email provider sent a hard bounce message.",
                "subType": "General",
                "type": "Permanent",
            },
        )

    def sample_unknown_kind(self) -> Any:
        return resend_event("email.delivery_delayed")

    # -- Svix specifics ----------------------------------------------------------------
    def test_event_id_and_replay_key_are_the_svix_id(self) -> None:
        request = svix_request(json_body(self.sample_hard_bounce()), at=NOW, msg_id="msg_2Lh9")
        verified, events = self.verified_events(request)
        assert verified.replay_key == "msg_2Lh9"
        assert verified.replay_ttl_seconds == 600
        assert events[0].event_id == "msg_2Lh9"

    @pytest.mark.parametrize("offset", [-6 * 60, 6 * 60])
    def test_timestamp_six_minutes_off_either_way_is_rejected(self, offset: int) -> None:
        at = NOW + timedelta(seconds=offset)
        self.assert_rejected(svix_request(json_body(self.sample_complaint()), at=at))

    @pytest.mark.parametrize("offset", [-4 * 60, 4 * 60])
    def test_timestamp_within_five_minutes_is_accepted(self, offset: int) -> None:
        at = NOW + timedelta(seconds=offset)
        request = svix_request(json_body(self.sample_complaint()), at=at)
        self.adapter().verify(request, now=NOW)

    def test_one_matching_signature_among_several_is_enough(self) -> None:
        body = json_body(self.sample_complaint())
        stamp = str(int(NOW.timestamp()))
        good = svix_signature(SECRET, "msg_rot", stamp, body)
        old = svix_signature(OTHER_SECRET, "msg_rot", stamp, body)
        header = f"v1a,ignored {old} {good}"
        request = svix_request(body, at=NOW, msg_id="msg_rot", signature=header)
        assert self.adapter().verify(request, now=NOW).replay_key == "msg_rot"

    def test_only_non_matching_signatures_are_rejected(self) -> None:
        body = json_body(self.sample_complaint())
        stamp = str(int(NOW.timestamp()))
        good = svix_signature(SECRET, "msg_x", stamp, body).removeprefix("v1,")
        old = svix_signature(OTHER_SECRET, "msg_x", stamp, body)
        # the right digest under an unknown version prefix does not count
        header = f"{old} v2,{good}"
        self.assert_rejected(svix_request(body, at=NOW, msg_id="msg_x", signature=header))

    def test_tampered_body_is_rejected(self) -> None:
        request = self.signed_request(self.sample_complaint(), now=NOW)
        tampered = make_request(request.body.replace(b"Reader", b"Victim"), request.headers)
        self.assert_rejected(tampered)

    def test_signature_covers_the_id(self) -> None:
        request = self.signed_request(self.sample_complaint(), now=NOW)
        headers = dict(request.headers, **{"svix-id": "msg_other"})
        self.assert_rejected(make_request(request.body, headers))

    def test_secret_without_prefix_is_accepted(self) -> None:
        adapter = ResendWebhook(secret=SECRET.removeprefix("whsec_"))
        adapter.verify(self.signed_request(self.sample_complaint(), now=NOW), now=NOW)

    def test_secret_that_is_not_base64_refuses_to_start(self) -> None:
        with pytest.raises(ValueError, match="DIGEST_WEBHOOK_RESEND_SECRET"):
            ResendWebhook(secret="whsec_not base64!")

    # -- Resend's mapping ------------------------------------------------------------------
    @pytest.mark.parametrize(
        ("kind", "expected"),
        [
            ("email.delivered", EventType.delivered),
            ("email.complained", EventType.complained),
            ("email.sent", EventType.unknown),
            ("email.delivery_delayed", EventType.unknown),
            ("email.opened", EventType.opened),
            ("email.clicked", EventType.clicked),
            ("email.failed", EventType.unknown),
            ("contact.created", EventType.unknown),
        ],
    )
    def test_event_types(self, kind: str, expected: EventType) -> None:
        assert self.only_event(resend_event(kind)).type is expected

    @pytest.mark.parametrize(
        ("bounce_type", "sub_type", "expected"),
        [
            ("Permanent", "Suppressed", EventType.bounced_hard),
            ("Permanent", "OnAccountSuppressionList", EventType.bounced_hard),
            ("Transient", "MailboxFull", EventType.bounced_soft),
            ("Undetermined", "Undetermined", EventType.unknown),
        ],
    )
    def test_bounce_types(self, bounce_type: str, sub_type: str, expected: EventType) -> None:
        bounce = {"type": bounce_type, "subType": sub_type, "message": "bounced"}
        event = self.only_event(resend_event("email.bounced", bounce=bounce))
        assert event.type is expected
        assert event.policy is False

    def test_bounce_without_details_is_hard_as_documented(self) -> None:
        event = self.only_event(resend_event("email.bounced"))
        assert event.type is EventType.bounced_hard

    @pytest.mark.parametrize(
        "bounce",
        [
            {"type": "Transient", "subType": "ContentRejected", "message": "rejected"},
            {"type": "Permanent", "subType": "General", "message": "Sender IP is blocked"},
        ],
    )
    def test_content_rejected_or_blocked_is_policy(self, bounce: dict[str, str]) -> None:
        assert self.only_event(resend_event("email.bounced", bounce=bounce)).policy is True

    def test_suppressed_is_hard_and_never_policy(self) -> None:
        suppressed = {"message": "Suppressed after a spam complaint", "type": "OnSuppressionList"}
        event = self.only_event(resend_event("email.suppressed", suppressed=suppressed))
        assert event.type is EventType.bounced_hard
        assert event.policy is False

    def test_our_message_id_is_read_from_echoed_headers(self) -> None:
        headers = [{"name": "Message-ID", "value": "<d.2025-W10.42@digest.example.com>"}]
        event = self.only_event(resend_event("email.delivered", headers=headers))
        assert event.message_id == "<d.2025-W10.42@digest.example.com>"

    def test_no_recipient_is_empty_not_an_error(self) -> None:
        assert self.only_event(resend_event("email.delivered", to=[])).recipient == ""
