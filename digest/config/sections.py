"""The typed pieces of :class:`Config`: one frozen pydantic model per ``config.toml`` section.

Types are strict, as they were before pydantic: an integer key refuses ``8.0`` and
``"8"``, ``true``/``false`` are never numbers, and every number must be greater
than zero (``PositiveInt`` / ``PositiveFloat``). Environment overrides arrive as
strings and are converted to the field's type before these models see them
(:mod:`digest.config.settings`). Checks that need more than a type live in
:mod:`digest.config.checks`.

Assigning to a field raises :class:`AttributeError` (``FrozenInstanceError``), as the
frozen dataclasses these models replace did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    Field,
    PositiveFloat,
    PositiveInt,
    SkipValidation,
)

from digest.config.bounce_sections import BouncesConfig
from digest.config.section_base import Section, string_list
from digest.config.web_sections import TrackingConfig, VotesConfig, WebConfig

UnknownPolicy = Literal["resend", "skip"]


class SiteConfig(Section):
    name: str
    base_url: str  # an https URL, checked by checks.check_site (kept a str: callers concatenate)
    postal_address: str
    timezone: str = "UTC"
    # http:// base_url only with this (local testing): RFC 8058 one-click needs https.
    allow_insecure_base_url: bool = False

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class DatabaseConfig(Section):
    url: str = "sqlite:///digest.db"


class EmailConfig(Section):
    from_: str = Field(alias="from")
    reply_to: str | None = None
    list_id: str | None = None
    feedback_id: str | None = None  # Gmail Feedback-ID header, same for every reader
    # Confirmation and welcome mails, operator notices: their own sender (Gmail asks
    # that subscription and other mail come from different addresses). None: from_.
    transactional_from: str | None = None
    # VERP: digest messages leave with envelope sender bounces+<token>@… (the token
    # names the delivery); transactional mail with this address as is. "": off.
    bounce_address: str = ""

    @property
    def transactional_header(self) -> str:
        """The From header of mail that is not the weekly digest."""
        return self.transactional_from or self.from_

    @property
    def transactional_address(self) -> str:
        """:attr:`transactional_header`'s bare address: the envelope sender."""
        return parseaddr(self.transactional_header)[1]


class EditionConfig(Section):
    max_comparisons: PositiveInt = 8
    max_age_days: PositiveInt = 14
    max_html_bytes: PositiveInt = 100_000
    # Fewer new comparisons than this: no edition; they roll over to next week.
    min_comparisons: PositiveInt = 1
    # Compose a draft, email the operators, send only after 'digest approve KEY' …
    require_approval: bool = False
    # … within this many hours of composing; otherwise it is not sent.
    approval_hours: PositiveFloat = 24.0


class ScheduleConfig(Section):
    """``[schedule]``: when ``digest schedule`` (and the health checks) expect the
    weekly edition, and how the scheduler treats a late start."""

    day: str = "mon"  # mon … sun
    time: str = "09:00"  # HH:MM, 24-hour, in ``timezone``
    timezone: str = ""  # IANA name; empty = [site] timezone
    poll_minutes: PositiveInt = 60  # fetch the feed this often, so comparisons are stored early
    dispatch_seconds: PositiveInt = 60  # send approved / resumed / locally-due editions, health
    # A scheduler that was down at fire time still runs the week's job this late,
    # once (coalesced); later than this it is missed and the operators are told.
    grace_hours: PositiveFloat = 6.0
    # Local delivery time: readers with a time zone get the edition at ``time`` on
    # ``day`` in their own zone (or at once, where that moment has passed).
    local_delivery: bool = False

    def zone(self, site: SiteConfig) -> ZoneInfo:
        return ZoneInfo(self.timezone or site.timezone)


class OperatorsConfig(Section):
    """``[operators]``: who hears about drafts to approve and incidents."""

    emails: tuple[str, ...] = string_list()  # each checked with email-validator (checks.py)
    feed_failures: PositiveInt = 3  # this many failed polls in a row is an incident


class SendConfig(Section):
    batch_size: PositiveInt = 200
    max_attempts: PositiveInt = 5
    retry_backoff_seconds: PositiveFloat = 30.0
    max_retry_wait_seconds: PositiveFloat = 300.0
    unknown_policy: UnknownPolicy = "resend"
    pause_error_share: PositiveFloat = 0.5  # pause the edition when this share of …
    pause_window: PositiveInt = 200  # … the last this many answers are failures
    # How long a sender holds the rows it claimed without renewing (at least 10 s).
    lease_seconds: PositiveInt = 120


