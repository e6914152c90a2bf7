"""How an SMTP exchange becomes a :class:`~digest.transports.base.SendResult`.

Every phase's answer is classified (RFC 5321 4.2.1: 2xx done, 4xx transient, 5xx permanent):

=========================================  ==========================================
MAIL / RCPT / DATA answered 4xx             ``deferred`` (server's words in ``detail``)
MAIL answered 5xx                           ``failed`` (the sender or session, not the
                                            recipient, is refused)
RCPT or DATA answered 5xx                   ``rejected`` (also: an address that could
                                            inject commands, never written)
connect / disconnect / timeout before the   ``deferred``: definitely not delivered
message body was sent
disconnect after the body was sent, or no   ``unknown``: the server may have queued it
final reply within ``data_timeout``         ("maybe delivered" in ``detail``)
DATA answered 250                           ``sent``; ``provider_id`` = the queue id
DATA answered 5.7.x (policy, DMARC, spam)   ``rejected``, the server's words in
                                            ``detail``; never a hard bounce (``bounce``
                                            stays ""): the message, not the address,
                                            was refused
=========================================  ==========================================

Every function here is pure: :mod:`digest.transports.smtp` keeps the pool and
decides what happens to the connection; this module only names the outcome.
"""

from __future__ import annotations

import re

from digest.transports.base import Outcome, OutgoingMessage, SendResult
from digest.transports.smtp_codec import (
    Reply,
    SmtpAddressError,
    SmtpConnectionError,
    SmtpReplyError,
)

_QUEUE_ID = (re.compile(r"queued as\s+([\w.@<>-]+)", re.I), re.compile(r"\bid=([\w.@-]+)"))


def sent(message: OutgoingMessage, reply: Reply) -> SendResult:
    """``sent``, with the queue id the server named in its final reply (or "")."""
    text = reply.text
    queue_id = next((m.group(1) for p in _QUEUE_ID if (m := p.search(text))), "")
    return SendResult(
        message.delivery_id, Outcome.sent, provider_id=queue_id, detail=f"{reply.code} {text}"
    )


def refused(message: OutgoingMessage, exc: SmtpReplyError) -> SendResult:
    """The outcome of a reply that is not success (RFC 5321 4.2.1 classes)."""
    detail = f"{exc.phase}: {exc.code} {exc.message}"
    if 400 <= exc.code < 500:
        outcome = Outcome.deferred
    elif 500 <= exc.code < 600:
        outcome = Outcome.failed if exc.phase == "MAIL" else Outcome.rejected
    else:  # not an SMTP answer we understand
        outcome = Outcome.unknown if exc.after_body else Outcome.deferred
    return SendResult(message.delivery_id, outcome, detail=detail)


def lost(message: OutgoingMessage, exc: SmtpConnectionError) -> SendResult:
    """The outcome of a connection lost during the transaction."""
    # Once the body went out the server may have the message: never claim either way.
    if exc.after_body:
        detail = (
            f"{exc.phase}: {describe(exc)}: the connection ended after the message "
            "body was sent and before the final reply: maybe delivered"
        )
        return SendResult(message.delivery_id, Outcome.unknown, detail=detail)
    detail = f"{exc.phase}: {describe(exc)}: before the message body was sent"
    return SendResult(message.delivery_id, Outcome.deferred, detail=detail)


def unreachable(message: OutgoingMessage, exc: BaseException, where: str) -> SendResult:
    """``deferred``: no connection to ``where`` (host:port), so nothing was sent."""
    detail = f"connect to {where}: {describe(exc)}"
    return SendResult(message.delivery_id, Outcome.deferred, detail=detail)


def bad_address(message: OutgoingMessage, exc: SmtpAddressError) -> SendResult:
    """``rejected``: an address that could inject commands, refused before writing."""
    return SendResult(message.delivery_id, Outcome.rejected, detail=str(exc))


def describe(exc: BaseException) -> str:
    """The exception's class and words, for ``detail``."""
    text = str(exc) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}" if text != exc.__class__.__name__ else text
