"""Per-client sign-up limit: an in-memory sliding window, per process.

In memory on purpose: it only has to blunt a script hammering the form, and a
restart forgiving everyone is harmless (the confirmation email itself is limited
per address in the database, ``[web] confirm_resend_minutes``). Several web
processes each allow the configured rate.

The client is the socket's peer address, or, only when ``[web]
trust_forwarded_for`` is true (behind a reverse proxy that sets it), the first
``X-Forwarded-For`` entry. Trusting that header without a proxy would let anyone
pick a fresh "address" per request.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from starlette.requests import Request

MAX_CLIENTS = 10_000  # bounded memory: the least recently seen client is forgotten


class SlidingWindow:
    """At most ``limit`` events per ``window`` seconds per key."""

    def __init__(
        self,
        limit: int,
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_CLIENTS,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()  # handlers may run in a thread pool

    def hit(self, key: str) -> int | None:
        """Count one event for ``key``. Returns None when allowed, else the whole
        number of seconds until the next event would be allowed (for Retry-After)."""
        now = self.clock()
        with self._lock:
            events = self._events.pop(key, None) or deque()
            while events and events[0] <= now - self.window:
                events.popleft()
            self._events[key] = events  # now the most recently seen key
            if len(events) >= self.limit:
                return max(1, math.ceil(events[0] + self.window - now))
            events.append(now)
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)
            return None


def client_ip(request: Request, *, trust_forwarded_for: bool) -> str:
    """The client's address as this app should believe it (see module docstring)."""
    if trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        first = forwarded.split(",", 1)[0].strip()
        if first:
            return first[:64]
    return request.client.host if request.client is not None else ""
