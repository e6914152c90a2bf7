"""What an editor wrote for an edition, as the templates see it.

:func:`editorial_view` turns an :class:`~digest.render.base.Editorial` (plain values
from the database) into an :class:`EditorialView`: the note as sanitised HTML
(:class:`~markupsafe.Markup`, placed unescaped) and as text, the sponsor block with
its link checked, and the subject and preheader that replace the generated ones.
``None`` when there is nothing to show, so the digest renders exactly as it does
without an editor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from markupsafe import Markup

from digest.render.base import Editorial
from digest.render.markdown import note_html, note_text
from digest.render.text import safe_url, shorten
from digest.render.view import PREHEADER_LIMIT, EditionView
from digest.store.models import EditionEditorial

SPONSOR_LABEL = "Sponsor"


@dataclass(frozen=True, slots=True)
class SponsorView:
    text: str
    url: str | None  # None when not an http(s) URL: the text is shown unlinked
    label: str  # "Sponsor", or the editor's label ("Partner", "Supported by")


@dataclass(frozen=True, slots=True)
class EditorialView:
    note_html: Markup  # sanitised (digest.render.markdown); "" = no note
    note_text: str  # the note for the text part; "" = no note
    sponsor: SponsorView | None
    subject: str  # "" = the generated subject
    preheader: str  # "" = the generated preheader


def editorial_view(editorial: Editorial | None) -> EditorialView | None:
    """The view of ``editorial``; None when it is None or says nothing."""
    if editorial is None:
        return None
    view = EditorialView(
        note_html=note_html(editorial.note),
        note_text=note_text(editorial.note),
        sponsor=sponsor_view(editorial),
        subject=one_line(editorial.subject),
        preheader=shorten(one_line(editorial.preheader), PREHEADER_LIMIT),
    )
    shown = (view.note_html, view.note_text, view.sponsor, view.subject, view.preheader)
    return view if any(shown) else None


def sponsor_view(editorial: Editorial) -> SponsorView | None:
    """The sponsor block, or None without a sponsor text. A link that is not an
    absolute http(s) URL is dropped (the text stays): ``digest edit`` and the desk
    refuse one, this is the second lock."""
    text = one_line(editorial.sponsor_text)
    if not text:
        return None
    return SponsorView(
        text=text,
        url=safe_url(editorial.sponsor_url.strip()),
        label=one_line(editorial.sponsor_label) or SPONSOR_LABEL,
    )


def subject_override(view: EditorialView | None) -> str | None:
    """The editor's subject (to go through ``clean_subject``), or None: the subject
    template decides."""
    return view.subject if view is not None and view.subject else None


def with_preheader(edition: EditionView, view: EditorialView | None) -> EditionView:
    """``edition`` with the editor's preheader, when there is one."""
    if view is None or not view.preheader:
        return edition
    return replace(edition, preheader=view.preheader)


def one_line(value: str) -> str:
    """Whitespace and control characters collapsed to single spaces."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in value).split())


def from_stored(found: EditionEditorial | None, default_label: str) -> Editorial | None:
    """The stored editorial row as the renderer takes it (None: nothing written)."""
    if found is None:
        return None
    return Editorial(
        note=found.note,
        subject=found.subject,
        preheader=found.preheader,
        sponsor_text=found.sponsor_text,
        sponsor_url=found.sponsor_url,
        sponsor_label=found.sponsor_label or default_label,
    )
