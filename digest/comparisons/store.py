"""Feed entries → stored :class:`~digest.store.models.Comparison` rows.

Each entry is checked and cleaned by
:func:`~digest.comparisons.validation.validate` (the rules are drawn there).

:func:`ingest` upserts by id: new → insert; a later ``updated_at`` → update in place;
same or older → unchanged. A bad entry is reported and never overwrites a good row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from digest.comparisons.validation import ValidComparison, validate
from digest.errors import InvalidComparison
from digest.feeds.base import FeedEntry, IsKnown
from digest.feeds.document import parse_timestamp
from digest.store.models import Comparison

_CHUNK = 500  # ids per IN (...) query: well under every backend's parameter limit


@dataclass(slots=True)
class IngestReport:
    new: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    invalid: list[InvalidComparison] = field(default_factory=list)


def ingest(session: Session, entries: Iterable[FeedEntry], *, now: datetime) -> IngestReport:
    """Validate ``entries`` and upsert the good ones by id (flushed, not committed).

    The same id twice in one batch: the newest ``updated_at`` wins (the first seen on a
    tie). Never raises :class:`InvalidComparison`: bad entries land in ``invalid``.
    """
    report = IngestReport()
    newest: dict[str, ValidComparison] = {}
    for entry in entries:
        try:
            valid = validate(entry)
        except InvalidComparison as exc:
            report.invalid.append(exc)
            continue
        kept = newest.get(valid.id)
        if kept is None or valid.updated_at > kept.updated_at:
            newest[valid.id] = valid
    stored = {row.id: row for row in _load(session, list(newest))}
    seen: list[str] = []
    for valid in newest.values():
        row = stored.get(valid.id)
        if row is None:
            session.add(_new_row(valid, now))
            report.new.append(valid.id)
        elif valid.updated_at > row.updated_at:
            _apply(row, valid, now)
            report.updated.append(valid.id)
        else:
            seen.append(valid.id)
    report.unchanged = len(seen)
    _touch(session, seen, now)
    session.flush()
    return report


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _load(session: Session, ids: list[str]) -> Iterator[Comparison]:
    for chunk in _chunks(ids):
        yield from session.exec(select(Comparison).where(col(Comparison.id).in_(chunk)))


def _touch(session: Session, ids: list[str], now: datetime) -> None:
    """Record that unchanged comparisons are still in the feed: one UPDATE per chunk."""
    for chunk in _chunks(ids):
        session.execute(
            update(Comparison).where(col(Comparison.id).in_(chunk)).values(last_seen_at=now)
        )


def _new_row(valid: ValidComparison, now: datetime) -> Comparison:
    return Comparison(
        id=valid.id,
        url=valid.url,
        title=valid.title,
        question=valid.question,
        category=valid.category,
        published_at=valid.published_at,
        updated_at=valid.updated_at,
        tools=valid.tools,
        reviews=valid.reviews,
        first_seen_at=now,
        last_seen_at=now,
    )


def _apply(row: Comparison, valid: ValidComparison, now: datetime) -> None:
    row.url = valid.url
    row.title = valid.title
    row.question = valid.question
    row.category = valid.category
    row.published_at = valid.published_at
    row.updated_at = valid.updated_at
    row.tools = valid.tools
    row.reviews = valid.reviews
    row.last_seen_at = now


def known_checker(session: Session) -> IsKnown:
    """An :data:`IsKnown` backed by ``session``: stored and not updated since.

    ``updated_at`` None means "same as published_at", so never newer; an unreadable
    ``updated_at`` counts as not known (the entry is then read and reported).
    """

    def is_known(comparison_id: str, updated_at: str | None, /) -> bool:
        stored = session.exec(
            select(Comparison.updated_at).where(Comparison.id == comparison_id)
        ).first()
        if stored is None:
            return False
        if updated_at is None:
            return True
        try:
            return parse_timestamp(updated_at) <= stored
        except ValueError:
            return False

    return is_known
