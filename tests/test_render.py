"""The digest rendering: view models, templates, MJML, slots, subject, size, goldens.

Golden files (tests/golden/) hold the sample feed rendered for 2026-W48 with fixed
slot values. After an intended change to templates or view code, regenerate with

    DIGEST_REGEN_GOLDEN=1 pytest tests/test_render.py -k golden

and review the diff before committing.
"""

from __future__ import annotations

import difflib
import html
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from digest.errors import DigestTooLarge, RenderError
from digest.render.base import SLOT_NAMES, RenderedDigest, Slot
from digest.render.digest import TYPICAL_SLOT_VALUE, clean_subject, html_size, render_digest
from digest.render.mjml import compile_mjml
from digest.render.personalize import MessageTemplate
from digest.render.size import wire_html
from digest.render.templates import TemplateSet, default_templates_dir
from digest.render.text import first_sentence
from digest.render.view import (
    PRICING_BADGES,
    comparison_view,
    lens_reviews,
    pct_label,
    safe_url,
    shorten,
    week_label,
)
from digest.store.models import Comparison

REPO = Path(__file__).resolve().parent.parent
SAMPLE_FEED = REPO / "examples" / "feed.json"
GOLDEN = Path(__file__).resolve().parent / "golden"
REGEN = os.environ.get("DIGEST_REGEN_GOLDEN") == "1"
SITE: dict[str, str] = {
    "site_name": "The Verdict Weekly",
    "base_url": "https://verdicts.example.com",
    "postal_address": "The Verdict Weekly, 1 Example Street, 10115 Berlin, Germany",
}
SLOTS = {
    "unsubscribe_url": "https://verdicts.example.com/unsubscribe?token=abc&list=weekly",
    "preferences_url": "https://verdicts.example.com/preferences?token=abc",
}
T0 = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


# -- building comparisons (directly, not through feed ingestion) ---------------------


def make_comparison(doc: dict[str, Any]) -> Comparison:
    published = datetime.fromisoformat(doc.get("published_at", T0.isoformat()))
    updated = datetime.fromisoformat(doc.get("updated_at", published.isoformat()))
    return Comparison(
        id=doc["id"],
        url=doc["url"],
        title=doc["title"],
        question=doc.get("question", ""),
        category=doc["category"],
        published_at=published,
        updated_at=updated,
        tools=doc["tools"],
        reviews=doc.get("reviews", []),
        first_seen_at=published,
        last_seen_at=published,
    )


def sample_comparisons() -> list[Comparison]:
    doc = json.loads(SAMPLE_FEED.read_text(encoding="utf-8"))
    return [make_comparison(c) for c in doc["comparisons"]]


def tool(key: str, **over: Any) -> dict[str, Any]:
    base = {"key": key, "name": key.title(), "pricing": "free"}
    base |= {"panel_ship_pct": 50, "community_pct": 40}
    return base | over


def simple_comparison(**over: Any) -> Comparison:
    doc: dict[str, Any] = {
        "id": "a-vs-b",
        "url": "https://verdicts.example.com/compare/a-vs-b",
        "title": "A vs B",
        "category": "Testing",
        "tools": [tool("a"), tool("b")],
        "reviews": [{"tool": "a", "lens": "builder", "verdict": "ship", "quote": "Fine."}],
    }
    return make_comparison(doc | over)


_WORDS = ("agents", "stream", "partial", "tool", "arguments", "while", "caches", "warm")


