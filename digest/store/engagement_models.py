"""What readers send back (issue 16): click and open counts, unique clickers,
per-reader clicks (only with ``[tracking] individual``), votes, the vote webhook's
queue, and each sent edition's web copy as it was sent.

Counts are aggregate by design: ``engagement_count`` holds one row per edition ×
comparison × link × kind, incremented in batches (``digest.engagement.counter``),
never a row per click. :mod:`digest.store.models` imports these (one metadata).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from subscribers.sqltypes import UTCDateTime


def _ts(nullable: bool = False, **kw: Any) -> Any:
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, **kw))


def _key(length: int) -> Any:
    return Field(sa_column=Column(String(length), primary_key=True))


class EngagementCount(SQLModel, table=True):
    """One counter. ``kind``: ``click`` (a reader's click), ``scanner`` (a mail
    scanner's), ``open`` (our pixel), ``provider_open``, ``provider_click``,
    ``delivered`` (provider events). ``comparison_id`` and ``link`` are ``""`` for
    edition-wide counts (opens, deliveries); ``link`` is ``c`` or ``t-<tool key>``."""

    __tablename__ = "engagement_count"

    edition_key: str = _key(16)
    comparison_id: str = _key(120)
    link: str = _key(90)
    kind: str = _key(20)
    count: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))


class ClickSeen(SQLModel, table=True):
    """A message that had at least one reader click: ``ref`` is the message ref's
    ident (a keyed pseudonym, or ``s<id>`` with individual tracking). Unique
    clicks per edition = rows here; scanners never add one."""

    __tablename__ = "click_seen"

    edition_key: str = _key(16)
    ref: str = _key(40)
    first_at: datetime = _ts()


class ClickEvent(SQLModel, table=True):
    """One click by a named reader: only with ``[tracking] individual = true``;
    ``forget`` deletes a reader's rows."""

    __tablename__ = "click_event"
    __table_args__ = (
        Index("ix_click_event_edition", "edition_key"),
        Index("ix_click_event_subscriber", "subscriber_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    edition_key: str = Field(sa_column=Column(String(16), nullable=False))
    subscriber_id: int = Field(sa_column=Column(Integer, nullable=False))
    comparison_id: str = Field(sa_column=Column(String(120), nullable=False))
    link: str = Field(sa_column=Column(String(90), nullable=False))
    scanner: bool = Field(default=False)
    at: datetime = _ts()


class ReaderVote(SQLModel, table=True):
    """A reader's "Ship it" / "Skip it" on one tool: one per reader per tool,
    changeable. ``subscriber_id`` None: the reader was forgotten (the vote stays,
    anonymous)."""

    __tablename__ = "reader_vote"
    __table_args__ = (
        UniqueConstraint("comparison_id", "tool_key", "subscriber_id", name="uq_reader_vote"),
        Index("ix_reader_vote_subscriber", "subscriber_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    comparison_id: str = Field(sa_column=Column(String(120), nullable=False))
    tool_key: str = Field(sa_column=Column(String(80), nullable=False))
    subscriber_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    choice: str = Field(sa_column=Column(String(8), nullable=False))  # ship | skip
    edition_key: str = Field(default="", sa_column=Column(String(16), nullable=False, default=""))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class VoteChange(SQLModel, table=True):
    """A comparison whose vote counts changed and the outgoing webhook has yet to
    tell (``[votes] webhook_url``): retried with backoff until ``notified_at``."""

    __tablename__ = "vote_change"

    comparison_id: str = _key(120)
    changed_at: datetime = _ts()
    notified_at: datetime | None = _ts(nullable=True)
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    next_at: datetime | None = _ts(nullable=True)
    last_error: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class EditionSnapshot(SQLModel, table=True):
    """The web copy of an edition as it was sent: rendered once when the edition is
    planned, served by ``/archive/{key}`` ever after. ``pieces`` is JSON: a list of
    strings and ``{"slot": name}`` objects (the readers' vote, filled when served)."""

    __tablename__ = "edition_snapshot"

    edition_id: int = Field(
        sa_column=Column(Integer, ForeignKey("edition.id", ondelete="CASCADE"), primary_key=True)
    )
    subject: str = Field(sa_column=Column(Text, nullable=False))
    pieces: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _ts()
