"""Turn pydantic's ``ValidationError`` into the one line a :class:`ConfigError` carries.

Only the first error is told, in the order the file is read: a missing section,
then section by section (site, send, web, …) the keys in file order, missing keys
last. The line names the section, the key and the file, or the environment
variable when an override set the key, with the hints operators rely on:
"did you mean 'x'?", "(it belongs in [section])", and what replaced a key an
older version read.
"""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from digest.config.sections import KNOWN_SECTIONS, SECTIONS, keys_of
from digest.config.settings import DigestSettings, Inputs, hint

# The order the sections were always checked in: the first mistake told is the same.
ORDER = (
    *("site", "send", "web", "database", "paths", "email", "feed", "transport", "failover"),
    *("edition", "preflight", "schedule", "operators", "webhooks", "tracking", "votes"),
)

# Keys an older version read, with what replaced them.
REPLACED = {
    ("web", "trust_forwarded_for"): (
        "replaced by trusted_proxies, the addresses of your reverse proxies "
        '(e.g. trusted_proxies = ["127.0.0.1"]); the client is then the right-most '
        "X-Forwarded-For address that is not one of them"
    ),
}

# Lists whose message says what they hold (and not the value).
_LISTS = {("operators", "emails"): "addresses", ("webhooks", "providers"): "provider names"}

_TYPE_WORDS: dict[Any, str] = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string in quotes",
}


def first_error(exc: ValidationError, inputs: Inputs) -> str:
    """One line for the first of ``exc``'s errors, in the file's reading order."""
    errors = sorted(exc.errors(), key=lambda error: _rank(error, inputs))
    return _message(errors[0], inputs)


def _rank(error: ErrorDetails, inputs: Inputs) -> tuple[int, int, int, int]:
    loc = error["loc"]
    section = str(loc[0])
    order = ORDER.index(section) if section in ORDER else len(ORDER)
    if len(loc) == 1:
        return (0, order, 0, 0)
    table = inputs.file.get(section)
    keys = list(table) if isinstance(table, dict) else []
    position = keys.index(loc[1]) if loc[1] in keys else len(keys)
    return (1, order, int(error["type"] == "missing"), position)


def _message(error: ErrorDetails, inputs: Inputs) -> str:
    loc, kind, source = error["loc"], error["type"], inputs.source
    section = str(loc[0])
    if len(loc) == 1:
        if kind == "missing":
            return f"missing section [{section}] in {source}"
        if kind == "extra_forbidden":
            return f"unknown section [{section}] in {source}{hint(section, list(KNOWN_SECTIONS))}"
        return f"[{section}] in {source} must be a table"
    key = str(loc[1])
    place = inputs.place(section, key)
    model = _model(section)
    if kind == "extra_forbidden":
        return unknown_key(section, key, place)
    if kind == "missing":
        return f"missing key '{key}' in [{section}] in {place}"
    where = f"[{section}] key '{key}' in {place}"
    if kind == "greater_than":
        return f"{where}: must be greater than zero, got {error['input']!r}"
    info = _field(model, key) if model is not None else None
    annotation = info.annotation if info is not None else None
    if get_origin(annotation) is Literal:
        return f"{where}: must be one of {', '.join(map(repr, get_args(annotation)))}"
    if get_origin(annotation) is tuple:
        if (section, key) in _LISTS:
            return f"{where}: expected a list of {_LISTS[section, key]} in quotes"
        return f"{where}: expected a list of strings in quotes, got {inputs.raw(section, key)!r}"
    if kind == "path_type":
        return f"{where}: expected a path string in quotes, got {error['input']!r}"
    words = _TYPE_WORDS.get(annotation, "a string in quotes")
    return f"{where}: expected {words}, got {error['input']!r}"


def unknown_key(section: str, key: str, place: str) -> str:
    """An unknown key: what replaced it, the section it belongs in, or a close key."""
    if (section, key) in REPLACED:
        return f"[{section}] key '{key}' in {place}: {REPLACED[section, key]}"
    model = _model(section)
    known = keys_of(model) if model is not None else []
    home = [name for name, cls in SECTIONS.items() if key in keys_of(cls)]
    if section in SECTIONS and home:
        return f"unknown key '{key}' in [{section}] in {place} (it belongs in [{home[0]}])"
    return f"unknown key '{key}' in [{section}] in {place}{hint(key, known)}"


def _model(section: str) -> type[BaseModel] | None:
    info = DigestSettings.model_fields.get(section)
    annotation = info.annotation if info is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    return next(
        (info for name, info in model.model_fields.items() if (info.alias or name) == key),
        None,
    )
