"""Load ``config.toml`` (and its ``DIGEST_<SECTION>__<KEY>`` overrides) into a :class:`Config`.

Only entry points (``cli.py``, ``web/app.py``, ``scheduler/``) call :func:`load`;
everything else is handed typed values.

Rules:
- unknown or mistyped keys raise :class:`~digest.errors.ConfigError`: one line
  naming the key, the section and the file, or the environment variable that set
  it (with a "did you mean" hint);
- relative paths are resolved against the folder that holds the config file;
- secrets never come from the file: they are read from ``DIGEST_*`` environment
  variables (``DIGEST_SECRET_KEY``, ``DIGEST_SMTP_PASSWORD``, ``DIGEST_DATABASE_URL``),
  which are never settings.

The steps: :mod:`digest.config.settings` reads and types the sources (pydantic),
:mod:`digest.config.messages` turns a ``ValidationError`` into one line, the
checks in :mod:`digest.config.checks` run in section order, and this module
resolves paths and adapter tables into the frozen :class:`Config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from digest.config import checks
from digest.config.messages import first_error
from digest.config.sections import (
    AdapterConfig,
    Config,
    DatabaseConfig,
    EmailConfig,
    PathsConfig,
    WebhookRules,
    WebhooksConfig,
)
from digest.config.settings import DigestSettings, Inputs, hint, read, refuse_secrets
from digest.errors import ConfigError

ENV_CONFIG = "DIGEST_CONFIG"
ENV_DATABASE_URL = "DIGEST_DATABASE_URL"
ENV_SECRET_KEY = "DIGEST_SECRET_KEY"  # noqa: S105  (a variable name, not a secret)
DEFAULT_CONFIG_NAME = "config.toml"


def find_config(explicit: str | Path | None, environ: Mapping[str, str]) -> Path:
    """Return the config path: ``--config``, else ``$DIGEST_CONFIG``, else ``./config.toml``."""
    raw = explicit or environ.get(ENV_CONFIG) or DEFAULT_CONFIG_NAME
    return Path(raw).expanduser().resolve()


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file, with ``DIGEST_<SECTION>__<KEY>`` overrides.

    ``environ`` (default ``os.environ``) is the only environment read. Raises
    :class:`ConfigError` when the file is missing, is not TOML, or holds an unknown,
    missing or mistyped key, or when an override does.
    """
    env = dict(os.environ if environ is None else environ)
    return _build(Inputs(source=find_config(path, env), environ=env))


def parse(data: Mapping[str, Any], *, source: Path, environ: Mapping[str, str]) -> Config:
    """Turn already-parsed TOML into a :class:`Config` (see :func:`load`)."""
    return _build(Inputs(source=source, environ=dict(environ), data=data))


def _build(inputs: Inputs) -> Config:
    try:
        settings = read(inputs)
    except ValidationError as exc:
        raise ConfigError(first_error(exc, inputs)) from None
    return _config(settings, inputs)


def _config(settings: DigestSettings, inputs: Inputs) -> Config:
    """The value checks, in section order, then paths and adapters resolved."""
    place = inputs.place
    source, base, environ = inputs.source, inputs.source.parent, inputs.environ
    site = settings.site
    checks.check_site_timezone(site.timezone, place("site", "timezone"))
    checks.check_site(site, place("site", "base_url"))
    checks.check_postal_address(site.postal_address, place("site", "postal_address"))
    send = settings.send
    checks.check_pause_share(send.pause_error_share, place("send", "pause_error_share"))
    checks.check_lease(send.lease_seconds, place("send", "lease_seconds"))
    checks.check_web(settings.web, place("web", "trusted_proxies"))
    db_url = _resolve_sqlite(environ.get(ENV_DATABASE_URL) or settings.database.url, base)
    _check_email(settings.email, inputs)
    feed = _adapter("feed", settings.feed, inputs)
    transport = _adapter("transport", settings.transport, inputs)
    failover, cooldown = _failover(settings, inputs)
    schedule = settings.schedule
    checks.check_schedule_day(schedule.day, place("schedule", "day"))
    checks.check_schedule_time(schedule.time, place("schedule", "time"))
    checks.check_schedule_zone(schedule.timezone, site.timezone, place("schedule", "timezone"))
    for address in settings.operators.emails:
        checks.check_operator(address, place("operators", "emails"))
    secrets = tuple(k.strip() for k in environ.get(ENV_SECRET_KEY, "").split(",") if k.strip())
    return Config(
        source=source,
        site=site,
        database=DatabaseConfig(url=db_url),
        email=settings.email,
        feed=feed,
        transport=transport,
        failover=failover,
        failover_cooldown=cooldown,
        edition=settings.edition,
        send=send,
        paths=PathsConfig(templates=_resolve_path(settings.paths.templates, base)),
        web=settings.web,
        preflight=settings.preflight,
        schedule=schedule,
        operators=settings.operators,
        webhooks=_webhooks(settings, inputs),
        tracking=settings.tracking,
        votes=settings.votes,
        bounces=settings.bounces,
        secret_keys=secrets,
        env=MappingProxyType({k: v for k, v in environ.items() if k.startswith("DIGEST_")}),
    )


