"""The rendered digest: built once per edition (and segment), personalized cheaply.

Rendering produces text with *slots* where per-subscriber values go. Slots are
placed by the templates as ``{{ unsubscribe_url }}`` etc.; the renderer fills them
with one-off markers that survive MJML, then splits the output at the markers, so
no feed text can ever be mistaken for a slot.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# The per-subscriber values every digest carries (the footer's links).
SLOT_NAMES: tuple[str, ...] = ("unsubscribe_url", "preferences_url")
# Further slots a digest may hold: ``ref`` (which message a click came from),
# ``vote_<n>`` (the reader's vote token for tool n of :attr:`RenderedDigest.votes`)
# and, in the web copy, ``readers_<n>`` (the readers' vote on tool n, filled when
# served). Provider substitution tags are built from these names, so: lower-case
# letters, digits and underscores only.
SLOT_PATTERN = r"[a-z]+(?:_[a-z0-9]+)*"
REF_SLOT = "ref"


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
    # (comparison id, tool key) of slot ``vote_<n>`` / ``readers_<n>``, by n.
    votes: tuple[tuple[str, str], ...] = ()

    @property
    def slot_names(self) -> tuple[str, ...]:
        """Every slot name in either part, in first-seen order."""
        seen = dict.fromkeys(p.name for p in (*self.html, *self.text) if isinstance(p, Slot))
        return tuple(seen)

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


@dataclass(frozen=True, slots=True)
class Links:
    """How a digest links out (``[tracking]``, ``[votes]``): ``track`` signs a
    tracked link for (comparison id, target ``c`` / ``t-<tool key>``), None links
    straight to the targets; ``votes`` adds "Ship it" / "Skip it" under each tool;
    ``opens`` an open pixel; ``individual`` says in the footer that clicks are
    counted per reader. ``web_copy`` renders the public web copy instead: full
    titles and quotes, no personal links, the readers' vote beside the panel's."""

    base_url: str  # no trailing slash
    track: Callable[[str, str], str] | None = None
    votes: bool = False
    opens: bool = False
    individual: bool = False
    web_copy: bool = False
