"""Retrying, one way for every adapter: reading ``Retry-After``, backing off, the loop.

- :func:`retry_after` reads a ``Retry-After`` header (RFC 9110 §10.2.3). The feed
  reads it as the RFC writes it; the provider transports read it leniently and cap
  it (each keeps a one-line wrapper that names its choice:
  :func:`digest.feeds.http_get.retry_after_seconds`, :func:`digest.transports.api.retry_after`).
- :class:`Backoff` is exponential backoff with jitter: "full" (the feed: a random
  wait up to the ceiling) or "equal" (the providers and the delivery ledger: half
  the ceiling to all of it), optionally capped.
- :func:`retry` runs an attempt up to *n* times; an attempt that may be tried again
  raises :class:`Again` saying why and how long to wait. The caller decides what
  is final, what is retried and what giving up returns or raises; the loop owns the
  count, the waits (through the caller's ``sleep``, which tests replace) and a
  deadline.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal, TypeVar

T = TypeVar("T")
Jitter = Literal["full", "equal"]


def retry_after(
    value: str | None,
    *,
    now: datetime | None = None,
    lenient: bool = False,
    cap: float | None = None,
) -> float | None:
    """Seconds to wait for a ``Retry-After`` value, or None when it is unusable.

    - ``None``, blank or unreadable: None.
    - Delta-seconds (``"120"``, one or more digits): that many seconds. With
      ``lenient``, any number ``float()`` reads (``"2.5"``, ``"-5"``, ``"1e3"``),
      a negative one meaning 0; without, ``"2.5"`` or ``"-5"`` is unreadable.
    - An HTTP-date (any RFC 5322 date; without a zone, UTC): the seconds from ``now``
      (default: the current time) to it; a date in the past means 0.
    - Not finite: with ``lenient``, ``"inf"``, ``"nan"``, ``"1e400"`` and digits too
      many for a float are None (no value may hold a wait for ever). Without, digits
      too many for a float are ``inf``: a wait longer than any limit, which the
      caller refuses as too long.
    - ``cap``: a longer wait is read as ``cap``.
    """
    text = (value or "").strip()
    if not text:
        return None
    seconds: float | None = None
    if lenient or text.isdigit():
        try:
            seconds = float(text)
        except ValueError:  # not a number (or digits float() cannot read, such as "²")
            seconds = None
        if seconds is not None and lenient and not math.isfinite(seconds):
            return None
    if seconds is None:
        seconds = _seconds_until(text, now)
        if seconds is None:
            return None
    seconds = max(seconds, 0.0)
    return seconds if cap is None else min(seconds, cap)


def _seconds_until(text: str, now: datetime | None) -> float | None:
    """Seconds from ``now`` to the date ``text`` (negative when past), or None."""
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322 for "UTC, zone unknown"
        when = when.replace(tzinfo=UTC)
    return (when - (now if now is not None else datetime.now(UTC))).total_seconds()


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt *n* (from 1) has the ceiling
    ``base × 2^(n−1)``, at most ``cap``. ``"full"`` jitter waits a random time from 0
    to the ceiling (AWS Architecture Blog, "Exponential Backoff and Jitter": spreads
    many clients' retries over the window); ``"equal"`` waits the ceiling times a
    random factor from 0.5 to 1."""

    base: float
    cap: float = math.inf
    jitter: Jitter = "full"

    def ceiling(self, attempt: int) -> float:
        """The longest wait after attempt ``attempt``."""
        doubled: float = self.base * 2 ** (attempt - 1)
        return min(doubled, self.cap)

    def delay(self, attempt: int) -> float:
        """A random wait after attempt ``attempt`` (jitter, not crypto)."""
        ceiling = self.ceiling(attempt)
        if self.jitter == "full":
            return random.uniform(0, ceiling)  # noqa: S311
        return float(ceiling * (0.5 + random.random() / 2))  # noqa: S311


class Again(Exception):
    """An attempt failed in a way worth another try: ``detail`` says how. ``wait``:
    seconds to wait first (None: the :class:`Backoff` delay). ``held``: something
    else (a provider's shared "not before" gate) holds the next attempt back, so
    :func:`retry` does not wait."""

    def __init__(self, detail: str, wait: float | None = None, *, held: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.wait = wait
        self.held = held


async def retry(
    attempt: Callable[[int], Awaitable[T]],
    *,
    attempts: int,
    backoff: Backoff,
    sleep: Callable[[float], Awaitable[None]],
    exhausted: Callable[[Again], T],
    time_left: Callable[[], float] | None = None,
    late: Callable[[Again], T] | None = None,
) -> T:
    """Await ``attempt(1)``, ``attempt(2)``, … at most ``attempts`` times.

    What an attempt returns is returned; what it raises, but :class:`Again`, goes
    through. After an ``Again``, and unless that was the last attempt, waits
    (``sleep``) as it asks, then tries again. After the last: ``exhausted(last)``.
    With ``time_left``, a wait that would not end before the time left (``wait >=
    time_left()``) is not started: ``late(again)`` instead (default ``exhausted``).
    ``exhausted`` and ``late`` may raise.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts!r}")
    for number in range(1, attempts + 1):
        try:
            return await attempt(number)
        except Again as again:
            last = again
        if number == attempts:
            break
        if last.held:
            continue
        wait = backoff.delay(number) if last.wait is None else last.wait
        if time_left is not None and wait >= time_left():
            return (late or exhausted)(last)
        await sleep(wait)
    return exhausted(last)
