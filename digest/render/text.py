"""Plain-text helpers the view models are made of: percentages, shortening, the
first sentence of a quote, safe URLs, ISO week labels, and feed text without
control characters. Pure functions; strings stay plain text (escaping is the
templates' job)."""

from __future__ import annotations

import re
from datetime import date, timedelta
from urllib.parse import urlsplit

from digest.errors import RenderError

ELLIPSIS = "…"
_EDITION_KEY = re.compile(r"(\d{4})-W(\d{2})")
_SPACE = re.compile(r"\s+")
# A sentence ends at . ! ? (optionally closed by a quote or bracket) before a space
# and a capital, digit or opening quote: "v2.1 is fast. It …" splits after "fast.".
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]?\s+(?=[A-Z0-9\"“‘(])")
# Words ending in a full stop that do not end a sentence ("Dr. Smith", "e.g. Zed").
_ABBREVIATIONS = frozenset(
    {"dr", "mr", "mrs", "ms", "prof", "st", "vs", "etc", "e.g", "i.e", "inc", "no"}
)
# English month names, independent of the process locale.
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
# Characters XML 1.0 forbids (MRML refuses the whole document over one of them)
# plus DEL and the C1 controls: never meaningful in plain text, so dropped.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def pct_label(value: float | None) -> str:
    """48.5 → ``48.5%``, 100 / 100.0 → ``100%``, None → ``—``; one decimal at most."""
    if value is None:
        return "—"
    text = f"{float(value):.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


def shorten(text: str, limit: int) -> str:
    """Collapse whitespace; cut to at most ``limit`` characters at a word boundary
    (a single over-long word is cut hard), ending in ``…`` when cut."""
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-–—·") + ELLIPSIS


def first_sentence(text: str, limit: int) -> str:
    """The first sentence of ``text`` (whitespace collapsed), shortened to ``limit``
    characters; the whole text when it is one sentence."""
    text = _SPACE.sub(" ", text).strip()
    for end in _SENTENCE_END.finditer(text):
        word = text[: end.start()].rsplit(" ", 1)[-1].rstrip(".").lower()
        if word not in _ABBREVIATIONS and not (len(word) == 1 and word.isalpha()):
            return shorten(text[: end.start()], limit)
    return shorten(text, limit)


def safe_url(url: object) -> str | None:
    """Return ``url`` when it is an absolute http(s) URL without spaces or control
    characters, else None (the feed validated it; this is the second lock)."""
    if not isinstance(url, str) or not url or any(c.isspace() or ord(c) < 32 for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def week_range(edition_key: str) -> tuple[date, date]:
    """Monday and Sunday of an ISO week key like ``2026-W48``.

    Raises :class:`RenderError` for anything else.
    """
    match = _EDITION_KEY.fullmatch(edition_key)
    try:
        if match is None:
            raise ValueError("not YYYY-Www")
        monday = date.fromisocalendar(int(match[1]), int(match[2]), 1)
    except ValueError as exc:
        why = f"edition key {edition_key!r} is not an ISO week like '2026-W48'"
        raise RenderError(why) from exc
    return monday, monday + timedelta(days=6)


def week_label(edition_key: str) -> str:
    """``Week 48 · 23–29 November 2026``; spans across months or years say so."""
    monday, sunday = week_range(edition_key)
    week = int(edition_key[-2:])
    end = f"{sunday.day} {_MONTHS[sunday.month - 1]} {sunday.year}"
    if monday.year != sunday.year:
        span = f"{monday.day} {_MONTHS[monday.month - 1]} {monday.year} – {end}"
    elif monday.month != sunday.month:
        span = f"{monday.day} {_MONTHS[monday.month - 1]} – {end}"
    else:
        span = f"{monday.day}–{end}"
    return f"Week {week} · {span}"


def clean(value: object) -> str:
    """Feed text as a ``str``, without control characters (tab and newlines stay)."""
    return "" if value is None else _FORBIDDEN.sub("", str(value))
