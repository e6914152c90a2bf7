"""Subscriber tables. The ``subscribers`` package owns them and never imports ``digest``."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index, String
from sqlmodel import Field, SQLModel

from subscribers.sqltypes import UTCDateTime, utcnow


class SubscriberStatus(StrEnum):
    """Where a reader stands. Only ``active`` readers are planned into an edition."""

    pending = "pending"  # signed up, not confirmed yet (double opt-in)
    active = "active"
    unsubscribed = "unsubscribed"
    bounced = "bounced"
    complained = "complained"


class Subscriber(SQLModel, table=True):
    __tablename__ = "subscriber"
    __table_args__ = (Index("ix_subscriber_status", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    # Normalized (lower-cased domain, IDNA ASCII) address; unique.
    email: str = Field(sa_column=Column(String(320), unique=True, nullable=False))
    name: str = Field(default="", max_length=200)
    status: SubscriberStatus = Field(
        default=SubscriberStatus.active, sa_column=Column(String(20), nullable=False)
    )
    source: str = Field(default="", max_length=200)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
