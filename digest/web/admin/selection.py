"""Why the current edition holds the comparisons it holds, and why others are left out.

The rules are :func:`digest.editions.lifecycle.eligible`'s (never sent before, published no
later than the cutoff, published or first seen within ``[edition] max_age_days``,
newest first, at most ``max_comparisons``); this module says them back per
comparison, in words, for the operator's desk. Read-only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlmodel import Session, col

from digest.config.runtime import Runtime
from digest.editions import lifecycle as editions
from digest.store.models import Comparison, Edition, EditionComparison

LOOKBACK_FACTOR = 2  # left-out candidates: seen within twice max_age_days
MAX_CANDIDATES = 200


@dataclass(frozen=True, slots=True)
class Reasoned:
    title: str
    category: str
    url: str
    reason: str


@dataclass(frozen=True, slots=True)
class Selection:
    key: str
    composed: bool  # False: what composing now would choose
    cutoff: datetime
    previous: str  # the previous edition's key, or ""
    included: tuple[Reasoned, ...]
    left_out: tuple[Reasoned, ...]


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def explain(rt: Runtime, session: Session, *, key: str, edition: Edition | None) -> Selection:
    """The selection of edition ``key`` (``edition`` None: not composed yet)."""
    cfg = rt.config.edition
    max_age = timedelta(days=cfg.max_age_days)
    now = rt.now()
    cutoff = edition.cutoff if edition is not None else now
    if edition is not None:
        chosen = editions.comparisons_of(session, edition=edition)
    else:
        chosen = editions.eligible(session, now=now, max_age=max_age, limit=cfg.max_comparisons)
    previous = editions.latest_before(session, key=key)
    included = tuple(_included(c, previous, max_age) for c in chosen)
    ids = {c.id for c in chosen}
    floor = cutoff - max_age * LOOKBACK_FACTOR
    stmt = (
        select(Comparison)
        .where(or_(col(Comparison.published_at) >= floor, col(Comparison.first_seen_at) >= floor))
        .order_by(col(Comparison.published_at).desc())
        .limit(MAX_CANDIDATES)
    )
    others = [c for c in session.execute(stmt).scalars() if c.id not in ids]
    homes = _editions_of(session, [c.id for c in others])
    left = tuple(
        _left_out(c, homes.get(c.id, ""), cutoff=cutoff, max_age=max_age, limit=cfg.max_comparisons)
        for c in others
        if homes.get(c.id, "") != key
    )
    return Selection(
        key, edition is not None, cutoff, previous.key if previous else "", included, left
    )


def _included(c: Comparison, previous: Edition | None, max_age: timedelta) -> Reasoned:
    if previous is not None and c.published_at > previous.cutoff:
        why = f"published {_when(c.published_at)}, after edition {previous.key}'s cutoff"
    elif previous is not None and c.first_seen_at > previous.cutoff:
        why = (
            f"published {_when(c.published_at)} but first seen {_when(c.first_seen_at)}, "
            f"after edition {previous.key}'s cutoff (arrived late)"
        )
    else:
        why = f"published {_when(c.published_at)}, within the last {max_age.days} days"
    return Reasoned(c.title, c.category, c.url, f"{why}; category {c.category}")


def _left_out(
    c: Comparison, home: str, *, cutoff: datetime, max_age: timedelta, limit: int
) -> Reasoned:
    floor = cutoff - max_age
    if home:
        why = f"already in edition {home}"
    elif c.published_at > cutoff:
        why = f"published {_when(c.published_at)}, after this edition's cutoff: next edition"
    elif c.first_seen_at > cutoff:
        why = f"first seen {_when(c.first_seen_at)}, after this edition was composed: next edition"
    elif c.published_at < floor and c.first_seen_at < floor:
        why = (
            f"published {_when(c.published_at)}: older than [edition] max_age_days = {max_age.days}"
        )
    else:
        why = f"over [edition] max_comparisons = {limit}: newer ones took the places"
    return Reasoned(c.title, c.category, c.url, f"{why}; category {c.category}")


def _editions_of(session: Session, ids: Sequence[str]) -> dict[str, str]:
    if not ids:
        return {}
    stmt = (
        select(col(EditionComparison.comparison_id), col(Edition.key))
        .join(Edition, col(Edition.id) == col(EditionComparison.edition_id))
        .where(col(EditionComparison.comparison_id).in_(ids))
    )
    return {str(cid): str(key) for cid, key in session.execute(stmt)}
