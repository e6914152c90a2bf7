"""Mailgun webhooks (the JSON "current" webhooks, not the retired form-encoded ones).

The body is ``{"signature": {"timestamp", "token", "signature"}, "event-data": {…}}``;
``signature`` is the hex HMAC-SHA256 of ``timestamp + token`` under the webhook
signing key (``DIGEST_WEBHOOK_MAILGUN_SIGNING_KEY``). For a subaccount's domain
Mailgun adds ``parent-signature``, the same HMAC under the primary account's key;
either one matching is enough, so one key works for both set-ups. See
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks

Mailgun recommends refusing stale timestamps and re-used tokens; it also retries a
POST we did not answer 200 (anything but 406) for about 8 hours, at growing
intervals (5 min, 10 min, 15 min, 1 h, 2 h, 4 h), and a retry may carry the
signature of the first attempt:
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-retries.
So a timestamp up to ``tolerance_seconds`` (default 300) ahead of ``now`` or
behind it is accepted as usual, and one up to ``retry_window_seconds`` (default
8 h 30 min) behind it is accepted as a late retry: the signature is checked all
the same, the token (the replay key) is kept for the whole window, and the event
id decides the rest — a new one is applied, a known one is answered 200 and
ignored (``digest.delivery.events``). Anything older is refused (401). Payloads:
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads

Mapping: delivered → delivered; failed → bounced-hard (severity "permanent") or
bounced-soft (anything else), except ``reason`` suppress-complaint / suppress-
unsubscribe, which report an earlier complaint or unsubscribe; complained,
unsubscribed as named; opened, clicked (Mailgun's own tracking) → opened, clicked
(counted only). accepted, rejected, stored … → unknown (kept raw; nothing to
apply). ``policy`` when ``reason`` is espblock or the enhanced code is X.7.X. Our
Message-ID is ``user-variables.digest_message_id`` (set by the Mailgun
transport); the ``message-id`` header is Mailgun's own id for the request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

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

ENV_SIGNING_KEY = "DIGEST_WEBHOOK_MAILGUN_SIGNING_KEY"
# Mailgun retries for about 8 hours; half an hour more for its queue and our clock.
DEFAULT_RETRY_WINDOW = 8 * 3600 + 1800
MAX_RETRY_WINDOW = 3 * 86400

log = logging.getLogger(__name__)

EVENTS: Mapping[str, EventType] = {
    "delivered": EventType.delivered,
    "complained": EventType.complained,
    "unsubscribed": EventType.unsubscribed,
    "opened": EventType.opened,
    "clicked": EventType.clicked,
    # "failed" is refined below; everything else is unknown.
}

# The ``v:`` variable the Mailgun transport sets; echoed per event in user-variables.
VARIABLE_MESSAGE_ID = "digest_message_id"

SEVERITIES: Mapping[str, EventType] = {
    "permanent": EventType.bounced_hard,
    "temporary": EventType.bounced_soft,
}

# ``failed`` events Mailgun did not even attempt because the address is on one of
# its suppression lists: they report the earlier event, not a new bounce.
SUPPRESS_REASONS: Mapping[str, EventType] = {
    "suppress-complaint": EventType.complained,
    "suppress-unsubscribe": EventType.unsubscribed,
}

# ``reason`` values that blame the sender (Mailgun's ESP-level block list).
POLICY_REASONS = frozenset({"espblock"})

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


class MailgunWebhook:
    """Authenticate and parse Mailgun's JSON event webhooks."""

    name: ClassVar[str] = "mailgun"
    secret_env: ClassVar[Mapping[str, str]] = {"signing_key": ENV_SIGNING_KEY}

    def __init__(
        self,
        *,
        signing_key: str = "",
        tolerance_seconds: int = 300,
        retry_window_seconds: int = DEFAULT_RETRY_WINDOW,
    ) -> None:
        """Raises ``ValueError`` naming ``DIGEST_WEBHOOK_MAILGUN_SIGNING_KEY`` when the
        key is missing, or naming ``tolerance_seconds`` / ``retry_window_seconds``."""
        if not signing_key.strip():
            raise ValueError(f"the Mailgun webhook needs {ENV_SIGNING_KEY} (webhook signing key)")
        options.count(
            "tolerance_seconds", tolerance_seconds, maximum=86400, style=KEY_BARE, what="1…86400"
        )
        options.count(
            "retry_window_seconds",
            retry_window_seconds,
            minimum=tolerance_seconds,
            maximum=MAX_RETRY_WINDOW,
            style=KEY_BARE,
            what=f"{tolerance_seconds}…{MAX_RETRY_WINDOW} (at least tolerance_seconds)",
        )
        self._key = signing_key.strip().encode()
        self.tolerance_seconds = tolerance_seconds
        self.retry_window_seconds = retry_window_seconds

    def verify(self, request: WebhookRequest, *, now: datetime) -> Verified:
        """Check the HMAC in the body's ``signature`` block, then its timestamp (see
        the module docstring for the retry window). Raises WebhookRejected: 400 for a
        body that is not a JSON object, 401 for a missing or wrong signature, or a
        timestamp outside the window."""
        block = _load(request.body).get("signature")
        if not isinstance(block, dict):
            raise WebhookRejected("mailgun: no signature block", status=401)
        timestamp, token = block.get("timestamp"), block.get("token")
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            timestamp = str(timestamp)
        if not isinstance(timestamp, str) or not isinstance(token, str) or not token:
            raise WebhookRejected("mailgun: incomplete signature block", status=401)
        expected = hmac.new(self._key, (timestamp + token).encode(), hashlib.sha256).hexdigest()
        matched = False
        for field in ("signature", "parent-signature"):
            given = block.get(field)
            if isinstance(given, str):
                matched |= hmac.compare_digest(given.lower().encode(), expected.encode())
        if not matched:
            raise WebhookRejected("mailgun: bad signature", status=401)
        if not timestamp.isdigit():
            raise WebhookRejected("mailgun: bad timestamp", status=401)
        age = now.timestamp() - int(timestamp)
        if age < -self.tolerance_seconds or age > self.retry_window_seconds:
            raise WebhookRejected(f"mailgun: timestamp {age:.0f}s off", status=401)
        if age > self.tolerance_seconds:
            log.info("mailgun: a retry signed %.0fs ago, within the retry window", age)
        # The token must stay recorded as long as its signature is accepted: from the
        # furthest accepted future timestamp to the end of the retry window.
        ttl = self.retry_window_seconds + self.tolerance_seconds
        return Verified(replay_key=token, replay_ttl_seconds=ttl)

    def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        """The one event in ``event-data``. Raises WebhookRejected(400) when it is
        missing or not an object."""
        data = _load(request.body).get("event-data")
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            raise WebhookRejected("mailgun: no event-data object", status=400)
        return [self._event(data)]

    def _event(self, raw: dict[str, Any]) -> DeliveryEvent:
        status = raw.get("delivery-status")
        status = status if isinstance(status, dict) else {}
        message = _text(status.get("message"))
        smtp_status = _text(status.get("enhanced-code")) or _enhanced_status(message)
        smtp_status = smtp_status if _ENHANCED.fullmatch(smtp_status) else ""
        kind = _classify(raw)
        policy = kind in (EventType.bounced_hard, EventType.bounced_soft) and (
            _text(raw.get("reason")) in POLICY_REASONS or _is_policy_status(smtp_status)
        )
        mailgun_id = _header(raw, "message-id").strip().strip("<>")
        variables = raw.get("user-variables")
        ours = variables.get(VARIABLE_MESSAGE_ID) if isinstance(variables, dict) else None
        return DeliveryEvent(
            provider=self.name,
            event_id=_event_id(raw),
            type=kind,
            recipient=_text(raw.get("recipient")).strip().lower(),
            # Our Message-ID comes back in user-variables; the header is Mailgun's own
            # (stored without <>: we add them) for mail sent without the variable.
            message_id=_angle(_text(ours) or mailgun_id),
            # The id Mailgun's send API answered with, without <> as the transport
            # stores it in delivery.provider_id.
            provider_message_id=mailgun_id,
            occurred_at=_timestamp(raw.get("timestamp")),
            smtp_status=smtp_status,
            description=_text(status.get("description")) or message,
            policy=policy,
            raw=raw,
        )


