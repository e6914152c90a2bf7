"""Shape an edition before it goes: include, exclude and reorder its comparisons,
write a note, replace the subject and preheader, add one sponsor block.

One function, :func:`apply_edit`, serves ``digest edit``, the desk and the API.
It locks the edition row, refuses once sending has started (the ledger is
planned), records every change in the audit log in the same transaction, bumps
the editorial ``revision`` and withdraws an approval given to an earlier
version (approval applies to the version approved). Sending checks the revision
it rendered against the stored one when it plans the ledger
(:func:`digest.delivery.ledger.freeze`), so an edit racing the start of a send
either lands before (and is sent) or is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session, col

from digest.errors import DigestError
from digest.render.view import safe_url
from digest.store import audit
from digest.store.models import (
    Comparison,
    Edition,
    EditionComparison,
    EditionEditorial,
    EditionStatus,
)

NOTE_LIMIT = 5000
SUBJECT_LIMIT = 150
PREHEADER_LIMIT = 140
SPONSOR_TEXT_LIMIT = 300
SPONSOR_LABEL = "Sponsor"


class EditRefused(DigestError):
    """The edition cannot change (sending started, sent, cancelled): HTTP 409."""


class EditInvalid(DigestError):
    """The edit itself is wrong (unknown comparison, a subject over the limit): 400/422."""


@dataclass(frozen=True, slots=True)
class Sponsor:
    text: str
    url: str
    label: str = SPONSOR_LABEL


@dataclass(frozen=True, slots=True)
class Edit:
    """What to change; ``None`` leaves a field as it is, ``""`` clears it."""

    note: str | None = None
    subject: str | None = None
    preheader: str | None = None
    sponsor: Sponsor | None = None
    clear_sponsor: bool = False
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    order: tuple[str, ...] | None = None

    @property
    def empty(self) -> bool:
        return self == Edit()


@dataclass(slots=True)
class EditResult:
    key: str
    revision: int
    changes: list[str] = field(default_factory=list)
    approval_withdrawn: bool = False


@dataclass(frozen=True, slots=True)
class LineupEntry:
    comparison: Comparison
    excluded: bool


def why_not_editable(edition: Edition) -> str | None:
    """None when ``edition`` may change, else why not (in words)."""
    if edition.planned_at is not None or edition.status in (
        EditionStatus.sending,
        EditionStatus.sent,
    ):
        return f"edition {edition.key} has started sending: it cannot change any more"
    if edition.status == EditionStatus.cancelled:
        return f"edition {edition.key} is cancelled: it cannot change"
    return None


def editorial_of(session: Session, edition: Edition) -> EditionEditorial | None:
    return session.get(EditionEditorial, edition.id)


def revision_of(session: Session, edition: Edition) -> int:
    found = editorial_of(session, edition)
    return found.revision if found is not None else 0


def lineup(session: Session, edition: Edition) -> list[LineupEntry]:
    """Every comparison of the edition in display order, excluded ones included."""
    stmt = (
        select(Comparison, col(EditionComparison.excluded))
        .join(EditionComparison, col(EditionComparison.comparison_id) == col(Comparison.id))
        .where(col(EditionComparison.edition_id) == edition.id)
        .order_by(col(EditionComparison.position))
    )
    return [LineupEntry(c, bool(x)) for c, x in session.execute(stmt).all()]


def apply_edit(
    session: Session, *, key: str, edit: Edit, actor: str, via: str, now: datetime
) -> EditResult:
    """Apply ``edit`` to edition ``key``. Raises :class:`EditRefused` (the edition
    cannot change), :class:`EditInvalid` (a bad value or comparison id) or
    DigestError (no such edition). Nothing changes unless everything is valid."""
    edition = session.execute(
        select(Edition).where(col(Edition.key) == key).with_for_update()
    ).scalar_one_or_none()
    if edition is None:
        raise DigestError(f"there is no edition {key}: 'digest status' lists them")
    refused = why_not_editable(edition)
    if refused:
        raise EditRefused(refused)
    editorial = editorial_of(session, edition) or EditionEditorial(edition_id=edition.id)
    changes = _edit_lineup(session, edition, edit) + _edit_text(editorial, edit)
    result = EditResult(key, editorial.revision, changes)
    if not changes:
        return result
    editorial.revision += 1
    editorial.updated_at = now
    editorial.updated_by = actor[:200]
    session.add(editorial)
    result.revision = editorial.revision
    if edition.needs_approval and edition.approved_at is not None:
        edition.approved_at = None
        edition.approved_by = ""
        session.add(edition)
        result.approval_withdrawn = True
        changes.append("approval withdrawn (approve this version to send it)")
    for change in changes:
        audit.record(
            session, actor=actor, via=via, action="edition.edit", target=f"edition:{key}",
            detail=change, now=now,
        )  # fmt: skip
    session.flush()
    return result


def _edit_lineup(session: Session, edition: Edition, edit: Edit) -> list[str]:
    rows = {
        r.comparison_id: r
        for r in session.execute(
            select(EditionComparison).where(col(EditionComparison.edition_id) == edition.id)
        ).scalars()
    }
    changes: list[str] = []
    for cid in edit.exclude:
        row = rows.get(cid)
        if row is None:
            raise EditInvalid(f"comparison {cid!r} is not in edition {edition.key}")
        if not row.excluded:
            row.excluded = True
            session.add(row)
            changes.append(f"excluded comparison {cid}")
    for cid in edit.include:
        changes += _include(session, edition, rows, cid)
    if edit.order is not None:
        changes += _reorder(session, edition, rows, edit.order)
    if changes and all(r.excluded for r in rows.values()):
        raise EditInvalid(f"edition {edition.key} needs at least one comparison left in it")
    return changes


def _include(
    session: Session, edition: Edition, rows: dict[str, EditionComparison], cid: str
) -> list[str]:
    row = rows.get(cid)
    if row is not None:
        if not row.excluded:
            return []
        row.excluded = False
        session.add(row)
        return [f"included comparison {cid}"]
    if session.get(Comparison, cid) is None:
        raise EditInvalid(f"there is no comparison {cid!r}: 'digest fetch' stores them")
    elsewhere = session.execute(
        select(col(Edition.key))
        .join(EditionComparison, col(EditionComparison.edition_id) == col(Edition.id))
        .where(
            col(EditionComparison.comparison_id) == cid,
            col(EditionComparison.excluded).is_(False),
            col(Edition.status) != EditionStatus.cancelled.value,
        )
    ).scalar_one_or_none()
    if elsewhere is not None:
        raise EditInvalid(f"comparison {cid!r} is already in edition {elsewhere}")
    last = session.execute(
        select(func.max(EditionComparison.position)).where(
            col(EditionComparison.edition_id) == edition.id
        )
    ).scalar()
    assert edition.id is not None
    rows[cid] = EditionComparison(
        edition_id=edition.id, comparison_id=cid, position=(last or 0) + 1
    )
    session.add(rows[cid])
    return [f"included comparison {cid}"]


def _reorder(
    session: Session, edition: Edition, rows: dict[str, EditionComparison], order: Sequence[str]
) -> list[str]:
    unknown = [cid for cid in order if cid not in rows]
    if unknown:
        raise EditInvalid(f"cannot order {', '.join(unknown)}: not in edition {edition.key}")
    if len(set(order)) != len(order):
        raise EditInvalid("the order names a comparison twice")
    current = sorted(rows.values(), key=lambda r: r.position)
    wanted = [rows[cid] for cid in order] + [r for r in current if r.comparison_id not in order]
    if [r.comparison_id for r in wanted] == [r.comparison_id for r in current]:
        return []
    for position, row in enumerate(wanted):
        row.position = position
        session.add(row)
    shown = [r.comparison_id for r in wanted if not r.excluded]
    return ["order: " + ", ".join(shown)]


def _edit_text(editorial: EditionEditorial, edit: Edit) -> list[str]:
    changes: list[str] = []
    if edit.note is not None:
        note = edit.note.replace("\r\n", "\n").strip()
        _limit("the note", note, NOTE_LIMIT)
        if note != editorial.note:
            editorial.note = note
            changes.append("note cleared" if not note else f"note set ({len(note)} characters)")
    for name, limit in (("subject", SUBJECT_LIMIT), ("preheader", PREHEADER_LIMIT)):
        value = getattr(edit, name)
        if value is None:
            continue
        value = one_line(value)
        _limit(f"the {name}", value, limit)
        if value != getattr(editorial, name):
            setattr(editorial, name, value)
            changes.append(f"{name} cleared" if not value else f"{name}: {value}")
    if edit.clear_sponsor and editorial.sponsor_text:
        editorial.sponsor_text = editorial.sponsor_url = editorial.sponsor_label = ""
        changes.append("sponsor removed")
    if edit.sponsor is not None:
        changes += _sponsor(editorial, edit.sponsor)
    return changes


def _sponsor(editorial: EditionEditorial, sponsor: Sponsor) -> list[str]:
    text = one_line(sponsor.text)
    label = one_line(sponsor.label) or SPONSOR_LABEL
    if not text:
        raise EditInvalid("the sponsor block needs a text")
    _limit("the sponsor text", text, SPONSOR_TEXT_LIMIT)
    _limit("the sponsor label", label, 40)
    if safe_url(sponsor.url.strip()) is None:
        raise EditInvalid(f"the sponsor link must be an http(s) URL, not {sponsor.url[:80]!r}")
    new = (text, sponsor.url.strip(), label)
    if new == (editorial.sponsor_text, editorial.sponsor_url, editorial.sponsor_label):
        return []
    editorial.sponsor_text, editorial.sponsor_url, editorial.sponsor_label = new
    return [f"sponsor: {text} ({new[1]})"]


def one_line(value: str) -> str:
    """Whitespace and control characters collapsed to single spaces: nothing an editor
    types can break a header line."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in value).split())


def _limit(what: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise EditInvalid(f"{what} is {len(value)} characters; the limit is {limit}")
