"""What an SES notification says, as :class:`DeliveryEvent` values: one per
recipient for ``Bounce``, ``Complaint`` and ``Delivery``; one for anything else
(``Open``, ``Click``, or an unknown kind, stored only). Both SES formats are read:
``eventType`` (configuration-set event publishing) and ``notificationType`` (identity
notifications). :mod:`digest.webhooks.ses` verifies the SNS envelope first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from email.utils import parseaddr
from typing import Any, Final

from digest.webhooks.base import DeliveryEvent, EventType, WebhookRejected
from digest.webhooks.fields import angle as _angle
from digest.webhooks.fields import iso_time as _timestamp

PROVIDER: Final = "ses"
_STATUS: Final = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")

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


def events_of(
    ses: Mapping[str, Any], kind: str, sns_id: str, *, fallback_time: datetime | None
) -> list[DeliveryEvent]:
    """The events in one SES notification of kind ``kind`` (its ``eventType`` or
    ``notificationType``), carried by the SNS message ``sns_id``. Raises
    WebhookRejected(400) when a bounce, complaint or delivery lacks its recipients."""
    common = _common(ses, sns_id, fallback_time)
    several = _SEVERAL.get(kind)  # one event per recipient
    return several(ses, common) if several else [_other(ses, kind, common)]


def _address(value: object) -> str:
    return parseaddr(value)[1].lower() if isinstance(value, str) else ""


def _common(ses: Mapping[str, Any], sns_id: str, fallback_time: datetime | None) -> dict[str, Any]:
    mail = ses.get("mail") if isinstance(ses.get("mail"), dict) else {}
    assert isinstance(mail, dict)
    return {
        "provider": PROVIDER,
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
