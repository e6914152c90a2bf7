"""Ways out for messages: the ``TRANSPORTS`` registry (built by ``digest.config.registry``).

``[transport] kind = "…"`` picks the class; the rest of the table becomes its
constructor keywords (see :mod:`digest.config.registry`). The contract every kind keeps
is in :mod:`digest.transports.base`.
"""

from __future__ import annotations

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


__all__ = [
    "TRANSPORTS",
    "MemoryTransport",
    "OutboxTransport",
    "Outcome",
    "OutgoingMessage",
    "SendResult",
    "SmtpTransport",
    "Transport",
]
