"""delivery.lease_token: fence every ledger write after a claim

A claim writes a fresh token beside ``lease_owner``; marking ``sending``,
recording the answer, recording skips, setting the batch key and renewing all
require owner and token unchanged, so a sender stopped past its lease (GC pause,
VM migration, SIGSTOP) cannot write over rows another sender claimed since.
Adding a NOT NULL column with a constant default is a catalog change on
PostgreSQL 11+ (no table rewrite).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 09:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lease_token", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_column("lease_token")
