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
event data published to Amazon SNS" — into one :class:`DeliveryEvent` per recipient
(:mod:`digest.webhooks.ses_events`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

from digest.common import options
from digest.common.options import KEY
from digest.webhooks.base import (
    DeliveryEvent,
    Verified,
    WebhookRejected,
    WebhookRequest,
)
from digest.webhooks.fields import iso_time as _timestamp
from digest.webhooks.ses_events import events_of
from digest.webhooks.sns_certs import (
    DEFAULT_CERTIFICATES,
    CertificateCache,
    check_sns_url,
    signature_hash,
    string_to_sign,
    verify_signature,
)

_TOPIC_ARN: Final = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}$")
REPLAY_TTL_SECONDS: Final = 24 * 3600
FUTURE_SKEW_SECONDS: Final = 300
# SES sends this as a plain-text Notification once a configuration set's SNS
# destination is set up; it is no event.
_SETUP_MESSAGE: Final = "Successfully validated SNS topic for Amazon SES event publishing."


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
        return events_of(ses, kind, sns_id, fallback_time=_timestamp(message.get("Timestamp")))


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