def prose(length: int, seed: int) -> str:
    words = [_WORDS[(seed + 7 * i) % len(_WORDS)] for i in range(length // 3)]
    return " ".join(words)[:length].strip().capitalize()


def long_comparison(i: int) -> Comparison:
    """Realistically long: ~140-char title, 4 reviews per tool, 400-char descriptions."""
    tools, reviews = [], []
    for t in range(2):
        key = f"tool-{i}-{t}"
        tools.append(
            tool(
                key,
                name=f"Example Tool {i}.{t}: A Rather Long Product Name With Features",
                vendor="Example Vendor Incorporated",
                tagline=prose(110, i + t),
                description=prose(400, 3 * i + t),
                pricing=["free", "paid", "freemium", "open-source"][(i + t) % 4],
                panel_ship_pct=[75, 48.5, None, 100.0][(i + t) % 4],
                community_pct=[62, None, 33.3, 100][(i + t) % 4],
            )
        )
        for lens in ("builder", "skeptic", "futurist", "buyer"):
            verdict = "ship" if (i + t + len(lens)) % 2 else "skip"
            quote = prose(320, i + t + len(lens))
            reviews.append(
                {
                    "tool": key,
                    "lens": lens,
                    "reviewer": "A. Reviewer",
                    "verdict": verdict,
                    "quote": quote,
                }
            )
    return simple_comparison(
        id=f"long-{i}",
        url=f"https://verdicts.example.com/compare/a-rather-long-comparison-slug-number-{i}",
        title=prose(140, i),
        question=prose(90, i + 1) + "?",
        tools=tools,
        reviews=reviews,
    )


# -- rendering helpers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def templates() -> TemplateSet:
    return TemplateSet(None)


def render(templates: TemplateSet, comparisons: list[Comparison], **over: Any) -> RenderedDigest:
    kwargs: dict[str, Any] = {**SITE, "edition_key": "2026-W48", "max_html_bytes": 100_000}
    return render_digest(templates, comparisons=comparisons, **(kwargs | over))


@pytest.fixture(scope="module")
def sample(templates: TemplateSet) -> RenderedDigest:
    return render(templates, sample_comparisons())


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


# -- golden files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "part"),
    [("subject.txt", "subject"), ("digest.html", "html"), ("digest.txt", "text")],
)
def test_golden(sample: RenderedDigest, name: str, part: str) -> None:
    actual = {
        "subject": sample.subject + "\n",
        "html": sample.html_with(SLOTS),
        "text": sample.text_with(SLOTS),
    }[part]
    path = GOLDEN / name
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        pytest.skip(f"regenerated {path}")
    assert path.exists(), f"{path} is missing: run DIGEST_REGEN_GOLDEN=1 pytest {__file__}"
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                f"golden/{name}",
                "rendered",
                n=1,
            )
        )
        pytest.fail(
            f"{name} differs from the golden file (first 60 diff lines below). If the "
            f"change is intended: DIGEST_REGEN_GOLDEN=1 pytest tests/test_render.py -k "
            f"golden, then review the diff.\n" + "\n".join(diff.splitlines()[:60])
        )


# -- content of the sample edition ---------------------------------------------------


def test_every_title_in_html_and_text(sample: RenderedDigest) -> None:
    page, text = sample.html_with(SLOTS), flat(sample.text_with(SLOTS))
    for comparison in sample_comparisons():
        assert html.escape(comparison.title, quote=False) in page
        assert comparison.title in text
        assert f'href="{comparison.url}"' in page
        assert comparison.url in text


def test_subject_of_sample(sample: RenderedDigest) -> None:
    assert sample.subject == "The Verdict Weekly · 3 new verdicts: Claude 4 API… vs Codestral 2.0"


def test_header_and_view_in_browser(sample: RenderedDigest) -> None:
    page = sample.html_with(SLOTS)
    assert "Week 48 · 23–29 November 2026" in page
    assert "3 new comparisons this week" in page
    assert 'href="https://verdicts.example.com/archive/2026-W48"' in page
    assert "View in browser" in page
    assert '<div style="display:none;' in page  # mj-preview: the hidden preheader


def test_pricing_badges_for_sample() -> None:
    views = [comparison_view(c) for c in sample_comparisons()]
    labels = [[t.pricing.label for t in v.tools] for v in views]
    assert labels == [["Paid", "Free"], ["Freemium", "Paid"], ["Open source", "Paid"]]
    assert views[2].tools[0].pricing == PRICING_BADGES["open-source"]


def test_badges_in_html(sample: RenderedDigest) -> None:
    page = sample.html_with(SLOTS)
    for key, badge in PRICING_BADGES.items():
        assert f'color:{badge.fg};background-color:{badge.bg};">{badge.label}</span>' in page, key


