"""SendGrid signed Event Webhook adapter: the shared cases plus SendGrid's own."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from digest.webhooks.base import EventType, WebhookRejected, WebhookRequest
from digest.webhooks.sendgrid import (
    ENV_PUBLIC_KEY,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridWebhook,
)
from tests.webhook_cases import NOW, STALE_SECONDS, WebhookCases, json_body, make_request

URL = "https://digest.example.com/webhooks/sendgrid"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def spki_base64(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as SendGrid's settings page shows it: base64 DER SPKI."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def signed(
    body: bytes, *, at: datetime, key: ec.EllipticCurvePrivateKey = SENDGRID_KEY
) -> WebhookRequest:
    """Sign ``timestamp + body`` exactly as SendGrid does."""
    timestamp = str(int(at.timestamp()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }
    return make_request(body, headers, url=URL)


def bounce(**changes: Any) -> dict[str, Any]:
    """The bounce event from the Event Webhook Reference,
    https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event#bounce"""
    event: dict[str, Any] = {
        "email": "Example@Test.com",
        "timestamp": 1513299569,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": "bounce",
        "bounce_classification": "Invalid Address",
        "category": "cat facts",
        "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw==",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "reason": "500 unknown recipient",
        "status": "5.0.0",
        "type": "bounce",
    }
    event.update(changes)
    return event


def spamreport() -> dict[str, Any]:
    """https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event#spam-report"""
    return {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": "spamreport",
        "category": "cat facts",
        "sg_event_id": "71HHrmvr7JKSGKnEXdA8PA==",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    }


