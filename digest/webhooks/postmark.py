"""Postmark webhooks: HTTP basic auth on the URL, one JSON event per request.

Postmark signs nothing; it calls the webhook URL with the credentials you put in
it (``https://user:password@host/webhooks/postmark``), which arrive as an
``Authorization: Basic`` header. We compare both parts in constant time against
``DIGEST_WEBHOOK_POSTMARK_CREDENTIALS`` (``user:password``) and, during a
rotation, also against ``DIGEST_WEBHOOK_POSTMARK_CREDENTIALS_OLD`` — a second
variable rather than a comma-separated list, because a password may contain a
comma. Postmark sends no nonce or timestamp, so there is no replay key: the route
relies on event ids (bounce ``ID``) for de-duplication.

Payloads (one object per request, ``RecordType`` names the kind):
https://postmarkapp.com/developer/webhooks/bounce-webhook,
https://postmarkapp.com/developer/webhooks/spam-complaint-webhook,
https://postmarkapp.com/developer/webhooks/delivery-webhook,
https://postmarkapp.com/developer/webhooks/subscription-change-webhook,
https://postmarkapp.com/developer/webhooks/open-tracking-webhook,
https://postmarkapp.com/developer/webhooks/click-webhook;
bounce ``Type`` values: https://postmarkapp.com/developer/api/bounce-api#bounce-types.
A bounce with ``Inactive: true`` means Postmark deactivated the address and will
answer every later send to it with ErrorCode 406 ("inactive recipient"): it is
applied as a hard bounce (unless it is a policy block), as is ``ManuallyDeactivated``.
A ``SubscriptionChange`` with ``SuppressSending`` is Postmark's own word that it
stopped mailing the address (its ``SuppressionReason`` says why).
``MessageID`` is Postmark's own id (a UUID), not our Message-ID header; ours comes
back in ``Metadata["message_id"]``, where the Postmark transport puts it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from digest.webhooks.base import (
    DeliveryEvent,
    EventType,
    Verified,
    WebhookRejected,
    WebhookRequest,
)

ENV_CREDENTIALS = "DIGEST_WEBHOOK_POSTMARK_CREDENTIALS"
ENV_CREDENTIALS_OLD = "DIGEST_WEBHOOK_POSTMARK_CREDENTIALS_OLD"

# Bounce ``Type`` → (our type, policy). From Postmark's bounce-type table: Transient
# ("message delayed"), DnsError ("a temporary DNS error") and SoftBounce ("unable to
# temporarily deliver") are soft; Blocked ("ISP block … due to content or
# blacklisting"), DMARCPolicy and SpamNotification ("classified as spam … or had
# rejected content") say nothing about the address: soft + policy. Auto-replies,
# challenges and our own errors (SMTPApiError, TemplateRenderingFailed …) are unknown.
BOUNCE_TYPES: Mapping[str, tuple[EventType, bool]] = {
    "HardBounce": (EventType.bounced_hard, False),
    "BadEmailAddress": (EventType.bounced_hard, False),
    "SoftBounce": (EventType.bounced_soft, False),
    "Transient": (EventType.bounced_soft, False),
    "DnsError": (EventType.bounced_soft, False),
    "Blocked": (EventType.bounced_soft, True),
    "DMARCPolicy": (EventType.bounced_soft, True),
    "SpamNotification": (EventType.bounced_soft, True),
    "SpamComplaint": (EventType.complained, False),
    "Unsubscribe": (EventType.unsubscribed, False),
    # "The email was manually deactivated": Postmark refuses to mail it (406).
    "ManuallyDeactivated": (EventType.bounced_hard, False),
}

# SubscriptionChange with SuppressSending=true → why the address was suppressed.
# "If a recipient unsubscribes, they will be suppressed with the SuppressionReason
# of ManualSuppression"; a reason we do not know still means "stop sending".
SUPPRESSION_REASONS: Mapping[str, EventType] = {
    "HardBounce": EventType.bounced_hard,
    "SpamComplaint": EventType.complained,
    "ManualSuppression": EventType.unsubscribed,
}

RECORD_TYPES: Mapping[str, EventType] = {
    "Delivery": EventType.delivered,
    "SpamComplaint": EventType.complained,
    # Postmark's own open and click tracking (when turned on for the stream).
    "Open": EventType.opened,
    "Click": EventType.clicked,
    # Bounce and SubscriptionChange are refined below; anything else is unknown.
}

# Our Message-ID travels in the message's Metadata (digest/transports/postmark.py),
# which Postmark echoes in every webhook about that message.
METADATA_MESSAGE_ID = "message_id"
_TIME_FIELDS = ("BouncedAt", "DeliveredAt", "ChangedAt", "ReceivedAt")
# An RFC 3463 enhanced status code inside the server's reply ("smtp;550 5.1.1 …").
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def _parse_credentials(value: str, variable: str) -> tuple[bytes, bytes]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"{variable} must be 'user:password' (both parts non-empty)")
    return user.encode(), password.encode()


class PostmarkWebhook:
    """Authenticate and parse Postmark's bounce, spam, delivery and subscription hooks."""

    name: ClassVar[str] = "postmark"
    secret_env: ClassVar[Mapping[str, str]] = {
        "credentials": ENV_CREDENTIALS,
        "previous_credentials": ENV_CREDENTIALS_OLD,
    }

    def __init__(self, *, credentials: str = "", previous_credentials: str = "") -> None:
        """Raises ``ValueError`` naming the variable when a credential is missing or
        not ``user:password``."""
        if not credentials:
            raise ValueError(f"the Postmark webhook needs {ENV_CREDENTIALS} (user:password)")
        self._accepted = [_parse_credentials(credentials, ENV_CREDENTIALS)]
        if previous_credentials:
            self._accepted.append(_parse_credentials(previous_credentials, ENV_CREDENTIALS_OLD))

    def verify(self, request: WebhookRequest, *, now: datetime) -> Verified:
        """Check the basic-auth credentials. Raises WebhookRejected(401)."""
        user, password = _basic_auth(request.headers.get("authorization", ""))
        matched = False
        for good_user, good_password in self._accepted:
            # Both comparisons always run, for every accepted pair: no early exit
            # tells a caller which part (or which pair) was wrong.
            user_ok = hmac.compare_digest(user, good_user)
            password_ok = hmac.compare_digest(password, good_password)
            matched |= user_ok & password_ok
        if not matched:
            raise WebhookRejected("postmark: wrong basic-auth credentials", status=401)
        return Verified()  # Postmark sends no nonce or timestamp to replay-check

    def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        """One event per request. Raises WebhookRejected(400) for a body that is not
        a Postmark webhook object."""
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise WebhookRejected("postmark: body is not JSON", status=400) from exc
        if not isinstance(payload, dict) or not (
            isinstance(payload.get("RecordType"), str) or isinstance(payload.get("Type"), str)
        ):
            raise WebhookRejected("postmark: body is not a Postmark webhook object", status=400)
        return [self._event(payload)]

    def _event(self, raw: dict[str, Any]) -> DeliveryEvent:
        # The curl examples in Postmark's docs omit RecordType; a Type means a bounce.
        record = str(raw.get("RecordType") or "Bounce")
        details = _text(raw.get("Details"))
        smtp_status = _enhanced_status(details)
        description = details or _text(raw.get("Description"))
        kind, policy = self._classify(record, raw)
        if kind in (EventType.bounced_hard, EventType.bounced_soft):
            policy = policy or _is_policy_status(smtp_status)
        else:
            policy = False
        if kind is EventType.bounced_soft and not policy and raw.get("Inactive") is True:
            # Postmark deactivated the address: every later send to it is refused
            # with ErrorCode 406 "inactive recipient", which suppresses the reader at
            # send time (digest.delivery.refusals); say so now. A policy block stays one.
            kind = EventType.bounced_hard
            description = f"{description} (Postmark deactivated the address)".strip()
        when = next((raw[k] for k in _TIME_FIELDS if isinstance(raw.get(k), str)), "")
        recipient = _text(raw.get("Email") or raw.get("Recipient")).strip().lower()
        message_id = _text(raw.get("MessageID"))
        metadata = raw.get("Metadata")
        ours = metadata.get(METADATA_MESSAGE_ID) if isinstance(metadata, dict) else None
        return DeliveryEvent(
            provider=self.name,
            event_id=_event_id(record, raw, recipient, message_id, when),
            type=kind,
            recipient=recipient,
            message_id=_text(ours).strip(),
            provider_message_id=message_id,
            occurred_at=_timestamp(when),
            smtp_status=smtp_status,
            description=description,
            policy=policy,
            raw=raw,
        )

    @staticmethod
    def _classify(record: str, raw: Mapping[str, Any]) -> tuple[EventType, bool]:
        if record in ("Bounce", "SpamComplaint") and isinstance(raw.get("Type"), str):
            return BOUNCE_TYPES.get(raw["Type"], (EventType.unknown, False))
        if record == "SubscriptionChange":
            if raw.get("SuppressSending") is not True:
                return EventType.unknown, False  # a reactivation: nothing to apply
            reason = _text(raw.get("SuppressionReason"))
            return SUPPRESSION_REASONS.get(reason, EventType.unsubscribed), False
        return RECORD_TYPES.get(record, EventType.unknown), False


def _basic_auth(header: str) -> tuple[bytes, bytes]:
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise WebhookRejected("postmark: missing basic-auth credentials", status=401)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookRejected("postmark: malformed basic-auth header", status=401) from exc
    user, sep, password = decoded.partition(b":")
    if not sep:
        raise WebhookRejected("postmark: malformed basic-auth header", status=401)
    return user, password


def _event_id(
    record: str, raw: Mapping[str, Any], recipient: str, message_id: str, when: str
) -> str:
    """Bounce and SpamComplaint records carry Postmark's bounce ``ID``; the other
    kinds have none, so the id is built from what identifies them."""
    if record in ("Bounce", "SpamComplaint") and raw.get("ID") is not None:
        return str(raw["ID"])
    return ":".join((record, message_id, recipient, when))


def _is_policy_status(status: str) -> bool:
    """RFC 3463 §3.8: X.7.XXX is "security or policy status" (5.7.1 blocked …)."""
    return status.split(".")[1:2] == ["7"]


def _enhanced_status(text: str) -> str:
    match = _ENHANCED.search(text)
    return match.group(0) if match else ""


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _timestamp(value: str) -> datetime | None:
    """ISO 8601 as Postmark sends it (up to 7 fractional digits); None when absent
    or unreadable."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
