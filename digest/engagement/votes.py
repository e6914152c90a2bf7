"""Readers' "Ship it" / "Skip it" votes on the tools of a comparison (issue 16).

- :func:`record_vote`: one vote per reader per tool, changeable. The write is one
  ``INSERT … ON CONFLICT (comparison_id, tool_key, subscriber_id) DO UPDATE … WHERE
  choice differs`` (SQLite and PostgreSQL alike), so two requests of one reader at
  once still leave one row. Refused, with nothing written, for a reader who is gone
  (unknown, forgotten) or not active (pending, unsubscribed, bounced, complained),
  an unknown comparison, or a tool key that is not one of its tools. When the
  counts change, the comparison is queued in ``vote_change`` for the webhook
  (:mod:`digest.engagement.votes_webhook`).
- :func:`counts` and :func:`boards`: the tallies, per comparison and tool.
- :func:`anonymise`: a forgotten reader's votes lose their reader and stay counted.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from digest.engagement.tokens import VoteTarget
from digest.store.models import (
    ClickEvent,
    ClickSeen,
    Comparison,
    Edition,
    EditionComparison,
    EditionStatus,
    ReaderVote,
    VoteChange,
)
from subscribers.bounces import is_erased
from subscribers.models import Subscriber, SubscriberStatus

V = ReaderVote.__table__  # type: ignore[attr-defined]
Q = VoteChange.__table__  # type: ignore[attr-defined]
C = Comparison.__table__  # type: ignore[attr-defined]
CHOICES = ("ship", "skip")
LABELS = {"ship": "Ship it", "skip": "Skip it"}


class Refusal(StrEnum):
    """Why a vote was not recorded; :data:`REASONS` says it to the reader."""

    gone = "gone"  # the reader is unknown or was forgotten
    pending = "pending"  # has not confirmed the subscription
    inactive = "inactive"  # unsubscribed, bounced or complained
    no_comparison = "no_comparison"
    no_tool = "no_tool"


REASONS = {
    Refusal.gone: "The subscription this link was sent to no longer exists.",
    Refusal.pending: "The subscription this link was sent to is not confirmed yet.",
    Refusal.inactive: "Only current subscribers' votes count, and the subscription this "
    "link was sent to has ended.",
    Refusal.no_comparison: "This comparison is no longer open for votes.",
    Refusal.no_tool: "This tool is not part of the comparison (any more).",
}


@dataclass(frozen=True, slots=True)
class Ballot:
    """What a vote link is about: shown on the vote page before anything is recorded."""

    comparison_id: str
    title: str
    url: str
    tool_key: str
    tool_name: str
    tagline: str
    current: str | None  # the reader's vote on this tool so far


@dataclass(frozen=True, slots=True)
class VoteOutcome:
    choice: str
    refused: Refusal | None = None
    previous: str | None = None  # the reader's vote on this tool before this one
    ballot: Ballot | None = None

    @property
    def recorded(self) -> bool:
        return self.refused is None

    @property
    def changed(self) -> bool:
        """True when this replaced another choice (the counts moved from one to the other)."""
        return self.previous is not None and self.previous != self.choice

    @property
    def counts_changed(self) -> bool:
        return self.recorded and self.previous != self.choice


@dataclass(slots=True)
class Tally:
    ship: int = 0
    skip: int = 0

    @property
    def total(self) -> int:
        return self.ship + self.skip

    @property
    def ship_pct(self) -> int | None:
        """Whole percent of "Ship it" (half rounds up); None without votes."""
        return None if not self.total else (200 * self.ship + self.total) // (2 * self.total)

    def as_dict(self) -> dict[str, int | None]:
        return {
            "ship": self.ship,
            "skip": self.skip,
            "total": self.total,
            "ship_pct": self.ship_pct,
        }


@dataclass(slots=True)
class Board:
    """One comparison's tallies, its tools in the feed's order (zero when no votes)."""

    comparison_id: str
    title: str
    tools: list[tuple[dict[str, Any], Tally]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        tools = [
            {"key": tool.get("key"), "name": tool.get("name", ""), **tally.as_dict()}
            for tool, tally in self.tools
        ]
        return {"comparison_id": self.comparison_id, "title": self.title, "tools": tools}


def ballot(session: Session, target: VoteTarget) -> Ballot | Refusal:
    """The vote ``target`` is about, or why it cannot be cast. Writes nothing."""
    reader = session.get(Subscriber, target.subscriber_id)
    if reader is None or is_erased(reader):
        return Refusal.gone
    if reader.status == SubscriberStatus.pending:
        return Refusal.pending
    if reader.status != SubscriberStatus.active:
        return Refusal.inactive
    comparison = session.get(Comparison, target.comparison_id)
    if comparison is None:
        return Refusal.no_comparison
    tools = [t for t in comparison.tools or () if isinstance(t, dict)]
    tool = next((t for t in tools if t.get("key") == target.tool_key), None)
    if tool is None:
        return Refusal.no_tool
    current = session.execute(
        select(V.c.choice).where(
            V.c.comparison_id == comparison.id,
            V.c.tool_key == target.tool_key,
            V.c.subscriber_id == reader.id,
        )
    ).scalar()
    return Ballot(
        comparison_id=comparison.id,
        title=comparison.title,
        url=comparison.url,
        tool_key=target.tool_key,
        tool_name=str(tool.get("name") or target.tool_key),
        tagline=str(tool.get("tagline") or ""),
        current=current,
    )


def record_vote(session: Session, target: VoteTarget, choice: str, *, now: datetime) -> VoteOutcome:
    """Record (or change) the reader's vote in the caller's transaction."""
    if choice not in CHOICES:
        raise ValueError(f"a vote is one of {', '.join(CHOICES)}, not {choice!r}")
    found = ballot(session, target)
    if isinstance(found, Refusal):
        return VoteOutcome(choice, refused=found)
    insert = (
        _dialect(session)
        .insert(V)
        .values(
            comparison_id=target.comparison_id,
            tool_key=target.tool_key,
            subscriber_id=target.subscriber_id,
            choice=choice,
            edition_key=_edition_of(session, target.comparison_id),
            created_at=now,
            updated_at=now,
        )
    )
    stmt = insert.on_conflict_do_update(
        index_elements=["comparison_id", "tool_key", "subscriber_id"],
        set_={"choice": insert.excluded.choice, "updated_at": insert.excluded.updated_at},
        where=V.c.choice != insert.excluded.choice,
    ).returning(V.c.id)
    if session.execute(stmt).first() is None:  # the same choice again: nothing moved
        return VoteOutcome(choice, previous=choice, ballot=found)
    mark_changed(session, target.comparison_id, now=now)
    return VoteOutcome(choice, previous=found.current, ballot=found)


def mark_changed(session: Session, comparison_id: str, *, now: datetime) -> None:
    """Queue ``comparison_id`` for the webhook (again), as of ``now``."""
    values: dict[str, Any] = {"changed_at": now, "notified_at": None, "attempts": 0}
    values |= {"next_at": now, "last_error": ""}
    insert = _dialect(session).insert(Q).values(comparison_id=comparison_id, **values)
    session.execute(insert.on_conflict_do_update(index_elements=["comparison_id"], set_=values))


def counts(
    session: Session, comparison_ids: Iterable[str] | None = None
) -> dict[str, dict[str, Tally]]:
    """``{comparison id: {tool key: Tally}}`` for every tool with at least one vote,
    forgotten readers' votes included."""
    stmt = select(V.c.comparison_id, V.c.tool_key, V.c.choice, func.count()).group_by(
        V.c.comparison_id, V.c.tool_key, V.c.choice
    )
    if comparison_ids is not None:
        stmt = stmt.where(V.c.comparison_id.in_(list(comparison_ids)))
    found: dict[str, dict[str, Tally]] = {}
    for comparison_id, tool_key, choice, number in session.execute(stmt):
        tally = found.setdefault(comparison_id, {}).setdefault(tool_key, Tally())
        if choice in CHOICES:
            setattr(tally, choice, int(number))
    return found


