"""clicks, opens, votes, the vote webhook queue, web copies as sent

The readers' voice (issue 16): ``engagement_count`` (aggregate counters per
edition × comparison × link × kind), ``click_seen`` (unique clickers per edition,
by pseudonym), ``click_event`` (per-reader clicks, only with individual tracking),
``reader_vote`` (one vote per reader per tool), ``vote_change`` (the outgoing
vote webhook's queue) and ``edition_snapshot`` (an edition's web copy as sent).
All new tables: nothing existing changes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 15:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import subscribers.sqltypes

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = subscribers.sqltypes.UTCDateTime


def _ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, TS(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "engagement_count",
        sa.Column("edition_key", sa.String(length=16), nullable=False),
        sa.Column("comparison_id", sa.String(length=120), nullable=False),
        sa.Column("link", sa.String(length=90), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("edition_key", "comparison_id", "link", "kind"),
    )
    op.create_table(
        "click_seen",
        sa.Column("edition_key", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=40), nullable=False),
        _ts("first_at"),
        sa.PrimaryKeyConstraint("edition_key", "ref"),
    )
    op.create_table(
        "click_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("edition_key", sa.String(length=16), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("comparison_id", sa.String(length=120), nullable=False),
        sa.Column("link", sa.String(length=90), nullable=False),
        sa.Column("scanner", sa.Boolean(), nullable=False),
        _ts("at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_click_event_edition", "click_event", ["edition_key"])
    op.create_index("ix_click_event_subscriber", "click_event", ["subscriber_id"])
    op.create_table(
        "reader_vote",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("comparison_id", sa.String(length=120), nullable=False),
        sa.Column("tool_key", sa.String(length=80), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("choice", sa.String(length=8), nullable=False),
        sa.Column("edition_key", sa.String(length=16), nullable=False, server_default=""),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("comparison_id", "tool_key", "subscriber_id", name="uq_reader_vote"),
    )
    op.create_index("ix_reader_vote_subscriber", "reader_vote", ["subscriber_id"])
    op.create_table(
        "vote_change",
        sa.Column("comparison_id", sa.String(length=120), nullable=False),
        _ts("changed_at"),
        _ts("notified_at", nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_at", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("comparison_id"),
    )
    op.create_table(
        "edition_snapshot",
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("pieces", sa.Text(), nullable=False),
        _ts("created_at"),
        sa.ForeignKeyConstraint(["edition_id"], ["edition.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("edition_id"),
    )


def downgrade() -> None:
    op.drop_table("edition_snapshot")
    op.drop_table("vote_change")
    op.drop_index("ix_reader_vote_subscriber", table_name="reader_vote")
    op.drop_table("reader_vote")
    op.drop_index("ix_click_event_subscriber", table_name="click_event")
    op.drop_index("ix_click_event_edition", table_name="click_event")
    op.drop_table("click_event")
    op.drop_table("click_seen")
    op.drop_table("engagement_count")
