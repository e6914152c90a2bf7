"""The effective configuration on the desk, read-only (admin role).

=======  ===============================  ==========================================
GET      /admin/settings                  every section of ``config.toml`` as loaded
                                          (environment overrides applied), and which
                                          secret variables are set (names only)
=======  ===============================  ==========================================

Nothing here changes anything: settings are changed in ``config.toml`` or the
environment and take effect when the processes restart. No secret value is ever
shown: :attr:`Config.env <digest.config.Config.env>` is read only to say which
variables are set (and to scrub their values should one turn up in a setting);
the database URL is shown with its password masked; every value shown goes
through :func:`digest.common.redaction.redact_text`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from starlette.requests import Request
from starlette.responses import Response

from digest.common.redaction import REDACTED, is_secret_name, redact_text
from digest.config import AdapterConfig, Config
from digest.config.loading import ENV_DATABASE_URL, ENV_SECRET_KEY
from digest.config.settings import ENV_DELIMITER, ENV_PREFIX
from digest.feeds import FEEDS
from digest.transports import TRANSPORTS
from digest.web.admin.auth import ENV_PASSWORD, ENV_TOKEN
from digest.web.admin.deps import PAGE_HEADERS, Admin, desk_of
from digest.web.state import web_of
from digest.webhooks import WEBHOOKS

# Secrets every instance may have, whatever its adapters: (variable, what for).
ALWAYS = (
    (ENV_SECRET_KEY, "signs reader links and desk sessions"),
    (ENV_DATABASE_URL, "the database (overrides [database] url)"),
    (ENV_PASSWORD, "bootstrap sign-in to the desk"),
    (ENV_TOKEN, "bootstrap Bearer token for the desk"),
)
_MIN_SCRUB = 6  # shorter secret values are not searched for in the page (too many false hits)


@dataclass(frozen=True, slots=True)
class Section:
    name: str  # "site", "webhooks.postmark"
    rows: list[tuple[str, str]]  # key, value as shown


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    used_for: str
    set: bool


def register(router: APIRouter) -> None:
    router.add_api_route("/settings", settings_page, methods=["GET"])


async def settings_page(request: Request, who: Admin) -> Response:
    w = web_of(request)
    config = w.rt.config
    variables = secret_variables(config)
    return w.pages.page(
        request,
        "admin/settings",
        headers={**PAGE_HEADERS, "Cache-Control": "no-store"},
        title="Settings",
        source=redact_text(str(config.source)),
        sections=sections_of(config),
        variables=variables,
        overrides=overrides_of(config.env),
        csrf=desk_of(request).guard.csrf_token(who.sid),
        who=who,
    )


def sections_of(config: Config) -> list[Section]:
    """Every section with its effective values, each made safe to show."""
    scrub = _Scrub(config.env, [v.name for v in secret_variables(config)])
    found: list[Section] = []
    for name, values in _raw_sections(config):
        found.append(Section(name, [(key, scrub(shown(value))) for key, value in values]))
    return found


def _raw_sections(config: Config) -> Iterator[tuple[str, list[tuple[str, Any]]]]:
    yield "site", _model(config.site)
    yield "database", [("url", _Masked(database_url(config.database.url)))]
    yield "email", _model(config.email)
    yield "feed", _adapter(config.feed)
    yield "transport", _adapter(config.transport)
    if config.failover is not None:
        yield (
            "failover",
            [
                *_adapter(config.failover),
                ("cooldown_seconds", config.failover_cooldown),
            ],
        )
    for name in ("edition", "schedule", "send", "web", "preflight", "operators", "paths"):
        yield name, _model(getattr(config, name))
    hooks = config.webhooks
    yield (
        "webhooks",
        [
            (key, getattr(hooks, key))
            for key in (
                "providers",
                "soft_bounce_limit",
                "soft_bounce_window_days",
                "max_body_bytes",
            )
        ],
    )
    for provider, table in hooks.adapters.items():
        auto = ("auto_confirm", provider in hooks.auto_confirm)
        yield f"webhooks.{provider}", [*_adapter(table), auto]


def _model(model: BaseModel) -> list[tuple[str, Any]]:
    return list(model.model_dump(by_alias=True).items())


def _adapter(table: AdapterConfig) -> list[tuple[str, Any]]:
    return [("kind", table.kind), *table.options.items()]


class _Masked(str):
    """A value already masked (the database URL): shown as it is, not quoted."""


def shown(value: Any) -> str:
    """A value as TOML would have it (strings quoted, lists in brackets), redacted."""
    if isinstance(value, _Masked):
        text = str(value)
    elif value is None:
        text = "(not set)"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, Path):
        text = json.dumps(str(value), ensure_ascii=False)
    elif isinstance(value, list | tuple | set | frozenset):
        text = "[" + ", ".join(shown(v) for v in value) + "]"
    else:
        text = json.dumps(str(value), ensure_ascii=False)
    return redact_text(text)


def database_url(url: str) -> str:
    """The URL with its password (and any secret-looking query value) masked."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(not a database URL; not shown)"
    query = {k: (REDACTED if is_secret_name(k) else v) for k, v in parsed.query.items()}
    if parsed.password is None and query == dict(parsed.query):
        return url
    return parsed.set(query=query).render_as_string(hide_password=True)


class _Scrub:
    """Last lock: a secret variable's value that turns up in a shown value anyway
    (a password pasted into a URL, say) is replaced by ``***``."""

    def __init__(self, env: Mapping[str, str], names: Iterable[str]) -> None:
        values: set[str] = set()
        for name in names:
            raw = env.get(name, "")
            if name == ENV_DATABASE_URL:  # the URL is shown (masked): only its password
                raw = _password_of(raw)
            values.update(v.strip() for v in (raw, *raw.split(",")))
        self.values = sorted((v for v in values if len(v) >= _MIN_SCRUB), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, REDACTED)
        return text


def _password_of(url: str) -> str:
    try:
        return str(make_url(url).password or "") if url else ""
    except ArgumentError:
        return url  # not shown either way; scrubbed whole


def secret_variables(config: Config) -> list[Variable]:
    """The secret variables this configuration may read: names and whether set."""
    wanted: dict[str, str] = dict(ALWAYS)
    for label, registry, table in _adapters(config):
        cls = registry.get(table.kind)
        for variable in getattr(cls, "secret_env", {}).values():
            wanted.setdefault(variable, f"{label} ({table.kind})")
    env = config.env
    return [Variable(name, why, bool(env.get(name, "").strip())) for name, why in wanted.items()]


def _adapters(config: Config) -> Iterable[tuple[str, Mapping[str, Any], AdapterConfig]]:
    yield "[feed]", FEEDS, config.feed
    yield "[transport]", TRANSPORTS, config.transport
    if config.failover is not None:
        yield "[failover]", TRANSPORTS, config.failover
    for provider, table in config.webhooks.adapters.items():
        yield f"[webhooks.{provider}]", WEBHOOKS, table


def overrides_of(env: Mapping[str, str]) -> list[str]:
    """The names of the ``DIGEST_<SECTION>__<KEY>`` variables that set a value."""
    return sorted(k for k, v in env.items() if ENV_DELIMITER in k[len(ENV_PREFIX) :] and v.strip())
