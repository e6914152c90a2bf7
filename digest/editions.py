"""Choose the comparisons for a week → :class:`~digest.models.Edition`, idempotent by key.

An edition's key is the ISO week of ``now`` in the site's time zone (``2026-W48``);
the key is unique in the database, so composing twice, or two schedulers composing
at once, gives one edition.

Eligible comparisons: never in an earlier edition, published no later than ``now``,
and published *or first seen* within the last ``max_age`` (``[edition]
max_age_days``). So a comparison published since the previous edition goes out
once; one that arrived late because the feed was down still goes out; the newest
``max_comparisons`` are taken and the rest roll over to next week; and an old
backlog (a feed's history on the first run) expires instead of trickling out
for months.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from digest.models import Comparison, Edition, EditionComparison, EditionStatus


def edition_key(now: datetime, tz: ZoneInfo) -> str:
    """The ISO week of ``now`` in ``tz``, e.g. ``2026-W48``."""
    year, week, _ = now.astimezone(tz).isocalendar()
    return f"{year}-W{week:02d}"


def week_bounds(key: str) -> tuple[date, date]:
    """Monday and Sunday of the ISO week ``key``. Raises ValueError for a bad key."""
    year, _, week = key.partition("-W")
    monday = date.fromisocalendar(int(year), int(week), 1)
    return monday, monday + timedelta(days=6)


@dataclass(frozen=True, slots=True)
class ComposeResult:
    edition: Edition | None
    created: bool
    reason: str  # what happened, in a sentence an operator can read


def compose(
    session: Session,
    *,
    now: datetime,
    tz: ZoneInfo,
    max_comparisons: int,
    max_age: timedelta = timedelta(days=14),
) -> ComposeResult:
    """Return this week's edition, creating it from eligible comparisons if needed."""
    key = edition_key(now, tz)
    existing = get(session, key=key)
    if existing is not None:
        return ComposeResult(existing, False, f"edition {key} already exists ({existing.status})")
    chosen = eligible(session, now=now, max_age=max_age, limit=max_comparisons)
    if not chosen:
        previous = latest_before(session, key=key)
        since = f" since edition {previous.key}" if previous else ""
        return ComposeResult(None, False, f"no new comparisons{since}: no edition for {key}")
    edition = Edition(key=key, cutoff=now, composed_at=now)
    try:
        with session.begin_nested():
            session.add(edition)
            session.flush()
            for position, comparison in enumerate(chosen):
                session.add(
                    EditionComparison(
                        edition_id=_id(edition), comparison_id=comparison.id, position=position
                    )
                )
            session.flush()
    except IntegrityError:  # another process composed the same week first
        winner = get(session, key=key)
        assert winner is not None
        return ComposeResult(winner, False, f"edition {key} was composed by another process")
    return ComposeResult(edition, True, f"composed {key} with {len(chosen)} comparisons")


def _id(edition: Edition) -> int:
    if edition.id is None:
        raise RuntimeError("edition has no id: flush it first")
    return edition.id


def eligible(
    session: Session, *, now: datetime, max_age: timedelta, limit: int
) -> Sequence[Comparison]:
    """The newest ``limit`` comparisons that may go into an edition composed at ``now``."""
    already_sent = exists().where(col(EditionComparison.comparison_id) == col(Comparison.id))
    floor = now - max_age
    stmt = select(Comparison).where(
        ~already_sent,
        col(Comparison.published_at) <= now,
        or_(col(Comparison.published_at) >= floor, col(Comparison.first_seen_at) >= floor),
    )
    stmt = stmt.order_by(Comparison.published_at.desc(), Comparison.id).limit(limit)  # type: ignore[attr-defined]
    return session.execute(stmt).scalars().all()


def get(session: Session, *, key: str) -> Edition | None:
    return session.execute(select(Edition).where(Edition.key == key)).scalar_one_or_none()  # type: ignore[arg-type]


def latest_before(session: Session, *, key: str) -> Edition | None:
    stmt = (
        select(Edition)
        .where(Edition.key < key, Edition.status != EditionStatus.cancelled.value)  # type: ignore[arg-type]
        .order_by(Edition.key.desc())  # type: ignore[attr-defined]
        .limit(1)
    )
    return session.execute(stmt).scalar_one_or_none()


def latest(session: Session) -> Edition | None:
    stmt = select(Edition).order_by(Edition.key.desc()).limit(1)  # type: ignore[attr-defined]
    return session.execute(stmt).scalar_one_or_none()


def comparisons_of(session: Session, *, edition: Edition) -> Sequence[Comparison]:
    """The edition's comparisons in display order."""
    stmt = (
        select(Comparison)
        .join(EditionComparison, EditionComparison.comparison_id == Comparison.id)  # type: ignore[arg-type]
        .where(EditionComparison.edition_id == edition.id)  # type: ignore[arg-type]
        .order_by(EditionComparison.position)  # type: ignore[arg-type]
    )
    return session.execute(stmt).scalars().all()


def all_editions(session: Session) -> Sequence[Edition]:
    return session.execute(select(Edition).order_by(Edition.key.desc())).scalars().all()  # type: ignore[attr-defined]
