"""SendGrid Event Webhook with the Signed Event Webhook turned on.

SendGrid signs ``timestamp + raw body`` with ECDSA P-256 / SHA-256 and sends the
base64 DER signature in ``X-Twilio-Email-Event-Webhook-Signature`` and the Unix
timestamp in ``X-Twilio-Email-Event-Webhook-Timestamp``; the verification key is
the base64 DER SubjectPublicKeyInfo shown under Settings → Mail Settings → Event
Webhooks (``DIGEST_WEBHOOK_SENDGRID_PUBLIC_KEY``). The body must be verified as
the raw bytes received, never re-serialized JSON. See
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features

SendGrid documents no freshness window; we refuse timestamps more than
``tolerance_seconds`` (default 300) away from ``now``, and the replay key — the
signature, normalized against ECDSA malleability — lives twice that long, since a
request is acceptable from ``ts - tolerance`` to ``ts + tolerance``.

The body is a JSON array of events (fields:
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from digest.common import options
from digest.common.options import KEY_BARE
from digest.webhooks.base import (
    DeliveryEvent,
    EventType,
    Verified,
    WebhookRejected,
    WebhookRequest,
)
from digest.webhooks.fields import angle as _angle
from digest.webhooks.fields import epoch_time as _timestamp
from digest.webhooks.fields import text as _text

ENV_PUBLIC_KEY = "DIGEST_WEBHOOK_SENDGRID_PUBLIC_KEY"
SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
# custom_args the SendGrid transport sends; SendGrid echoes them as top-level keys.
CUSTOM_ARG_MESSAGE_ID = "digest_message_id"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

# ``event`` → our type. ``bounce`` and ``dropped`` are refined below. processed,
# deferred (SendGrid keeps retrying), group_resubscribe … are unknown; open and
# click are SendGrid's own tracking (counted only).
EVENTS: Mapping[str, EventType] = {
    "delivered": EventType.delivered,
    "open": EventType.opened,
    "click": EventType.clicked,
    "spamreport": EventType.complained,
    "unsubscribe": EventType.unsubscribed,
    "group_unsubscribe": EventType.unsubscribed,
}

# bounce ``type``: "bounce" is a permanent rejection, "blocked" a temporary one that
# SendGrid does not add to its suppression list.
BOUNCE_TYPES: Mapping[str, EventType] = {
    "bounce": EventType.bounced_hard,
    "blocked": EventType.bounced_soft,
}

# ``bounce_classification`` values that blame the sender, not the address.
POLICY_CLASSIFICATIONS = frozenset({"Reputation", "Content", "Frequency or Volume Too High"})

# ``dropped`` ``reason`` (lower-cased): SendGrid did not send because of one of its
# suppression lists; the others (spam content, quota …) say nothing about the reader.
DROP_REASONS: Mapping[str, EventType] = {
    "bounced address": EventType.bounced_hard,
    "invalid": EventType.bounced_hard,
    "unsubscribed address": EventType.unsubscribed,
    "spam reporting address": EventType.complained,
}

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key: base64 DER SubjectPublicKeyInfo (PEM accepted).
    Raises ``ValueError`` naming the variable."""
    try:
        if "BEGIN PUBLIC KEY" in value:
            key = serialization.load_pem_public_key(value.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(value, validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError(f"{ENV_PUBLIC_KEY} is not a base64 public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{ENV_PUBLIC_KEY} must be an ECDSA P-256 public key")
    return key


class SendGridWebhook:
    """Authenticate and parse SendGrid's signed Event Webhook."""

    name: ClassVar[str] = "sendgrid"
    secret_env: ClassVar[Mapping[str, str]] = {"public_key": ENV_PUBLIC_KEY}

    def __init__(self, *, public_key: str = "", tolerance_seconds: int = 300) -> None:
        """Raises ``ValueError`` naming ``DIGEST_WEBHOOK_SENDGRID_PUBLIC_KEY`` when the
        key is missing or unusable, or naming ``tolerance_seconds``."""
        if not public_key:
            raise ValueError(f"the SendGrid webhook needs {ENV_PUBLIC_KEY} (verification key)")
        options.count(
            "tolerance_seconds", tolerance_seconds, maximum=86400, style=KEY_BARE, what="1…86400"
        )
        self._key = load_public_key(public_key.strip())
        self.tolerance_seconds = tolerance_seconds

    def verify(self, request: WebhookRequest, *, now: datetime) -> Verified:
        """Check the ECDSA signature over ``timestamp + body``, then the timestamp's
        age. Raises WebhookRejected(401)."""
        signature_b64 = request.headers.get(SIGNATURE_HEADER, "").strip()
        timestamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
        if not signature_b64 or not timestamp:
            raise WebhookRejected("sendgrid: missing signature headers", status=401)
        try:
            signature = base64.b64decode(signature_b64, validate=True)
            self._key.verify(
                signature, timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256())
            )
            r, s = decode_dss_signature(signature)
        except (InvalidSignature, binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise WebhookRejected("sendgrid: bad signature", status=401) from exc
        if not timestamp.isdigit():
            raise WebhookRejected("sendgrid: bad timestamp", status=401)
        age = now.timestamp() - int(timestamp)
        if abs(age) > self.tolerance_seconds:
            raise WebhookRejected(f"sendgrid: timestamp {age:.0f}s off", status=401)
        # (r, s) and (r, n - s) both verify: key on the low-s form so a re-encoded
        # signature cannot pass the replay cache as a new one.
        return Verified(
            replay_key=f"sendgrid:{r:x}:{min(s, _P256_ORDER - s):x}",
            replay_ttl_seconds=2 * self.tolerance_seconds,
        )

    def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        """Every event in the array, in order. Raises WebhookRejected(400) unless the
        body is a JSON array of objects."""
        try:
            payload = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise WebhookRejected("sendgrid: body is not JSON", status=400) from exc
        if not isinstance(payload, list) or not all(isinstance(e, dict) for e in payload):
            raise WebhookRejected("sendgrid: body is not an array of events", status=400)
        return [self._event(raw) for raw in payload]

    def _event(self, raw: dict[str, Any]) -> DeliveryEvent:
        kind, policy = _classify(raw)
        reason = _text(raw.get("reason"))
        smtp_status = _text(raw.get("status")) or _enhanced_status(reason)
        if kind in (EventType.bounced_hard, EventType.bounced_soft):
            policy = policy or _is_policy_status(smtp_status)
        return DeliveryEvent(
            provider=self.name,
            event_id=_text(raw.get("sg_event_id")) or _digest_id(raw),
            type=kind,
            recipient=_text(raw.get("email")).strip().lower(),
            # Our Message-ID comes back as a custom arg; smtp-id is the one SendGrid
            # assigned (we set none), kept as a fallback for mail sent otherwise.
            message_id=_angle(_text(raw.get(CUSTOM_ARG_MESSAGE_ID)) or _text(raw.get("smtp-id"))),
            # sg_message_id is "<X-Message-Id>.<filter/host suffix>"; the part before
            # the first dot is the id the v3 send API returned.
            provider_message_id=_text(raw.get("sg_message_id")).split(".", 1)[0],
            occurred_at=_timestamp(raw.get("timestamp")),
            smtp_status=smtp_status if _ENHANCED.fullmatch(smtp_status) else "",
            description=reason or _text(raw.get("response")),
            policy=policy,
            raw=raw,
        )


def _classify(raw: Mapping[str, Any]) -> tuple[EventType, bool]:
    event = _text(raw.get("event"))
    if event == "bounce":
        bounce_type = _text(raw.get("type")) or "bounce"
        kind = BOUNCE_TYPES.get(bounce_type, EventType.bounced_soft)
        classification = _text(raw.get("bounce_classification"))
        if classification:
            return kind, classification in POLICY_CLASSIFICATIONS
        return kind, bounce_type == "blocked"  # blocks are mostly reputation/IP blocks
    if event == "dropped":
        reason = _text(raw.get("reason")).strip().lower()
        return DROP_REASONS.get(reason, EventType.unknown), False
    return EVENTS.get(event, EventType.unknown), False


def _is_policy_status(status: str) -> bool:
    """RFC 3463 §3.8: X.7.XXX is "security or policy status"."""
    return status.split(".")[1:2] == ["7"]


def _enhanced_status(text: str) -> str:
    match = _ENHANCED.search(text)
    return match.group(0) if match else ""


def _digest_id(raw: Mapping[str, Any]) -> str:
    """An event without ``sg_event_id``: a stable id from its canonical JSON."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
