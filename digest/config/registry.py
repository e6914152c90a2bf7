"""The adapter registry: build a feed, a transport or webhook adapters from their tables.

Each adapter family keeps a ``{kind: class}`` registry; the rest of the TOML table
becomes constructor keywords. Secrets are never in the table: a class lists the
keywords it takes from the environment in ``secret_env`` (keyword → variable).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from digest.config import AdapterConfig, WebhooksConfig
from digest.errors import ConfigError
from digest.feeds import FEEDS, Feed
from digest.transports import TRANSPORTS, Transport
from digest.webhooks import WEBHOOKS, Webhook

T = TypeVar("T")


def build(registry: Mapping[str, type[T]], cfg: AdapterConfig, env: Mapping[str, str]) -> T:
    """Instantiate ``registry[cfg.kind]`` with the table's keys.

    Raises :class:`ConfigError` naming the key and file for an unknown kind, an
    unknown or missing key, or a value the adapter refuses (its ``ValueError``).
    """
    cls = registry.get(cfg.kind)
    if cls is None:
        kinds = ", ".join(sorted(registry))
        raise ConfigError(
            f"{cfg.describe('kind')}: unknown kind {cfg.kind!r} (choose one of: {kinds})"
        )
    secret_env: Mapping[str, str] = getattr(cls, "secret_env", {})
    params = inspect.signature(cls).parameters
    allowed = [name for name in params if name not in secret_env]
    for key in cfg.options:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{cfg.describe(key)}: unknown key for kind {cfg.kind!r}{hint}")
    missing = [
        name
        for name, p in params.items()
        if p.default is inspect.Parameter.empty
        and name not in cfg.options
        and name not in secret_env
        and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    if missing:
        raise ConfigError(f"{cfg.describe(missing[0])}: required for kind {cfg.kind!r}")
    kwargs: dict[str, Any] = dict(cfg.options)
    for name, variable in secret_env.items():
        if env.get(variable):
            kwargs[name] = env[variable]
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cfg.describe()}: {exc}") from exc


def build_feed(cfg: AdapterConfig, env: Mapping[str, str]) -> Feed:
    """Build the feed named by ``cfg.kind``.

    Raises :class:`~digest.errors.ConfigError` naming the key and the file for an
    unknown kind, an unknown or missing key, or a value the feed refuses.
    """
    return build(FEEDS, cfg, env)


def build_transport(cfg: AdapterConfig, env: Mapping[str, str]) -> Transport:
    """Build the ``[transport]`` table's transport; raises ``ConfigError`` naming the key."""
    return build(TRANSPORTS, cfg, env)


def build_webhooks(cfg: WebhooksConfig, env: Mapping[str, str]) -> dict[str, Webhook]:
    """One adapter per enabled provider, by its name in ``providers`` (the route's
    path segment; the adapter kind is the same unless its table names another).

    Raises :class:`ConfigError` for an unknown provider, an unknown key in its
    table, or a missing secret (the message names the environment variable): a
    webhook without its secret refuses to start.
    """
    adapters: dict[str, Webhook] = {}
    for provider in cfg.providers:
        table = cfg.adapters[provider]
        if table.kind not in WEBHOOKS:
            known = ", ".join(sorted(WEBHOOKS)) or "none installed"
            raise ConfigError(
                f"{table.describe('kind')}: unknown provider {table.kind!r} (choose from: {known})"
            )
        adapters[provider] = build(WEBHOOKS, table, env)
    return adapters
