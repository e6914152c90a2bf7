"""What the provider HTTP transports and their providers exchange, without ``httpx``.

:class:`ApiRequest` is what a provider's ``build_request`` asks for and
:class:`ApiResponse` is the answer its ``parse_response`` reads; the base
(:mod:`digest.transports.http_base`) turns one into an ``httpx`` call and the
``httpx`` answer into the other. :class:`QueryFailed` is a reconciliation search
without a usable answer. The small functions read a ``Retry-After`` header (the
providers' reading of :func:`digest.common.retry.retry_after`), cut a provider's
words to a size fit for ``detail`` and name an exception. The ``[transport]`` keys
are checked with :mod:`digest.common.options`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from digest.common import retry

_DETAIL_MAX = 1000


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One HTTP request to the provider; ``path`` is relative to ``base_url``."""

    path: str
    json: Any = None  # a JSON body (encoded by orjson: may hold orjson.Fragment), or
    form: Mapping[str, str | Sequence[str]] | None = None  # form fields (repeated = list)
    files: Mapping[str, tuple[str, bytes, str]] | None = None  # name -> (filename, data, type)
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """The provider's answer, without httpx: status, headers (lower-case names), body."""

    status: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> Any:
        """The body parsed as JSON; ``None`` when it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    def compact(self) -> str:
        """The body as compact JSON (or the text), cut to a size fit for ``detail``."""
        parsed = self.json()
        return compact(self.text if parsed is None else parsed)


class QueryFailed(Exception):
    """A reconciliation query got no usable answer (stays inside the transports: the
    item it was for stays undecided)."""


MAX_RETRY_AFTER = 86_400.0  # seconds: a longer Retry-After is read as a day


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` (RFC 9110 10.2.3: seconds or an HTTP date) in seconds, from 0
    to :data:`MAX_RETRY_AFTER`. Not a number (``inf``, ``nan``): None. A provider's
    answer sets the gate every request of the transport waits behind, so no value
    it sends may hold that gate shut for ever. Lenient: any number ``float()`` reads
    (``"2.5"``; a negative one is 0), as providers have been read all along."""
    return retry.retry_after(value, now=now, lenient=True, cap=MAX_RETRY_AFTER)


def compact(value: Any) -> str:
    """Compact JSON for a JSON value, the text itself for a string; cut for ``detail``."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 1] + "…"


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
