"""The pieces of a bounce that are plain text: addresses, status codes, the
returned message's headers, and the common bounces that are not RFC 3464 DSNs.

Exim, qmail, older Sendmail and many hosted systems send a plain-text bounce: a
subject such as "Mail delivery failed", a sender such as ``MAILER-DAEMON``, and the
remote server's answer (``550 5.1.1 <ada@example.org>: User unknown``) somewhere
in the text. :func:`looks_like_bounce` and :func:`text_status` recognise them;
nothing here reads the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses

from digest.delivery.matching import parse_message_id
from digest.delivery.refusals import enhanced_status
from digest.webhooks.fields import sounds_like_block

# Subjects and senders of the common non-standard bounces.
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered mail|mail delivery (?:failed|failure|subsystem)|"
    r"delivery status notification|returned mail|delivery failure|failure notice|"
    r"could not be delivered|non[- ]?delivery|rejected:",
    re.IGNORECASE,
)
_BOUNCE_SENDER = re.compile(r"mailer-daemon|postmaster|mail delivery (?:system|subsystem)", re.I)
# "550 5.1.1", "550-5.1.1", "5.1.1", or a bare "550 " reply code.
_REPLY_AND_STATUS = re.compile(r"\b([245])\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY = re.compile(r"(?<![\d.])([45])[0-5]\d(?=[ -])")
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_OUR_ID = re.compile(r"<[^<>@\s]+\.s\d{1,18}\.digest@[^<>@\s]+>")
NEAR_LINES = 6  # an address this many lines above a status code is its recipient


@dataclass(frozen=True, slots=True)
class Status:
    """A status found in the text: the enhanced code (or ``"5"``/``"4"`` from a bare
    reply code), its class, and the line it was on."""

    code: str
    permanent: bool
    line: str


def header(message: Message, name: str) -> str:
    """A header as one clean line, "" when missing or unparseable."""
    try:
        value = message.get(name)
        if value is None:
            return ""
        text = str(make_header(decode_header(str(value)))) if "=?" in str(value) else str(value)
        return " ".join(text.split())
    except Exception:  # the stdlib's header parser raises odd errors on hostile input
        return ""


def addresses(message: Message, name: str) -> list[str]:
    """Every bare address in every ``name`` header, lower-cased."""
    try:
        values = [str(v) for v in message.get_all(name, [])]
        return [a.lower() for _, a in getaddresses(values) if "@" in a]
    except Exception:  # as in header(): a hostile header names nobody
        return []


def looks_like_bounce(message: Message) -> bool:
    """A subject or sender that bounces use (RFC 3464 DSNs aside)."""
    sender = header(message, "From") + " " + header(message, "Return-Path")
    return bool(_BOUNCE_SUBJECT.search(header(message, "Subject")) or _BOUNCE_SENDER.search(sender))


def is_policy(status: str, words: str) -> bool:
    """X.7.x (RFC 3463 §3.8 "security or policy status"), or a block in the words."""
    return bool(re.fullmatch(r"[45]\.7\.\d{1,3}", status)) or sounds_like_block(words)


def status_in(text: str) -> str:
    """The first enhanced status code in ``text`` (``"5.1.1"``), else ""."""
    return str(enhanced_status(text))


def text_status(text: str) -> Status | None:
    """The first failure status in a plain-text bounce: ``550 5.1.1``, ``5.1.1``,
    else a bare ``550 `` reply code. 2.x.x is a success, never a bounce."""
    for line in text.splitlines():
        found = _REPLY_AND_STATUS.search(line) or _STATUS.search(line)
        if found is not None and not found.group(0).startswith("2"):
            code = found.group(2) if found.re is _REPLY_AND_STATUS else found.group(0)
            return Status(code, code.startswith("5"), line.strip())
    for line in text.splitlines():
        reply = _REPLY.search(line)
        if reply is not None:
            return Status(reply.group(1), reply.group(1) == "5", line.strip())
    return None


def recipient_near(text: str, status_line: str, exclude: set[str]) -> str:
    """The address on the status line, else the nearest one in the lines above it
    (Exim lists the failed address, then the server's answer), else ""."""
    lines = text.splitlines()
    index = next((i for i, line in enumerate(lines) if line.strip() == status_line), -1)
    if index < 0:
        return ""
    for line in reversed(lines[max(0, index - NEAR_LINES) : index + 1]):
        for found in _ADDRESS.finditer(line):
            address = found.group(0).lower().strip(".")
            if address not in exclude and not _BOUNCE_SENDER.search(address):
                return address
    return ""


def headers_of(text: str) -> Message:
    """Headers given as text (``text/rfc822-headers``, or a copy in a bounce's body)."""
    return HeaderParser(policy=compat32).parsestr(text, headersonly=True)


def our_message_ids(*sources: Message | str) -> list[str]:
    """Our Message-IDs (``<key.sN.digest@domain>``) in returned headers, first the
    ``Message-ID`` and ``X-Digest-Delivery`` headers, then anywhere in the text."""
    found: list[str] = []
    for source in sources:
        if isinstance(source, Message):
            values = [header(source, "Message-ID"), header(source, "X-Digest-Delivery")]
        else:
            values = _OUR_ID.findall(source)
        for value in values:
            value = value.strip()
            if value and not value.startswith("<"):
                value = f"<{value}>"
            if value and parse_message_id(value) is not None and value not in found:
                found.append(value)
    return found
