"""Small, forgiving readers for fields of provider payloads (shared by the adapters).

Each returns an empty value rather than raising: an odd field never crashes a
webhook; the raw payload is kept anyway.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# A policy or reputation block in a receiving server's words ("blocked", "listed on a
# blocklist", "spam", "DMARC policy"): the sender was refused, the reader is not gone.
_BLOCK_WORDS = re.compile(
    r"\bblock(?:ed|list)|\bblacklist|\bpolicy\b|\bspam\b|\breputation\b|\bdmarc\b", re.I
)


def sounds_like_block(words: str) -> bool:
    """True when a bounce's text says the sender was blocked for policy or reputation
    (shared by the Resend adapter and the bounce mailbox, :mod:`digest.bounces`)."""
    return bool(_BLOCK_WORDS.search(words))


def text(value: object) -> str:
    """``value`` if it is a string, else ``""``."""
    return value if isinstance(value, str) else ""


def angle(message_id: str) -> str:
    """A Message-ID with angle brackets (some providers store it without)."""
    message_id = message_id.strip()
    if message_id and not message_id.startswith("<"):
        return f"<{message_id}>"
    return message_id


def epoch_time(value: object) -> datetime | None:
    """A Unix timestamp (seconds) as an aware UTC datetime, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def iso_time(value: object) -> datetime | None:
    """An ISO 8601 / RFC 3339 timestamp with an offset, or None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
