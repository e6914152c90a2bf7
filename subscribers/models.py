"""Subscriber tables. The ``subscribers`` package owns them and never imports ``digest``.

- :class:`Subscriber`: one row per reader (normalized address, unique), with their
  preferences (categories, pause) and double opt-in state.
- :class:`ConsentEvent`: append-only log of every consent decision, with time,
  source, IP, user agent and the version of the consent text shown (GDPR Art. 7:
  consent must be provable).
- :class:`Suppression`: addresses that must not be mailed (unsubscribed, bounced,
  complained, erased), keyed by a hash of the address so an erased reader's
  suppression survives without their address.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column, ForeignKey, Index, Integer, String, Text
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
    # Categories the reader wants; empty means all.
    categories: list[str] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False, default=list, server_default="[]"),
    )
    # IANA time zone (e.g. "America/New_York") for local delivery time; "" = site's.
    time_zone: str = Field(
        default="", sa_column=Column(String(64), nullable=False, default="", server_default="")
    )
    paused_until: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    confirmed_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    # When the last confirmation email went out (at most one per window per address).
    confirmation_sent_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


class ConsentAction(StrEnum):
    subscribed = "subscribed"  # asked to subscribe (form, import, CLI)
    confirmed = "confirmed"  # confirmed by the double opt-in link
    unsubscribed = "unsubscribed"
    preferences_changed = "preferences_changed"
    bounced = "bounced"
    complained = "complained"
    erased = "erased"
    import_skipped = "import_skipped"  # an import row refused (e.g. suppressed address)


class ConsentSource(StrEnum):
    form = "form"
    import_ = "import"
    cli = "cli"
    one_click = "one-click"  # RFC 8058 POST from the List-Unsubscribe header
    link = "link"  # a page reached from a link in an email
    webhook = "webhook"
    smtp = "smtp"  # the receiving server refused the address while we sent
    desk = "desk"  # an operator on the desk (who: the audit log)
    api = "api"  # an /api/v1 key (which: the audit log)


class ConsentEvent(SQLModel, table=True):
    """Append-only: rows are inserted, never updated (except erasure of IP/UA)."""

    __tablename__ = "consent_event"
    __table_args__ = (Index("ix_consent_event_subscriber", "subscriber_id"),)

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("subscriber.id", ondelete="SET NULL"), nullable=True),
    )
    email_hash: str = Field(sa_column=Column(String(64), nullable=False))
    action: ConsentAction = Field(sa_column=Column(String(30), nullable=False))
    source: ConsentSource = Field(sa_column=Column(String(20), nullable=False))
    ip: str = Field(default="", sa_column=Column(String(64), nullable=False, default=""))
    user_agent: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    consent_version: str = Field(
        default="", sa_column=Column(String(40), nullable=False, default="")
    )
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


class SuppressionReason(StrEnum):
    unsubscribed = "unsubscribed"
    bounced = "bounced"
    complained = "complained"
    erased = "erased"


class Suppression(SQLModel, table=True):
    """An address that must not be mailed, by SHA-256 of its normalized form."""

    __tablename__ = "suppression"

    email_hash: str = Field(sa_column=Column(String(64), primary_key=True))
    reason: SuppressionReason = Field(sa_column=Column(String(20), nullable=False))
    source: str = Field(default="", sa_column=Column(String(40), nullable=False, default=""))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
