"""The editor's note: Markdown source → sanitised HTML for the HTML part, and plain
text for the text part.

HTML is made in two steps, each a lock of its own:

1. markdown-it-py, CommonMark preset with raw HTML *disabled*: ``<script>`` or
   ``<img onerror=…>`` in the source come out as escaped text, never as markup;
   links other than http(s) are not made into links (markdown-it refuses
   ``javascript:`` and friends);
2. nh3 (ammonia) then keeps only :data:`ALLOWED_TAGS`, only ``href`` on ``a``, only
   http(s) URLs, and adds ``rel="noopener noreferrer"`` to links.

Headings are shown as a bold paragraph (the note sits inside the digest, under its
own heading); images and rules are dropped. Void tags come out XHTML-style
(``<br />``), as the digest templates write them for MJML.

The text part gets the Markdown source as written, except that links read
``text (url)`` and images their alt text, and long lines are wrapped at 76 columns.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

if TYPE_CHECKING:  # loaded on first use: most commands never render a note (~45 ms)
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

ALLOWED_TAGS = frozenset({"p", "br", "strong", "em", "a", "ul", "ol", "li", "blockquote", "code"})
ALLOWED_ATTRIBUTES = {"a": {"href"}}
URL_SCHEMES = frozenset({"http", "https"})
LINK_REL = "noopener noreferrer"
TEXT_WIDTH = 76

# Characters XML 1.0 forbids (MRML refuses a whole document over one) plus DEL and
# the C1 controls; tab and newlines stay.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")
_EMPTY_PARAGRAPH = re.compile(r"<p>\s*</p>\n?")
_DEAD_LINK = re.compile(r"<a(?: rel=\"[^\"]*\")?>(.*?)</a>", re.S)  # its href was refused
# [text](url "title") and ![alt](url): the text part shows "text (url)" / "alt".
_LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(\s*<?([^\s<>()]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_AUTOLINK = re.compile(r"<(https?://[^\s<>]+)>")
_HARD_BREAK = re.compile(r"(?:\\| {2,})$")
_LIST_MARKER = re.compile(r"^(\s*(?:[-*+]|\d{1,9}[.)]|>)\s+)")


def _heading_open(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    return "<p><strong>"


def _heading_close(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    return "</strong></p>\n"


@cache
def _parser() -> MarkdownIt:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False})
    md.add_render_rule("heading_open", _heading_open)
    md.add_render_rule("heading_close", _heading_close)
    return md


def clean_source(source: str) -> str:
    """The note with CRLF as LF and without control characters XML forbids."""
    return _FORBIDDEN.sub("", source.replace("\r\n", "\n").replace("\r", "\n")).strip()


def note_html(source: str) -> Markup:
    """The note as sanitised HTML, safe to place in the digest unescaped ("" → "")."""
    source = clean_source(source)
    if not source:
        return Markup("")
    import nh3

    rendered = _parser().render(source)
    cleaned = nh3.clean(
        rendered,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_only_href,
        url_schemes=set(URL_SCHEMES),
        link_rel=LINK_REL,
        url_relative="deny",
        strip_comments=True,
    )
    cleaned = _DEAD_LINK.sub(r"\1", _EMPTY_PARAGRAPH.sub("", cleaned))
    cleaned = cleaned.replace("<br>", "<br />")
    return Markup(cleaned.strip())  # noqa: S704 - sanitised by nh3 just above


def _only_href(tag: str, attribute: str, value: str) -> str | None:
    """ammonia keeps ``title`` and ``lang`` on any tag by default; this keeps neither
    (``rel`` on links is the one nh3 sets itself)."""
    keep = attribute in ALLOWED_ATTRIBUTES.get(tag, ()) or (tag, attribute) == ("a", "rel")
    return value if keep else None


def note_text(source: str) -> str:
    """The note for the text part: the Markdown source, links as ``text (url)``,
    images as their alt text, hard-break markers removed, lines wrapped at 76."""
    source = clean_source(source)
    source = _LINK.sub(_link_text, source)
    source = _AUTOLINK.sub(r"\1", source)
    return "\n".join(_wrap(_HARD_BREAK.sub("", line.rstrip("\t"))) for line in source.split("\n"))


def _link_text(match: re.Match[str]) -> str:
    image, text, url = match.group(1), match.group(2), match.group(3)
    if image or not url.lower().startswith(("http://", "https://")):
        return text
    return f"{text} ({url})" if text and text != url else url


def _wrap(line: str) -> str:
    if len(line) <= TEXT_WIDTH:
        return line
    marker = _LIST_MARKER.match(line)
    indent = " " * len(marker.group(1)) if marker else ""
    if marker and marker.group(1).strip() == ">":
        indent = marker.group(1)
    return "\n".join(
        textwrap.wrap(
            line,
            TEXT_WIDTH,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
    )