class TestSendGridWebhook(WebhookCases):
    adapter_class = SendGridWebhook
    good_env: ClassVar[Mapping[str, str]] = {ENV_PUBLIC_KEY: spki_base64(SENDGRID_KEY)}
    required_env = (ENV_PUBLIC_KEY,)
    has_replay_key = True
    extra_malformed_bodies = (b"{}", b'{"event": "bounce"}', b"[1, 2]", b'[{"event": "x"}, 3]')

    def signed_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        return signed(json_body([payload]), at=now)

    def signed_raw_request(self, body: bytes, *, now: datetime) -> WebhookRequest:
        return signed(body, at=now)

    def unsigned_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        return make_request(json_body([payload]), url=URL)

    def badly_signed_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        return signed(json_body([payload]), at=now, key=OTHER_KEY)

    def stale_request(self, payload: Any, *, now: datetime) -> WebhookRequest | None:
        return signed(json_body([payload]), at=now - timedelta(seconds=STALE_SECONDS))

    def sample_hard_bounce(self) -> Any:
        return bounce()

    def sample_complaint(self) -> Any:
        return spamreport()

    def sample_policy_block(self) -> Any:
        return bounce(
            type="blocked",
            bounce_classification="Reputation",
            status="5.7.1",
            reason="550 5.7.1 Service unavailable; client host blocked using Spamhaus",
            sg_event_id="blocked-1",
        )

    def sample_unknown_kind(self) -> Any:
        return {
            "email": "example@test.com",
            "timestamp": 1513299569,
            "event": "processed",
            "sg_event_id": "processed-1",
            "useragent": "Mozilla/4.0",
        }

    expected_hard_bounce: ClassVar[Mapping[str, Any]] = {
        "type": EventType.bounced_hard,
        "recipient": "example@test.com",
        "event_id": "6g4ZI7SA-xmRDv57GoPIPw==",
        "message_id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "provider_message_id": "14c5d75ce93",
        "smtp_status": "5.0.0",
        "description": "500 unknown recipient",
        "occurred_at": datetime.fromtimestamp(1513299569, tz=UTC),
        "policy": False,
    }
    expected_complaint: ClassVar[Mapping[str, Any]] = {
        "type": EventType.complained,
        "recipient": "example@test.com",
        "event_id": "71HHrmvr7JKSGKnEXdA8PA==",
    }
    expected_policy_block: ClassVar[Mapping[str, Any]] = {
        "type": EventType.bounced_soft,
        "policy": True,
        "smtp_status": "5.7.1",
        "event_id": "blocked-1",
    }

    # -- SendGrid specifics ------------------------------------------------------------

    def test_tampered_body_is_rejected(self) -> None:
        request = self.signed_request(bounce(), now=NOW)
        assert b"Example@Test.com" in request.body
        tampered = make_request(
            request.body.replace(b"Example@Test.com", b"victim@test.com"),
            dict(request.headers),
            url=URL,
        )
        self.assert_rejected(tampered)

    def test_future_timestamp_beyond_tolerance_is_rejected(self) -> None:
        self.assert_rejected(
            signed(json_body([bounce()]), at=NOW + timedelta(seconds=STALE_SECONDS))
        )

    def test_timestamp_within_tolerance_passes(self) -> None:
        request = signed(json_body([bounce()]), at=NOW - timedelta(seconds=299))
        self.adapter().verify(request, now=NOW)

    def test_custom_tolerance(self) -> None:
        adapter = SendGridWebhook(public_key=spki_base64(SENDGRID_KEY), tolerance_seconds=60)
        request = signed(json_body([bounce()]), at=NOW - timedelta(seconds=120))
        with pytest.raises(WebhookRejected):
            adapter.verify(request, now=NOW)
        verified = adapter.verify(signed(json_body([bounce()]), at=NOW), now=NOW)
        assert verified.replay_ttl_seconds == 120

    def test_timestamp_is_part_of_what_is_signed(self) -> None:
        request = self.signed_request(bounce(), now=NOW)
        headers = dict(request.headers)
        headers[TIMESTAMP_HEADER] = str(int(NOW.timestamp()) + 1)
        self.assert_rejected(make_request(request.body, headers, url=URL))

    @pytest.mark.parametrize("signature", ["not base64 !!", "", base64.b64encode(b"junk").decode()])
    def test_garbage_signature_is_401(self, signature: str) -> None:
        request = self.signed_request(bounce(), now=NOW)
        headers = dict(request.headers) | {SIGNATURE_HEADER: signature}
        assert self.assert_rejected(make_request(request.body, headers, url=URL)) == 401

    def test_malleated_signature_has_the_same_replay_key(self) -> None:
        request = self.signed_request(bounce(), now=NOW)
        r, s = decode_dss_signature(base64.b64decode(request.headers[SIGNATURE_HEADER]))
        twin = base64.b64encode(encode_dss_signature(r, P256_ORDER - s)).decode()
        replayed = make_request(
            request.body, dict(request.headers) | {SIGNATURE_HEADER: twin}, url=URL
        )
        adapter = self.adapter()
        assert adapter.verify(replayed, now=NOW).replay_key == (
            adapter.verify(request, now=NOW).replay_key
        )

    def test_pem_key_is_accepted(self) -> None:
        pem = (
            SENDGRID_KEY.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        SendGridWebhook(public_key=pem).verify(self.signed_request(bounce(), now=NOW), now=NOW)

    @pytest.mark.parametrize(
        "key",
        [
            "not-a-key",
            base64.b64encode(b"junk").decode(),
            spki_base64(ec.generate_private_key(ec.SECP384R1())),
        ],
    )
    def test_unusable_key_names_the_variable(self, key: str) -> None:
        with pytest.raises(ValueError, match=ENV_PUBLIC_KEY):
            SendGridWebhook(public_key=key)

    def test_several_events_in_one_request(self) -> None:
        events = [
            bounce(),
            spamreport(),
            {"email": "a@test.com", "timestamp": 1, "event": "delivered", "sg_event_id": "d1"},
        ]
        request = signed(json_body(events), at=NOW)
        self.adapter().verify(request, now=NOW)
        types = [e.type for e in self.adapter().parse(request)]
        assert types == [EventType.bounced_hard, EventType.complained, EventType.delivered]

    def test_empty_array_is_no_events(self) -> None:
        assert self.adapter().parse(signed(b"[]", at=NOW)) == []

    @pytest.mark.parametrize(
        ("changes", "expected", "policy"),
        [
            ({"type": "bounce"}, EventType.bounced_hard, False),
            (
                {"type": "blocked", "bounce_classification": "Technical"},
                EventType.bounced_soft,
                False,
            ),
            ({"type": "blocked", "bounce_classification": "Content"}, EventType.bounced_soft, True),
            ({"type": "blocked", "bounce_classification": None}, EventType.bounced_soft, True),
            (
                {"type": "bounce", "bounce_classification": "Reputation"},
                EventType.bounced_hard,
                True,
            ),
            ({"type": "bounce", "status": "5.7.26"}, EventType.bounced_hard, True),
            ({"type": None}, EventType.bounced_hard, False),
        ],
    )
    def test_bounce_table(self, changes: dict[str, Any], expected: EventType, policy: bool) -> None:
        event = self.only_event(bounce(**changes))
        assert (event.type, event.policy) == (expected, policy)

    @pytest.mark.parametrize(
        ("event_name", "reason", "expected"),
        [
            ("dropped", "Bounced Address", EventType.bounced_hard),
            ("dropped", "Invalid", EventType.bounced_hard),
            ("dropped", "Unsubscribed Address", EventType.unsubscribed),
            ("dropped", "Spam Reporting Address", EventType.complained),
            ("dropped", "Spam Content (if spam checker app enabled)", EventType.unknown),
            ("delivered", "", EventType.delivered),
            ("unsubscribe", "", EventType.unsubscribed),
            ("group_unsubscribe", "", EventType.unsubscribed),
            ("processed", "", EventType.unknown),
            ("deferred", "", EventType.unknown),
            ("open", "", EventType.opened),
            ("click", "", EventType.clicked),
            ("group_resubscribe", "", EventType.unknown),
        ],
    )
    def test_event_table(self, event_name: str, reason: str, expected: EventType) -> None:
        raw = {"email": "a@test.com", "timestamp": 1, "event": event_name, "sg_event_id": "e"}
        if reason:
            raw["reason"] = reason
        event = self.only_event(raw)
        assert event.type is expected
        assert event.policy is False

    def test_our_message_id_comes_from_custom_args(self) -> None:
        ours = "<2025-W10.s42.digest@digest.example.com>"
        event = self.only_event(bounce(digest_message_id=ours, digest_delivery_id="7"))
        assert event.message_id == ours
        assert event.provider_message_id == "14c5d75ce93"

    def test_event_without_sg_event_id_gets_a_stable_id(self) -> None:
        raw = {"email": "a@test.com", "timestamp": 1, "event": "delivered"}
        first, second = self.only_event(raw), self.only_event(dict(reversed(raw.items())))
        assert first.event_id.startswith("sha256:")
        assert first.event_id == second.event_id

    def test_status_taken_from_reason_when_missing(self) -> None:
        event = self.only_event(bounce(status=None, reason="550 5.1.1 user unknown"))
        assert event.smtp_status == "5.1.1"
