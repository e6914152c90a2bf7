"""Pure functions: stored comparisons → the view models the templates see.

Everything a template prints is decided here, in plain Python that tests can call:
labels ("Panel: 75% ship · 4 reviewers"), the quote chosen for each tool, the
reviewer split in canonical lens order, the week label, and which URLs are safe to
link. All strings stay *plain text*; escaping is the HTML template's job
(autoescape), so the same view serves the HTML and the text part.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlsplit

from digest.errors import RenderError
from digest.store.models import Comparison

LENS_ORDER: tuple[str, ...] = ("builder", "skeptic", "futurist", "buyer")
QUOTE_LIMIT = 180
SHORT_NAME_LIMIT = 28
PREHEADER_LIMIT = 140
ELLIPSIS = "…"
_EDITION_KEY = re.compile(r"(\d{4})-W(\d{2})")
_SPACE = re.compile(r"\s+")
# English month names, independent of the process locale.
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Badge:
    """A pricing badge; colours meet WCAG AA (4.5:1) for small text."""

    label: str
    fg: str
    bg: str


# Foreground/background pairs checked in tests/test_render.py::test_badge_contrast.
PRICING_BADGES: Mapping[str, Badge] = {
    "free": Badge("Free", "#14532D", "#DCFCE7"),
    "freemium": Badge("Freemium", "#1E3A8A", "#DBEAFE"),
    "paid": Badge("Paid", "#7C2D12", "#FFEDD5"),
    "open-source": Badge("Open source", "#4C1D95", "#EDE9FE"),
}
_OTHER_BADGE = ("#1F2937", "#E5E7EB")


@dataclass(frozen=True, slots=True)
class LensVerdict:
    lens: str
    ship: bool

    @property
    def mark(self) -> str:
        return "✓" if self.ship else "✗"

    @property
    def label(self) -> str:
        return f"{self.lens} {self.mark}"


@dataclass(frozen=True, slots=True)
class Quote:
    text: str  # already shortened to QUOTE_LIMIT characters
    attribution: str  # "builder", or "Ada Lovelace (builder)" when the reviewer is named


@dataclass(frozen=True, slots=True)
class ToolView:
    name: str
    vendor: str
    tagline: str
    pricing: Badge
    panel_pct: str | None  # "75%", None while the panel has not voted
    reviewers: int
    community_pct: str  # "62%", or "—" without votes
    quote: Quote | None
    lenses: tuple[LensVerdict, ...]

    @property
    def panel(self) -> str:
        """``Panel: 75% ship · 4 reviewers`` / ``Panel: not voted yet``."""
        if self.panel_pct is None:
            return "Panel: not voted yet"
        if not self.reviewers:
            return f"Panel: {self.panel_pct} ship"
        return f"Panel: {self.panel_pct} ship · {plural(self.reviewers, 'reviewer')}"

    @property
    def community(self) -> str:
        return f"Community: {self.community_pct}"

    @property
    def lens_line(self) -> str:
        return " · ".join(v.label for v in self.lenses)


@dataclass(frozen=True, slots=True)
class ComparisonView:
    title: str
    url: str | None  # None when the stored URL is not http(s): shown unlinked
    question: str
    category: str
    short_title: str  # "Claude 4 API… vs Codestral 2.0", for subjects and previews
    tools: tuple[ToolView, ...]

    @property
    def side_by_side(self) -> bool:
        """Two tools share a row on desktop; three or more stack (too narrow otherwise)."""
        return len(self.tools) == 2


@dataclass(frozen=True, slots=True)
class SiteView:
    name: str
    base_url: str  # no trailing slash
    postal_address: str


@dataclass(frozen=True, slots=True)
class EditionView:
    key: str
    week_label: str  # "Week 48 · 23–29 November 2026"
    archive_url: str
    intro: str  # "3 new comparisons this week"
    preheader: str
    comparisons: tuple[ComparisonView, ...]


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


def lens_rank(lens: str) -> int:
    return LENS_ORDER.index(lens) if lens in LENS_ORDER else len(LENS_ORDER)


def choose_quote(reviews: Sequence[Mapping[str, Any]]) -> Quote | None:
    """The builder's review first, else the first review; shortened and attributed."""
    if not reviews:
        return None
    review = next((r for r in reviews if r.get("lens") == "builder"), reviews[0])
    lens = _text(review.get("lens"))
    reviewer = _text(review.get("reviewer"))
    attribution = f"{reviewer} ({lens})" if reviewer and lens else reviewer or lens
    return Quote(text=shorten(_text(review.get("quote")), QUOTE_LIMIT), attribution=attribution)


