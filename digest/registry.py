"""Build an adapter (feed or transport) from its ``[section]`` table.

Each adapter family keeps a ``{kind: class}`` registry; the rest of the TOML table
becomes constructor keywords. Secrets are never in the table: a class lists the
keywords it takes from the environment in ``secret_env`` (keyword → variable).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from digest.config import AdapterConfig
from digest.errors import ConfigError

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