def test_panel_community_and_lenses_for_sample() -> None:
    views = [comparison_view(c) for c in sample_comparisons()]
    rows = [(t.panel, t.community, t.lens_line) for v in views for t in v.tools]
    assert rows == [
        (
            "Panel: 100% ship · 4 reviewers",
            "Community: —",
            "builder ✓ · skeptic ✓ · futurist ✓ · buyer ✓",
        ),
        (
            "Panel: 100% ship · 4 reviewers",
            "Community: —",
            "builder ✓ · skeptic ✓ · futurist ✓ · buyer ✓",
        ),
        (
            "Panel: 75% ship · 4 reviewers",
            "Community: 62%",
            "builder ✓ · skeptic ✗ · futurist ✓ · buyer ✓",
        ),
        (
            "Panel: 50% ship · 4 reviewers",
            "Community: 48.5%",
            "builder ✓ · skeptic ✗ · futurist ✓ · buyer ✗",
        ),
        ("Panel: 100% ship · 2 reviewers", "Community: 91%", "builder ✓ · skeptic ✓"),
        # Heron's reviews come as builder, buyer, skeptic, futurist: shown canonically.
        (
            "Panel: 25% ship · 4 reviewers",
            "Community: —",
            "builder ✗ · skeptic ✗ · futurist ✗ · buyer ✓",
        ),
    ]


def test_numbers_and_lenses_in_both_parts(sample: RenderedDigest) -> None:
    page, text = sample.html_with(SLOTS), sample.text_with(SLOTS)
    for needle in ("Panel: 75% ship · 4 reviewers", "Community: 48.5%", "Community: —"):
        assert needle in page
        assert needle in text
    # Every lens with its verdict and the first sentence of its quote, in both parts.
    assert "Skeptic ✗ Skip: " in text and "Buyer ✓ Ship: " in text
    assert 'color:#B91C1C;">Skeptic&#160;✗&#160;Skip</b> &#8212; ' in page
    reviews = sum(len(c.reviews or []) for c in sample_comparisons())
    assert page.count("&#160;✓&#160;Ship</b>") + page.count("&#160;✗&#160;Skip</b>") == reviews


@pytest.mark.parametrize(
    ("value", "label"),
    [(48.5, "48.5%"), (100, "100%"), (100.0, "100%"), (0, "0%"), (33.333, "33.3%"), (None, "—")],
)
def test_pct_label(value: float | None, label: str) -> None:
    assert pct_label(value) == label


def test_panel_not_voted_and_single_reviewer() -> None:
    c = simple_comparison(tools=[tool("a", panel_ship_pct=None, community_pct=None), tool("b")])
    a, b = comparison_view(c).tools
    assert (a.panel, a.community) == ("Panel: not voted yet", "Community: —")
    assert b.panel == "Panel: 50% ship"  # no reviews for b: no count
    assert comparison_view(simple_comparison()).tools[0].panel == "Panel: 50% ship · 1 reviewer"


def test_lens_reviews_canonical_then_unknown_in_given_order() -> None:
    reviews = [
        {"lens": "economist", "verdict": "ship", "quote": "q"},
        {"lens": "buyer", "verdict": "skip", "quote": "q"},
        {"lens": "artist", "verdict": "skip", "quote": "q"},
        {"lens": "builder", "verdict": "ship", "quote": "q"},
    ]
    assert [v.label for v in lens_reviews(reviews)] == [
        "builder ✓",
        "buyer ✗",
        "economist ✓",
        "artist ✗",
    ]


def test_every_lens_gets_its_first_sentence_or_its_summary() -> None:
    reviews = [
        {"lens": "skeptic", "verdict": "skip", "quote": "Pricing is opaque. The rest is fine."},
        {
            "lens": "builder",
            "reviewer": "Ada",
            "verdict": "ship",
            "quote": "Builds well with v2.1 of the SDK! Docs are thin.",
        },
        {"lens": "buyer", "verdict": "ship", "quote": "Long words. More.", "summary": "Worth it."},
    ]
    got = [(r.title, r.verdict, r.excerpt) for r in lens_reviews(reviews)]
    assert got == [
        ("Ada, builder", "Ship", "Builds well with v2.1 of the SDK!"),
        ("Skeptic", "Skip", "Pricing is opaque."),
        ("Buyer", "Ship", "Worth it."),
    ]
    assert lens_reviews(reviews)[1].quote == "Pricing is opaque. The rest is fine."


def test_an_excerpt_is_shortened_at_a_word_boundary() -> None:
    (review,) = lens_reviews([{"lens": "builder", "verdict": "ship", "quote": "word " * 100}])
    assert len(review.excerpt) <= 140
    assert review.excerpt.endswith("word…")
    assert shorten("a\n\n b", 10) == "a b"
    assert shorten("x" * 300, 20) == "x" * 19 + "…"
    assert first_sentence("Dr. Smith uses it. Then more.", 80) == "Dr. Smith uses it."


