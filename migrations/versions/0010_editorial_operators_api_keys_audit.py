"""editorial, operators, API keys, audit log

The editor's desk (issue 15): ``edition_comparison.excluded`` (a comparison an
editor took out), ``edition_editorial`` (note, subject, preheader, sponsor),
``operator`` (people who sign in, with roles and TOTP), ``api_key`` (hashed
``/api/v1`` keys), ``audit_event`` (who did what, when) and, on ``admin_session``,
the operator and role a session belongs to. New columns have defaults that keep
every existing row meaning what it meant: nothing excluded, sessions admin.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-15 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import subscribers.sqltypes

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = subscribers.sqltypes.UTCDateTime


def _text(name: str, length: int | None = None) -> sa.Column:  # type: ignore[type-arg]
    kind = sa.String(length=length) if length else sa.Text()
    return sa.Column(name, kind, nullable=False, server_default="")


def upgrade() -> None:
    with op.batch_alter_table("edition_comparison") as batch:
        batch.add_column(sa.Column("excluded", sa.Boolean(), nullable=False, server_default="0"))
    with op.batch_alter_table("admin_session") as batch:
        batch.add_column(sa.Column("operator_id", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("role", sa.String(length=20), nullable=False, server_default="admin")
        )
    op.create_table(
        "edition_editorial",
        sa.Column("edition_id", sa.Integer(), nullable=False),
        _text("note"),
        _text("subject", 200),
        _text("preheader", 200),
        _text("sponsor_text"),
        _text("sponsor_url"),
        _text("sponsor_label", 40),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS(timezone=True), nullable=True),
        _text("updated_by", 200),
        sa.ForeignKeyConstraint(["edition_id"], ["edition.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("edition_id"),
    )
    op.create_table(
        "operator",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        _text("password_hash"),
        _text("totp_secret", 64),
        sa.Column("totp_confirmed_at", TS(timezone=True), nullable=True),
        sa.Column("created_at", TS(timezone=True), nullable=False),
        sa.Column("disabled_at", TS(timezone=True), nullable=True),
        sa.Column("last_sign_in_at", TS(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        _text("scopes"),
        sa.Column("created_at", TS(timezone=True), nullable=False),
        _text("created_by", 200),
        sa.Column("revoked_at", TS(timezone=True), nullable=True),
        sa.Column("last_used_at", TS(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("prefix"),
    )
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", TS(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("via", sa.String(length=10), nullable=False),
        sa.Column("action", sa.String(length=60), nullable=False),
        _text("target", 200),
        _text("detail"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_event_at", "audit_event", ["at"])
    op.create_index("ix_audit_event_target", "audit_event", ["target"])


def downgrade() -> None:
    op.drop_index("ix_audit_event_target", table_name="audit_event")
    op.drop_index("ix_audit_event_at", table_name="audit_event")
    op.drop_table("audit_event")
    op.drop_table("api_key")
    op.drop_table("operator")
    op.drop_table("edition_editorial")
    with op.batch_alter_table("admin_session") as batch:
        batch.drop_column("role")
        batch.drop_column("operator_id")
    with op.batch_alter_table("edition_comparison") as batch:
        batch.drop_column("excluded")
