"""Checks for adapters' constructor keywords (the keys of ``[feed]``, ``[transport]``
and ``[webhooks.*]``): one set, each returning the value or raising ``ValueError``
that names the key and shows the value given.

A ``bool`` is never a number here (TOML's ``true`` is not ``1``). The families
word their messages differently, and each keeps its words through a :class:`Style`:

- :data:`FEED` (the default): ``'timeout' must be a number greater than 0, got 0``;
- :data:`KEY`: ``key 'timeout': expected a number > 0, got 0`` (the transports);
- :data:`KEY_MUST`: ``key 'security': must be one of (…), got 'ssl'``;
- :data:`KEY_BARE`: ``key 'tolerance_seconds': 1…86400, got 0`` (with ``what``).

``what`` replaces the description where a key's message says something of its own.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Style:
    """How a family of adapters words a refused key: ``lead`` (with ``{name}``) comes
    before the description; ``words``: bounds in words ("at least", "greater than")
    rather than "≥" and ">"."""

    lead: str
    words: bool = False

    def refuse(self, name: str, what: str, value: object) -> ValueError:
        return ValueError(f"{self.lead.format(name=name)} {what}, got {value!r}")


FEED = Style("'{name}' must be", words=True)
KEY = Style("key '{name}': expected")
KEY_MUST = Style("key '{name}': must be")
KEY_BARE = Style("key '{name}':")


def number(
    name: str,
    value: object,
    *,
    minimum: float = 0.0,
    inclusive: bool = True,
    finite: bool = True,
    unit: str = "",
    style: Style = FEED,
) -> float:
    """``value`` as a float: a number at least ``minimum`` (more than it, when not
    ``inclusive``), and finite. ``finite=False`` lets ``inf`` and ``nan`` through, as
    the transports' keys always have. ``unit`` names what is counted ("seconds")."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        too_low = value < minimum if inclusive else value <= minimum
        if not too_low and (math.isfinite(value) or not finite):
            return float(value)
    if style.words:
        bound = "at least" if inclusive else "greater than"
    else:
        bound = "≥" if inclusive else ">"
    kind = f"a number of {unit}" if unit else "a number"
    raise style.refuse(name, f"{kind} {bound} {minimum:g}", value)


def count(
    name: str,
    value: object,
    *,
    minimum: int | None = 1,
    maximum: int | None = None,
    style: Style = FEED,
    what: str | None = None,
) -> int:
    """``value``: a whole number from ``minimum`` to ``maximum`` (None: unbounded)."""
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (minimum is None or value >= minimum)
        and (maximum is None or value <= maximum)
    ):
        return value
    if what is None:
        if minimum is None:
            what = "a whole number"
        elif maximum is not None:
            what = f"a whole number from {minimum} to {maximum}"
        else:
            what = f"a whole number {'of at least' if style.words else '≥'} {minimum}"
    raise style.refuse(name, what, value)


def flag(name: str, value: object, *, style: Style = FEED, show_value: bool = True) -> bool:
    """``value``: true or false. ``show_value=False`` leaves ", got …" out."""
    if isinstance(value, bool):
        return value
    if not show_value:
        raise ValueError(f"{style.lead.format(name=name)} true or false")
    raise style.refuse(name, "true or false", value)


def text(name: str, value: object, *, line: bool = False, style: Style = FEED) -> str:
    """``value``: a string that is not blank; with ``line``, also one printable line
    (no line break or other control character). Returned as given."""
    if isinstance(value, str) and value.strip() and (not line or value.isprintable()):
        return value
    raise style.refuse(name, "a non-empty line of text" if line else "a non-empty string", value)


def one_of(
    name: str,
    value: object,
    choices: Collection[str],
    *,
    style: Style = FEED,
    what: str | None = None,
) -> str:
    """``value``: one of ``choices`` (the message shows them as given: a tuple reads
    ``one of ('a', 'b')``)."""
    if isinstance(value, str) and value in choices:
        return value
    raise style.refuse(name, what or f"one of {choices}", value)