@pytest.mark.parametrize(
    ("key", "label"),
    [
        ("2026-W48", "Week 48 · 23–29 November 2026"),
        ("2026-W49", "Week 49 · 30 November – 6 December 2026"),
        ("2026-W53", "Week 53 · 28 December 2026 – 3 January 2027"),
        ("2026-W01", "Week 1 · 29 December 2025 – 4 January 2026"),
    ],
)
def test_week_label(key: str, label: str) -> None:
    assert week_label(key) == label


@pytest.mark.parametrize("key", ["2026-48", "2027-W53", "2026-W00", "W48", ""])
def test_bad_edition_key(key: str) -> None:
    with pytest.raises(RenderError, match="ISO week"):
        week_label(key)


def test_three_tools_stack_two_sit_side_by_side(templates: TemplateSet) -> None:
    three = simple_comparison(tools=[tool("a"), tool("b"), tool("c")])
    assert comparison_view(three).side_by_side is False
    assert comparison_view(simple_comparison()).side_by_side is True
    page = render(templates, [three]).html_with(SLOTS)
    assert "mj-column-per-50" not in page
    assert page.count("Community: 40%") == 3


def test_empty_edition_renders(templates: TemplateSet) -> None:
    digest = render(templates, [])
    assert "No new comparisons this week" in digest.html_with(SLOTS)
    assert digest.subject == "The Verdict Weekly · Week 48 · 23–29 November 2026"


# -- feed text stays text --------------------------------------------------------------

EVIL = '"><img src=x onerror=alert(1)><a href="javascript:alert(2)">'


def test_markup_in_feed_text_is_escaped(templates: TemplateSet) -> None:
    c = simple_comparison(
        title="<script>alert(1)</script>",
        question=EVIL,
        category=EVIL,
        tools=[tool("a", name=EVIL, vendor=EVIL, tagline=EVIL), tool("b", pricing=EVIL)],
        reviews=[{"tool": "a", "lens": EVIL, "reviewer": EVIL, "verdict": "ship", "quote": EVIL}],
    )
    digest = render(templates, [c])
    page = digest.html_with(SLOTS)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page
    assert "<img" not in page
    assert 'href="javascript' not in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page  # shown as text
    assert "<script>alert(1)</script>" in digest.text_with(SLOTS)  # text/plain: literal


def test_template_code_in_feed_text_is_data(templates: TemplateSet) -> None:
    c = simple_comparison(
        title="{{ 7*7 }} {% if true %}x{% endif %}",
        reviews=[
            {"tool": "a", "lens": "builder", "verdict": "ship", "quote": "{{ 7*7 }} {{ site }}"}
        ],
    )
    digest = render(templates, [c])
    for part in (digest.html_with(SLOTS), digest.text_with(SLOTS)):
        assert "{{ 7*7 }} {% if true %}x{% endif %}" in part
        assert "{{ 7*7 }} {{ site }}" in part
        assert "49" not in part


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "data:text/html,x", "//evil.example", "https://a b", "ftp://x.example"],
)
def test_unsafe_urls_are_not_linked(templates: TemplateSet, url: str) -> None:
    assert safe_url(url) is None
    c = simple_comparison(title="Unlinked", url=url)
    page = render(templates, [c]).html_with(SLOTS)
    assert html.escape(url) not in page
    assert "Read the full comparison" not in page
    assert "Unlinked" in page


def test_safe_urls_pass() -> None:
    assert safe_url("https://x.example/a?b=1&c=2") == "https://x.example/a?b=1&c=2"
    assert safe_url("HTTP://x.example") == "HTTP://x.example"


# -- personal slots ------------------------------------------------------------------------


def test_slots_survive_mjml_in_hrefs(sample: RenderedDigest) -> None:
    for pieces in (sample.html, sample.text):
        slots = [p for p in pieces if isinstance(p, Slot)]
        assert sorted(s.name for s in slots) == sorted(SLOT_NAMES)
    page = sample.html_with(SLOTS)
    assert f'href="{html.escape(SLOTS["unsubscribe_url"])}"' in page
    assert f'href="{html.escape(SLOTS["preferences_url"])}"' in page
    text = sample.text_with(SLOTS)
    assert f"Unsubscribe: {SLOTS['unsubscribe_url']}\n" in text
    assert f"Email preferences: {SLOTS['preferences_url']}\n" in text
    assert "1 Example Street" in page
    assert "1 Example Street" in text


