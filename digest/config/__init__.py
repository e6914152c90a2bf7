"""Load ``config.toml`` once into a typed, frozen :class:`Config`.

Only entry points (``cli.py``, ``web/app.py``, ``scheduler/``) call :func:`load`;
everything else is handed typed values.

Rules:
- unknown or mistyped keys raise :class:`~digest.errors.ConfigError` naming the
  key, the section and the file (with a "did you mean" hint);
- relative paths are resolved against the folder that holds the config file;
- secrets never come from the file: they are read from ``DIGEST_*`` environment
  variables (``DIGEST_SECRET_KEY``, ``DIGEST_SMTP_PASSWORD``, ``DIGEST_DATABASE_URL``).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from email.utils import parseaddr
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.config import checks as config_checks
from digest.errors import ConfigError

ENV_CONFIG = "DIGEST_CONFIG"
ENV_DATABASE_URL = "DIGEST_DATABASE_URL"
ENV_SECRET_KEY = "DIGEST_SECRET_KEY"  # noqa: S105  (a variable name, not a secret)
DEFAULT_CONFIG_NAME = "config.toml"

UnknownPolicy = Literal["resend", "skip"]


@dataclass(frozen=True)
class SiteConfig:
    name: str
    base_url: str
    postal_address: str
    timezone: str = "UTC"
    # http:// base_url only with this (local testing): RFC 8058 one-click needs https.
    allow_insecure_base_url: bool = False

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///digest.store.db"


@dataclass(frozen=True)
class EmailConfig:
    from_: str
    reply_to: str | None = None
    list_id: str | None = None
    feedback_id: str | None = None  # Gmail Feedback-ID header, same for every reader
    # Confirmation and welcome mails, operator notices: their own sender (Gmail asks
    # that subscription and other mail come from different addresses). None: from_.
    transactional_from: str | None = None

    @property
    def transactional_header(self) -> str:
        """The From header of mail that is not the weekly digest."""
        return self.transactional_from or self.from_

    @property
    def transactional_address(self) -> str:
        """:attr:`transactional_header`'s bare address: the envelope sender."""
        return parseaddr(self.transactional_header)[1]


@dataclass(frozen=True)
class EditionConfig:
    max_comparisons: int = 8
    max_age_days: int = 14
    max_html_bytes: int = 100_000
    # Fewer new comparisons than this: no edition; they roll over to next week.
    min_comparisons: int = 1
    # Compose a draft, email the operators, send only after 'digest approve KEY' …
    require_approval: bool = False
    # … within this many hours of composing; otherwise it is not sent.
    approval_hours: float = 24.0


@dataclass(frozen=True)
class ScheduleConfig:
    """``[schedule]``: when ``digest schedule`` (and the health checks) expect the
    weekly edition, and how the scheduler treats a late start."""

    day: str = "mon"  # mon … sun
    time: str = "09:00"  # HH:MM, 24-hour, in ``timezone``
    timezone: str = ""  # IANA name; empty = [site] timezone
    poll_minutes: int = 60  # fetch the feed this often, so comparisons are stored early
    dispatch_seconds: int = 60  # send approved / resumed / locally-due editions, check health
    # A scheduler that was down at fire time still runs the week's job this late,
    # once (coalesced); later than this it is missed and the operators are told.
    grace_hours: float = 6.0
    # Local delivery time: readers with a time zone get the edition at ``time`` on
    # ``day`` in their own zone (or at once, where that moment has passed).
    local_delivery: bool = False

    def zone(self, site: SiteConfig) -> ZoneInfo:
        return ZoneInfo(self.timezone or site.timezone)


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class OperatorsConfig:
    """``[operators]``: who hears about drafts to approve and incidents."""

    emails: tuple[str, ...] = ()
    feed_failures: int = 3  # this many failed polls in a row is an incident


@dataclass(frozen=True)
class SendConfig:
    batch_size: int = 200
    max_attempts: int = 5
    retry_backoff_seconds: float = 30.0
    max_retry_wait_seconds: float = 300.0
    unknown_policy: UnknownPolicy = "resend"
    pause_error_share: float = 0.5  # pause the edition when this share of …
    pause_window: int = 200  # … the last this many answers are failures
    # How long a sender holds the rows it claimed without renewing (at least 10 s).
    lease_seconds: int = 120


