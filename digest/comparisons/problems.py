"""What is wrong with a feed comparison, in plain words.

:func:`schema_problems` turns every ``jsonschema`` error (``iter_errors``, not just
the "best" one) into ``(path, reason)`` pairs an operator can read, e.g.
``tools[0].panel_ship_pct: 140 is more than 100`` or ``pricing: 'cheap' is not one
of: free, paid, freemium, open-source``: never a Python repr of the whole object.
Values are shown short (strings cut at 40 characters, objects and lists by kind)
and printable (control characters escaped), because they come from the feed; a URL
is shown without user-info or secret-looking query values (:mod:`digest.common.redaction`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jsonschema import ValidationError

from digest.common.redaction import redact_text

Path = list[str | int]
Problem = tuple[Path, str]

MAX_PROBLEMS = 50  # per comparison; past this the rest are counted, not listed
_SHOWN_CHARS = 40

PATTERN_WORDS = {
    "^[a-z0-9-]{1,120}$": "is not an id: use 1 to 120 lower-case letters, digits and '-'",
    "^[a-z0-9-]{1,80}$": "is not a tool key: use 1 to 80 lower-case letters, digits and '-'",
    "^https?://": "is not an absolute http(s) URL",
}
_TYPE_WORDS = {
    "string": "a string",
    "number": "a number",
    "integer": "a whole number",
    "object": "an object",
    "array": "a list",
    "boolean": "true or false",
    "null": "null",
}


def json_path(parts: Iterable[str | int]) -> str:
    """``["tools", 1, "pricing"]`` → ``tools[1].pricing``; empty → ``$``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "$"


def show(value: Any) -> str:
    """A short, printable rendering of a feed value for a message."""
    if isinstance(value, str):
        value = redact_text(value) if "://" in value else value
        cut = value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 3] + "..."
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
        return "'" + text.replace("'", "\\'") + "'"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int | float):
        return (
            str(value) if len(str(value)) <= _SHOWN_CHARS else f"a {len(str(value))}-digit number"
        )
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' * (len(value) != 1)}"
    return repr(value)[:_SHOWN_CHARS]  # NonFiniteNumber: its token, e.g. NaN


def schema_problems(errors: Iterable[ValidationError]) -> list[Problem]:
    """Every error as ``(path, reason)``; a missing required field is one problem at
    its own path (``tools[0].pricing: is missing``)."""
    found: list[Problem] = []
    for error in errors:
        path: Path = list(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, Mapping):
            names = [n for n in error.validator_value if n not in error.instance]
            found += [([*path, name], "is missing") for name in names]
        elif error.validator in ("anyOf", "oneOf") and error.context:
            found.append((path, _reason(min(error.context, key=lambda e: len(e.path)))))
        else:
            found.append((path, _reason(error)))
    return found


def _reason(error: ValidationError) -> str:
    rule, limit, value = error.validator, error.validator_value, error.instance
    shown = show(value)
    if rule == "type":
        kinds = [limit] if isinstance(limit, str) else list(limit)
        return f"{shown} is not {' or '.join(_TYPE_WORDS.get(k, k) for k in kinds)}"
    if rule == "enum":
        return f"{shown} is not one of: {', '.join(str(v) for v in limit)}"
    if rule in ("minimum", "exclusiveMinimum"):
        return f"{shown} is less than {limit}" + (" or equal to it" if "exclusive" in rule else "")
    if rule in ("maximum", "exclusiveMaximum"):
        return f"{shown} is more than {limit}" + (" or equal to it" if "exclusive" in rule else "")
    if rule == "minLength":
        return "is empty" if limit == 1 else f"{shown} is shorter than {limit} characters"
    if rule == "maxLength":
        return f"{shown} is {len(value)} characters long, more than {limit}"
    if rule == "minItems":
        return f"has {_items(len(value))}, at least {limit} are needed"
    if rule == "maxItems":
        return f"has {_items(len(value))}, at most {limit} are allowed"
    if rule == "pattern":
        return f"{shown} {PATTERN_WORDS.get(limit, f'does not have the form {limit}')}"
    if rule == "const":
        return f"{shown} is not {show(limit)}"
    return f"{shown} is not allowed here (schema rule '{rule}')"


def _items(count: int) -> str:
    return f"{count} item{'s' * (count != 1)}"


def in_document_order(problems: Sequence[Problem], raw: Any) -> list[tuple[str, str]]:
    """``problems`` sorted by where their field is in ``raw`` (fields that are missing
    last), as ``(json path, reason)``, at most :data:`MAX_PROBLEMS` of them."""
    # One problem once: schema rules that overlap (a field required by two of them)
    # report the same field with the same words.
    unique = list({(json_path(path), reason): (path, reason) for path, reason in problems}.values())
    ordered = sorted(unique, key=lambda p: _rank(raw, p[0]))
    shown = [(json_path(path), reason) for path, reason in ordered[:MAX_PROBLEMS]]
    if len(ordered) > MAX_PROBLEMS:
        shown.append(("...", f"{len(ordered) - MAX_PROBLEMS} more problems not listed"))
    return shown


def _rank(raw: Any, path: Path) -> tuple[int, ...]:
    rank: list[int] = []
    node = raw
    for part in path:
        if isinstance(node, Mapping) and part in node:
            rank.append(list(node).index(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            rank.append(part)
            node = node[part]
        else:
            rank.append(1_000_000)
            node = None
    return tuple(rank)
