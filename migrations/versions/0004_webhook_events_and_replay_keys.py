"""webhook events and replay keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 23:53:42.403847

``delivery_event``: every provider webhook event as received, unique per
(provider, event_id) so an event delivered twice is applied once.
``webhook_replay``: one-time request values, refused when seen again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import subscribers.sqltypes

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_replay",
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("expires_at", subscribers.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", "key"),
    )
    op.create_index("ix_webhook_replay_expires_at", "webhook_replay", ["expires_at"])
    op.create_table(
        "delivery_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("provider_message_id", sa.String(length=200), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("smtp_status", sa.String(length=20), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("policy", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("raw", sa.JSON(), nullable=False),
        sa.Column("occurred_at", subscribers.sqltypes.UTCDateTime(timezone=True), nullable=True),
        sa.Column("received_at", subscribers.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscriber.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "event_id", name="uq_delivery_event_provider_event"),
    )
    op.create_index("ix_delivery_event_delivery", "delivery_event", ["delivery_id"])
    op.create_index("ix_delivery_event_recipient_type", "delivery_event", ["recipient", "type"])


def downgrade() -> None:
    op.drop_index("ix_delivery_event_recipient_type", table_name="delivery_event")
    op.drop_index("ix_delivery_event_delivery", table_name="delivery_event")
    op.drop_table("delivery_event")
    op.drop_index("ix_webhook_replay_expires_at", table_name="webhook_replay")
    op.drop_table("webhook_replay")