@dataclass(frozen=True)
class WebConfig:
    """The public web side (``digest serve``)."""

    confirm_token_hours: int = 72  # a confirmation link works this long
    confirm_resend_minutes: int = 60  # at most one confirmation mail per address per window
    signups_per_minute: int = 10  # per client IP; more get 429
    welcome_email: bool = True  # send the latest edition when a reader confirms
    consent_version: str = "1"  # version of the consent text shown on the sign-up form
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed
    # (addresses or CIDR ranges); the client is the right-most address not in here.
    trusted_proxies: tuple[str, ...] = ()
    proof_of_work: bool = False  # sign-ups must solve an ALTCHA challenge (self-hosted)
    proof_of_work_max_number: int = 100_000  # the challenge's search space (difficulty)
    proof_of_work_minutes: int = 10  # a challenge expires after this long
    block_disposable_domains: bool = False  # refuse sign-ups from throwaway-mail domains


@dataclass(frozen=True)
class PreflightConfig:
    """``[preflight]``: the checks run before an edition is approved or sent
    (``digest check-edition``, the operator's desk)."""

    check_links: bool = True  # fetch every link; false offline and in tests
    link_timeout_seconds: float = 10.0  # per link, connect and read
    link_concurrency: int = 8  # links fetched at once
    subject_max_chars: int = 78  # longer subjects are cut by most inboxes: a warning
    # Let the link check fetch loopback, private, link-local and CGNAT addresses
    # (feed content decides what is fetched: off unless the feed is your own LAN).
    allow_private_addresses: bool = False


@dataclass(frozen=True)
class PathsConfig:
    templates: Path


@dataclass(frozen=True)
class AdapterConfig:
    """A ``[feed]`` or ``[transport]`` table: ``kind`` plus the adapter's own keys.

    The adapter's constructor validates ``options``; :meth:`describe` gives the
    place to name in error messages.
    """

    section: str
    kind: str
    options: Mapping[str, Any]
    source: Path

    def describe(self, key: str | None = None) -> str:
        where = f"[{self.section}]" + (f" key '{key}'" if key else "")
        return f"{where} in {self.source}"


@dataclass(frozen=True)
class WebhooksConfig:
    """``[webhooks]``: which providers may post delivery events, and the bounce rules.

    ``adapters`` holds one :class:`AdapterConfig` per enabled provider (its
    ``[webhooks.<provider>]`` table, possibly empty; ``kind`` is the provider name).
    ``auto_confirm``: providers whose subscription handshake (SNS) is confirmed
    automatically, after verification (``[webhooks.ses] auto_confirm = true``).
    """

    providers: tuple[str, ...] = ()
    soft_bounce_limit: int = 3  # this many soft bounces …
    soft_bounce_window_days: int = 30  # … within this many days suppress the reader
    max_body_bytes: int = 1_000_000  # a larger request gets 413
    adapters: Mapping[str, AdapterConfig] = field(default_factory=lambda: MappingProxyType({}))
    auto_confirm: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Config:
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
    secret_keys: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def base_dir(self) -> Path:
        return self.source.parent


_SECTIONS: dict[str, type] = {
    "site": SiteConfig,
    "database": DatabaseConfig,
    "email": EmailConfig,
    "edition": EditionConfig,
    "send": SendConfig,
    "paths": PathsConfig,
    "web": WebConfig,
    "preflight": PreflightConfig,
    "schedule": ScheduleConfig,
}
_ADAPTERS = ("feed", "transport", "failover")