def test_feed_text_cannot_forge_a_slot(templates: TemplateSet) -> None:
    forged = "%%0123456789abcdef0123456789abcdef:unsubscribe_url%% %%x:preferences_url%%"
    c = simple_comparison(title=forged, question=forged)
    digest = render(templates, [c])
    for pieces in (digest.html, digest.text):
        assert sum(isinstance(p, Slot) for p in pieces) == len(SLOT_NAMES)
    assert forged in digest.html_with(SLOTS)
    assert forged in digest.text_with(SLOTS)


def test_each_render_uses_a_fresh_marker(templates: TemplateSet) -> None:
    seen: list[str] = []
    original = TemplateSet.render

    def spy(self: TemplateSet, name: str, context: Any) -> str:
        if "unsubscribe_url" in context:
            seen.append(context["unsubscribe_url"])
        return original(self, name, context)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TemplateSet, "render", spy)
        render(templates, [])
        render(templates, [])
    assert len(set(seen)) == 2
    assert all(re.fullmatch(r"%%[0-9a-f]{32}:unsubscribe_url%%", m) for m in seen)


def test_template_without_a_slot_is_refused(tmp_path: Path, templates: TemplateSet) -> None:
    (tmp_path / "digest.txt.j2").write_text("{{ unsubscribe_url }} only\n", encoding="utf-8")
    with pytest.raises(RenderError, match=r"digest\.txt\.j2.*preferences_url"):
        render(TemplateSet(tmp_path), [])


def test_filtered_slot_is_refused(tmp_path: Path) -> None:
    body = "{{ unsubscribe_url }} {{ preferences_url }} {{ unsubscribe_url | replace('%%', '') }}\n"
    (tmp_path / "digest.txt.j2").write_text(body, encoding="utf-8")
    with pytest.raises(RenderError, match="altered"):
        render(TemplateSet(tmp_path), [])


# -- subject -------------------------------------------------------------------------------


def test_subject_never_carries_line_breaks(templates: TemplateSet) -> None:
    c = simple_comparison(tools=[tool("a", name="A\r\nBcc: victim@example.com\x00\x1b"), tool("b")])
    digest = render(templates, [c], site_name="Weekly\r\n\tX-Evil: 1\u2028")
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", digest.subject)
    assert digest.subject == "Weekly X-Evil: 1 · 1 new verdict: A Bcc… vs B"


def test_subject_cut_at_150_on_a_word_boundary() -> None:
    subject = clean_subject("word " * 60)
    assert len(subject) <= 150
    assert subject.endswith("word…")
    assert clean_subject("  a\r\n\r\n  b\t") == "a b"


# -- size ----------------------------------------------------------------------------------


def test_too_large_raises_with_the_numbers(templates: TemplateSet) -> None:
    comparisons = sample_comparisons()
    size = html_size(render(templates, comparisons).html)
    with pytest.raises(DigestTooLarge) as info:
        render(templates, comparisons, max_html_bytes=size - 1)
    assert (info.value.size, info.value.limit) == (size, size - 1)
    assert f"{size:,} bytes" in str(info.value)
    render(templates, comparisons, max_html_bytes=size)  # exactly at the limit is fine


def test_the_size_is_the_html_part_as_the_message_carries_it(templates: TemplateSet) -> None:
    """Counted on the wire (quoted-printable), not as decoded text: the bytes Gmail clips."""
    digest = render(templates, sample_comparisons())
    typical = dict.fromkeys(SLOT_NAMES, TYPICAL_SLOT_VALUE)
    template = MessageTemplate.build(
        digest,
        from_header="W <d@verdicts.example.com>",
        list_id="W <w.verdicts.example.com>",
        edition_key="2026-W48",
    )
    message = template.render(
        subscriber_id=1,
        to_email="r@example.org",
        to_name="R",
        date=datetime(2026, 11, 23, tzinfo=UTC),
        **typical,
    )
    head = b"Content-Type: text/html; charset=utf-8\r\n"
    head += b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    part = message[message.index(head) + len(head) :].rsplit(b"\r\n--=_digest_", 1)[0]
    assert html_size(digest.html) == len(part) == len(wire_html(digest.html, typical))
    assert len(part) > len(digest.html_with(typical).encode("utf-8"))