def lens_split(reviews: Sequence[Mapping[str, Any]]) -> tuple[LensVerdict, ...]:
    """One verdict per review: builder, skeptic, futurist, buyer, then unknown
    lenses in the order given (the sort is stable)."""
    ordered = sorted(reviews, key=lambda r: lens_rank(_text(r.get("lens"))))
    return tuple(LensVerdict(_text(r.get("lens")), r.get("verdict") == "ship") for r in ordered)


def tool_view(tool: Mapping[str, Any], reviews: Sequence[Mapping[str, Any]]) -> ToolView:
    """One tool of a comparison with the reviews about it (``review["tool"] == key``)."""
    mine = [r for r in reviews if r.get("tool") == tool.get("key")]
    pricing = _text(tool.get("pricing"))
    badge = PRICING_BADGES.get(pricing) or Badge(
        pricing.replace("-", " ").capitalize(), *_OTHER_BADGE
    )
    panel = tool.get("panel_ship_pct")
    return ToolView(
        name=_text(tool.get("name")),
        vendor=_text(tool.get("vendor")),
        tagline=_text(tool.get("tagline")),
        pricing=badge,
        panel_pct=None if panel is None else pct_label(panel),
        reviewers=len(mine),
        community_pct=pct_label(tool.get("community_pct")),
        quote=choose_quote(mine),
        lenses=lens_split(mine),
    )


def short_name(name: str) -> str:
    """A tool name for tight spaces: the part before a colon, at most 28 characters."""
    head, colon, _ = name.partition(":")
    if colon and head.strip():
        return shorten(head, SHORT_NAME_LIMIT).rstrip(ELLIPSIS) + ELLIPSIS
    return shorten(name, SHORT_NAME_LIMIT)


def comparison_view(comparison: Comparison) -> ComparisonView:
    tools = tuple(tool_view(t, comparison.reviews or []) for t in comparison.tools)
    return ComparisonView(
        title=_text(comparison.title),
        url=safe_url(comparison.url),
        question=_text(comparison.question),
        category=_text(comparison.category),
        short_title=" vs ".join(short_name(t.name) for t in tools),
        tools=tools,
    )


def site_view(*, name: str, base_url: str, postal_address: str) -> SiteView:
    return SiteView(
        name=_text(name), base_url=base_url.rstrip("/"), postal_address=_text(postal_address)
    )


def edition_view(
    site: SiteView, edition_key: str, comparisons: Sequence[Comparison]
) -> EditionView:
    """The whole edition, comparisons in the given (display) order."""
    views = tuple(comparison_view(c) for c in comparisons)
    count = len(views)
    intro = (
        f"{plural(count, 'new comparison')} this week" if count else "No new comparisons this week"
    )
    preheader = "; ".join(v.short_title for v in views) or intro
    return EditionView(
        key=edition_key,
        week_label=week_label(edition_key),
        archive_url=f"{site.base_url}/archive/{edition_key}",
        intro=intro,
        preheader=shorten(f"{intro}: {preheader}" if count else intro, PREHEADER_LIMIT),
        comparisons=views,
    )


# Characters XML 1.0 forbids (MRML refuses the whole document over one of them)
# plus DEL and the C1 controls: never meaningful in plain text, so dropped.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")


def _text(value: object) -> str:
    """Feed text as a ``str``, without control characters (tab and newlines stay)."""
    return "" if value is None else _FORBIDDEN.sub("", str(value))
