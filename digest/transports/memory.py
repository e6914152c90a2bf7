"""A transport that keeps messages in memory: for tests, previews and benchmarks.

Outcomes can be scripted per recipient address (``reject``, ``defer``, ``fail``,
``unknown``); everyone else is ``sent``. ``unavailable`` makes :meth:`open` and
every send raise :class:`~digest.errors.TransportUnavailable`.

It is also a :class:`~digest.transports.base.Reconciler`: :meth:`reconcile` answers
``queued`` for the addresses in ``reconcile_found`` (as a provider's search that
finds a message in doubt) and leaves the others out; ``reconciled`` records what
it was asked about.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

from digest.common import options
from digest.common.options import KEY_MUST
from digest.errors import TransportUnavailable
from digest.transports.base import InDoubt, Outcome, OutgoingMessage, SendResult


class MemoryTransport:
    kind: ClassVar[str] = "memory"

    def __init__(
        self,
        *,
        reject: Sequence[str] = (),
        defer: Sequence[str] = (),
        fail: Sequence[str] = (),
        unknown: Sequence[str] = (),
        reconcile_found: Sequence[str] = (),
        concurrency: int = 1,
        max_batch: int = 200,
        delay: float = 0.0,
        unavailable: bool = False,
    ) -> None:
        for name, value in (("concurrency", concurrency), ("max_batch", max_batch)):
            options.count(name, value, style=KEY_MUST)
        options.number("delay", delay, finite=False, unit="seconds", style=KEY_MUST)
        self._script: dict[str, Outcome] = {}
        for outcome, addresses in (
            (Outcome.rejected, reject),
            (Outcome.deferred, defer),
            (Outcome.failed, fail),
            (Outcome.unknown, unknown),
        ):
            self._script.update(dict.fromkeys((a.lower() for a in addresses), outcome))
        self._found = {a.lower() for a in reconcile_found}
        self.reconciled: list[InDoubt] = []  # every item reconcile was asked about
        self._concurrency = concurrency
        self._max_batch = max_batch
        self.delay = float(delay)
        self.unavailable = unavailable
        self.sent: list[OutgoingMessage] = []  # answered ``sent``, in order
        self.handed: list[OutgoingMessage] = []  # every message passed to send_batch
        self.results: list[SendResult] = []
        self.batches = 0
        self.opened = False
        self.closed = False

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def max_batch(self) -> int:
        return self._max_batch

    async def open(self) -> None:
        if self.unavailable:
            raise TransportUnavailable("memory transport scripted as unavailable")
        self.opened = True

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """One result per message; raises ``ValueError`` for a batch over ``max_batch``."""
        if len(messages) > self._max_batch:
            raise ValueError(f"batch of {len(messages)} is over max_batch={self._max_batch}")
        if self.unavailable:
            raise TransportUnavailable("memory transport scripted as unavailable")
        if self.delay:
            await asyncio.sleep(self.delay)
        self.batches += 1
        results = [self._one(message) for message in messages]
        self.results.extend(results)
        return results

    async def close(self) -> None:
        self.closed = True

    async def reconcile(self, items: Sequence[InDoubt]) -> list[SendResult]:
        """``queued`` for the items whose address is in ``reconcile_found``."""
        if self.unavailable:
            raise TransportUnavailable("memory transport scripted as unavailable")
        self.reconciled.extend(items)
        return [
            SendResult(i.delivery_id, Outcome.queued, f"mem-found-{i.delivery_id}", "found")
            for i in items
            if i.recipient.lower() in self._found
        ]

    def _one(self, message: OutgoingMessage) -> SendResult:
        self.handed.append(message)
        outcome = self._script.get(message.recipient.lower(), Outcome.sent)
        if outcome is Outcome.sent:
            self.sent.append(message)
            return SendResult(message.delivery_id, outcome, provider_id=f"mem-{len(self.sent)}")
        return SendResult(message.delivery_id, outcome, detail=f"scripted {outcome.value}")
