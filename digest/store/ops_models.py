"""Tables for running unattended: named leases, job runs, alerts and the generated
signing key. Kept apart from :mod:`digest.store.models` (which imports them, so one
metadata holds every table)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, Integer, String, Text
from sqlmodel import Field, SQLModel

from subscribers.sqltypes import UTCDateTime


def _ts(nullable: bool = False, **kw: Any) -> Any:
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, **kw))


class Lease(SQLModel, table=True):
    """A named lease: one live holder at a time, taken over only after it expires."""

    __tablename__ = "lease"

    name: str = Field(sa_column=Column(String(200), primary_key=True))
    owner: str = Field(sa_column=Column(String(200), nullable=False))
    expires_at: datetime = _ts()


class RunRecord(SQLModel, table=True):
    """One run of a scheduled or cron-started job, for ``digest status`` and ``digest check``."""

    __tablename__ = "run_record"
    __table_args__ = (Index("ix_run_record_job_started", "job", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    job: str = Field(sa_column=Column(String(40), nullable=False))  # weekly, poll, ...
    trigger: str = Field(default="", sa_column=Column(String(20), nullable=False, default=""))
    started_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)
    outcome: str = Field(default="", sa_column=Column(String(20), nullable=False, default=""))
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class Alert(SQLModel, table=True):
    """An incident that needs a human (feed failing, missed edition, paused edition).

    One row per incident name; ``resolved_at`` None means open. The operators are
    emailed once when it opens (``notified_at``), not at every check.
    """

    __tablename__ = "alert"

    name: str = Field(sa_column=Column(String(200), primary_key=True))
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    opened_at: datetime = _ts()
    last_seen_at: datetime = _ts()
    notified_at: datetime | None = _ts(nullable=True)
    resolved_at: datetime | None = _ts(nullable=True)


class InstanceSecret(SQLModel, table=True):
    """A generated signing key, used only when ``DIGEST_SECRET_KEY`` is not set."""

    __tablename__ = "instance_secret"

    id: int = Field(sa_column=Column(Integer, primary_key=True))
    value: str = Field(sa_column=Column(String(200), nullable=False))
    created_at: datetime = _ts()
