"""Transactional emails (the double opt-in confirmation): one message, built on demand.

A few of these go out per hour, so :class:`email.message.EmailMessage` is fine here
(the weekly digest uses the pre-encoded byte template of ``personalize.py``).

What makes a message transactional, and how it differs from the digest:

- no ``List-Unsubscribe`` / ``List-Unsubscribe-Post`` headers: the reader asked for
  this one message; there is nothing to unsubscribe from yet (RFC 8058 applies to
  list mail);
- ``Auto-Submitted: auto-generated`` (RFC 3834 5), so vacation responders keep quiet;
- ``To`` is the bare address: nothing the person typed (name, free text) is ever
  echoed, so a sign-up form cannot be abused to mail chosen words to a stranger.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any

from digest.render.digest import clean_subject
from digest.render.mjml import compile_mjml
from digest.render.templates import TemplateSet


@dataclass(frozen=True, slots=True)
class EmailTemplates:
    """The three templates of one transactional email (names in the template set)."""

    html: str  # MJML with Jinja2
    text: str
    subject: str


CONFIRM = EmailTemplates(
    html="emails/confirm.mjml.j2",
    text="emails/confirm.txt.j2",
    subject="emails/confirm_subject.txt.j2",
)


def build_transactional(
    templates: TemplateSet,
    which: EmailTemplates,
    context: Mapping[str, Any],
    *,
    from_header: str,
    reply_to: str | None,
    to_address: str,
    message_id: str,
    date: datetime,
) -> bytes:
    """The complete message (CRLF line endings, lines under 998 octets).

    ``to_address`` is a bare, normalized address; ``message_id`` carries its angle
    brackets. Raises :class:`~digest.errors.RenderError` when a template or the MJML
    fails, ``ValueError`` when ``date`` is naive.
    """
    if date.tzinfo is None:
        raise ValueError("date: must be timezone-aware")
    subject = clean_subject(templates.render(which.subject, context))
    text = templates.render(which.text, context)
    html = compile_mjml(templates.render(which.html, context))

    message = EmailMessage(policy=SMTP)
    message["From"] = from_header
    message["To"] = to_address
    if reply_to:
        message["Reply-To"] = reply_to
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834 5
    # Quoted-printable keeps every line under 998 octets (RFC 5322 2.1.1).
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    for part in message.iter_parts():
        del part["MIME-Version"]  # add_alternative copies it into the parts; once is enough
    return message.as_bytes(policy=SMTP)
