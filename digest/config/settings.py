"""The settings model and its sources: init keywords, then ``DIGEST_<SECTION>__<KEY>``
environment variables, then ``config.toml`` (pydantic-settings' TOML source).

The environment beats the file. Only ``DIGEST_<SECTION>__<KEY>`` names (two
underscores, a known section) are overrides; ``DIGEST_SECRET_KEY``, ``DIGEST_CONFIG``
and every other single-underscore ``DIGEST_*`` variable keep their own meaning; an
empty override is no override. Values are strings, converted to the key's type
(``"1"`` → ``1``, ``"true"`` → ``True``); a list is JSON. Adapter tables (``[feed]``,
``[transport]``, ``[failover]``, ``[webhooks.<name>]``) have no types here: a value
that parses as JSON (``2525``, ``true``, ``"2525"``) is that JSON, else the string.

:func:`read` is the only way in: the file and the environment are per call (a context
variable hands them to ``settings_customise_sources``), kept in an :class:`Inputs`
that records which variable set which key, so an error names that variable.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from digest.config.bounce_sections import BouncesConfig, check_settings
from digest.config.sections import (
    ADAPTERS,
    KNOWN_SECTIONS,
    DatabaseConfig,
    EditionConfig,
    EmailConfig,
    OperatorsConfig,
    PathsConfig,
    PreflightConfig,
    ScheduleConfig,
    SendConfig,
    SiteConfig,
    WebhookRules,
)
from digest.config.web_sections import TrackingConfig, VotesConfig, WebConfig
from digest.errors import ConfigError

ENV_PREFIX = "DIGEST_"
ENV_DELIMITER = "__"


class WebhooksTable(WebhookRules):
    """``[webhooks]`` as written: its own keys, plus one table per provider, kept
    as they are (``model_extra``) until :mod:`digest.config.loading` builds adapters."""

    model_config = ConfigDict(extra="allow")


class DigestSettings(BaseSettings):
    """``config.toml`` with its environment overrides, validated; see the module doc."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
        strict=True,  # also makes the env source convert strings to each key's type
    )

    site: SiteConfig
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    email: EmailConfig
    feed: dict[str, Any]
    transport: dict[str, Any]
    failover: dict[str, Any] | None = None
    edition: EditionConfig = Field(default_factory=EditionConfig)
    send: SendConfig = Field(default_factory=SendConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    preflight: PreflightConfig = Field(default_factory=PreflightConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    operators: OperatorsConfig = Field(default_factory=OperatorsConfig)
    webhooks: WebhooksTable = Field(default_factory=WebhooksTable)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    votes: VotesConfig = Field(default_factory=VotesConfig)
    bounces: BouncesConfig = Field(default_factory=BouncesConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        inputs = _INPUTS.get(None)
        if inputs is None:  # built outside read(): keywords only, never os.environ
            return (init_settings,)
        # The file first: its mistakes are told before the environment's.
        file = (
            _TomlFile(settings_cls, inputs) if inputs.data is None else _Table(settings_cls, inputs)
        )
        return (init_settings, _Environment(settings_cls, inputs), file)


@dataclass
class Inputs:
    """One load's file and environment, and what each source found."""

    source: Path
    environ: Mapping[str, str]
    data: Mapping[str, Any] | None = None  # already-parsed TOML (parse()); else read source
    file: dict[str, Any] = field(default_factory=dict)
    variables: dict[tuple[str, ...], str] = field(default_factory=dict)  # key path → name

    def variable(self, *path: str) -> str | None:
        """The variable that set ``path`` (or a key below it), if the environment did."""
        if path in self.variables:
            return self.variables[path]
        return next((v for p, v in self.variables.items() if p[: len(path)] == path), None)

    def place(self, section: str, key: str) -> str:
        """Where ``[section] key`` was set: the file, or the variable that overrode it."""
        name = self.variable(*section.split("."), key)
        return f"environment variable {name}" if name else str(self.source)

    def raw(self, section: str, key: str) -> Any:
        """``[section] key`` as the winning source gave it (before validation)."""
        name = self.variable(section, key)
        if name is not None:
            return self.environ[name]
        table = self.file.get(section)
        return table.get(key) if isinstance(table, dict) else None


_INPUTS: ContextVar[Inputs] = ContextVar("digest_config_inputs")


def read(inputs: Inputs, **overrides: Any) -> DigestSettings:
    """Build :class:`DigestSettings` from ``inputs`` (``overrides``: init keywords, first).
    Raises :class:`ConfigError` for a file that cannot be read, an unknown section, a
    secret in an adapter table, a bad ``[bounces]``; pydantic's ``ValidationError`` else."""
    token = _INPUTS.set(inputs)
    try:
        settings = DigestSettings(**overrides)
    finally:
        _INPUTS.reset(token)
    check_settings(settings.email.bounce_address, settings.bounces, inputs.place, inputs.environ)
    return settings


def hint(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def refuse_secrets(name: str, table: Mapping[str, Any], inputs: Inputs) -> None:
    """No password, secret, token or ``*_key`` in an adapter table, file or override."""
    for key in table:
        if "password" in key or "secret" in key or "token" in key or key.endswith("_key"):
            variable = inputs.variable(*name.split("."), key)
            if variable is not None:
                raise ConfigError(
                    f"[{name}] key '{key}' in environment variable {variable}: secrets are "
                    "not settings; set them in their own variables (e.g. "
                    "DIGEST_SMTP_PASSWORD, DIGEST_SMTP_OAUTH_TOKEN, DIGEST_FEED_TOKEN)"
                )
            raise ConfigError(
                f"[{name}] key '{key}' in {inputs.source}: secrets never go in the config "
                "file; set them in the environment (e.g. DIGEST_SMTP_PASSWORD, "
                "DIGEST_SMTP_OAUTH_TOKEN, DIGEST_FEED_TOKEN)"
            )


def _check_file(data: Mapping[str, Any], inputs: Inputs) -> dict[str, Any]:
    """Section names (exact, lower case), tables only, no secrets in adapter tables."""
    for name, value in data.items():
        if name not in KNOWN_SECTIONS:
            raise ConfigError(
                f"unknown section [{name}] in {inputs.source}{hint(name, list(KNOWN_SECTIONS))}"
            )
        if isinstance(value, dict) and name in ADAPTERS:
            refuse_secrets(name, value, inputs)
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] in {inputs.source} must be a table")
    inputs.file = dict(data)
    return inputs.file


class _TomlFile(TomlConfigSettingsSource):
    """``config.toml`` through pydantic-settings, with our one-line errors."""

    def __init__(self, settings_cls: type[BaseSettings], inputs: Inputs) -> None:
        self._inputs = inputs
        super().__init__(settings_cls, toml_file=inputs.source)

    def _read_files(self, files: Any, deep_merge: bool = False) -> dict[str, Any]:
        source = self._inputs.source  # a missing file is an error here, not "no values"
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"no config file at {source}: pass --config PATH or set DIGEST_CONFIG"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {source}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source} is not valid TOML: {exc}") from exc
        return _check_file(data, self._inputs)


class _Table(InitSettingsSource):
    """Already-parsed TOML (:func:`digest.config.parse`) in the file's place."""

    def __init__(self, settings_cls: type[BaseSettings], inputs: Inputs) -> None:
        assert inputs.data is not None
        super().__init__(settings_cls, _check_file(inputs.data, inputs))


class _Environment(EnvSettingsSource):
    """``DIGEST_<SECTION>__<KEY>`` from the given environ only (never ``os.environ``)."""

    def __init__(self, settings_cls: type[BaseSettings], inputs: Inputs) -> None:
        self._inputs = inputs
        self._names: dict[str, str] = {}  # lower-cased name → as set
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        found: dict[str, str | None] = {}
        prefix = ENV_PREFIX.lower()
        for name, value in self._inputs.environ.items():
            lower = name.lower()
            if not lower.startswith(prefix) or ENV_DELIMITER not in lower[len(prefix) :]:
                continue  # DIGEST_SECRET_KEY, DIGEST_CONFIG, DIGEST_FOO …: not settings
            if not value:
                continue  # set but empty: no override (as DIGEST_DATABASE_URL)
            section = lower[len(prefix) :].split(ENV_DELIMITER, 1)[0]
            if section not in KNOWN_SECTIONS:
                raise ConfigError(
                    f"unknown section [{section}] in environment variable {name}"
                    f"{hint(section, list(KNOWN_SECTIONS))}"
                )
            found[lower] = value
            self._names[lower] = name
        return found

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:  # not JSON: left as the string, for the model to refuse naming the variable
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            return value

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        for path in _paths(data):
            lower = ENV_PREFIX.lower() + ENV_DELIMITER.join(path)
            self._inputs.variables[path] = self._names.get(lower, lower.upper())
        for name in ADAPTERS:
            if isinstance(data.get(name), dict):
                data[name] = _decoded(data[name])
                refuse_secrets(name, data[name], self._inputs)
        webhooks = data.get("webhooks")
        if isinstance(webhooks, dict):
            rules = set(WebhookRules.model_fields)
            for key, value in webhooks.items():
                if key not in rules and isinstance(value, dict):
                    webhooks[key] = _decoded(value)
                    refuse_secrets(f"webhooks.{key}", webhooks[key], self._inputs)
        return data


def _paths(data: Mapping[str, Any], above: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _paths(value, (*above, key))
        else:
            yield (*above, key)


def _decoded(table: Mapping[str, Any]) -> dict[str, Any]:
    """An adapter table's strings as JSON where they are JSON (``2525``, ``true``)."""
    result: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, str):
            with suppress(ValueError):
                value = json.loads(value)
        result[key] = value
    return result
