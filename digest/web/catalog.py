"""Read-only queries the web pages need: feed categories and sent editions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session, col

from digest.store.models import Comparison, Edition, EditionComparison, EditionStatus


@dataclass(frozen=True, slots=True)
class SentEdition:
    edition: Edition
    titles: tuple[str, ...]  # its comparisons' titles, in display order


def feed_categories(session: Session) -> list[str]:
    """Every category seen in the ``comparison`` table, distinct and sorted."""
    stmt = select(Comparison.category).distinct()  # type: ignore[call-overload]
    return sorted({str(c) for c in session.execute(stmt).scalars() if c})


def sent_editions(session: Session) -> list[SentEdition]:
    """Sent editions, newest first, each with its comparison titles (two queries)."""
    stmt = (
        select(Edition)
        .where(col(Edition.status) == EditionStatus.sent.value)
        .order_by(col(Edition.key).desc())
    )
    editions: Sequence[Edition] = session.execute(stmt).scalars().all()
    if not editions:
        return []
    rows = session.execute(
        select(EditionComparison.edition_id, Comparison.title)  # type: ignore[call-overload]
        .join(Comparison, col(Comparison.id) == col(EditionComparison.comparison_id))
        .where(col(EditionComparison.edition_id).in_([e.id for e in editions]))
        .order_by(col(EditionComparison.edition_id), col(EditionComparison.position))
    ).all()
    titles: dict[int, list[str]] = {}
    for edition_id, title in rows:
        titles.setdefault(int(edition_id), []).append(str(title))
    return [SentEdition(e, tuple(titles.get(e.id or 0, ()))) for e in editions]


def sent_edition(session: Session, *, key: str) -> Edition | None:
    """The edition ``key`` if it has been sent; None for unknown or unsent keys."""
    stmt = select(Edition).where(
        col(Edition.key) == key, col(Edition.status) == EditionStatus.sent.value
    )
    return session.execute(stmt).scalar_one_or_none()


def latest_sent(session: Session) -> Edition | None:
    stmt = (
        select(Edition)
        .where(col(Edition.status) == EditionStatus.sent.value)
        .order_by(col(Edition.key).desc())
        .limit(1)
    )
    return session.execute(stmt).scalar_one_or_none()
