"""The desk's tables: an edition's editorial content, operators, API keys and the
audit log (issue 15). Kept apart from :mod:`digest.store.models` so each module
stays readable; :mod:`digest.store.models` imports these so one metadata holds all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Text
from sqlmodel import Field, SQLModel

from subscribers.sqltypes import UTCDateTime


def _ts(nullable: bool = False, **kw: Any) -> Any:
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, **kw))


def _text(length: int | None = None) -> Any:
    kind = String(length) if length else Text
    return Field(default="", sa_column=Column(kind, nullable=False, default="", server_default=""))


class EditionEditorial(SQLModel, table=True):
    """What an editor wrote for one edition (``digest edit``, the desk, the API):
    the note at the top (Markdown source), a subject and preheader that replace the
    generated ones, and at most one sponsor block. ``revision`` counts the edits."""

    __tablename__ = "edition_editorial"

    edition_id: int = Field(
        sa_column=Column(Integer, ForeignKey("edition.id", ondelete="CASCADE"), primary_key=True)
    )
    note: str = _text()
    subject: str = _text(200)
    preheader: str = _text(200)
    sponsor_text: str = _text()
    sponsor_url: str = _text()
    sponsor_label: str = _text(40)
    revision: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    updated_at: datetime | None = _ts(nullable=True)
    updated_by: str = _text(200)


class Operator(SQLModel, table=True):
    """A person who signs in to the desk: ``viewer`` looks, ``editor`` edits, tests,
    approves and looks after readers, ``admin`` also manages operators and API keys.
    The password is stored as an argon2id hash; ``totp_secret`` is set at the first
    sign-in and counts once ``totp_confirmed_at`` is set."""

    __tablename__ = "operator"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_column=Column(String(320), unique=True, nullable=False))
    role: str = Field(sa_column=Column(String(20), nullable=False))
    password_hash: str = _text()
    totp_secret: str = _text(64)
    totp_confirmed_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    disabled_at: datetime | None = _ts(nullable=True)
    last_sign_in_at: datetime | None = _ts(nullable=True)


class ApiKey(SQLModel, table=True):
    """An ``/api/v1`` key. The key itself is shown once; stored is its prefix (to
    find the row) and the SHA-256 of the whole key. ``scopes``: comma-separated."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(200), nullable=False))
    prefix: str = Field(sa_column=Column(String(16), unique=True, nullable=False))
    secret_hash: str = Field(sa_column=Column(String(64), nullable=False))
    scopes: str = _text()
    created_at: datetime = _ts()
    created_by: str = _text(200)
    revoked_at: datetime | None = _ts(nullable=True)
    last_used_at: datetime | None = _ts(nullable=True)


class AuditEvent(SQLModel, table=True):
    """One action by a person or a key: who (``actor``), through what (``via``:
    desk, cli, api), what (``action``), on what (``target``: ``edition:2026-W48``,
    ``reader:12``, ``operator:3``, ``api-key:2``) and the details in words."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_at", "at"),
        Index("ix_audit_event_target", "target"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts()
    actor: str = Field(sa_column=Column(String(320), nullable=False))
    via: str = Field(sa_column=Column(String(10), nullable=False))
    action: str = Field(sa_column=Column(String(60), nullable=False))
    target: str = _text(200)
    detail: str = _text()
