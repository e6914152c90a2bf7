"""``config.toml`` and its ``DIGEST_<SECTION>__<KEY>`` overrides, loaded once into a
typed, frozen :class:`Config`.

Only entry points (``cli.py``, ``web/app.py``, ``scheduler/``) call :func:`load`;
everything else is handed typed values. The pieces:

- :mod:`~digest.config.sections`: one pydantic model per section, and :class:`Config`;
- :mod:`~digest.config.settings`: the pydantic-settings model and its sources
  (init keywords, then the environment, then the TOML file);
- :mod:`~digest.config.loading`: :func:`load` / :func:`parse`, paths and adapter
  tables resolved; :mod:`~digest.config.messages`: pydantic's errors as one line;
- :mod:`~digest.config.checks`: value checks that need more than a type.
"""

from __future__ import annotations

from digest.config.loading import (
    DEFAULT_CONFIG_NAME,
    ENV_CONFIG,
    ENV_DATABASE_URL,
    ENV_SECRET_KEY,
    find_config,
    load,
    parse,
)
from digest.config.sections import (
    AdapterConfig,
    Config,
    DatabaseConfig,
    EditionConfig,
    EmailConfig,
    OperatorsConfig,
    PathsConfig,
    PreflightConfig,
    ScheduleConfig,
    SendConfig,
    SiteConfig,
    UnknownPolicy,
    WebhooksConfig,
)
from digest.config.web_sections import TrackingConfig, VotesConfig, WebConfig

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "ENV_CONFIG",
    "ENV_DATABASE_URL",
    "ENV_SECRET_KEY",
    "AdapterConfig",
    "Config",
    "DatabaseConfig",
    "EditionConfig",
    "EmailConfig",
    "OperatorsConfig",
    "PathsConfig",
    "PreflightConfig",
    "ScheduleConfig",
    "SendConfig",
    "SiteConfig",
    "TrackingConfig",
    "UnknownPolicy",
    "VotesConfig",
    "WebConfig",
    "WebhooksConfig",
    "find_config",
    "load",
    "parse",
]