class PreflightConfig(Section):
    """``[preflight]``: the checks run before an edition is approved or sent
    (``digest check-edition``, the operator's desk)."""

    check_links: bool = True  # fetch every link; false offline and in tests
    link_timeout_seconds: PositiveFloat = 10.0  # per link, connect and read
    link_concurrency: PositiveInt = 8  # links fetched at once
    subject_max_chars: PositiveInt = 78  # longer subjects are cut by most inboxes: a warning
    # Let the link check fetch loopback, private, link-local and CGNAT addresses
    # (feed content decides what is fetched: off unless the feed is your own LAN).
    allow_private_addresses: bool = False


class PathsConfig(Section):
    # Relative to the config file's folder; Config holds it resolved.
    templates: Path = Field(default=Path("templates"), strict=False)


@dataclass(frozen=True)
class AdapterConfig:
    """A ``[feed]`` or ``[transport]`` table: ``kind`` plus the adapter's own keys.

    Free-form on purpose: the adapter's constructor validates ``options``
    (:mod:`digest.config.registry`); :meth:`describe` gives the place to name in
    error messages.
    """

    section: str
    kind: str
    options: Mapping[str, Any]
    source: Path

    def describe(self, key: str | None = None) -> str:
        where = f"[{self.section}]" + (f" key '{key}'" if key else "")
        return f"{where} in {self.source}"


class WebhookRules(Section):
    """The keys of ``[webhooks]`` itself (its ``[webhooks.<name>]`` tables aside)."""

    providers: tuple[str, ...] = string_list()
    soft_bounce_limit: PositiveInt = 3  # this many soft bounces …
    soft_bounce_window_days: PositiveInt = 30  # … within this many days suppress the reader
    max_body_bytes: PositiveInt = 1_000_000  # a larger request gets 413


class WebhooksConfig(WebhookRules):
    """``[webhooks]``: which providers may post delivery events, and the bounce rules.

    ``adapters`` holds one :class:`AdapterConfig` per enabled provider (its
    ``[webhooks.<provider>]`` table, possibly empty; ``kind`` is the provider name).
    ``auto_confirm``: providers whose subscription handshake (SNS) is confirmed
    automatically, after verification (``[webhooks.ses] auto_confirm = true``).
    """

    adapters: SkipValidation[Mapping[str, AdapterConfig]] = Field(
        default_factory=lambda: MappingProxyType({})
    )
    auto_confirm: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Config:
    """Everything ``config.toml`` and the environment say, typed and resolved.

    A frozen dataclass (not the settings model itself) so that
    ``dataclasses.replace(config, env=...)`` keeps working.
    """

    source: Path
    site: SiteConfig
    database: DatabaseConfig
    email: EmailConfig
    feed: AdapterConfig
    transport: AdapterConfig
    edition: EditionConfig
    send: SendConfig
    paths: PathsConfig
    web: WebConfig = field(default_factory=WebConfig)
    preflight: PreflightConfig = field(default_factory=PreflightConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    operators: OperatorsConfig = field(default_factory=OperatorsConfig)
    failover: AdapterConfig | None = None  # a secondary transport (optional)
    failover_cooldown: float = 300.0  # seconds the primary rests after failing
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    votes: VotesConfig = field(default_factory=VotesConfig)
    bounces: BouncesConfig = field(default_factory=BouncesConfig)
    secret_keys: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def base_dir(self) -> Path:
        return self.source.parent


# The typed sections, in the order a "(it belongs in [x])" hint searches them.
SECTIONS: dict[str, type[Section]] = {
    "site": SiteConfig,
    "database": DatabaseConfig,
    "email": EmailConfig,
    "edition": EditionConfig,
    "send": SendConfig,
    "paths": PathsConfig,
    "web": WebConfig,
    "preflight": PreflightConfig,
    "schedule": ScheduleConfig,
    "tracking": TrackingConfig,
    "votes": VotesConfig,
    "bounces": BouncesConfig,
}
ADAPTERS = ("feed", "transport", "failover")  # free-form tables, checked by their adapter
# Every section name, in the order a "did you mean" hint for a section searches them.
KNOWN_SECTIONS = (*SECTIONS, *ADAPTERS, "webhooks", "operators")


def keys_of(model: type[BaseModel]) -> list[str]:
    """The keys a section takes in the file (``from``, not ``from_``), in order."""
    return [info.alias or name for name, info in model.model_fields.items()]
