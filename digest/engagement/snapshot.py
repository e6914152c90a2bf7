"""An edition's web copy as it was sent: rendered when the edition starts sending
(:func:`digest.pipeline.send`), stored in ``edition_snapshot``, served by
``/archive/{key}`` ever after, so a later feed update or template change never
rewrites what readers were sent.

The stored pieces keep two kinds of slot: the footer's links (the web copy points
them at ``/links``) and ``readers_<n>``, the readers' vote on tool n, filled from
``reader_vote`` each time the page is served (:func:`web_values`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from digest.engagement.votes import Tally, counts
from digest.render.base import SLOT_NAMES, Piece, RenderedDigest, Slot
from digest.render.text import plural
from digest.store.models import EditionSnapshot

S = EditionSnapshot.__table__  # type: ignore[attr-defined]
_FORMAT = 1


def save(
    engine: Engine, *, edition_id: int, digest: RenderedDigest, now: datetime, replace: bool
) -> None:
    """Store ``digest`` as the edition's web copy. ``replace``: overwrite an earlier
    copy (the edition has not started sending, so it may have been edited since);
    otherwise the first copy stays (a resumed run never changes what was sent)."""
    body = {
        "format": _FORMAT,
        "html": [_dump(p) for p in digest.html],
        "votes": [list(v) for v in digest.votes],
    }
    values = {
        "edition_id": edition_id,
        "subject": digest.subject,
        "pieces": json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        "created_at": now,
    }
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(S).values(**values)
    if replace:
        keep = {k: v for k, v in values.items() if k != "edition_id"}
        stmt = stmt.on_conflict_do_update(index_elements=["edition_id"], set_=keep)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=["edition_id"])
    with engine.begin() as conn:
        conn.execute(stmt)


def load(session: Session, edition_id: int) -> RenderedDigest | None:
    """The stored web copy (HTML only; the text part is not kept), or None."""
    row = session.execute(
        select(S.c.subject, S.c.pieces).where(S.c.edition_id == edition_id)
    ).first()
    if row is None:
        return None
    body = json.loads(row.pieces)
    if body.get("format") != _FORMAT:
        return None
    html = tuple(_load(p) for p in body["html"])
    votes = tuple((str(c), str(t)) for c, t in body.get("votes", []))
    return RenderedDigest(subject=row.subject, html=html, text=(), votes=votes)


def web_values(session: Session, digest: RenderedDigest, links_url: str) -> dict[str, str]:
    """Values for every slot of a web copy: the footer's links → ``links_url``,
    ``readers_<n>`` → the readers' vote on that tool, as of now."""
    values = dict.fromkeys(SLOT_NAMES, links_url)
    tallies = counts(session, {cid for cid, _ in digest.votes}) if digest.votes else {}
    for n, (cid, tool) in enumerate(digest.votes):
        values[f"readers_{n}"] = readers_line(tallies.get(cid, {}).get(tool, Tally()))
    for name in digest.slot_names:  # a slot this version does not know stays empty
        values.setdefault(name, "")
    return values


def readers_line(tally: Tally) -> str:
    """``Readers: 62% ship · 13 votes`` / ``Readers: no votes yet``."""
    if not tally.total:
        return "Readers: no votes yet"
    return f"Readers: {tally.ship_pct}% ship · {plural(tally.total, 'vote')}"


def _dump(piece: Piece) -> Any:
    return {"slot": piece.name} if isinstance(piece, Slot) else piece


def _load(piece: Any) -> Piece:
    return Slot(str(piece["slot"])) if isinstance(piece, dict) else str(piece)
