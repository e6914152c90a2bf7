"""Ways out for messages: the ``TRANSPORTS`` registry and :func:`build_transport`.

``[transport] kind = "…"`` picks the class; the rest of the table becomes its
constructor keywords (see :mod:`digest.registry`). The contract every kind keeps
is in :mod:`digest.transports.base`.
"""

from __future__ import annotations

from collections.abc import Mapping

from digest.config import AdapterConfig
from digest.registry import build
from digest.transports.base import Outcome, OutgoingMessage, SendResult, Transport
from digest.transports.mailgun import MailgunTransport
from digest.transports.memory import MemoryTransport
from digest.transports.outbox import OutboxTransport
from digest.transports.postmark import PostmarkTransport
from digest.transports.resend import ResendTransport
from digest.transports.sendgrid import SendGridTransport
from digest.transports.smtp import SmtpTransport

TRANSPORTS: dict[str, type[Transport]] = {
    "outbox": OutboxTransport,
    "smtp": SmtpTransport,
    "memory": MemoryTransport,
    "postmark": PostmarkTransport,
    "resend": ResendTransport,
    "sendgrid": SendGridTransport,
    "mailgun": MailgunTransport,
}


def build_transport(cfg: AdapterConfig, env: Mapping[str, str]) -> Transport:
    """Build the ``[transport]`` table's transport; raises ``ConfigError`` naming the key."""
    return build(TRANSPORTS, cfg, env)


__all__ = [
    "TRANSPORTS",
    "MemoryTransport",
    "OutboxTransport",
    "Outcome",
    "OutgoingMessage",
    "SendResult",
    "SmtpTransport",
    "Transport",
    "build_transport",
]
