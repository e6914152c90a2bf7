"""The editor's note, subject, preheader and sponsor block in the rendered digest.

Rendered through the real templates and MRML with the sample feed (as
tests/test_render.py does); the goldens there pin the output without an editor.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from digest.render.base import Editorial, RenderedDigest
from digest.render.digest import render_digest
from digest.render.markdown import note_html, note_text
from digest.render.templates import TemplateSet
from tests.test_render import SITE, SLOTS, sample_comparisons

HOSTILE_NOTE = """Hello **readers**,
first line  
second line

- one
- [our pick](https://verdicts.example.com/pick?a=1&b=2)
- [trap](javascript:alert(1))

<script>alert(1)</script>

<img src=x onerror=alert(1)>
"""  # noqa: W291 - two trailing spaces: a Markdown hard line break


@pytest.fixture(scope="module")
def templates() -> TemplateSet:
    return TemplateSet(None)


def render(templates: TemplateSet, editorial: Editorial | None, **over: Any) -> RenderedDigest:
    return render_digest(
        templates,
        comparisons=over.pop("comparisons", sample_comparisons()),
        edition_key="2026-W48",
        max_html_bytes=200_000,
        editorial=editorial,
        **SITE,
    )


def body(html: str) -> str:
    """The HTML from the masthead on: what a reader sees (the head holds the CSS,
    the hidden preheader names the comparisons)."""
    return html.split("<h1", 1)[1]


# -- the note as HTML ----------------------------------------------------------------


def test_note_html_keeps_markdown_and_drops_everything_active() -> None:
    html = note_html(HOSTILE_NOTE)
    assert "<strong>readers</strong>" in html
    assert "first line<br />\nsecond line" in html
    assert "<ul>\n<li>one</li>" in html
    assert (
        '<a href="https://verdicts.example.com/pick?a=1&amp;b=2" rel="noopener noreferrer">'
        "our pick</a>" in html
    )
    assert 'href="javascript' not in html and "<a>" not in html  # no link made
    assert "<script" not in html and "<img" not in html  # raw HTML is never passed
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown as text, inert


def test_note_html_allows_only_links_to_http_and_no_other_attribute() -> None:
    html = note_html('[a](/relative) [b](mailto:x@example.com) [c](https://e.example "t")\n\n# Hi')
    assert html == (
        '<p>a b <a href="https://e.example" rel="noopener noreferrer">c</a></p>\n'
        "<p><strong>Hi</strong></p>"
    )


def test_note_text_reads_links_as_text_and_url() -> None:
    text = note_text(
        "See [our pick](https://e.example/p) and <https://e.example/q>.\r\n\r\n![logo](https://e.example/l.png)"
    )
    assert text == "See our pick (https://e.example/p) and https://e.example/q.\n\nlogo"


def test_note_text_wraps_long_lines_and_keeps_list_indent() -> None:
    text = note_text("- " + "word " * 30)
    lines = text.split("\n")
    assert len(lines) == 2 and all(len(line) <= 76 for line in lines)
    assert lines[0].startswith("- word") and lines[1].startswith("  word")


# -- the note, the sponsor, subject and preheader in the digest ----------------------


def test_note_survives_mjml_under_the_intro(templates: TemplateSet) -> None:
    digest = render(templates, Editorial(note=HOSTILE_NOTE))
    html = body(digest.html_with(SLOTS))
    intro = html.index("3 new comparisons this week")
    note = html.index("<strong>readers</strong>")
    first_card = html.index("Claude 4 API")
    assert intro < note < first_card
    assert "first line<br />\nsecond line" in html
    assert "<script" not in html and "<img" not in html
    assert 'href="javascript' not in html
    text = digest.text_with(SLOTS)
    assert "Hello **readers**,\nfirst line\nsecond line\n\n- one\n" in text
    assert "- our pick (https://verdicts.example.com/pick?a=1&b=2)" in text
    assert text.index("the community.\n\nHello **readers**") < text.index("View in your browser")


def test_sponsor_block_after_the_first_comparison_labelled_and_escaped(
    templates: TemplateSet,
) -> None:
    editorial = Editorial(
        sponsor_text="Acme <Tools> & more",
        sponsor_url="https://acme.example/?ref=digest&x=1",
        sponsor_label="Partner",
    )
    digest = render(templates, editorial)
    html = body(digest.html_with(SLOTS))
    sponsor = html.index(">Partner</div>")
    assert html.index("Claude 4 API") < sponsor < html.index("Lumen Notebook")
    assert (
        '<a href="https://acme.example/?ref=digest&amp;x=1" style="color:#1F2937;">'
        "Acme &lt;Tools&gt; &amp; more</a>" in html
    )
    text = digest.text_with(SLOTS)
    block = "=" * 76 + "\nPARTNER\nAcme <Tools> & more\nhttps://acme.example/?ref=digest&x=1\n"
    assert block in text
    assert text.index("Codestral 2.0") < text.index(block) < text.index("Lumen Notebook")


def test_sponsor_with_a_bad_url_is_shown_unlinked(templates: TemplateSet) -> None:
    digest = render(templates, Editorial(sponsor_text="Acme", sponsor_url="javascript:alert(1)"))
    html = body(digest.html_with(SLOTS))
    assert '>Sponsor</div><div style="margin-top:6px;">Acme</div>' in html.replace("\n", "")
    assert "javascript" not in html


def test_sponsor_before_the_footer_of_an_edition_without_comparisons(
    templates: TemplateSet,
) -> None:
    digest = render(
        templates, Editorial(sponsor_text="Acme", sponsor_url="https://a.example"), comparisons=[]
    )
    text = digest.text_with(SLOTS)
    assert text.index("SPONSOR\nAcme") < text.index("Unsubscribe:")
    assert ">Sponsor</div>" in digest.html_with(SLOTS)


def test_subject_and_preheader_overrides(templates: TemplateSet) -> None:
    editorial = Editorial(
        subject="Our pick:\r\nBcc: x@example.org  this week", preheader="Pre & header"
    )
    digest = render(templates, editorial)
    assert digest.subject == "Our pick: Bcc: x@example.org this week"
    html = digest.html_with(SLOTS)
    assert re.search(r'<div style="display:none;[^"]*">Pre &amp; header\n', html)
    long = render(templates, Editorial(subject="word " * 40)).subject
    assert len(long) <= 150 and long.endswith("…")


def test_no_editorial_and_an_empty_one_render_exactly_as_before(templates: TemplateSet) -> None:
    plain = render(templates, None)
    empty = render(templates, Editorial())
    blank = render(templates, Editorial(note="  \n", subject=" ", sponsor_url="https://a.example"))
    for other in (empty, blank):
        assert other.subject == plain.subject
        assert other.html_with(SLOTS) == plain.html_with(SLOTS)
        assert other.text_with(SLOTS) == plain.text_with(SLOTS)
    assert "editor-note" not in plain.html_with(SLOTS)
