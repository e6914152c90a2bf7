"""drop ix_delivery_edition_state: ix_delivery_edition_state_batch serves its queries

Every query on (edition_id, state) can use the leading columns of
ix_delivery_edition_state_batch (edition_id, state, batch_key), so the shorter index
only cost writes: planning 1,000,000 deliveries on PostgreSQL took 13.6-13.9 s with
it and 13.0-13.1 s without (docs/BENCHMARKS.md), and every state change updated it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 04:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_edition_state")


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_edition_state", ["edition_id", "state"], unique=False)