def boards(session: Session, comparison_ids: Iterable[str] | None = None) -> list[Board]:
    """Stored comparisons that have tools (newest first), each with its tallies."""
    stmt = select(C.c.id, C.c.title, C.c.tools).order_by(C.c.published_at.desc(), C.c.id)
    wanted = None if comparison_ids is None else list(comparison_ids)
    if wanted is not None:
        stmt = stmt.where(C.c.id.in_(wanted))
    rows = [row for row in session.execute(stmt) if row.tools]
    tallies = counts(session, wanted)
    found = []
    for row in rows:
        mine = tallies.get(row.id, {})
        tools = [t for t in row.tools if isinstance(t, dict)]
        found.append(
            Board(row.id, row.title, [(t, mine.get(str(t.get("key")), Tally())) for t in tools])
        )
    return found


def anonymise(session: Session, subscriber_id: int) -> int:
    """The reader's votes lose their reader (they stay, counted); returns how many."""
    result = session.execute(
        update(V).where(V.c.subscriber_id == subscriber_id).values(subscriber_id=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def forget_reader(session: Session, subscriber_id: int) -> int:
    """Everything readers sent back, without the reader: votes anonymised (still
    counted), per-reader clicks deleted, their unique-click marks (``s<id>``, with
    individual tracking) renamed so the counts stay and the id goes."""
    anonymised = anonymise(session, subscriber_id)
    session.execute(delete(ClickEvent).where(ClickEvent.subscriber_id == subscriber_id))  # type: ignore[arg-type]
    seen = ClickSeen.__table__  # type: ignore[attr-defined]
    session.execute(
        update(seen)
        .where(seen.c.ref == f"s{int(subscriber_id)}")
        .values(ref=f"forgotten-{secrets.token_hex(8)}")
    )
    return anonymised


def _dialect(session: Session) -> Any:
    return postgresql if session.get_bind().dialect.name == "postgresql" else sqlite


def _edition_of(session: Session, comparison_id: str) -> str:
    """The newest edition sent (or being sent) with the comparison: where the vote came from."""
    E, EC = Edition.__table__, EditionComparison.__table__  # type: ignore[attr-defined]
    stmt = (
        select(E.c.key)
        .join(EC, EC.c.edition_id == E.c.id)
        .where(EC.c.comparison_id == comparison_id)
        .where(E.c.status.in_([EditionStatus.sent, EditionStatus.sending, EditionStatus.paused]))
        .order_by(E.c.id.desc())
        .limit(1)
    )
    return str(session.execute(stmt).scalar() or "")
