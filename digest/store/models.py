"""The digest's tables: comparisons, editions, the delivery ledger, feed state, leases,
provider webhook events and their replay keys.

Times are stored timezone-aware (UTC). JSON columns hold the tool and review lists
exactly as validated from the feed (plain text, never markup).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from subscribers.models import Subscriber  # noqa: F401  (same metadata, FK target)
from subscribers.sqltypes import UTCDateTime, utcnow  # noqa: F401


def _ts(nullable: bool = False, **kw: Any) -> Any:
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, **kw))


class Comparison(SQLModel, table=True):
    __tablename__ = "comparison"
    __table_args__ = (Index("ix_comparison_published_at", "published_at"),)

    id: str = Field(sa_column=Column(String(120), primary_key=True))
    url: str = Field(sa_column=Column(Text, nullable=False))
    title: str = Field(sa_column=Column(String(300), nullable=False))
    question: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    category: str = Field(sa_column=Column(String(200), nullable=False))
    published_at: datetime = _ts()
    updated_at: datetime = _ts()
    tools: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    reviews: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    first_seen_at: datetime = _ts()
    last_seen_at: datetime = _ts()


class EditionStatus(StrEnum):
    composed = "composed"  # comparisons chosen, nothing planned yet
    sending = "sending"  # ledger planned; rows pending
    paused = "paused"  # by the operator, or by itself after too many errors (see note)
    sent = "sent"  # no row pending
    cancelled = "cancelled"


class Edition(SQLModel, table=True):
    __tablename__ = "edition"

    id: int | None = Field(default=None, primary_key=True)
    # ISO week in the site's time zone, e.g. "2026-W48"; unique: composing twice
    # gives the same edition, two schedulers cannot make two.
    key: str = Field(sa_column=Column(String(10), unique=True, nullable=False))
    status: EditionStatus = Field(
        default=EditionStatus.composed, sa_column=Column(String(20), nullable=False)
    )
    cutoff: datetime = _ts()  # comparisons published up to this instant are eligible
    composed_at: datetime = _ts()
    planned_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)
    planned_count: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    # Why the edition is paused or cancelled, in words for the operator.
    status_note: str = Field(
        default="", sa_column=Column(Text, nullable=False, default="", server_default="")
    )
    # Editorial approval (``[edition] require_approval``): an edition composed while
    # approval is required is not sent until ``approved_at`` is set; one still
    # unapproved at ``approval_deadline`` is cancelled and the operators told.
    needs_approval: bool = Field(
        default=False,
        sa_column=Column(Boolean, nullable=False, default=False, server_default="0"),
    )
    approval_deadline: datetime | None = _ts(nullable=True)
    approved_at: datetime | None = _ts(nullable=True)
    approved_by: str = Field(
        default="", sa_column=Column(String(200), nullable=False, default="", server_default="")
    )


class EditionComparison(SQLModel, table=True):
    """Which comparisons an edition holds, in display order."""

    __tablename__ = "edition_comparison"

    edition_id: int = Field(
        sa_column=Column(Integer, ForeignKey("edition.id", ondelete="CASCADE"), primary_key=True)
    )
    comparison_id: str = Field(
        sa_column=Column(String(120), ForeignKey("comparison.id"), primary_key=True)
    )
    position: int = Field(sa_column=Column(Integer, nullable=False))
    # Taken out by an editor (``digest edit --exclude``): kept here, never sent, and
    # not eligible for a later edition unless an editor includes it there.
    excluded: bool = Field(
        default=False,
        sa_column=Column(Boolean, nullable=False, default=False, server_default="0"),
    )


class DeliveryState(StrEnum):
    """A delivery row's life: queued → sending → sent | failed | skipped.

    ``unknown``: the message may or may not have arrived: the transport said so
    (connection lost after DATA, an HTTP 5xx or timeout after the request was sent),
    or a later run found the row in ``sending`` (its sender died or lost its lease).
    Resolved in the same run: the provider is asked where it can be
    (``reconcile``), and what it cannot account for goes to ``[send]
    unknown_policy``. Never silently.
    """

    queued = "queued"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    bounced = "bounced"
    skipped = "skipped"
    unknown = "unknown"


PENDING_STATES = (DeliveryState.queued, DeliveryState.sending, DeliveryState.unknown)


class Delivery(SQLModel, table=True):
    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id", name="uq_delivery_edition_subscriber"),
        Index("ix_delivery_provider_id", "provider_id"),  # webhook matching
        # Serves every (edition_id, state) query too (migration 0007 dropped the
        # shorter index); whole-group claims read only queued rows with a batch_key.
        Index("ix_delivery_edition_state_batch", "edition_id", "state", "batch_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    edition_id: int = Field(
        sa_column=Column(Integer, ForeignKey("edition.id", ondelete="CASCADE"), nullable=False)
    )
    subscriber_id: int = Field(
        sa_column=Column(Integer, ForeignKey("subscriber.id"), nullable=False)
    )
    state: DeliveryState = Field(
        default=DeliveryState.queued, sa_column=Column(String(10), nullable=False)
    )
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    next_attempt_at: datetime | None = _ts(nullable=True)
    transport: str = Field(default="", sa_column=Column(String(40), nullable=False, default=""))
    provider_id: str = Field(default="", sa_column=Column(String(200), nullable=False, default=""))
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    updated_at: datetime = _ts()
    # Row lease: the sender that claimed this row, until when. A queued row leased
    # to a dead sender is claimable again once the lease expires; a sending row
    # whose lease expired is in doubt (unknown) and resolved by policy.
    lease_owner: str = Field(
        default="", sa_column=Column(String(200), nullable=False, default="", server_default="")
    )
    lease_until: datetime | None = _ts(nullable=True)
    # The claim that holds the row (with ``lease_owner``): every claim writes a new
    # token, and every later change by that sender (mark ``sending``, record the
    # answer, release) requires owner and token unchanged, so a sender stopped past
    # its lease can never write over a row another sender has claimed since.
    lease_token: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, default=0, server_default="0")
    )
    # The provider idempotency key of the request that carried this row, written
    # with ``sending`` before the network call: a retry after an unknown outcome
    # re-sends the same group under the same key, so the provider drops it.
    batch_key: str = Field(
        default="", sa_column=Column(String(100), nullable=False, default="", server_default="")
    )
    # Local delivery time: the row is not taken before this instant (None = at once).
    due_at: datetime | None = _ts(nullable=True)


class FeedState(SQLModel, table=True):
    """What a feed remembers between polls (conditional GET validators, health)."""

    __tablename__ = "feed_state"

    feed: str = Field(sa_column=Column(String(500), primary_key=True))
    etag: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    last_modified: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    last_success_at: datetime | None = _ts(nullable=True)
    last_attempt_at: datetime | None = _ts(nullable=True)
    consecutive_failures: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, default=0)
    )
    last_error: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


class DeliveryEventRecord(SQLModel, table=True):
    """One provider webhook event (``digest.webhooks.base.DeliveryEvent``), as received.

    ``(provider, event_id)`` is unique: an event delivered twice is stored and
    applied once. ``delivery_id``/``subscriber_id`` are what the event was matched
    to (None when nothing matched; the row is kept all the same). ``outcome`` says
    what applying it did, for the operator. Soft bounces are counted from these rows.
    """

    __tablename__ = "delivery_event"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_delivery_event_provider_event"),
        Index("ix_delivery_event_recipient_type", "recipient", "type"),
        Index("ix_delivery_event_delivery", "delivery_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(sa_column=Column(String(40), nullable=False))
    event_id: str = Field(sa_column=Column(String(200), nullable=False))
    type: str = Field(sa_column=Column(String(20), nullable=False))
    recipient: str = Field(default="", sa_column=Column(String(320), nullable=False, default=""))
    message_id: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    provider_message_id: str = Field(
        default="", sa_column=Column(String(200), nullable=False, default="")
    )
    # No foreign key on purpose: this is a log of what providers said, and it keeps
    # its reference (and never blocks) when ledger rows go away.
    delivery_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    subscriber_id: int | None = Field(
        default=None,
        sa_column=Column(Integer, ForeignKey("subscriber.id", ondelete="SET NULL"), nullable=True),
    )
    smtp_status: str = Field(default="", sa_column=Column(String(20), nullable=False, default=""))
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # A policy/reputation block (5.7.x): never suppresses; shown by ``digest status``.
    policy: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, default=False))
    outcome: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    raw: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    occurred_at: datetime | None = _ts(nullable=True)
    received_at: datetime = _ts()


class WebhookReplay(SQLModel, table=True):
    """One-time values of verified webhook requests (``Verified.replay_key``), kept
    until ``expires_at``: a request whose key is here is refused as replayed."""

    __tablename__ = "webhook_replay"
    __table_args__ = (Index("ix_webhook_replay_expires_at", "expires_at"),)

    provider: str = Field(sa_column=Column(String(40), primary_key=True))
    key: str = Field(sa_column=Column(String(200), primary_key=True))
    expires_at: datetime = _ts()


class AdminSession(SQLModel, table=True):
    """A signed-in operator desk session (:mod:`digest.web.admin.auth`).

    Keyed by the SHA-256 of the session id, never the id itself: the id travels
    only inside the signed cookie. A cookie counts only while its row is here, not
    ended (``ended_at``: signed out) and not expired; such rows are deleted at a
    later sign-in.
    """

    __tablename__ = "admin_session"

    sid_hash: str = Field(sa_column=Column(String(64), primary_key=True))
    name: str = Field(default="", sa_column=Column(String(200), nullable=False, default=""))
    created_at: datetime = _ts()
    expires_at: datetime = _ts()
    ended_at: datetime | None = _ts(nullable=True)
    # The operator signed in (None: the bootstrap DIGEST_ADMIN_PASSWORD) and their role.
    operator_id: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    role: str = Field(
        default="admin",
        sa_column=Column(String(20), nullable=False, default="admin", server_default="admin"),
    )


from digest.store.desk_models import (  # noqa: E402  (one metadata for every table)
    ApiKey as ApiKey,
)
from digest.store.desk_models import AuditEvent as AuditEvent  # noqa: E402
from digest.store.desk_models import EditionEditorial as EditionEditorial  # noqa: E402
from digest.store.desk_models import Operator as Operator  # noqa: E402
from digest.store.engagement_models import ClickEvent as ClickEvent  # noqa: E402
from digest.store.engagement_models import ClickSeen as ClickSeen  # noqa: E402
from digest.store.engagement_models import EditionSnapshot as EditionSnapshot  # noqa: E402
from digest.store.engagement_models import EngagementCount as EngagementCount  # noqa: E402
from digest.store.engagement_models import ReaderVote as ReaderVote  # noqa: E402
from digest.store.engagement_models import VoteChange as VoteChange  # noqa: E402
from digest.store.ops_models import Alert as Alert  # noqa: E402
from digest.store.ops_models import InstanceSecret as InstanceSecret  # noqa: E402
from digest.store.ops_models import Lease as Lease  # noqa: E402
from digest.store.ops_models import RunRecord as RunRecord  # noqa: E402
