"""Validate and normalize what a reader types: addresses and display names.

Addresses are checked with ``email-validator`` (syntax only: no DNS at import
time), IDN domains converted to ASCII (punycode) and the whole address
lower-cased, so ``Ada@Example.COM`` and ``ada@example.com`` are one reader.
Lower-casing the local part is technically lossy (RFC 5321 2.4) but every large
mailbox provider treats it case-insensitively, and two rows for one reader is the
worse failure. Internationalized local parts (SMTPUTF8) are refused: not every
relay carries them, and an address we cannot deliver to is better refused at the
door.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

from subscribers.errors import SubscriberInputError

MAX_NAME_LENGTH = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES = re.compile(r"\s+")


def normalize_email(raw: str) -> str:
    """Return the canonical form of ``raw``.

    Raises :class:`SubscriberInputError` with the validator's reason.
    """
    candidate = raw.strip()
    if not candidate:
        raise SubscriberInputError("the address is empty")
    if _CONTROL.search(candidate):
        raise SubscriberInputError("the address contains control characters")
    try:
        result = validate_email(candidate, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise SubscriberInputError(f"{candidate!r} is not a valid address: {exc}") from None
    return str(result.ascii_email or result.normalized).lower()


def clean_name(raw: str | None) -> str:
    """A display name as plain one-line text: controls removed, spaces folded, capped."""
    if not raw:
        return ""
    text = _SPACES.sub(" ", _CONTROL.sub(" ", raw)).strip()
    return text[:MAX_NAME_LENGTH]
