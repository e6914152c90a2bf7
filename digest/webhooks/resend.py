"""Resend delivery events (``kind = "resend"``), signed by Svix.

Configuration::

    [webhooks.resend]
    kind = "resend"
    # secret: DIGEST_WEBHOOK_RESEND_SECRET, the endpoint's signing secret ("whsec_…")

Verification follows Svix's "Verifying Webhooks Manually": the signed content is
``"{svix-id}.{svix-timestamp}.{raw body}"``; the expected signature is the base64 of
its HMAC-SHA256 keyed with the base64-decoded part of the secret after ``whsec_``;
``svix-signature`` is a space-separated list of ``v1,<base64>`` (several during a
secret rotation; one match is enough); ``svix-timestamp`` must be within five minutes
either way of now (Svix's own tolerance). ``svix-id`` is the replay key and the event
id: Svix keeps it across retries of the same message.

Events ("Event Types" in Resend's docs) are mapped by :data:`EVENT_TYPES`;
``email.bounced`` by its ``data.bounce.type`` (Resend sends from Amazon SES, and the
bounce object carries SES's type, sub-type and message).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from typing import Any, ClassVar, Final

from digest.webhooks.base import (
    DeliveryEvent,
    EventType,
    Verified,
    WebhookRejected,
    WebhookRequest,
)
from digest.webhooks.fields import iso_time as _time
from digest.webhooks.fields import sounds_like_block

TOLERANCE: Final = timedelta(minutes=5)
REPLAY_TTL_SECONDS: Final = 10 * 60  # covers the ±5 minute window
_SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (a prefix, not a secret)
_STATUS: Final = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")

# Resend event type → ours. email.bounced is refined by BOUNCE_TYPES; opened and
# clicked (Resend's own tracking) are counted only; anything not here (sent,
# delivery_delayed, failed, scheduled, received, contact.*, domain.*) is
# ``unknown``: kept, never acted on.
EVENT_TYPES: Final[Mapping[str, EventType]] = {
    "email.delivered": EventType.delivered,
    "email.bounced": EventType.bounced_hard,  # "permanently rejected", per the docs
    "email.complained": EventType.complained,
    "email.opened": EventType.opened,
    "email.clicked": EventType.clicked,
    # Resend did not send: the address is on its suppression list after an earlier
    # hard bounce or complaint (SES's "Suppressed"/"OnAccountSuppressionList").
    "email.suppressed": EventType.bounced_hard,
}
BOUNCE_TYPES: Final[Mapping[str, EventType]] = {
    "Permanent": EventType.bounced_hard,
    "Transient": EventType.bounced_soft,
    "Undetermined": EventType.unknown,
}
POLICY_SUBTYPES: Final = frozenset({"ContentRejected"})


class ResendWebhook:
    """Resend's ``email.*`` events, authenticated by their Svix signature."""

    name: ClassVar[str] = "resend"
    secret_env: ClassVar[Mapping[str, str]] = {"secret": "DIGEST_WEBHOOK_RESEND_SECRET"}

    def __init__(self, *, secret: str = "") -> None:
        variable = self.secret_env["secret"]
        if not secret:
            raise ValueError(f"{variable} is not set: the Resend webhook's signing secret")
        encoded = secret.removeprefix(_SECRET_PREFIX)
        try:
            self._key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"{variable} is not a Svix signing secret ('whsec_…')") from exc
        if not self._key:
            raise ValueError(f"{variable} is not a Svix signing secret ('whsec_…')")

    def verify(self, request: WebhookRequest, *, now: datetime) -> Verified:
        """Check the Svix signature and timestamp; raises WebhookRejected (401)."""
        msg_id = request.headers.get("svix-id", "")
        stamp = request.headers.get("svix-timestamp", "")
        signatures = request.headers.get("svix-signature", "")
        if not (msg_id and stamp and signatures):
            raise WebhookRejected("the svix-id, svix-timestamp or svix-signature header is missing")
        try:
            sent = datetime.fromtimestamp(int(stamp), tz=UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise WebhookRejected("svix-timestamp is not a Unix time") from exc
        if not now - TOLERANCE <= sent <= now + TOLERANCE:
            raise WebhookRejected("svix-timestamp is more than five minutes off")
        signed = msg_id.encode() + b"." + stamp.encode() + b"." + request.body
        expected = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest())
        if not any(
            hmac.compare_digest(expected, candidate.encode())
            for version, _, candidate in (s.partition(",") for s in signatures.split())
            if version == "v1"
        ):
            raise WebhookRejected("no svix-signature matches")
        return Verified(replay_key=msg_id, replay_ttl_seconds=REPLAY_TTL_SECONDS)

    def parse(self, request: WebhookRequest) -> list[DeliveryEvent]:
        """The one event in a verified request; WebhookRejected(400) if it is not
        Resend's ``{"type", "created_at", "data"}`` envelope."""
        try:
            event = json.loads(request.body)
        except ValueError as exc:  # includes UnicodeDecodeError
            raise WebhookRejected("the body is not JSON", status=400) from exc
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise WebhookRejected("the body is not a Resend event", status=400)
        data = event.get("data")
        if not isinstance(data, dict):
            raise WebhookRejected("the Resend event has no data object", status=400)
        return [self._event(event, data, request.headers.get("svix-id", ""))]

    def _event(self, event: dict[str, Any], data: dict[str, Any], msg_id: str) -> DeliveryEvent:
        kind: str = event["type"]
        type_ = EVENT_TYPES.get(kind, EventType.unknown)
        status, description, policy = "", "", False
        details = data.get("bounce") if kind == "email.bounced" else data.get("suppressed")
        if isinstance(details, dict):
            if kind == "email.bounced" and details.get("type") is not None:
                type_ = BOUNCE_TYPES.get(str(details.get("type")), EventType.unknown)
            status, description, policy = _bounce_details(details)
            policy = policy and kind == "email.bounced"  # a suppression is never policy
        return DeliveryEvent(
            provider=self.name,
            event_id=msg_id or str(data.get("email_id", "")),
            type=type_,
            recipient=_first_recipient(data.get("to")),
            message_id=_header(data.get("headers"), "message-id"),
            provider_message_id=str(data.get("email_id") or ""),
            occurred_at=_time(event.get("created_at")),
            smtp_status=status,
            description=description,
            policy=policy,
            raw=event,
        )