def _check_email(email: EmailConfig, inputs: Inputs) -> None:
    if email.transactional_from is not None:
        where = inputs.place("email", "transactional_from")
        checks.check_mailbox(email.transactional_from, "transactional_from", where)
    if email.feedback_id is not None:
        checks.check_feedback_id(email.feedback_id, inputs.place("email", "feedback_id"))


def _adapter(name: str, raw: Mapping[str, Any], inputs: Inputs) -> AdapterConfig:
    table = dict(raw)
    kind = table.pop("kind", None)
    if not isinstance(kind, str):
        raise ConfigError(f"[{name}] in {inputs.source} needs a 'kind' key")
    for key, value in list(table.items()):
        if key == "path" or key.endswith("_path"):
            if not isinstance(value, str):
                raise ConfigError(
                    f"[{name}] key '{key}' in {inputs.place(name, key)}: expected a path string"
                )
            table[key] = _resolve_path(Path(value), inputs.source.parent)
    return AdapterConfig(
        section=name, kind=kind, options=MappingProxyType(table), source=inputs.source
    )


def _failover(settings: DigestSettings, inputs: Inputs) -> tuple[AdapterConfig | None, float]:
    """``[failover]``: a second transport table plus ``cooldown_seconds``."""
    if settings.failover is None:
        return None, 300.0
    table = dict(settings.failover)
    cooldown = table.pop("cooldown_seconds", 300.0)
    if isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or cooldown <= 0:
        raise ConfigError(
            f"[failover] key 'cooldown_seconds' in {inputs.place('failover', 'cooldown_seconds')}"
            f": a number of seconds, got {cooldown!r}"
        )
    return _adapter("failover", table, inputs), float(cooldown)


def _webhooks(settings: DigestSettings, inputs: Inputs) -> WebhooksConfig:
    """``[webhooks]`` plus its ``[webhooks.<provider>]`` tables. Whether a provider
    name exists is checked where the adapters are built (``digest.webhooks``)."""
    rules = settings.webhooks
    tables: dict[str, dict[str, Any]] = {}
    for key, value in (rules.model_extra or {}).items():
        if isinstance(value, dict):
            refuse_secrets(f"webhooks.{key}", value, inputs)
            tables[key] = dict(value)
        else:
            known = [k for k in WebhookRules.model_fields]
            where = inputs.place("webhooks", key)
            raise ConfigError(f"unknown key '{key}' in [webhooks] in {where}{hint(key, known)}")
    checks.check_providers(rules.providers, inputs.place("webhooks", "providers"))
    for name in tables:
        if name not in rules.providers:
            raise ConfigError(
                f"[webhooks.{name}] in {inputs.source} has no effect: add {name!r} to "
                "[webhooks] providers, or remove the table"
            )
    adapters = {name: _webhook(name, tables.get(name, {}), inputs) for name in rules.providers}
    auto_confirm = {name for name in rules.providers if tables.get(name, {}).get("auto_confirm")}
    return WebhooksConfig(
        providers=rules.providers,
        soft_bounce_limit=rules.soft_bounce_limit,
        soft_bounce_window_days=rules.soft_bounce_window_days,
        max_body_bytes=rules.max_body_bytes,
        adapters=MappingProxyType(adapters),
        auto_confirm=frozenset(auto_confirm),
    )


def _webhook(name: str, table: Mapping[str, Any], inputs: Inputs) -> AdapterConfig:
    """``[webhooks.<name>]``: ``kind`` defaults to the name (two tables of one kind,
    say two SES regions, get two routes); ``auto_confirm`` is the route's, not the
    adapter's."""
    options = dict(table)
    kind = options.pop("kind", name)
    flag = options.pop("auto_confirm", False)
    section = f"webhooks.{name}"
    if not isinstance(kind, str):
        where = inputs.place(section, "kind")
        raise ConfigError(f"[{section}] key 'kind' in {where}: expected a provider name")
    if not isinstance(flag, bool):
        where = inputs.place(section, "auto_confirm")
        raise ConfigError(f"[{section}] key 'auto_confirm' in {where}: expected true or false")
    return AdapterConfig(
        section=section, kind=kind, options=MappingProxyType(options), source=inputs.source
    )


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