def find_config(explicit: str | Path | None, environ: Mapping[str, str]) -> Path:
    """Return the config path: ``--config``, else ``$DIGEST_CONFIG``, else ``./config.toml``."""
    raw = explicit or environ.get(ENV_CONFIG) or DEFAULT_CONFIG_NAME
    return Path(raw).expanduser().resolve()


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file.

    Raises :class:`ConfigError` when the file is missing, is not TOML, or holds an
    unknown, missing or mistyped key.
    """
    env = dict(os.environ if environ is None else environ)
    source = find_config(path, env)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"no config file at {source}: pass --config PATH or set {ENV_CONFIG}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {source}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc
    return parse(data, source=source, environ=env)


def parse(data: Mapping[str, Any], *, source: Path, environ: Mapping[str, str]) -> Config:
    """Turn already-parsed TOML into a :class:`Config` (see :func:`load`)."""
    known = [*_SECTIONS, *_ADAPTERS, "webhooks", "operators"]
    for name, value in data.items():
        if name not in known:
            raise ConfigError(f"unknown section [{name}] in {source}{_hint(name, known)}")
        if isinstance(value, dict) and name in _ADAPTERS:
            _refuse_secrets(name, value, source)
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] in {source} must be a table")
    base = source.parent
    for required in ("site", "email", "feed", "transport"):
        if required not in data:
            raise ConfigError(f"missing section [{required}] in {source}")

    site = _section(data, "site", source)
    assert isinstance(site, SiteConfig)
    try:
        ZoneInfo(site.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"[site] key 'timezone' in {source}: unknown time zone {site.timezone!r} "
            "(use an IANA name such as 'Europe/Berlin')"
        ) from None
    config_checks.check_site(site, source)
    if not site.postal_address.strip():
        raise ConfigError(f"[site] key 'postal_address' in {source}: must not be empty")

    send = _section(data, "send", source)
    assert isinstance(send, SendConfig)
    if send.pause_error_share > 1:
        raise ConfigError(
            f"[send] key 'pause_error_share' in {source}: a share between 0 and 1, "
            f"got {send.pause_error_share}"
        )
    if send.lease_seconds < 10:
        raise ConfigError(
            f"[send] key 'lease_seconds' in {source}: at least 10 seconds, got {send.lease_seconds}"
        )

    web = _section(data, "web", source)
    assert isinstance(web, WebConfig)
    config_checks.check_web(web, source)

    db = _section(data, "database", source)
    assert isinstance(db, DatabaseConfig)
    db_url = _resolve_sqlite(environ.get(ENV_DATABASE_URL) or db.url, base)

    paths_table = dict(data.get("paths", {}))
    paths_table.setdefault("templates", "templates")
    paths = _section({"paths": paths_table}, "paths", source)
    assert isinstance(paths, PathsConfig)

    secrets = tuple(k.strip() for k in environ.get(ENV_SECRET_KEY, "").split(",") if k.strip())
    return Config(
        source=source,
        site=site,
        database=DatabaseConfig(url=db_url),
        email=_email(data, source),
        feed=_adapter(data, "feed", source),
        transport=_adapter(data, "transport", source),
        failover=_failover(data, source)[0],
        failover_cooldown=_failover(data, source)[1],
        edition=_section(data, "edition", source),  # type: ignore[arg-type]
        send=_section(data, "send", source),  # type: ignore[arg-type]
        paths=PathsConfig(templates=_resolve_path(paths.templates, base)),
        web=web,
        preflight=_section(data, "preflight", source),  # type: ignore[arg-type]
        schedule=_schedule(data, site, source),
        operators=_operators(data.get("operators", {}), source),
        webhooks=_webhooks(data.get("webhooks", {}), source),
        secret_keys=secrets,
        env=MappingProxyType({k: v for k, v in environ.items() if k.startswith("DIGEST_")}),
    )


def _email(data: Mapping[str, Any], source: Path) -> EmailConfig:
    email = _section(data, "email", source)
    assert isinstance(email, EmailConfig)
    config_checks.check_email(email, source)
    return email


def _schedule(data: Mapping[str, Any], site: SiteConfig, source: Path) -> ScheduleConfig:
    schedule = _section(data, "schedule", source)
    assert isinstance(schedule, ScheduleConfig)
    where = f"[schedule] in {source}"
    if schedule.day not in _DAYS:
        raise ConfigError(f"{where} key 'day': one of {', '.join(_DAYS)}; got {schedule.day!r}")
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", schedule.time):
        raise ConfigError(f"{where} key 'time': HH:MM (24-hour), got {schedule.time!r}")
    try:
        schedule.zone(site)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where} key 'timezone': unknown time zone {schedule.timezone!r} "
            "(use an IANA name such as 'America/New_York')"
        ) from None
    return schedule


def _operators(table: Mapping[str, Any], source: Path) -> OperatorsConfig:
    emails: tuple[str, ...] = ()
    numbers: dict[str, int] = {}
    for key, value in table.items():
        where = f"[operators] key '{key}' in {source}"
        if key == "emails":
            if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
                raise ConfigError(f"{where}: expected a list of addresses in quotes")
            bad = [e for e in value if not re.fullmatch(r"[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+", e)]
            if bad:
                raise ConfigError(f"{where}: {bad[0]!r} is not an email address")
            emails = tuple(value)
        elif key == "feed_failures":
            numbers[key] = _check_type(value, "int", where)
        else:
            known = ["emails", "feed_failures"]
            raise ConfigError(f"unknown key '{key}' in [operators] in {source}{_hint(key, known)}")
    return OperatorsConfig(emails=emails, **numbers)


def _refuse_secrets(name: str, table: Mapping[str, Any], source: Path) -> None:
    for key in table:
        if "password" in key or "secret" in key or "token" in key or key.endswith("_key"):
            raise ConfigError(
                f"[{name}] key '{key}' in {source}: secrets never go in the config "
                "file; set them in the environment (e.g. DIGEST_SMTP_PASSWORD, "
                "DIGEST_SMTP_OAUTH_TOKEN, DIGEST_FEED_TOKEN)"
            )


_ROUTE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")  # a URL path segment
_WEBHOOK_NUMBERS = ("soft_bounce_limit", "soft_bounce_window_days", "max_body_bytes")


def _webhooks(table: Mapping[str, Any], source: Path) -> WebhooksConfig:
    """``[webhooks]`` plus its ``[webhooks.<provider>]`` tables. Whether a provider
    name exists is checked where the adapters are built (``digest.webhooks``)."""
    providers: list[str] = []
    numbers: dict[str, int] = {}
    tables: dict[str, dict[str, Any]] = {}
    for key, value in table.items():
        where = f"[webhooks] key '{key}' in {source}"
        if isinstance(value, dict):
            _refuse_secrets(f"webhooks.{key}", value, source)
            tables[key] = dict(value)
        elif key == "providers":
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ConfigError(f"{where}: expected a list of provider names in quotes")
            if len(set(value)) != len(value):
                raise ConfigError(f"{where}: a provider is listed twice")
            bad = [p for p in value if not _ROUTE_NAME.fullmatch(p)]
            if bad:
                raise ConfigError(f"{where}: {bad[0]!r} is not a name such as 'postmark'")
            providers = list(value)
        elif key in _WEBHOOK_NUMBERS:
            numbers[key] = _check_type(value, "int", where)
        else:
            known = ["providers", *_WEBHOOK_NUMBERS]
            raise ConfigError(f"unknown key '{key}' in [webhooks] in {source}{_hint(key, known)}")
    for name in tables:
        if name not in providers:
            raise ConfigError(
                f"[webhooks.{name}] in {source} has no effect: add {name!r} to "
                "[webhooks] providers, or remove the table"
            )
    adapters = {name: _webhook_adapter(name, tables.get(name, {}), source) for name in providers}
    auto_confirm = {name for name in providers if tables.get(name, {}).get("auto_confirm")}
    return WebhooksConfig(
        providers=tuple(providers),
        adapters=MappingProxyType(adapters),
        auto_confirm=frozenset(auto_confirm),
        **numbers,
    )


def _webhook_adapter(name: str, table: Mapping[str, Any], source: Path) -> AdapterConfig:
    """``[webhooks.<name>]``: ``kind`` defaults to the name (two tables of one kind,
    say two SES regions, get two routes); ``auto_confirm`` is the route's, not the
    adapter's."""
    options = dict(table)
    kind = options.pop("kind", name)
    flag = options.pop("auto_confirm", False)
    if not isinstance(kind, str):
        raise ConfigError(f"[webhooks.{name}] key 'kind' in {source}: expected a provider name")
    if not isinstance(flag, bool):
        raise ConfigError(
            f"[webhooks.{name}] key 'auto_confirm' in {source}: expected true or false"
        )
    return AdapterConfig(
        section=f"webhooks.{name}", kind=kind, options=MappingProxyType(options), source=source
    )


