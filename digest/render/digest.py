"""Render one edition: Jinja2 → MJML → HTML, the plain-text part and the subject.

Runs once per edition (and segment), never per subscriber. Per-subscriber values
are left as :class:`~digest.render.base.Slot` pieces:

1. each slot name (:data:`SLOT_NAMES`, and the ``ref`` / ``vote_<n>`` /
   ``readers_<n>`` slots the links need, :mod:`digest.render.links`) is bound to a
   one-off marker ``%%<nonce>:<name>%%`` with a fresh ``secrets.token_hex`` nonce
   per call, so no feed text can forge one (it cannot know the nonce);
2. the templates place ``{{ unsubscribe_url }}`` etc. where the values go, and the
   view's hrefs carry the other markers; the markers hold no character that HTML
   escaping or MJML would change;
3. after compiling, HTML and text are split at the markers. The footer's slots
   must appear in both parts and no damaged marker may remain.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any

from digest.errors import DigestTooLarge, RenderError
from digest.render.base import (
    SLOT_NAMES,
    SLOT_PATTERN,
    Editorial,
    Links,
    Piece,
    RenderedDigest,
    Slot,
)
from digest.render.editorial import editorial_view, subject_override, with_preheader
from digest.render.links import Hrefs
from digest.render.mjml import compile_mjml
from digest.render.size import wire_html
from digest.render.templates import TemplateSet
from digest.render.text import shorten
from digest.render.view import edition_view, site_view
from digest.store.models import Comparison

HTML_TEMPLATE = "digest.mjml.j2"
TEXT_TEMPLATE = "digest.txt.j2"
SUBJECT_TEMPLATE = "subject.txt.j2"
SUBJECT_LIMIT = 150
# What a real per-subscriber URL costs in bytes, for the size check (~120 chars);
# a click ref (~36 chars) and a vote token (reader id, comparison id, tool key and
# a 22-character tag: ~96) are shorter.
TYPICAL_SLOT_VALUE = "https://digest.example.com/u/" + "x" * 91
TYPICAL_VALUES = {"ref": "x" * 40, "vote": "x" * 96}


def render_digest(
    templates: TemplateSet,
    *,
    site_name: str,
    base_url: str,
    postal_address: str,
    edition_key: str,
    comparisons: Sequence[Comparison],
    max_html_bytes: int,
    editorial: Editorial | None = None,
    links: Links | None = None,
) -> RenderedDigest:
    """Render the edition ``edition_key`` (ISO week, e.g. ``2026-W48``).

    ``comparisons`` are shown in the order given. Returns subject, HTML and text
    with :class:`Slot` pieces for the names in :data:`SLOT_NAMES`. ``editorial``
    adds the editor's note and sponsor block (``editorial`` in the templates, an
    :class:`~digest.render.editorial.EditorialView` or None) and replaces the
    subject and preheader it sets; None or empty renders as without it. ``links``
    says how links are made (tracked, votes, the web copy); None: plain links.

    Raises :class:`RenderError` (template missing or broken, MJML refused, a slot
    missing from a part, a bad edition key) and :class:`DigestTooLarge` when the
    HTML part with typical slot values exceeds ``max_html_bytes`` bytes on the wire
    (quoted-printable, as sent: see :mod:`digest.render.size`).
    """
    nonce = secrets.token_hex(16)
    hrefs = Hrefs(links, lambda name: f"%%{nonce}:{name}%%")
    site = site_view(name=site_name, base_url=base_url, postal_address=postal_address)
    view = editorial_view(editorial)
    edition = with_preheader(edition_view(site, edition_key, comparisons, hrefs), view)
    context: dict[str, Any] = {"site": site, "edition": edition, "editorial": view}
    context["tracking"] = links
    override = subject_override(view)
    subject = clean_subject(override or templates.render(SUBJECT_TEMPLATE, context))

    context.update({name: f"%%{nonce}:{name}%%" for name in SLOT_NAMES})
    html = compile_mjml(templates.render(HTML_TEMPLATE, context))
    text = templates.render(TEXT_TEMPLATE, context)

    digest = RenderedDigest(
        subject=subject,
        html=split_slots(html, nonce, template=HTML_TEMPLATE),
        text=split_slots(text, nonce, template=TEXT_TEMPLATE),
        votes=tuple(hrefs.votes),
    )
    size = html_size(digest.html)
    if size > max_html_bytes:
        raise DigestTooLarge(size, max_html_bytes)
    return digest


def html_size(pieces: tuple[Piece, ...]) -> int:
    """Size of the HTML part on the wire (quoted-printable, as each message carries
    it) with every slot filled by a typical ~120-char URL."""
    names = {p.name for p in pieces if isinstance(p, Slot)} | set(SLOT_NAMES)
    typical = {n: TYPICAL_VALUES.get(n.split("_")[0], TYPICAL_SLOT_VALUE) for n in names}
    return len(wire_html(pieces, typical))


def split_slots(rendered: str, nonce: str, *, template: str) -> tuple[Piece, ...]:
    """Split ``rendered`` at this render's markers into text and :class:`Slot` pieces.

    Raises :class:`RenderError` when a slot never appears, or a marker was damaged
    (e.g. by a filter applied to it in the template).
    """
    parts = re.split(rf"%%{re.escape(nonce)}:({SLOT_PATTERN})%%", rendered)
    pieces: list[Piece] = []
    for index, part in enumerate(parts):
        if index % 2:
            pieces.append(Slot(part))
        elif part:
            if nonce in part:
                raise RenderError(
                    f"template '{template}': a personal link was altered (keep "
                    "{{ unsubscribe_url }} / {{ preferences_url }} unfiltered)"
                )
            pieces.append(part)
    missing = [n for n in SLOT_NAMES if Slot(n) not in pieces]
    if missing:
        wanted = ", ".join("{{ %s }}" % n for n in missing)  # noqa: UP031
        raise RenderError(f"template '{template}' must place {wanted} (the footer links)")
    return tuple(pieces)


# Every C0/C1 control character (Cc), whitespace and the Unicode line separators.
_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def clean_subject(raw: str) -> str:
    """One line: runs of whitespace and control characters become one space, then
    the text is cut to :data:`SUBJECT_LIMIT` characters at a word boundary with
    ``…``. No CR or LF can survive (header injection, RFC 5322 folding)."""
    return shorten(_CONTROL_OR_SPACE.sub(" ", raw), SUBJECT_LIMIT)