def _classify(raw: Mapping[str, Any]) -> EventType:
    event = _text(raw.get("event"))
    if event != "failed":
        return EVENTS.get(event, EventType.unknown)
    reason = _text(raw.get("reason"))
    if reason in SUPPRESS_REASONS:
        return SUPPRESS_REASONS[reason]
    return SEVERITIES.get(_text(raw.get("severity")), EventType.bounced_soft)


def _load(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookRejected("mailgun: body is not JSON", status=400) from exc
    if not isinstance(payload, dict):
        raise WebhookRejected("mailgun: body is not a JSON object", status=400)
    return payload


def _event_id(raw: Mapping[str, Any]) -> str:
    """``event-data.id`` is only unique within a day (anymail's notes on Mailgun), so
    the event's own timestamp goes with it; a retried POST repeats both."""
    event_id = _text(raw.get("id")) or ":".join(
        (_text(raw.get("event")), _header(raw, "message-id"), _text(raw.get("recipient")))
    )
    stamp = raw.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool):
        return f"{event_id}@{stamp!r}"
    return event_id


def _header(raw: Mapping[str, Any], name: str) -> str:
    message = raw.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    return _text(headers.get(name)) if isinstance(headers, dict) else ""


def _is_policy_status(status: str) -> bool:
    """RFC 3463 §3.8: X.7.XXX is "security or policy status"."""
    return status.split(".")[1:2] == ["7"]


def _enhanced_status(text: str) -> str:
    match = _ENHANCED.search(text)
    return match.group(0) if match else ""
