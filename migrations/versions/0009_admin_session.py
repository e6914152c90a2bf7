"""admin_session: operator desk sessions kept on the server

A desk cookie is good only while its session's row exists, is not ended (signed
out) and not expired, so signing out ends the session on the server and not
just in the browser. The row is keyed by the SHA-256 of the session id; the id
itself is only ever in the signed cookie. A new, empty table: no data to move.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import subscribers.sqltypes

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admin_session",
        sa.Column("sid_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", subscribers.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", subscribers.sqltypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", subscribers.sqltypes.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("sid_hash"),
    )


def downgrade() -> None:
    op.drop_table("admin_session")
