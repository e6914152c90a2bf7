"""The rendered digest: built once per edition (and segment), personalized cheaply.

Rendering produces text with *slots* where per-subscriber values go. Slots are
placed by the templates as ``{{ unsubscribe_url }}`` etc.; the renderer fills them
with one-off markers that survive MJML, then splits the output at the markers, so
no feed text can ever be mistaken for a slot.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass

# The per-subscriber values a template may use. Anything else is edition-wide.
SLOT_NAMES: tuple[str, ...] = ("unsubscribe_url", "preferences_url")


@dataclass(frozen=True, slots=True)
class Slot:
    name: str


Piece = str | Slot


def fill(pieces: tuple[Piece, ...], values: Mapping[str, str], *, escape_html: bool) -> str:
    """Join ``pieces`` with slot values (HTML-escaped when ``escape_html``)."""
    out: list[str] = []
    for piece in pieces:
        if isinstance(piece, Slot):
            value = values[piece.name]
            out.append(html.escape(value, quote=True) if escape_html else value)
        else:
            out.append(piece)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class RenderedDigest:
    """Subject, HTML and text of one edition for one segment, with personal slots."""

    subject: str  # one line: no CR, LF or other control characters
    html: tuple[Piece, ...]
    text: tuple[Piece, ...]

    def html_with(self, values: Mapping[str, str]) -> str:
        return fill(self.html, values, escape_html=True)

    def text_with(self, values: Mapping[str, str]) -> str:
        return fill(self.text, values, escape_html=False)


@dataclass(frozen=True, slots=True)
class Editorial:
    """What an editor wrote for one edition (``digest.editions.shaping``), as the
    renderer takes it: plain values, ``""`` meaning "none". ``note`` is Markdown
    source (rendered and sanitised by the renderer); ``subject`` and ``preheader``
    replace the generated ones; the sponsor block shows when ``sponsor_text`` is set."""

    note: str = ""
    subject: str = ""
    preheader: str = ""
    sponsor_text: str = ""
    sponsor_url: str = ""
    sponsor_label: str = "Sponsor"
