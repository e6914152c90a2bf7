"""Parse one feed document (version 1) into :class:`FeedEntry` items.

Only the document level is checked here (a JSON object with ``version`` "1", an RFC
3339 ``generated_at``, a ``comparisons`` array and an optional ``next_url``); each
comparison is validated on its own later (``digest.comparisons.store``), so one bad
comparison never costs the rest of the document.

Two JSON details matter for what comes after:

- ``NaN``, ``Infinity`` and numbers too large for a float are not JSON (RFC 8259 §6),
  but Python's ``json`` accepts them. They are parsed into :class:`NonFiniteNumber`,
  which is not a number to the schema validator, so only the comparison holding one
  is refused, and no database ever sees a NaN.
- Text is decoded as UTF-8 (a leading BOM is tolerated): the contract says UTF-8.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from digest.errors import FeedDocumentError
from digest.feeds.base import FeedEntry

FEED_VERSION = "1"

# RFC 3339 §5.6 date-time; "T" and "Z" may be lower case (§5.6, NOTE). An offset is
# required: a time without one is ambiguous, and the contract says RFC 3339.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


class NonFiniteNumber:
    """Stands in for ``NaN``/``Infinity``/an overflowing number found in a document."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return self.token


@dataclass(frozen=True, slots=True)
class FeedDocument:
    """One parsed document: its comparison entries and the link to the next page."""

    entries: list[FeedEntry]
    next_url: str | None
    generated_at: datetime


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 date-time into an aware datetime in UTC.

    Raises ``ValueError`` saying what is wrong (no offset, impossible date, …). A
    leap second (``:60``) is read as the last microsecond of that minute.
    """
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(
            f"{value[:40]!r} is not an RFC 3339 date-time with an offset "
            "(e.g. 2026-11-20T14:00:00Z)"
        )
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
    if second == 60:
        second, micro = 59, 999_999
    try:
        tz = UTC if offset in ("Z", "z") else _offset(offset)
        parsed = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{value[:40]!r} is not a valid date-time: {exc}") from None


def _offset(text: str) -> timezone:
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 23 or minutes > 59:
        raise ValueError(f"offset {text} is out of range")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if text[0] == "-" else delta)


def load_json(data: bytes | str) -> Any:
    """Decode UTF-8 JSON; non-finite numbers become :class:`NonFiniteNumber`.

    Raises ``ValueError`` with a short reason for anything that is not JSON.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(data, parse_constant=NonFiniteNumber, parse_float=_parse_float)
    except RecursionError:
        raise ValueError("not usable JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        raise ValueError(f"not valid JSON: {exc}") from None


def _parse_float(text: str) -> float | NonFiniteNumber:
    number = float(text)
    return number if math.isfinite(number) else NonFiniteNumber(text)


def parse_document(data: bytes | str, *, source: str, page: int = 0) -> FeedDocument:
    """Parse a whole v1 document read from ``source`` (a URL or a file path); ``page``
    is its 1-based place in a paged feed (0: ``source`` names it).

    Returns its entries (unvalidated, in document order) and ``next_url``. Raises
    :class:`FeedDocumentError` naming ``source`` and the problem when the text is not
    JSON or the document level breaks the contract.
    """
    try:
        doc = load_json(data)
    except ValueError as exc:
        raise FeedDocumentError(f"{source}: {exc}") from None
    if not isinstance(doc, dict):
        raise _refuse(source, f"must be a JSON object, got {_json_type(doc)}")
    if "version" not in doc:
        raise _refuse(source, "'version' is missing (expected \"1\")")
    if doc["version"] != FEED_VERSION:
        raise _refuse(source, f"'version' is {_short(doc['version'])}, this digest reads \"1\"")
    return FeedDocument(
        entries=_entries(doc, source, page),
        next_url=_next_url(doc, source),
        generated_at=_generated_at(doc, source),
    )


def _generated_at(doc: dict[str, Any], source: str) -> datetime:
    value = doc.get("generated_at")
    if not isinstance(value, str):
        raise _refuse(source, "'generated_at' must be an RFC 3339 date-time string")
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise _refuse(source, f"'generated_at': {exc}") from None


def _entries(doc: dict[str, Any], source: str, page: int) -> list[FeedEntry]:
    items = doc.get("comparisons")
    if not isinstance(items, list):
        found = "missing" if items is None else f"a JSON {_json_type(items)}"
        raise _refuse(source, f"'comparisons' must be an array, it is {found}")
    return [
        FeedEntry(raw=item, source=source, position=i, page=page) for i, item in enumerate(items)
    ]


def _next_url(doc: dict[str, Any], source: str) -> str | None:
    value = doc.get("next_url")
    if value is None or isinstance(value, str):
        return value or None
    raise _refuse(source, f"'next_url' must be a string or null, got {_json_type(value)}")


def _refuse(source: str, problem: str) -> FeedDocumentError:
    return FeedDocumentError(f"{source} is not a v1 feed document: {problem}")


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _short(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."
