"""Per-client sign-up limit: an in-memory sliding window, per process.

In memory on purpose: it only has to blunt a script hammering the form, and a
restart forgiving everyone is harmless (the confirmation email itself is limited
per address in the database, ``[web] confirm_resend_minutes``). Several web
processes each allow the configured rate.

The client is the request's client address (:func:`client_ip`): the socket's
peer, or, when that peer is one of ``[web] trusted_proxies``, what uvicorn's
``ProxyHeadersMiddleware`` (installed by :func:`digest.web.app.create_app`) took
from ``X-Forwarded-For``: the right-most address that is not a trusted proxy. The
left-most entries are whatever the client wrote and are never believed.
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
            wait = self._wait(key, now)
            if wait is None:
                self._record(key, now)
            return wait

    def _wait(self, key: str, now: float) -> int | None:
        """Seconds until ``key`` may have another event (None: now), counting nothing."""
        events = self._events.get(key)
        if events is None:
            return None
        while events and events[0] <= now - self.window:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        if len(events) < self.limit:
            return None
        return max(1, math.ceil(events[0] + self.window - now))

    def _record(self, key: str, now: float) -> None:
        self._events.setdefault(key, deque()).append(now)
        self._events.move_to_end(key)  # the most recently counted key
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)


class FailedAttempts(SlidingWindow):
    """Failed credential checks per client: only failures count, and a client at
    ``limit`` failures is refused every credential attempt (:meth:`blocked`), even
    a correct one, until its oldest failure leaves the window."""

    def blocked(self, key: str) -> int | None:
        """None when ``key`` may try a credential, else whole seconds to wait."""
        with self._lock:
            return self._wait(key, self.clock())

    def attempt(self, key: str, ok: bool) -> int | None:
        """One credential check whose result was ``ok``: None to answer it on its
        merits (a failure is counted), else seconds to wait (nothing counted)."""
        now = self.clock()
        with self._lock:
            wait = self._wait(key, now)
            if wait is None and not ok:
                self._record(key, now)
            return wait


def client_ip(request: Request) -> str:
    """The client's address as this app believes it (see module docstring): the
    same value feeds every rate limit and the consent log."""
    return request.client.host[:64] if request.client is not None else ""