def test_a_digest_under_the_limit_decoded_but_over_it_on_the_wire_is_too_large(
    templates: TemplateSet,
) -> None:
    comparisons = sample_comparisons()
    decoded = render(templates, comparisons).html_with(dict.fromkeys(SLOT_NAMES, "x" * 120))
    limit = len(decoded.encode("utf-8")) + 100  # the decoded text fits
    with pytest.raises(DigestTooLarge) as info:
        render(templates, comparisons, max_html_bytes=limit)
    assert info.value.size > limit and "bytes on the wire (quoted-printable" in str(info.value)


def test_long_edition_stays_well_below_gmail_clipping(templates: TemplateSet) -> None:
    digest = render(templates, [long_comparison(i) for i in range(5)])
    size = html_size(digest.html)
    assert size < 60_000, f"5 long comparisons render to {size:,} bytes"
    quotes_and_titles = digest.text_with(SLOTS)
    assert "…" in quotes_and_titles  # long quotes were shortened


def test_html_lines_stay_short(sample: RenderedDigest) -> None:
    longest = max(len(line.encode("utf-8")) for line in sample.html_with(SLOTS).splitlines())
    assert longest < 998


# -- templates: loading, overriding, errors --------------------------------------------


def test_defaults_found_in_checkout() -> None:
    assert default_templates_dir() == REPO / "templates"


def test_autoescape_by_extension(templates: TemplateSet) -> None:
    assert templates.env.from_string("{{ x }}").render(x="<b>") == "<b>"
    cases = [
        ("digest.mjml.j2", True),
        ("a.html.j2", True),
        ("digest.txt.j2", False),
        ("x.j2", True),
    ]
    for name, escaped in cases:
        assert bool(templates.env.autoescape(name)) is escaped  # type: ignore[operator]


def test_instance_template_overrides_one_file(tmp_path: Path) -> None:
    (tmp_path / "subject.txt.j2").write_text("Custom {{ site.name }}\n", encoding="utf-8")
    digest = render(TemplateSet(tmp_path), sample_comparisons())
    assert digest.subject == "Custom The Verdict Weekly"
    assert "Lumen Notebook" in digest.text_with(SLOTS)  # the rest from the defaults


def test_missing_template_names_it(tmp_path: Path) -> None:
    (tmp_path / "digest.mjml.j2").write_text(
        '{% include "partials/nope.mjml.j2" %}\n', encoding="utf-8"
    )
    with pytest.raises(RenderError, match=r"'partials/nope\.mjml\.j2' not found"):
        render(TemplateSet(tmp_path), [])
    with pytest.raises(RenderError, match=r"'subject\.txt\.j2' not found"):
        render(TemplateSet(None, defaults_dir=tmp_path), [])


def test_syntax_error_names_template_and_line(tmp_path: Path) -> None:
    (tmp_path / "subject.txt.j2").write_text("ok\n{% if %}\n", encoding="utf-8")
    with pytest.raises(RenderError, match=r"'subject\.txt\.j2' line 2: syntax error"):
        render(TemplateSet(tmp_path), [])


def test_undefined_name_names_template_and_line(tmp_path: Path) -> None:
    (tmp_path / "subject.txt.j2").write_text("a\nb\n{{ site.nmae }}\n", encoding="utf-8")
    with pytest.raises(RenderError, match=r"'subject\.txt\.j2' .* line 3: undefined name"):
        render(TemplateSet(tmp_path), [])


def test_slots_are_not_available_in_the_subject(tmp_path: Path) -> None:
    (tmp_path / "subject.txt.j2").write_text("{{ unsubscribe_url }}\n", encoding="utf-8")
    with pytest.raises(RenderError, match="unsubscribe_url"):
        render(TemplateSet(tmp_path), [])


def test_broken_mjml_is_a_render_error() -> None:
    with pytest.raises(RenderError, match=r"MJML did not compile.*line 2"):
        compile_mjml("<mjml><mj-body>\n<mj-section></mj-body></mjml>")
    with pytest.raises(RenderError, match="MJML did not compile"):
        compile_mjml("")


# -- accessibility -------------------------------------------------------------------------


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(fg: str, bg: str) -> float:
    high, low = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_badge_contrast() -> None:
    """WCAG 2.1 AA asks 4.5:1 for small text; every badge and verdict colour passes."""
    for badge in PRICING_BADGES.values():
        assert contrast(badge.fg, badge.bg) >= 4.5, badge
    for colour in ("#166534", "#B91C1C", "#4B5563", "#1D4ED8"):
        assert contrast(colour, "#FFFFFF") >= 4.5, colour
