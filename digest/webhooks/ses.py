"""Amazon SES events delivered by Amazon SNS over HTTPS (``kind = "ses"``).

Configuration (no secret: SNS signs with Amazon's certificate)::

    [webhooks.ses]
    kind = "ses"
    topics = ["arn:aws:sns:eu-west-1:123456789012:digest-ses-events"]
    max_age_seconds = 3600      # optional

:meth:`SesWebhook.verify` checks, in order: the body is an SNS message; its
``TopicArn`` is one of ``topics`` (SNS docs: "reject any message with an unexpected
TopicArn" — this is also what stops a stranger subscribing our URL to their own
topic); the ``SigningCertURL`` is Amazon's (nothing is fetched otherwise); the
signature (:mod:`digest.webhooks.sns_certs`); and the ``Timestamp`` is within
``max_age_seconds`` (SNS retries keep the original timestamp; its delivery policies
retry for at most an hour). A ``SubscriptionConfirmation`` is verified the same way and
surfaces its ``SubscribeURL`` as :attr:`Verified.confirm_url`; confirming is left to
the operator or the route.

:meth:`SesWebhook.parse` reads the SES notification in ``Message`` — either format:
``eventType`` (configuration-set event publishing) or ``notificationType`` (identity
notifications), see the SES guide's "Contents of notifications" and "Contents of
event data published to Amazon SNS" — into one :class:`DeliveryEvent` per recipient.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any, ClassVar, Final

from digest.common import options
from digest.common.options import KEY
from digest.webhooks.base import (
    DeliveryEvent,
    EventType,
    Verified,
    WebhookRejected,
    WebhookRequest,
)
from digest.webhooks.fields import angle as _angle
from digest.webhooks.fields import iso_time as _timestamp
from digest.webhooks.sns_certs import (
    DEFAULT_CERTIFICATES,
    CertificateCache,
    check_sns_url,
    signature_hash,
    string_to_sign,
    verify_signature,
)

_TOPIC_ARN: Final = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}$")
_STATUS: Final = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
REPLAY_TTL_SECONDS: Final = 24 * 3600
FUTURE_SKEW_SECONDS: Final = 300
# SES sends this as a plain-text Notification once a configuration set's SNS
# destination is set up; it is no event.
_SETUP_MESSAGE: Final = "Successfully validated SNS topic for Amazon SES event publishing."

# (bounceType, bounceSubType) → our type; a bounceType alone is the fallback.
# Permanent "Suppressed"/"OnAccountSuppressionList": SES did not even try, because an
# earlier hard bounce or complaint put the address on a suppression list: still hard.
BOUNCE_TYPES: Final[Mapping[str, EventType]] = {
    "Permanent": EventType.bounced_hard,
    "Transient": EventType.bounced_soft,
    "Undetermined": EventType.unknown,
}
# Sub-types that say "the content or the sender was refused", not "the reader is gone".
POLICY_SUBTYPES: Final = frozenset({"ContentRejected"})

# SES kinds other than bounces → our type. Open and Click are SES's own tracking
# (counted only). Anything not here is ``unknown`` (Send, Reject, Rendering
# Failure, DeliveryDelay, Subscription, …).
SES_EVENT_TYPES: Final[Mapping[str, EventType]] = {
    "Delivery": EventType.delivered,
    "Complaint": EventType.complained,
    "Open": EventType.opened,
    "Click": EventType.clicked,
}


class SesWebhook:
    """SES bounce, complaint and delivery events through an SNS HTTPS subscription."""

    name: ClassVar[str] = "ses"
    secret_env: ClassVar[Mapping[str, str]] = {}

    def __init__(self, *, topics: Sequence[str], max_age_seconds: int = 3600) -> None:
        if isinstance(topics, str) or not isinstance(topics, Sequence) or not topics:
            raise ValueError("key 'topics': expected a non-empty list of SNS topic ARNs")
        for topic in topics:
            if not isinstance(topic, str) or not _TOPIC_ARN.match(topic):
                raise ValueError(f"key 'topics': {topic!r} is not an SNS topic ARN")
        options.count("max_age_seconds", max_age_seconds, minimum=None, style=KEY, what="seconds")
        if max_age_seconds <= 0:
            raise ValueError("key 'max_age_seconds': must be positive")
        self.topics = frozenset(topics)
        self.max_age = timedelta(seconds=max_age_seconds)
        # Not a constructor keyword (every keyword is a TOML key): tests replace it.
        self.certificates: CertificateCache = DEFAULT_CERTIFICATES

    def verify(self, request: WebhookRequest, *, now: datetime) -> Verified:
        """Authenticate an SNS message as documented; raises :class:`WebhookRejected`
        (400 not an SNS message, 403 topic not allowed, 401 certificate URL, signature
        or timestamp refused, 503 the certificate cannot be fetched now)."""
        message = _sns_message(request)
        string_to_sign(message)  # a known Type with every signed field, or 400
        header_type = request.headers.get("x-amz-sns-message-type")
        if header_type is not None and header_type != message["Type"]:
            raise WebhookRejected("x-amz-sns-message-type does not match the body", status=400)
        topic = message["TopicArn"]
        if topic not in self.topics:
            raise WebhookRejected(f"SNS topic {topic!r} is not allowed", status=403)
        signature_hash(message)  # an unknown SignatureVersion is refused before any fetch
        certificate = self.certificates.get(message.get("SigningCertURL"))
        verify_signature(certificate, message, now=now)
        sent = _timestamp(message.get("Timestamp"))
        if sent is None:
            raise WebhookRejected("the SNS Timestamp is not a time", status=400)
        if not now - self.max_age <= sent <= now + timedelta(seconds=FUTURE_SKEW_SECONDS):
            raise WebhookRejected("the SNS message is too old or from the future")
        confirm_url = ""
        if message["Type"] == "SubscriptionConfirmation":
            confirm_url = _subscribe_url(message.get("SubscribeURL"))
        return Verified(
            replay_key=message["MessageId"],
            replay_ttl_seconds=REPLAY_TTL_SECONDS,
            confirm_url=confirm_url,
        )

    def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        """The SES events in a verified SNS message: none for a (un)subscription
        confirmation or SES's set-up message. Raises WebhookRejected(400) for a
        ``Message`` that is not an SES notification."""
        message = _sns_message(request)
        if message.get("Type") != "Notification":
            return []
        text = message.get("Message")
        if text == _SETUP_MESSAGE:
            return []
        try:
            ses = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            ses = None
        if not isinstance(ses, dict):
            raise WebhookRejected("the SNS Message is not an SES notification", status=400)
        kind = ses.get("eventType") or ses.get("notificationType")
        if not isinstance(kind, str):
            raise WebhookRejected("the SES notification has no eventType", status=400)
        sns_id = str(message.get("MessageId", ""))
        common = _common(ses, sns_id, fallback_time=_timestamp(message.get("Timestamp")))
        several = _SEVERAL.get(kind)  # one event per recipient
        return several(ses, common) if several else [_other(ses, kind, common)]


def _sns_message(request: WebhookRequest) -> dict[str, Any]:
    try:
        message = json.loads(request.body)
    except ValueError as exc:  # includes UnicodeDecodeError
        raise WebhookRejected("the body is not JSON", status=400) from exc
    if not isinstance(message, dict) or not isinstance(message.get("MessageId"), str):
        raise WebhookRejected("the body is not an SNS message", status=400)
    return message


def _subscribe_url(url: object) -> str:
    """The SubscribeURL, if it points at SNS itself (the route may GET it)."""
    try:
        check_sns_url(url, what="SubscribeURL")
    except WebhookRejected as exc:
        raise WebhookRejected(str(exc), status=400) from exc
    return str(url)


def _address(value: object) -> str:
    return parseaddr(value)[1].lower() if isinstance(value, str) else ""


def _common(ses: Mapping[str, Any], sns_id: str, fallback_time: datetime | None) -> dict[str, Any]:
    mail = ses.get("mail") if isinstance(ses.get("mail"), dict) else {}
    assert isinstance(mail, dict)
    return {
        "provider": SesWebhook.name,
        "sns_id": sns_id,
        "message_id": _our_message_id(mail),
        "provider_message_id": str(mail.get("messageId") or ""),
        "fallback_time": fallback_time,
        "destination": [d for d in mail.get("destination") or [] if isinstance(d, str)],
        "raw": ses,
    }


def _our_message_id(mail: Mapping[str, Any]) -> str:
    """Our Message-ID: the original header (``mail.headers``, present when "include
    original headers" is on), else ``mail.commonHeaders.messageId``."""
    value: object = None
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
            value = header.get("value")
            break
    if value is None:
        common = mail.get("commonHeaders")
        value = common.get("messageId") if isinstance(common, dict) else None
    return _angle(value) if isinstance(value, str) else ""


def _event(
    common: Mapping[str, Any],
    type_: EventType,
    recipient: str,
    *,
    when: object = None,
    smtp_status: str = "",
    description: str = "",
    policy: bool = False,
) -> DeliveryEvent:
    sns_id = common["sns_id"]
    return DeliveryEvent(
        provider=common["provider"],
        event_id=f"{sns_id}:{recipient}" if recipient else sns_id,
        type=type_,
        recipient=recipient,
        message_id=common["message_id"],
        provider_message_id=common["provider_message_id"],
        occurred_at=_timestamp(when) or common["fallback_time"],
        smtp_status=smtp_status,
        description=description,
        policy=policy,
        raw=common["raw"],
    )


def _listed(ses: Mapping[str, Any], key: str, items: str) -> tuple[dict[str, Any], list[Any]]:
    section = ses.get(key)
    value = section.get(items) if isinstance(section, dict) else None
    if not isinstance(section, dict) or not isinstance(value, list):
        raise WebhookRejected(f"the SES notification has no {key}.{items} list", status=400)
    return section, value


def _bounces(ses: Mapping[str, Any], common: Mapping[str, Any]) -> list[DeliveryEvent]:
    bounce, recipients = _listed(ses, "bounce", "bouncedRecipients")
    bounce_type = str(bounce.get("bounceType", ""))
    sub_type = str(bounce.get("bounceSubType", ""))
    type_ = BOUNCE_TYPES.get(bounce_type, EventType.unknown)
    events = []
    for item in recipients:
        item = item if isinstance(item, dict) else {}
        diagnostic = str(item.get("diagnosticCode") or "")
        found = _STATUS.search(str(item.get("status") or "")) or _STATUS.search(diagnostic)
        status = found.group(1) if found else ""
        events.append(
            _event(
                common,
                type_,
                _address(item.get("emailAddress")),
                when=bounce.get("timestamp"),
                smtp_status=status,
                description=diagnostic or f"{bounce_type}/{sub_type}",
                policy=status.startswith("5.7.") or sub_type in POLICY_SUBTYPES,
            )
        )
    return events


def _complaints(ses: Mapping[str, Any], common: Mapping[str, Any]) -> list[DeliveryEvent]:
    complaint, recipients = _listed(ses, "complaint", "complainedRecipients")
    feedback = complaint.get("complaintFeedbackType") or complaint.get("complaintSubType")
    return [
        _event(
            common,
            SES_EVENT_TYPES["Complaint"],
            _address(item.get("emailAddress") if isinstance(item, dict) else None),
            when=complaint.get("timestamp"),
            description=str(feedback or "complaint"),
        )
        for item in recipients
    ]


def _deliveries(ses: Mapping[str, Any], common: Mapping[str, Any]) -> list[DeliveryEvent]:
    delivery, recipients = _listed(ses, "delivery", "recipients")
    response = str(delivery.get("smtpResponse") or "")
    found = _STATUS.search(response)
    return [
        _event(
            common,
            SES_EVENT_TYPES["Delivery"],
            _address(recipient),
            when=delivery.get("timestamp"),
            smtp_status=found.group(1) if found else "",
            description=response,
        )
        for recipient in recipients
    ]


def _other(ses: Mapping[str, Any], kind: str, common: Mapping[str, Any]) -> DeliveryEvent:
    """Open, Click (timed by ``open`` / ``click``) or unknown: the one recipient's."""
    destination = common["destination"]
    recipient = _address(destination[0]) if len(destination) == 1 else ""
    section = ses.get(kind.lower())
    when = section.get("timestamp") if isinstance(section, dict) else None
    type_ = SES_EVENT_TYPES.get(kind, EventType.unknown)
    return _event(common, type_, recipient, when=when, description=kind)


_SEVERAL: Final = {"Bounce": _bounces, "Complaint": _complaints, "Delivery": _deliveries}