def _hint(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _section(data: Mapping[str, Any], name: str, source: Path) -> object:
    cls = _SECTIONS[name]
    table = dict(data.get(name, {}))
    specs = {f.name.rstrip("_"): f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if (name, key) in _REPLACED:
            raise ConfigError(f"[{name}] key '{key}' in {source}: {_REPLACED[name, key]}")
        if key not in specs:
            home = [
                s for s, c in _SECTIONS.items() if key in {f.name.rstrip("_") for f in fields(c)}
            ]
            hint = f" (it belongs in [{home[0]}])" if home else _hint(key, list(specs))
            raise ConfigError(f"unknown key '{key}' in [{name}] in {source}{hint}")
        spec = specs[key]
        values[spec.name] = _check_type(value, spec.type, f"[{name}] key '{key}' in {source}")
    missing = [
        key
        for key, spec in specs.items()
        if spec.name not in values and spec.default is spec.default_factory  # both MISSING
    ]
    if missing:
        raise ConfigError(f"missing key '{missing[0]}' in [{name}] in {source}")
    return cls(**values)


# Keys an older version read, with what replaced them.
_REPLACED = {
    ("web", "trust_forwarded_for"): (
        "replaced by trusted_proxies, the addresses of your reverse proxies "
        '(e.g. trusted_proxies = ["127.0.0.1"]); the client is then the right-most '
        "X-Forwarded-For address that is not one of them"
    ),
}


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    text = str(annotation)
    if text == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings in quotes, got {value!r}")
        return tuple(value)
    if text.startswith("Literal") or text == "UnknownPolicy":
        allowed = get_args(UnknownPolicy)
        if value not in allowed:
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, allowed))}")
        return value
    expected: tuple[type, ...]
    if text == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if text in ("int",):
        expected = (int,)
    elif text in ("float",):
        expected = (int, float)
    elif text in ("str", "Path") or text == "str | None":
        expected = (str,)
    else:  # pragma: no cover - a new field type must be taught here
        raise AssertionError(f"unhandled config type {text}")
    if isinstance(value, bool) or not isinstance(value, expected):
        wanted = _TYPE_WORDS.get(text.replace(" | None", ""), text)
        raise ConfigError(f"{where}: expected {wanted}, got {value!r}")
    if isinstance(value, int | float) and value <= 0:
        raise ConfigError(f"{where}: must be greater than zero, got {value!r}")
    if text == "Path":
        return Path(str(value))
    return float(value) if text == "float" else value


