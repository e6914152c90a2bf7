"""What every provider webhook adapter does: authenticate a request, then turn its
payload into :class:`DeliveryEvent` values in our vocabulary.

Adapters import nothing from the pipeline, the database or ``subscribers``. The
web route (``digest/web/webhooks.py``) calls :meth:`Webhook.verify` first — a
request that fails it changes nothing and gets a 4xx — then :meth:`Webhook.parse`,
and hands the events to ``digest.delivery.events``. Unknown event kinds map to
``EventType.unknown`` with the raw payload kept; they never crash the route.
The provider's open and click events map to ``opened`` and ``clicked``: they only
count (docs/TRACKING.md).

Secrets come from the environment: each class names its variables in
``secret_env`` (constructor keyword → variable); a provider enabled without its
secret refuses to start (``ValueError`` from the constructor → ConfigError).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol


class EventType(StrEnum):
    delivered = "delivered"
    bounced_hard = "bounced-hard"
    bounced_soft = "bounced-soft"
    complained = "complained"
    unsubscribed = "unsubscribed"
    # The provider's own open and click tracking: counted per edition
    # (engagement_count provider_open / provider_click), never acted on.
    opened = "opened"
    clicked = "clicked"
    unknown = "unknown"


@dataclass(frozen=True, slots=True)
class DeliveryEvent:
    provider: str
    event_id: str  # unique per provider: the same event delivered twice is applied once
    type: EventType
    recipient: str = ""  # the address the event is about (lower-cased), when given
    message_id: str = ""  # our Message-ID header value (with <>), when the provider echoes it
    provider_message_id: str = ""  # the provider's id for the message, when given
    occurred_at: datetime | None = None
    smtp_status: str = ""  # enhanced status code, e.g. "5.1.1", when given
    description: str = ""  # the provider's or the receiving server's words
    policy: bool = False  # a policy/reputation block (5.7.x): never suppresses the reader
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A provider's HTTP request, as the route received it."""

    method: str
    url: str  # the full URL the provider called (scheme, host, path, query)
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    remote_addr: str = ""


class WebhookRejected(Exception):
    """Authentication failed or the request is malformed: answer ``status``, write nothing."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Verified:
    """What verification learned. ``replay_key``: a one-time value (a signature token,
    a message id) the route must record and refuse to see twice within ``replay_ttl``."""

    replay_key: str = ""
    replay_ttl_seconds: int = 0
    # Set when the request is a subscription handshake (SNS) rather than events:
    # the route answers 200 and, if ``confirm_url`` is set, the operator is told.
    confirm_url: str = ""


class Webhook(Protocol):
    name: ClassVar[str]

    def verify(self, request: WebhookRequest, *, now: datetime) -> Verified:
        """Authenticate ``request`` exactly as the provider documents. Raises
        :class:`WebhookRejected` (nothing may be written then)."""
        ...

    def parse(self, request: WebhookRequest) -> Sequence[DeliveryEvent]:
        """The events in a verified request. Raises WebhookRejected(status=400) for a
        body that is not the provider's format."""
        ...