def _bounce_details(details: Mapping[str, Any]) -> tuple[str, str, bool]:
    """(enhanced status, description, policy) from a bounce/suppressed object:
    ``{"type", "subType", "message", "diagnosticCode"?}``."""
    diagnostic = details.get("diagnosticCode")
    if isinstance(diagnostic, list):  # documented as a list of strings
        diagnostic = " ".join(str(d) for d in diagnostic)
    diagnostic = str(diagnostic or "")
    message = str(details.get("message") or "")
    sub_type = str(details.get("subType") or "")
    found = _STATUS.search(diagnostic) or _STATUS.search(message)
    status = found.group(1) if found else ""
    policy = (
        status.startswith("5.7.")
        or sub_type in POLICY_SUBTYPES
        or sounds_like_block(f"{sub_type} {message} {diagnostic}")
    )
    return status, (diagnostic or message or sub_type), policy


def _first_recipient(value: object) -> str:
    # One reader per message here; Resend does not say which recipient an event is for.
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and value and isinstance(value[0], str):
        return parseaddr(value[0])[1].lower()
    return ""


def _header(headers: object, name: str) -> str:
    """A header we sent, echoed in ``data.headers`` (a list of {name, value} or a map)."""
    pairs: list[tuple[object, object]] = []
    if isinstance(headers, list):
        pairs = [(h.get("name"), h.get("value")) for h in headers if isinstance(h, dict)]
    elif isinstance(headers, dict):
        pairs = list(headers.items())
    for key, value in pairs:
        if isinstance(key, str) and key.lower() == name and isinstance(value, str):
            return value.strip()
    return ""
