"""Pure functions: stored comparisons → the view models the templates see.

Everything a template prints is decided here, in plain Python that tests can call:
labels ("Panel: 75% ship · 4 reviewers"), every lens's verdict with a one-sentence
excerpt of its quote (the review's ``summary`` when the feed gives one), the week
label, the shortened title, and every href (through :class:`Hrefs`: tracked or
not, the vote links). All strings stay *plain text*; escaping is the HTML
template's job (autoescape), so the same view serves the HTML and the text part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from digest.render.links import Hrefs
from digest.render.text import ELLIPSIS, clean, first_sentence, pct_label, plural
from digest.render.text import safe_url as safe_url
from digest.render.text import shorten as shorten
from digest.render.text import week_label as week_label
from digest.store.models import Comparison

LENS_ORDER: tuple[str, ...] = ("builder", "skeptic", "futurist", "buyer")
EXCERPT_LIMIT = 140  # one sentence of a lens's quote in the email
TITLE_LIMIT = 120  # longer titles are shortened in the email (the web copy has them whole)
SHORT_NAME_LIMIT = 28
PREHEADER_LIMIT = 140


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
class LensReview:
    """One reviewer lens on one tool: its verdict, an excerpt and the whole quote."""

    lens: str
    ship: bool
    excerpt: str  # the review's summary, else the quote's first sentence (≤ EXCERPT_LIMIT)
    quote: str  # the whole quote (the web copy shows it)
    reviewer: str = ""

    @property
    def mark(self) -> str:
        return "✓" if self.ship else "✗"

    @property
    def verdict(self) -> str:
        return "Ship" if self.ship else "Skip"

    @property
    def label(self) -> str:
        return f"{self.lens} {self.mark}"

    @property
    def title(self) -> str:
        """``Builder`` / ``Ada Lovelace, builder``: who speaks."""
        name = self.lens[:1].upper() + self.lens[1:]
        return f"{self.reviewer}, {self.lens}" if self.reviewer else name


@dataclass(frozen=True, slots=True)
class ToolView:
    key: str
    name: str
    vendor: str
    tagline: str
    pricing: Badge
    panel_pct: str | None  # "75%", None while the panel has not voted
    panel_share: int | None  # 0–100, the width of the panel bar
    reviewers: int
    community_pct: str  # "62%", or "—" without votes
    reviews: tuple[LensReview, ...]  # canonical lens order
    url: str | None = None  # href of the tool's page (tracked), None: not linked
    vote_ship_url: str = ""  # "" when there are no vote links
    vote_skip_url: str = ""
    readers: str = ""  # web copy: the readers' vote (a slot filled when served)

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
        return " · ".join(r.label for r in self.reviews)


@dataclass(frozen=True, slots=True)
class ComparisonView:
    id: str
    title: str  # shortened to TITLE_LIMIT in the email, whole in the web copy
    url: str | None  # href (tracked); None when the stored URL is not http(s)
    question: str
    category: str
    short_title: str  # "Claude 4 API… vs Codestral 2.0", for subjects and previews
    tools: tuple[ToolView, ...]
    full_title: str = ""

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
    open_pixel: str = ""  # the open pixel's URL ([tracking] opens), "" without
    web_copy: bool = False


def lens_rank(lens: str) -> int:
    return LENS_ORDER.index(lens) if lens in LENS_ORDER else len(LENS_ORDER)


def lens_reviews(reviews: Sequence[Mapping[str, Any]]) -> tuple[LensReview, ...]:
    """One entry per review: builder, skeptic, futurist, buyer, then unknown lenses
    in the order given (the sort is stable)."""
    ordered = sorted(reviews, key=lambda r: lens_rank(clean(r.get("lens"))))
    return tuple(_lens_review(r) for r in ordered)


def _lens_review(review: Mapping[str, Any]) -> LensReview:
    quote = clean(review.get("quote"))
    summary = clean(review.get("summary"))
    return LensReview(
        lens=clean(review.get("lens")),
        ship=review.get("verdict") == "ship",
        excerpt=shorten(summary, EXCERPT_LIMIT)
        if summary.strip()
        else first_sentence(quote, EXCERPT_LIMIT),
        quote=" ".join(quote.split()),
        reviewer=clean(review.get("reviewer")).strip(),
    )


def tool_view(
    tool: Mapping[str, Any],
    reviews: Sequence[Mapping[str, Any]],
    *,
    comparison_id: str = "",
    hrefs: Hrefs | None = None,
) -> ToolView:
    """One tool of a comparison with the reviews about it (``review["tool"] == key``)."""
    key = clean(tool.get("key"))
    mine = [r for r in reviews if r.get("tool") == tool.get("key")]
    pricing = clean(tool.get("pricing"))
    badge = PRICING_BADGES.get(pricing) or Badge(
        pricing.replace("-", " ").capitalize(), *_OTHER_BADGE
    )
    panel = tool.get("panel_ship_pct")
    share = None if panel is None else max(0, min(100, round(float(panel))))
    url = safe_url(tool.get("url"))
    slot = hrefs.vote_slot(comparison_id, key) if hrefs else None
    return ToolView(
        key=key,
        name=clean(tool.get("name")),
        vendor=clean(tool.get("vendor")),
        tagline=clean(tool.get("tagline")),
        pricing=badge,
        panel_pct=None if panel is None else pct_label(panel),
        panel_share=share,
        reviewers=len(mine),
        community_pct=pct_label(tool.get("community_pct")),
        reviews=lens_reviews(mine),
        url=hrefs.tool(comparison_id, key, url) if hrefs else url,
        vote_ship_url=hrefs.vote(slot, "ship") if hrefs else "",
        vote_skip_url=hrefs.vote(slot, "skip") if hrefs else "",
        readers=hrefs.readers(slot) if hrefs else "",
    )


def short_name(name: str) -> str:
    """A tool name for tight spaces: the part before a colon, at most 28 characters."""
    head, colon, _ = name.partition(":")
    if colon and head.strip():
        return shorten(head, SHORT_NAME_LIMIT).rstrip(ELLIPSIS) + ELLIPSIS
    return shorten(name, SHORT_NAME_LIMIT)


def comparison_view(comparison: Comparison, hrefs: Hrefs | None = None) -> ComparisonView:
    cid = clean(comparison.id)
    tools = tuple(
        tool_view(t, comparison.reviews or [], comparison_id=cid, hrefs=hrefs)
        for t in comparison.tools
    )
    title = clean(comparison.title)
    url = safe_url(comparison.url)
    web = hrefs is not None and hrefs.web_copy
    return ComparisonView(
        id=cid,
        title=" ".join(title.split()) if web else shorten(title, TITLE_LIMIT),
        url=hrefs.comparison(cid, url) if hrefs else url,
        question=clean(comparison.question),
        category=clean(comparison.category),
        short_title=" vs ".join(short_name(t.name) for t in tools),
        tools=tools,
        full_title=" ".join(title.split()),
    )


def site_view(*, name: str, base_url: str, postal_address: str) -> SiteView:
    return SiteView(
        name=clean(name), base_url=base_url.rstrip("/"), postal_address=clean(postal_address)
    )


def edition_view(
    site: SiteView,
    edition_key: str,
    comparisons: Sequence[Comparison],
    hrefs: Hrefs | None = None,
) -> EditionView:
    """The whole edition, comparisons in the given (display) order."""
    views = tuple(comparison_view(c, hrefs) for c in comparisons)
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
        open_pixel=hrefs.open_pixel(edition_key) if hrefs else "",
        web_copy=hrefs is not None and hrefs.web_copy,
    )
