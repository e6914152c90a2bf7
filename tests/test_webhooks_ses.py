"""Amazon SES through SNS: the shared cases, SNS's signature rules and SES's mapping.

Real crypto, no network: an RSA key and a self-signed certificate are made here, the
adapter gets the certificate through a counting fake fetcher, and messages are signed
exactly as SNS documents ("Verifying the signatures of Amazon SNS messages"): the
string to sign is ``"Name\\nvalue\\n"`` for the type's fields in order, signed with
PKCS#1 v1.5 over SHA1 (SignatureVersion 1) or SHA256 (SignatureVersion 2).
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from digest.config import AdapterConfig
from digest.config.registry import build
from digest.errors import ConfigError
from digest.webhooks import sns_certs
from digest.webhooks.base import EventType, Webhook, WebhookRejected, WebhookRequest
from digest.webhooks.ses import SesWebhook
from digest.webhooks.sns_certs import CertificateCache, check_cert_url, fetch_pem
from tests.webhook_cases import NOW, STALE_SECONDS, WebhookCases, json_body, make_request

TOPIC = "arn:aws:sns:eu-west-1:123456789012:digest-ses-events"
OTHER_TOPIC = "arn:aws:sns:eu-west-1:210987654321:someone-elses-topic"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"
URL = "https://digest.example.com/webhooks/ses"

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)


def make_certificate(key: rsa.RSAPrivateKey, *, not_before: datetime, not_after: datetime) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = make_certificate(
    KEY, not_before=NOW - timedelta(days=30), not_after=NOW + timedelta(days=365)
)


def sns_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def sign(message: dict[str, Any], *, key: rsa.RSAPrivateKey = KEY, version: str = "1") -> None:
    """Set ``SignatureVersion`` and ``Signature`` on ``message`` as SNS does."""
    fields = NOTIFICATION_FIELDS if message["Type"] == "Notification" else CONFIRMATION_FIELDS
    text = "".join(f"{name}\n{message[name]}\n" for name in fields if name in message)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(text.encode(), padding.PKCS1v15(), algorithm)
    message["SignatureVersion"] = version
    message["Signature"] = base64.b64encode(signature).decode()


def notification(
    ses: Any, *, at: datetime = NOW, topic: str = TOPIC, cert_url: str = CERT_URL
) -> dict[str, Any]:
    """An unsigned SNS Notification envelope around ``ses`` (a dict, or a string)."""
    message_id = str(uuid.uuid4())
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": topic,
        "Message": ses if isinstance(ses, str) else json.dumps(ses),
        "Timestamp": sns_time(at),
        "SignatureVersion": "1",
        "Signature": "",
        "SigningCertURL": cert_url,
        "UnsubscribeURL": (
            "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn="
            f"{topic}:{message_id}"
        ),
    }


def confirmation(kind: str = "SubscriptionConfirmation", *, topic: str = TOPIC) -> dict[str, Any]:
    """An unsigned SNS (Un)SubscriptionConfirmation, as in the SNS JSON format docs."""
    token = "2336412f37fb687f5d51e6e2425c464de12884c0e8b8d0f3e8d8e8e8e8e8e8e8"
    return {
        "Type": kind,
        "MessageId": str(uuid.uuid4()),
        "Token": token,
        "TopicArn": topic,
        "Message": (
            f"You have chosen to subscribe to the topic {topic}.\n"
            "To confirm the subscription, visit the SubscribeURL included in this message."
        ),
        "SubscribeURL": (
            "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
            f"&TopicArn={topic}&Token={token}"
        ),
        "Timestamp": sns_time(NOW),
        "SignatureVersion": "1",
        "Signature": "",
        "SigningCertURL": CERT_URL,
    }


def sns_request(message: dict[str, Any]) -> WebhookRequest:
    headers = {
        "Content-Type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": str(message.get("Type")),
        "x-amz-sns-message-id": str(message.get("MessageId")),
        "x-amz-sns-topic-arn": str(message.get("TopicArn")),
    }
    return make_request(json_body(message), headers, url=URL)


def mail(**changes: Any) -> dict[str, Any]:
    """The ``mail`` object of an SES notification (SES guide, "mail object")."""
    value: dict[str, Any] = {
        "timestamp": "2025-03-04T11:58:01.000Z",
        "messageId": "0102018f3b3c4d5e-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d-000000",
        "source": "digest@example.com",
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/example.com",
        "sendingAccountId": "123456789012",
        "destination": ["Reader@Example.org"],
        "headersTruncated": False,
        "headers": [
            {"name": "From", "value": "Digest <digest@example.com>"},
            {"name": "To", "value": "Reader@Example.org"},
            {"name": "Message-ID", "value": "<d.2025-W10.42@digest.example.com>"},
            {"name": "Subject", "value": "This week's comparisons"},
        ],
        "commonHeaders": {
            "from": ["Digest <digest@example.com>"],
            "to": ["Reader@Example.org"],
            "messageId": "<d.2025-W10.42@digest.example.com>",
            "subject": "This week's comparisons",
        },
    }
    value.update(changes)
    return value


def ses_bounce(
    bounce_type: str = "Permanent",
    sub_type: str = "General",
    recipients: list[dict[str, Any]] | None = None,
    *,
    key: str = "notificationType",
) -> dict[str, Any]:
    """An SES Bounce notification (SES guide, "bounce object")."""
    if recipients is None:
        recipients = [
            {
                "emailAddress": "Reader@Example.org",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ]
    return {
        key: "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": sub_type,
            "bouncedRecipients": recipients,
            "timestamp": "2025-03-04T11:58:03.477Z",
            "feedbackId": "0102018f3b3c5a6b-1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d-000000",
            "remoteMtaIp": "192.0.2.25",
            "reportingMTA": "dsn; a1-2.smtp-out.eu-west-1.amazonses.com",
        },
        "mail": mail(),
    }


def ses_complaint(*addresses: str, key: str = "notificationType") -> dict[str, Any]:
    """An SES Complaint notification (SES guide, "complaint object")."""
    return {
        key: "Complaint",
        "complaint": {
            "userAgent": "ExampleCorp Feedback Loop (V0.01)",
            "complainedRecipients": [
                {"emailAddress": a} for a in (addresses or ("Reader@Example.org",))
            ],
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2025-03-04T11:59:00.000Z",
            "timestamp": "2025-03-04T11:59:01.000Z",
            "feedbackId": "0102018f3b3c6a7b-2a3b4c5d-6e7f-8a9b-0c1d-2e3f4a5b6c7d-000000",
        },
        "mail": mail(),
    }


def ses_delivery(key: str = "notificationType") -> dict[str, Any]:
    return {
        key: "Delivery",
        "delivery": {
            "timestamp": "2025-03-04T11:58:02.000Z",
            "processingTimeMillis": 546,
            "recipients": ["Reader@Example.org"],
            "smtpResponse": "250 2.6.0 Message received",
            "remoteMtaIp": "192.0.2.25",
            "reportingMTA": "a1-2.smtp-out.eu-west-1.amazonses.com",
        },
        "mail": mail(),
    }


class TestSesWebhook(WebhookCases):
    adapter_class = SesWebhook
    good_env: ClassVar[Mapping[str, str]] = {}
    required_env = ()  # no secret: SNS signs with Amazon's key; `topics` is required
    has_replay_key = True
    extra_malformed_bodies = (
        b"[]",
        b'{"Type": "Notification"}',
        json_body({"Type": "Bogus", "MessageId": "m-1"}),
        json_body(notification("not json at all")),
        json_body(notification({"mail": mail()})),
        json_body(notification({"notificationType": "Bounce", "mail": mail()})),
        json_body(notification({"eventType": "Complaint", "complaint": {}})),
    )

    expected_hard_bounce: ClassVar[Mapping[str, Any]] = {
        "type": EventType.bounced_hard,
        "recipient": "reader@example.org",
        "message_id": "<d.2025-W10.42@digest.example.com>",
        "provider_message_id": "0102018f3b3c4d5e-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d-000000",
        "smtp_status": "5.1.1",
        "description": "smtp; 550 5.1.1 user unknown",
        "occurred_at": datetime(2025, 3, 4, 11, 58, 3, 477000, tzinfo=UTC),
    }
    expected_complaint: ClassVar[Mapping[str, Any]] = {
        "type": EventType.complained,
        "recipient": "reader@example.org",
        "description": "abuse",
    }
    expected_policy_block: ClassVar[Mapping[str, Any]] = {
        "type": EventType.bounced_hard,
        "smtp_status": "5.7.1",
    }

    def setup_method(self) -> None:
        self.fetched: list[str] = []
        self.served: dict[str, bytes] = {CERT_URL: PEM}

    def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if url not in self.served:
            raise WebhookRejected(f"{url} answered 404")
        return self.served[url]

    def make_adapter(self, env: Any) -> Webhook:
        adapter = SesWebhook(topics=[TOPIC])
        adapter.certificates = CertificateCache(fetch=self.fetch)
        return adapter

    # -- hooks ---------------------------------------------------------------------------
    def signed_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        message = notification(payload, at=now)
        sign(message)
        return sns_request(message)

    def signed_raw_request(self, body: bytes, *, now: datetime) -> WebhookRequest:
        try:
            message = json.loads(body)
        except ValueError:
            message = None
        if isinstance(message, dict) and "MessageId" in message and "Message" in message:
            sign(message)
            return sns_request(message)
        return make_request(body, url=URL)

    def unsigned_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        message = notification(payload, at=now)
        del message["Signature"], message["SignatureVersion"]
        return sns_request(message)

    def badly_signed_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        message = notification(payload, at=now)
        sign(message, key=OTHER_KEY)
        return sns_request(message)

    def stale_request(self, payload: Any, *, now: datetime) -> WebhookRequest | None:
        # SNS retries keep the original Timestamp for up to an hour, so the default
        # tolerance is an hour: "stale" here is an hour and STALE_SECONDS old.
        message = notification(payload, at=now - timedelta(seconds=3600 + STALE_SECONDS))
        sign(message)
        return sns_request(message)

    def sample_hard_bounce(self) -> Any:
        return ses_bounce()

    def sample_complaint(self) -> Any:
        return ses_complaint()

    def sample_policy_block(self) -> Any:
        return ses_bounce(
            recipients=[
                {
                    "emailAddress": "reader@example.org",
                    "action": "failed",
                    "status": "5.7.1",
                    "diagnosticCode": "smtp; 550 5.7.1 Service unavailable, Client host blocked",
                }
            ]
        )

    def sample_unknown_kind(self) -> Any:
        return {"eventType": "Send", "send": {}, "mail": mail()}

    # -- what differs from the shared base: a required topic list, not a secret ----------
    def test_constructor_refuses_to_start_without_its_secret(self) -> None:
        for topics in ([], "arn:aws:sns:eu-west-1:123456789012:t", ["not-an-arn"], [None]):
            with pytest.raises(ValueError, match="topics"):
                SesWebhook(topics=topics)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_age_seconds"):
            SesWebhook(topics=[TOPIC], max_age_seconds=0)

    def test_registry_reports_missing_secret_as_config_error(self) -> None:
        def cfg(**options: Any) -> AdapterConfig:
            return AdapterConfig(
                section="webhooks.ses", kind="ses", options=options, source=Path("config.toml")
            )

        registry = {"ses": SesWebhook}
        with pytest.raises(ConfigError, match="topics"):
            build(registry, cfg(), {})
        with pytest.raises(ConfigError, match="topics"):
            build(registry, cfg(topics=["arn:aws:s3:::bucket"]), {})
        with pytest.raises(ConfigError, match="fetch"):
            build(registry, cfg(topics=[TOPIC], fetch="x"), {})  # not a TOML key
        built = build(registry, cfg(topics=[TOPIC], max_age_seconds=600), {})
        assert built.topics == {TOPIC}

    # -- SNS signatures ------------------------------------------------------------------
    @pytest.mark.parametrize("version", ["1", "2"])
    def test_both_signature_versions(self, version: str) -> None:
        message = notification(ses_bounce())
        sign(message, version=version)
        verified, events = self.verified_events(sns_request(message))
        assert verified.replay_key == message["MessageId"]
        assert verified.replay_ttl_seconds == 24 * 3600
        assert verified.confirm_url == ""
        assert [e.type for e in events] == [EventType.bounced_hard]

    def test_signature_version_1_is_not_checked_as_2(self) -> None:
        message = notification(ses_bounce())
        sign(message, version="1")
        message["SignatureVersion"] = "2"
        self.assert_rejected(sns_request(message))

    def test_subject_is_signed_when_present(self) -> None:
        message = notification(ses_bounce())
        message["Subject"] = "Amazon SES Email Event Notification"
        sign(message)
        self.adapter().verify(sns_request(message), now=NOW)
        message["Subject"] = "Something else"
        self.assert_rejected(sns_request(message))

    def test_tampered_message_is_rejected(self) -> None:
        message = notification(ses_bounce())
        sign(message)
        message["Message"] = message["Message"].replace("Reader@Example.org", "victim@example.org")
        self.assert_rejected(sns_request(message))

    @pytest.mark.parametrize("field", ["MessageId", "Timestamp", "Type"])
    def test_every_signed_field_counts(self, field: str) -> None:
        message = notification(ses_bounce())
        sign(message)
        message[field] = {"MessageId": "other-id", "Timestamp": sns_time(NOW - timedelta(1))}.get(
            field, "SubscriptionConfirmation"
        )
        request = make_request(json_body(message), url=URL)  # no SNS headers to disagree
        with pytest.raises(WebhookRejected):
            self.adapter().verify(request, now=NOW)

    @pytest.mark.parametrize("version", ["3", "", "SHA256", 2, None])
    def test_unknown_signature_version_is_rejected_before_any_fetch(self, version: Any) -> None:
        message = notification(ses_bounce())
        sign(message)
        message["SignatureVersion"] = version
        self.assert_rejected(sns_request(message))
        assert self.fetched == []

    @pytest.mark.parametrize(
        "cert_url",
        [
            "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem",
            "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://evil.example/sns.eu-west-1.amazonaws.com.pem",
            "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
            "https://user@sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.eu-west-1.amazonaws.com@evil.example/x.pem",
            "https://evil.example#@sns.eu-west-1.amazonaws.com/x.pem",
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.txt",
            "https://sns.eu-west-1.amazonaws.com/x.pem?u=https://evil.example/",
            "https://sns.eu-west-1.amazonaws.com./x.pem",
            "https://xsns.eu-west-1.amazonaws.com/x.pem",
            "https://sns.eu-west-1.amazonaws.com\\@evil.example/x.pem",
            "https://sns.eu-west-1.amazonaws.com /x.pem",
            "//sns.eu-west-1.amazonaws.com/x.pem",
            "",
            None,
            42,
        ],
    )
    def test_foreign_certificate_url_is_rejected_without_a_fetch(self, cert_url: Any) -> None:
        self.served[str(cert_url)] = PEM  # even if it would serve the right certificate
        message = notification(ses_bounce(), cert_url=cert_url)
        sign(message)
        self.assert_rejected(sns_request(message))
        assert self.fetched == []

    def test_certificate_urls_sns_uses_are_accepted(self) -> None:
        assert check_cert_url(CERT_URL) == CERT_URL
        china = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem"
        assert check_cert_url(china) == china
        explicit_port = CERT_URL.replace(".com/", ".com:443/")
        assert check_cert_url(explicit_port) == CERT_URL

    def test_topic_not_allowed_is_rejected_before_any_fetch(self) -> None:
        message = notification(ses_bounce(), topic=OTHER_TOPIC)
        sign(message)
        assert self.assert_rejected(sns_request(message)) == 403
        assert self.fetched == []

    def test_certificate_is_fetched_once_and_cached(self) -> None:
        adapter = self.adapter()
        for _ in range(3):
            adapter.verify(self.signed_request(ses_bounce(), now=NOW), now=NOW)
        assert self.fetched == [CERT_URL]

    def test_certificate_outside_its_validity_is_rejected(self) -> None:
        self.served[CERT_URL] = make_certificate(
            KEY, not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1)
        )
        self.assert_rejected(self.signed_request(ses_bounce(), now=NOW))

    def test_unreadable_certificate_asks_sns_to_retry(self) -> None:
        self.served[CERT_URL] = b"<html>oops</html>"
        with pytest.raises(WebhookRejected) as info:
            self.adapter().verify(self.signed_request(ses_bounce(), now=NOW), now=NOW)
        assert info.value.status == 503

    def test_message_type_header_must_match_the_body(self) -> None:
        request = self.signed_request(ses_bounce(), now=NOW)
        headers = dict(request.headers, **{"x-amz-sns-message-type": "SubscriptionConfirmation"})
        assert self.assert_rejected(make_request(request.body, headers)) == 400

    def test_ten_minutes_old_is_accepted_because_sns_retries(self) -> None:
        request = self.signed_request(ses_bounce(), now=NOW - timedelta(minutes=10))
        self.adapter().verify(request, now=NOW)

    def test_from_the_future_is_rejected(self) -> None:
        self.assert_rejected(self.signed_request(ses_bounce(), now=NOW + timedelta(minutes=10)))

    # -- subscription handshakes ---------------------------------------------------------
    @pytest.mark.parametrize("version", ["1", "2"])
    def test_subscription_confirmation_surfaces_the_subscribe_url(self, version: str) -> None:
        message = confirmation()
        sign(message, version=version)
        verified, events = self.verified_events(sns_request(message))
        assert verified.confirm_url == message["SubscribeURL"]
        assert verified.replay_key == message["MessageId"]
        assert events == []

    def test_subscription_confirmation_from_another_topic_is_rejected(self) -> None:
        message = confirmation(topic=OTHER_TOPIC)
        sign(message)
        assert self.assert_rejected(sns_request(message)) == 403

    def test_subscription_confirmation_is_signed_too(self) -> None:
        message = confirmation()
        sign(message)
        message["SubscribeURL"] = message["SubscribeURL"].replace("Token=", "Token=x")
        self.assert_rejected(sns_request(message))

    def test_unsubscribe_confirmation_is_verified_and_ignored(self) -> None:
        message = confirmation("UnsubscribeConfirmation")
        sign(message)
        verified, events = self.verified_events(sns_request(message))
        assert verified.confirm_url == ""
        assert events == []

    def test_ses_set_up_message_is_no_event(self) -> None:
        text = "Successfully validated SNS topic for Amazon SES event publishing."
        _, events = self.verified_events(self.signed_request(text, now=NOW))
        assert events == []

    # -- SES's mapping ---------------------------------------------------------------------
    def test_one_event_per_bounced_recipient(self) -> None:
        recipients = [
            {"emailAddress": "a@example.org", "status": "5.1.1", "diagnosticCode": "550 5.1.1"},
            {"emailAddress": "B@Example.org", "status": "5.1.1"},
        ]
        message = notification(ses_bounce(recipients=recipients))
        sign(message)
        _, events = self.verified_events(sns_request(message))
        assert [e.recipient for e in events] == ["a@example.org", "b@example.org"]
        assert [e.event_id for e in events] == [
            f"{message['MessageId']}:a@example.org",
            f"{message['MessageId']}:b@example.org",
        ]
        assert events[1].description == "Permanent/General"

    @pytest.mark.parametrize(
        ("bounce_type", "sub_type", "expected", "policy"),
        [
            ("Permanent", "General", EventType.bounced_hard, False),
            ("Permanent", "NoEmail", EventType.bounced_hard, False),
            ("Permanent", "Suppressed", EventType.bounced_hard, False),
            ("Permanent", "OnAccountSuppressionList", EventType.bounced_hard, False),
            ("Transient", "General", EventType.bounced_soft, False),
            ("Transient", "MailboxFull", EventType.bounced_soft, False),
            ("Transient", "MessageTooLarge", EventType.bounced_soft, False),
            ("Transient", "ContentRejected", EventType.bounced_soft, True),
            ("Transient", "AttachmentRejected", EventType.bounced_soft, False),
            ("Undetermined", "Undetermined", EventType.unknown, False),
            ("Brand-new", "General", EventType.unknown, False),
        ],
    )
    def test_bounce_types(
        self, bounce_type: str, sub_type: str, expected: EventType, policy: bool
    ) -> None:
        recipients = [{"emailAddress": "reader@example.org", "status": "5.0.0"}]
        event = self.only_event(ses_bounce(bounce_type, sub_type, recipients))
        assert (event.type, event.policy) == (expected, policy)

    def test_policy_status_found_in_the_diagnostic_code(self) -> None:
        recipients = [{"emailAddress": "r@example.org", "diagnosticCode": "smtp; 554 5.7.1 spam"}]
        event = self.only_event(ses_bounce(recipients=recipients))
        assert (event.smtp_status, event.policy) == ("5.7.1", True)

    @pytest.mark.parametrize(
        ("sample", "expected"),
        [
            (ses_bounce(key="eventType"), EventType.bounced_hard),
            (ses_complaint(key="eventType"), EventType.complained),
            (ses_delivery(key="eventType"), EventType.delivered),
            (ses_delivery(), EventType.delivered),
        ],
    )
    def test_event_publishing_and_identity_formats(self, sample: Any, expected: EventType) -> None:
        event = self.only_event(sample)
        assert event.type is expected
        assert event.recipient == "reader@example.org"
        assert event.message_id == "<d.2025-W10.42@digest.example.com>"

    def test_delivery_fields(self) -> None:
        event = self.only_event(ses_delivery())
        assert event.smtp_status == "2.6.0"
        assert event.description == "250 2.6.0 Message received"
        assert event.occurred_at == datetime(2025, 3, 4, 11, 58, 2, tzinfo=UTC)

    def test_one_complaint_event_per_recipient(self) -> None:
        _, events = self.verified_events(
            self.signed_request(ses_complaint("a@example.org", "b@example.org"), now=NOW)
        )
        assert [(e.type, e.recipient) for e in events] == [
            (EventType.complained, "a@example.org"),
            (EventType.complained, "b@example.org"),
        ]

    def test_message_id_from_common_headers_without_original_headers(self) -> None:
        sample = ses_bounce()
        sample["mail"] = mail(headers=[], commonHeaders={"messageId": "abc@digest.example.com"})
        assert self.only_event(sample).message_id == "<abc@digest.example.com>"
        sample["mail"] = mail(headers=[], commonHeaders={})
        assert self.only_event(sample).message_id == ""

    @pytest.mark.parametrize("kind", ["DeliveryDelay", "Send", "Reject", "Subscription"])
    def test_other_ses_kinds_are_unknown(self, kind: str) -> None:
        event = self.only_event({"eventType": kind, "mail": mail()})
        assert event.type is EventType.unknown
        assert event.recipient == "reader@example.org"
        assert event.description == kind

    @pytest.mark.parametrize(
        ("kind", "expected"), [("Open", EventType.opened), ("Click", EventType.clicked)]
    )
    def test_opens_and_clicks_are_ses_tracking(self, kind: str, expected: EventType) -> None:
        at = "2025-03-04T11:58:00.000Z"
        sample = {"eventType": kind, kind.lower(): {"timestamp": at}, "mail": mail()}
        event = self.only_event(sample)
        assert (event.type, event.recipient) == (expected, "reader@example.org")
        assert event.occurred_at == datetime(2025, 3, 4, 11, 58, tzinfo=UTC)

    def test_parse_does_not_mutate_or_share_the_raw_payload(self) -> None:
        sample = ses_bounce()
        original = copy.deepcopy(sample)
        assert self.only_event(sample).raw == original


class TestFetchPem:
    """:func:`fetch_pem` against an httpx mock transport (never the network)."""

    def fetch_with(self, monkeypatch: pytest.MonkeyPatch, handler: Any) -> bytes:
        real_client = httpx.Client

        def client(**kwargs: Any) -> httpx.Client:
            assert kwargs["follow_redirects"] is False
            assert kwargs["timeout"] == sns_certs.FETCH_TIMEOUT_SECONDS
            return real_client(transport=httpx.MockTransport(handler), **kwargs)

        monkeypatch.setattr(httpx, "Client", client)
        return fetch_pem(CERT_URL)

    def test_ok(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert self.fetch_with(monkeypatch, lambda r: httpx.Response(200, content=PEM)) == PEM

    @pytest.mark.parametrize(
        ("status", "expected"), [(404, 401), (403, 401), (500, 503), (302, 503)]
    )
    def test_http_errors(self, monkeypatch: pytest.MonkeyPatch, status: int, expected: int) -> None:
        with pytest.raises(WebhookRejected) as info:
            self.fetch_with(monkeypatch, lambda r: httpx.Response(status))
        assert info.value.status == expected

    def test_network_error_asks_for_a_retry(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def fail(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectTimeout("timed out", request=request)

        with pytest.raises(WebhookRejected) as info:
            self.fetch_with(monkeypatch, fail)
        assert info.value.status == 503

    def test_oversized_answer_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        big = b"x" * (sns_certs.MAX_PEM_BYTES + 1)
        with pytest.raises(WebhookRejected):
            self.fetch_with(monkeypatch, lambda r: httpx.Response(200, content=big))