_TYPE_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "str": "a string in quotes",
    "Path": "a path string in quotes",
}


def _adapter(data: Mapping[str, Any], name: str, source: Path) -> AdapterConfig:
    table = dict(data[name])
    kind = table.pop("kind", None)
    if not isinstance(kind, str):
        raise ConfigError(f"[{name}] in {source} needs a 'kind' key")

    for key, value in list(table.items()):
        if key == "path" or key.endswith("_path"):
            if not isinstance(value, str):
                raise ConfigError(f"[{name}] key '{key}' in {source}: expected a path string")
            table[key] = _resolve_path(Path(value), source.parent)
    return AdapterConfig(section=name, kind=kind, options=MappingProxyType(table), source=source)


def _failover(data: Mapping[str, Any], source: Path) -> tuple[AdapterConfig | None, float]:
    """``[failover]``: a second transport table plus ``cooldown_seconds``."""
    if "failover" not in data:
        return None, 300.0
    table = dict(data["failover"])
    cooldown = table.pop("cooldown_seconds", 300.0)
    if isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or cooldown <= 0:
        raise ConfigError(
            f"[failover] key 'cooldown_seconds' in {source}: a number of seconds, got {cooldown!r}"
        )
    return _adapter({"failover": table}, "failover", source), float(cooldown)


def _resolve_path(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _resolve_sqlite(url: str, base: Path) -> str:
    """Make a relative ``sqlite:///file.db`` URL relative to the config's folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////"):
        rest = url[len(prefix) :]
        if rest and rest != ":memory:" and not rest.startswith("/"):
            return prefix + str((base / rest).resolve())
    return url
