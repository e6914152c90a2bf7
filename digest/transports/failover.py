"""Failover: a secondary transport takes over while the primary is throttling or down.

Configured by a ``[failover]`` table (a second transport, same keys as
``[transport]``, plus ``cooldown_seconds``). A batch goes to the primary unless
it is cooling down; when the primary cannot be reached (TransportUnavailable)
or defers a whole batch, the primary cools down for ``cooldown_seconds`` and
the messages it *definitely* did not take (deferred) go to the secondary at
once. Messages whose fate is unknown are never handed to the secondary, so
failover cannot double a delivery. Each result names the transport that
answered, and the ledger records it per row.

:meth:`FailoverTransport.reconcile` asks both transports that can be asked (the
primary first, then the secondary about what the primary did not account for): an
unknown message went out through exactly one of them, and a provider only reports
messages it has, so asking the other one cannot confirm a wrong message. A transport
that cannot be asked (``TransportUnavailable``) is skipped; if none could be asked,
the last refusal is raised.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar

from digest.errors import TransportUnavailable
from digest.transports.base import InDoubt, Outcome, OutgoingMessage, SendResult, Transport

log = logging.getLogger(__name__)

Reconcile = Callable[[Sequence[InDoubt]], Awaitable[list[SendResult]]]  # Reconciler.reconcile


class FailoverTransport:
    kind: ClassVar[str] = "failover"

    def __init__(self, primary: Transport, secondary: Transport, *, cooldown: float) -> None:
        self.primary, self.secondary = primary, secondary
        self.cooldown = cooldown
        self._primary_back_at = 0.0  # time.monotonic() when the primary is tried again

    @property
    def concurrency(self) -> int:
        return self.primary.concurrency

    @property
    def max_batch(self) -> int:
        return self.primary.max_batch

    async def open(self) -> None:
        try:
            await self.primary.open()
        except TransportUnavailable as exc:
            self._cool_down(f"primary unavailable at start: {exc}")
        await self.secondary.open()

    async def close(self) -> None:
        await self.primary.close()
        await self.secondary.close()

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if time.monotonic() < self._primary_back_at:
            return await self._secondary(messages)
        try:
            results = await self.primary.send_batch(messages)
        except TransportUnavailable as exc:
            self._cool_down(str(exc))
            return await self._secondary(messages)
        results = [self._named(r, self.primary) for r in results]
        deferred = [r for r in results if r.outcome is Outcome.deferred]
        if not deferred or len(deferred) < len(results):
            return results
        self._cool_down(f"primary deferred a whole batch: {deferred[-1].detail}")
        again = {r.delivery_id: r for r in await self._secondary(messages)}
        return [again.get(r.delivery_id, r) for r in results]

    async def reconcile(self, items: Sequence[InDoubt]) -> list[SendResult]:
        """What either transport accounts for (see the module docstring), in the items'
        order, each result naming its transport."""
        found: dict[int, SendResult] = {}
        refusal: TransportUnavailable | None = None
        asked = False
        for transport in (self.primary, self.secondary):
            ask: Reconcile | None = getattr(transport, "reconcile", None)
            left = [i for i in items if i.delivery_id not in found]
            if ask is None or not left:
                continue
            try:
                answers = await ask(left)
            except TransportUnavailable as exc:
                log.warning(
                    "failover: cannot ask %s about unknown messages: %s", transport.kind, exc
                )
                refusal = exc
                continue
            asked = True
            found.update((r.delivery_id, self._named(r, transport)) for r in answers)
        if refusal is not None and not asked:
            raise refusal
        return [found[i.delivery_id] for i in items if i.delivery_id in found]

    async def _secondary(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        results: list[SendResult] = []
        step = self.secondary.max_batch
        for i in range(0, len(messages), step):
            chunk = await self.secondary.send_batch(messages[i : i + step])
            results += [self._named(r, self.secondary) for r in chunk]
        return results

    def _cool_down(self, why: str) -> None:
        if time.monotonic() >= self._primary_back_at:
            log.warning(
                "failover: using %s for %.0f s (%s)", type(self.secondary).kind, self.cooldown, why
            )
        self._primary_back_at = time.monotonic() + self.cooldown

    @staticmethod
    def _named(result: SendResult, transport: Transport) -> SendResult:
        return dataclasses.replace(result, transport=result.transport or type(transport).kind)
