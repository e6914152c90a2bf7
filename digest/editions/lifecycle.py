"""Choose the comparisons for a week → :class:`~digest.store.models.Edition`, idempotent by key.

An edition's key is the ISO week of ``now`` in the site's time zone (``2026-W48``,
:func:`digest.editions.weeks.edition_key`);
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
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

# Re-exported: callers say editions.edition_key / editions.week_bounds.
from digest.editions.weeks import edition_key as edition_key
from digest.editions.weeks import week_bounds as week_bounds
from digest.store.models import (
    Comparison,
    Delivery,
    DeliveryState,
    Edition,
    EditionComparison,
    EditionStatus,
)

_D = Delivery.__table__  # type: ignore[attr-defined]


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
    min_comparisons: int = 1,
    approval_deadline: datetime | None = None,
    key: str | None = None,
) -> ComposeResult:
    """Return this week's edition, creating it from eligible comparisons if needed.

    Fewer than ``min_comparisons`` eligible: no edition (they roll over to next
    week). ``approval_deadline``: the edition is a draft that needs approval by then
    (``[edition] require_approval``). ``key``: a later week's edition, composed
    early (from the desk, or a day ahead for local delivery): it waits, see
    :func:`digest.editions.weeks.not_yet_due`."""
    key = key or edition_key(now, tz)
    existing = get(session, key=key)
    if existing is not None:
        return ComposeResult(existing, False, f"edition {key} already exists ({existing.status})")
    chosen = eligible(session, now=now, max_age=max_age, limit=max_comparisons)
    if not chosen:
        previous = latest_before(session, key=key)
        since = f" since edition {previous.key}" if previous else ""
        return ComposeResult(None, False, f"no new comparisons{since}: no edition for {key}")
    if len(chosen) < min_comparisons:
        return ComposeResult(
            None,
            False,
            f"only {len(chosen)} new comparison(s), fewer than [edition] min_comparisons = "
            f"{min_comparisons}: no edition for {key}; they roll over to next week",
        )
    edition = Edition(
        key=key,
        cutoff=now,
        composed_at=now,
        needs_approval=approval_deadline is not None,
        approval_deadline=approval_deadline,
    )
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
    draft = " (a draft awaiting approval)" if approval_deadline is not None else ""
    return ComposeResult(edition, True, f"composed {key} with {len(chosen)} comparisons{draft}")


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
        .where(
            EditionComparison.edition_id == edition.id,  # type: ignore[arg-type]
            EditionComparison.excluded.is_(False),  # type: ignore[attr-defined]
        )
        .order_by(EditionComparison.position)  # type: ignore[arg-type]
    )
    return session.execute(stmt).scalars().all()


def all_editions(session: Session) -> Sequence[Edition]:
    return session.execute(select(Edition).order_by(Edition.key.desc())).scalars().all()  # type: ignore[attr-defined]


# Operator controls: which status each action may start from, and where it leads.
_PAUSABLE = (EditionStatus.composed, EditionStatus.sending)
_CANCELLABLE = (EditionStatus.composed, EditionStatus.sending, EditionStatus.paused)


def pause(session: Session, *, key: str, note: str, now: datetime) -> Edition:
    """Stop sending ``key`` until resumed; senders stop at their next batch.
    Raises DigestError for an unknown key or an edition that cannot be paused."""
    edition = _for_change(session, key, _PAUSABLE, "pause")
    edition.status = EditionStatus.paused
    edition.status_note = note
    session.add(edition)
    return edition


def resume(session: Session, *, key: str) -> Edition:
    """Make a paused edition sendable again (composed, or sending once planned)."""
    edition = _for_change(session, key, (EditionStatus.paused,), "resume")
    planned = edition.planned_at is not None
    edition.status = EditionStatus.sending if planned else EditionStatus.composed
    edition.status_note = ""
    session.add(edition)
    return edition


def cancel(session: Session, *, key: str, note: str, now: datetime) -> tuple[Edition, int]:
    """Cancel ``key``: nothing more is sent; queued rows become skipped. Returns the
    edition and the number of rows skipped."""
    edition = _for_change(session, key, _CANCELLABLE, "cancel")
    edition.status = EditionStatus.cancelled
    edition.status_note = note
    session.add(edition)
    session.flush()
    skipped = skip_queued(session.connection(), edition_id=_id(edition), reason=note, now=now)
    return edition, skipped


def skip_queued(conn: Connection, *, edition_id: int, reason: str, now: datetime) -> int:
    """Mark every queued row of the edition skipped (the edition was cancelled). A ledger
    write kept here with :func:`cancel`: delivery imports editions, never the reverse."""
    result = conn.execute(
        update(_D)
        .where(_D.c.edition_id == edition_id, _D.c.state == DeliveryState.queued.value)
        .values(
            state=DeliveryState.skipped.value,
            detail=reason,
            lease_owner="",
            lease_until=None,
            updated_at=now,
        )
    )
    return int(result.rowcount)


def _for_change(
    session: Session, key: str, allowed: tuple[EditionStatus, ...], action: str
) -> Edition:
    from digest.errors import DigestError

    edition: Edition | None = session.execute(
        select(Edition).where(col(Edition.key) == key).with_for_update()
    ).scalar_one_or_none()
    if edition is None:
        raise DigestError(f"there is no edition {key}: 'digest status' lists them")
    if edition.status not in allowed:
        raise DigestError(f"edition {key} is {edition.status}: it cannot {action}")
    return edition


def approve(session: Session, *, key: str, by: str, now: datetime) -> Edition:
    """Approve ``key`` for sending (``[edition] require_approval``). Idempotent for an
    edition already approved. Raises DigestError for an unknown key, an edition that
    needs no approval, or one whose approval deadline has passed."""
    from digest.errors import DigestError

    edition = _for_change(session, key, _CANCELLABLE, "be approved")
    if not edition.needs_approval:
        raise DigestError(f"edition {key} does not need approval")
    if edition.approved_at is not None:
        return edition
    if edition.approval_deadline is not None and now > edition.approval_deadline:
        raise DigestError(
            f"edition {key} missed its approval deadline "
            f"({edition.approval_deadline:%Y-%m-%d %H:%M} UTC): it will not be sent"
        )
    edition.approved_at = now
    edition.approved_by = by[:200]
    session.add(edition)
    return edition


APPROVAL_EXPIRED = "not approved by its deadline: not sent"


def expire_unapproved(session: Session, *, now: datetime) -> list[str]:
    """Cancel every draft whose approval deadline passed before ``now`` (status note
    :data:`APPROVAL_EXPIRED`). Returns the keys *this call* cancelled, oldest first.

    Each cancellation is one conditional ``UPDATE`` (still composed, unapproved and
    late), so when the scheduler's dispatch, a cron ``digest run`` and ``digest
    check`` race on the same draft, exactly one of them cancels it, and only that
    one tells the operators. A composed edition has no delivery rows yet (planning
    makes it ``sending``), so there is nothing to skip."""
    table = Edition.__table__  # type: ignore[attr-defined]
    late = (
        table.c.needs_approval.is_(True),
        table.c.approved_at.is_(None),
        table.c.approval_deadline < now,
        table.c.status == EditionStatus.composed.value,
    )
    conn = session.connection()
    keys = conn.execute(select(table.c.key).where(*late).order_by(table.c.key)).scalars().all()
    cancelled: list[str] = []
    for key in keys:
        result = conn.execute(
            update(table)
            .where(table.c.key == key, *late)
            .values(status=EditionStatus.cancelled.value, status_note=APPROVAL_EXPIRED)
        )
        if result.rowcount:
            cancelled.append(str(key))
    return cancelled


def awaiting_approval(edition: Edition) -> bool:
    """True while ``edition`` may not be sent because nobody has approved it yet (a
    cancelled draft, e.g. one past its approval deadline, awaits nothing)."""
    unapproved = edition.needs_approval and edition.approved_at is None
    return unapproved and edition.status != EditionStatus.cancelled
