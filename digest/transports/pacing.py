"""Pacing shared by every connection of a transport: an async token bucket, and the
provider transports' :class:`Gate` (a "not before" instant plus their buckets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """Hands out at most ``rate`` tokens per second, with bursts up to ``burst``.

    ``rate <= 0`` means unlimited: :meth:`acquire` returns at once. Waiters are
    served in arrival order (one lock), so no connection starves. ``clock`` and
    ``sleep`` can be replaced in tests; ``granted`` counts tokens handed out.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = burst
        self.granted = 0
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until a token is available and take it."""
        if self.rate <= 0:
            self.granted += 1
            return
        async with self._lock:
            self._refill()
            if self._tokens < 1:
                await self._sleep((1 - self._tokens) / self.rate)
                self._refill()
            self._tokens = max(self._tokens - 1, 0.0)
            self.granted += 1

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now


class Gate:
    """When a provider transport's next request may leave, for sends and searches
    alike: not before :attr:`not_before` (``time.monotonic()``; a ``Retry-After``
    holds every request back until it passes), then a token from the ``requests``
    bucket and one from the ``messages`` bucket per message (rates per second,
    0 = unlimited; ``burst``: the messages bucket's, a whole batch)."""

    def __init__(
        self, *, requests_per_second: float, messages_per_second: float, burst: int
    ) -> None:
        self.messages = TokenBucket(messages_per_second, burst=burst)
        self.requests = TokenBucket(requests_per_second)
        self.not_before = 0.0  # time.monotonic() before which nothing is sent

    def hold(self, seconds: float) -> None:
        """Let nothing leave for ``seconds`` from now (a hold is never shortened)."""
        self.not_before = max(self.not_before, time.monotonic() + seconds)

    async def wait_turn(self, count: int) -> None:
        """Wait out the gate, then take the tokens for one request of ``count`` messages."""
        while (delay := self.not_before - time.monotonic()) > 0:  # Retry-After gate
            await asyncio.sleep(delay)
        await self.requests.acquire()
        for _ in range(count):
            await self.messages.acquire()
        while (delay := self.not_before - time.monotonic()) > 0:  # set while pacing
            await asyncio.sleep(delay)
