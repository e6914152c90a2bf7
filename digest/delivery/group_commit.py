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

Every write is fenced by the claim that holds the rows (:mod:`digest.delivery.claims`,
:mod:`digest.delivery.marks`, :mod:`digest.delivery.answers`).
:class:`Holdings` tracks which rows this sender holds under which claim token;
rows a statement no longer finds held are *lost* (another sender took them after
this one's lease expired): they are not sent, the loss is logged, and the run
stops (its report says it was interrupted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection, Engine

from digest.delivery import answers, marks, refusals
from digest.delivery.ledger import Recipient, RetryPolicy
from digest.transports.base import Outcome, OutgoingMessage, SendResult

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)


class Tally(Protocol):
    """The part of the run's report the ledger counts into."""

    sent: int
    failed: int
    skipped: int
    retried: int
    unknown: int  # answers recorded ``unknown`` (maybe delivered): resolved later
    late: int  # answers that came after the row was lost: logged, not stored


class Holdings:
    """The rows this sender holds (delivery id → claim token) and how many it lost."""

    def __init__(self, owner: str = "") -> None:
        self.owner = owner
        self.rows: dict[int, int] = {}
        self.lost = 0

    def take(self, rows: Iterable[Recipient]) -> None:
        self.rows.update((r.delivery_id, r.token) for r in rows)

    def drop(self, ids: Iterable[int]) -> None:
        for i in ids:
            self.rows.pop(i, None)

    def lose(self, ids: Iterable[int], when: str) -> None:
        """Rows another sender took after this one's lease expired: never send them."""
        gone = list(ids)
        if not gone:
            return
        self.drop(gone)
        self.lost += len(gone)
        log.warning(
            "sender %s lost its lease on %d deliveries (found %s; another sender holds them "
            "now): not sending them, stopping",
            self.owner,
            len(gone),
            when,
        )


@dataclass(slots=True)
class Batch:
    """One batch between marking and recording: what was marked and built."""

    chosen: list[Recipient]  # the rows marked ``sending``
    attempts: dict[int, int]
    messages: list[OutgoingMessage]
    results: list[SendResult] = field(default_factory=list)
    bounced: bool = False  # some answer was a hard bounce (suppress after recording)

    @property
    def token(self) -> int:
        """The claim all its rows came from (one claim per batch)."""
        return self.chosen[0].token if self.chosen else 0


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
    holdings: Holdings

    def record(self, batch: Batch) -> None:
        """Record a sent batch's answers on their own, in one transaction."""
        now = self.clock()
        with self.engine.begin() as conn:
            self.store(conn, batch, now)
        self.after_record(batch, now)

    def store(self, conn: Connection, batch: Batch, now: datetime) -> None:
        recorded = answers.record(
            conn,
            results=batch.results,
            attempts=batch.attempts,
            owner=self.owner,
            token=batch.token,
            transport=self.transport,
            policy=self.retry,
            now=now,
            lease=self.lease,
            started_at=self.started_at(),
        )
        tally = recorded.tally
        report = self.report
        report.sent += tally.get("sent", 0)
        report.failed += tally.get("failed", 0)
        report.skipped += tally.get("skipped", 0)
        report.retried += tally.get("queued", 0)
        report.unknown += tally.get("unknown", 0)
        batch.bounced = bool(tally.get("bounced"))
        # ``unknown`` rows stay held (this sender resolves them); the rest are done.
        unknown = {r.delivery_id for r in batch.results if r.outcome is Outcome.unknown}
        late = [r.delivery_id for r in recorded.late]
        report.late += len(late)
        self.holdings.drop(r.delivery_id for r in batch.chosen if r.delivery_id not in unknown)
        self.holdings.lose(late, "recording the answers")

    def after_record(self, batch: Batch, now: datetime) -> None:
        """Refusals among the answers just recorded that say the address is dead (a
        5.1.x status, Postmark's 406 "inactive recipient") suppress their readers at
        once; a 5.7.x policy refusal suppresses nobody (:mod:`digest.delivery.refusals`)."""
        if batch.bounced:
            refusals.suppress_refused(self.engine, batch.results, batch.chosen, now)


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
        rows = [(r.delivery_id, r.token) for _, batch, _ in requests if batch for r in batch]
        with writer.engine.begin() as conn:
            for previous, _, _ in requests:
                if previous is not None:
                    writer.store(conn, previous, now)
            marked = (
                marks.mark_sending(conn, rows=rows, owner=writer.owner, now=now, lease=writer.lease)
                if rows
                else marks.Marked({}, {})
            )
        for previous, _, _ in requests:
            if previous is not None:
                writer.after_record(previous, now)
        return [self._sort_out(batch or [], marked) for _, batch, _ in requests]

    def _sort_out(self, batch: list[Recipient], marked: marks.Marked) -> dict[int, int]:
        """``{delivery id: attempt}`` for the rows of ``batch`` marked under its own
        claim; count the skipped ones, and lose the rest (another sender, or a newer
        claim of this one, holds them)."""
        attempts: dict[int, int] = {}
        skipped: list[int] = []
        lost: list[int] = []
        for r in batch:
            got = marked.sending.get(r.delivery_id)
            if got is not None and got[1] == r.token:
                attempts[r.delivery_id] = got[0]
            elif marked.skipped.get(r.delivery_id) == r.token:
                skipped.append(r.delivery_id)
            else:
                lost.append(r.delivery_id)
        writer = self.writer
        writer.report.skipped += len(skipped)
        writer.holdings.drop(skipped)
        writer.holdings.lose(lost, "marking them sending")
        return attempts
