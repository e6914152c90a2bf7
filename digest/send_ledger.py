"""The send run's ledger writes, committed in groups.

Every batch is marked ``sending`` and committed before it goes out, and its
answers are recorded after. With SMTP's one message a batch that was one SQLite
transaction per message on the event loop, while every connection waited: the
largest cost of a send (docs/BENCHMARKS.md).

:class:`GroupCommit` runs in one task. A worker hands it its request: record the
batch it just sent, and mark its next batch. The task lets every other worker that
is ready at the same moment add its request, then applies them all in one
transaction and wakes each worker with its own rows. No worker sends before its
mark is committed, so a crash still leaves at most ``concurrency × max_batch``
messages in doubt; there are simply fewer commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection, Engine
from sqlmodel import Session

from digest import deliveries
from digest.deliveries import Recipient, RetryPolicy
from digest.transports.base import Outcome, OutgoingMessage, SendResult
from subscribers import lifecycle
from subscribers.models import ConsentSource

Clock = Callable[[], datetime]


class Tally(Protocol):
    """The part of the run's report the ledger counts into."""

    sent: int
    failed: int
    skipped: int
    retried: int


@dataclass(slots=True)
class Batch:
    """One batch between marking and recording: what was marked and built."""

    chosen: list[Recipient]  # the rows marked ``sending``
    attempts: dict[int, int]
    messages: list[OutgoingMessage]
    results: list[SendResult] = field(default_factory=list)
    bounced: bool = False  # some answer was a hard bounce (suppress after recording)


@dataclass(frozen=True, slots=True)
class Writer:
    """How answers are stored: the run's engine, transport kind, policy and owner."""

    engine: Engine
    transport: str
    retry: RetryPolicy
    clock: Clock
    owner: str
    lease: timedelta
    started_at: Callable[[], datetime | None]
    report: Tally

    def record(self, batch: Batch) -> None:
        """Record a sent batch's answers on their own, in one transaction."""
        now = self.clock()
        with self.engine.begin() as conn:
            self.store(conn, batch, now)
        self.after_record(batch, now)

    def store(self, conn: Connection, batch: Batch, now: datetime) -> None:
        tally = deliveries.record(
            conn,
            results=batch.results,
            attempts=batch.attempts,
            transport=self.transport,
            policy=self.retry,
            now=now,
            started_at=self.started_at(),
        )
        report = self.report
        report.sent += tally.get("sent", 0)
        report.failed += tally.get("failed", 0)
        report.skipped += tally.get("skipped", 0)
        report.retried += tally.get("queued", 0)
        batch.bounced = bool(tally.get("bounced"))

    def after_record(self, batch: Batch, now: datetime) -> None:
        """Hard bounces among the answers just recorded suppress their readers."""
        if batch.bounced:
            suppress_hard_bounces(self.engine, batch.results, batch.chosen, now)


_Request = tuple[Batch | None, list[Recipient] | None, "asyncio.Future[dict[int, int]]"]


class GroupCommit:
    """Marks and records from every worker that is ready at once, in one transaction."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self._pending: list[_Request] = []
        self._wakeup = asyncio.Event()

    async def commit(self, previous: Batch | None, batch: list[Recipient] | None) -> dict[int, int]:
        """Record ``previous`` and mark ``batch`` sending; return ``{delivery id:
        attempt}`` for the rows of ``batch`` that may be sent now."""
        future: asyncio.Future[dict[int, int]] = asyncio.get_running_loop().create_future()
        self._pending.append((previous, batch, future))
        self._wakeup.set()
        return await future

    async def serve(self) -> None:
        """Apply requests as they come, until cancelled."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # Let every worker that is ready at this moment add its request. Waiting
            # longer for the sends still in flight (up to 2 ms) made the connections
            # move in lockstep: 1,000 instead of 1,430 messages/s (docs/BENCHMARKS.md).
            await asyncio.sleep(0)
            requests, self._pending = self._pending, []
            if not requests:
                continue
            try:
                answers = self._apply(requests)
            except Exception as exc:
                for *_, future in requests:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (*_, future), answer in zip(requests, answers, strict=True):
                if not future.done():  # its worker may have been cancelled
                    future.set_result(answer)

    def _apply(self, requests: Sequence[_Request]) -> list[dict[int, int]]:
        writer = self.writer
        now = writer.clock()
        ids = [r.delivery_id for _, batch, _ in requests if batch for r in batch]
        with writer.engine.begin() as conn:
            for previous, _, _ in requests:
                if previous is not None:
                    writer.store(conn, previous, now)
            attempts = (
                deliveries.mark_sending(
                    conn, ids=ids, owner=writer.owner, now=now, lease=writer.lease
                )
                if ids
                else {}
            )
        for previous, _, _ in requests:
            if previous is not None:
                writer.after_record(previous, now)
        return [
            {r.delivery_id: attempts[r.delivery_id] for r in batch if r.delivery_id in attempts}
            if batch
            else {}
            for _, batch, _ in requests
        ]


def suppress_hard_bounces(
    engine: Engine, results: Sequence[SendResult], chosen: Sequence[Recipient], now: datetime
) -> None:
    """A 5.1.x refusal at send time is a hard bounce: suppress the reader at once."""
    readers = {r.delivery_id: r.subscriber_id for r in chosen}
    with Session(engine) as session, session.begin():
        for result in results:
            if result.outcome is Outcome.rejected and deliveries.is_hard_bounce(result.detail):
                lifecycle.record_bounce(
                    session,
                    subscriber_id=readers[result.delivery_id],
                    hard=True,
                    detail=result.detail,
                    now=now,
                    source=ConsentSource.smtp,
                )
