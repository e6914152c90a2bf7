"""Work through an edition's delivery ledger with a transport.

One run holds the edition's send lease (so a second ``digest send`` or a cron run
cannot work the same edition), plans the ledger once, resolves rows a dead run
left in doubt, then feeds batches of due rows to ``transport.concurrency``
workers. Each worker marks its batch ``sending`` and commits, calls the
transport, and records the answers: at most ``concurrency × max_batch`` messages
are ever in doubt. Deferred rows come back when due, within
``[send] max_retry_wait_seconds``; after that the run stops and leaves them queued
for the next run. The edition is ``sent`` only when no row is pending.

Local delivery time (``SendOptions.local_due``): when the run plans the ledger it
also sets each row's due time from its reader's zone (:mod:`digest.localtime`);
rows not yet due are not claimed, and are waited for like deferred rows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, select

from digest import deliveries, leases
from digest.deliveries import Recipient, RetryPolicy
from digest.errors import TransportError
from digest.models import Edition, EditionStatus
from digest.segments import Skip
from digest.send_ledger import Batch, GroupCommit, Writer
from digest.transports.base import Outcome, OutgoingMessage, SendResult, Transport, batch_key

MessageFactory = Callable[[Sequence[Recipient], datetime], list[OutgoingMessage | Skip]]
Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class SendOptions:
    batch_size: int
    retry: RetryPolicy
    max_retry_wait: float
    lease_ttl: float = 120.0
    pause_error_share: float = 0.5  # pause the edition when this share of …
    pause_window: int = 200  # … the last answers (not counting deferrals) failed
    slow_down_after: int = 20  # consecutive deferred answers that make every worker wait
    max_slow_down: float = 60.0  # seconds: the longest such wait
    # Local delivery time: zone name → when its readers' rows are due (None = at once),
    # applied when the ledger is planned; None = every row due at once.
    local_due: Callable[[str], datetime | None] | None = None


@dataclass(slots=True)
class SendReport:
    edition_key: str
    planned: int = 0
    recovered: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    retried: int = 0
    throttled: int = 0  # times the run slowed down for a throttling server
    pending_at_start: int = 0  # rows still to do when this run began
    pending: int = 0
    finished: bool = False
    stopped_reason: str = ""
    error: str = ""  # set when the transport failed: the run ends with exit 1
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


class _Run:
    """State shared by the producer and the workers of one send run.

    Throttling slows the run down rather than failing readers: a ``Retry-After``
    from the transport, or ``slow_down_after`` deferrals in a row, make every
    worker wait (doubling up to ``max_slow_down`` while the deferrals go on).
    """

    def __init__(
        self,
        report: SendReport,
        options: SendOptions,
        *,
        owner: str = "",
        exclusive: bool = True,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.report = report
        self.options = options
        self.owner = owner
        self.exclusive = exclusive
        self.stop_event = stop
        self.window: collections.deque[bool] = collections.deque(maxlen=options.pause_window)
        self.pause_note = ""  # set when the error share calls for pausing the edition
        self.streak = 0
        self.pause = 0.0
        self.not_before = 0.0  # time.monotonic() before which no worker sends
        self._stop = False
        self.started_at: datetime | None = None
        self.edition_id = 0  # when the edition began sending

    def observe(self, results: Sequence[SendResult]) -> None:
        now = time.monotonic()
        for result in results:
            if result.outcome is not Outcome.deferred:
                self.window.append(result.outcome not in (Outcome.sent, Outcome.queued))
            if result.outcome in (Outcome.sent, Outcome.queued):
                self.streak, self.pause = 0, 0.0
            elif result.outcome is Outcome.deferred:
                self.streak += 1
                if result.retry_after:
                    self.not_before = max(self.not_before, now + result.retry_after)
        errors = sum(self.window)
        window = self.window.maxlen or 0
        if (
            not self.pause_note
            and len(self.window) == window
            and errors >= self.options.pause_error_share * window
        ):
            last = next((r.detail for r in reversed(results) if r.detail), "")
            self.pause_note = (
                f"paused automatically: {errors} of the last {window} messages failed "
                f"(last answer: {last or 'none'}); fix the cause, then 'digest resume'"
            )
            self.report.error = self.pause_note
            self.stop = True
        if self.streak >= self.options.slow_down_after:
            self.pause = min(max(self.pause * 2, 1.0), self.options.max_slow_down)
            self.not_before = max(self.not_before, now + self.pause)
            self.streak = 0
            self.report.throttled += 1

    @property
    def stop(self) -> bool:
        return self._stop or (self.stop_event is not None and self.stop_event.is_set())

    @stop.setter
    def stop(self, value: bool) -> None:
        self._stop = value

    def throttled_for(self) -> float:
        """Seconds every worker must still wait (0: none)."""
        return max(self.not_before - time.monotonic(), 0.0)

    async def wait_if_throttled(self) -> None:
        delay = self.throttled_for()
        if delay > 0:
            await asyncio.sleep(delay)


async def send_edition(
    engine: Engine,
    *,
    edition: Edition,
    transport: Transport,
    build_messages: MessageFactory,
    options: SendOptions,
    clock: Clock,
    owner: str,
    progress: Callable[[SendReport], None] | None = None,
    stop: asyncio.Event | None = None,
) -> SendReport:
    """Send ``edition`` to every planned reader.

    On SQLite the run is *exclusive*: it holds the edition's send lease, and a
    second sender gets ``LeaseHeld``. On PostgreSQL any number of senders (``digest
    send``, ``digest worker``) cooperate through row leases. Setting ``stop``
    (SIGTERM) ends claiming, lets in-flight sends finish and gives unsent rows
    back. Raises ``TransportUnavailable`` if the transport cannot open.
    """
    assert edition.id is not None
    report = SendReport(edition.key)
    exclusive = engine.dialect.name == "sqlite"
    name = f"send:{edition.key}"
    ttl = timedelta(seconds=options.lease_ttl)
    if exclusive:
        leases.acquire(engine, name=name, owner=owner, ttl=ttl, now=clock())
    heartbeat = asyncio.create_task(_renew(engine, name, owner, ttl, clock, exclusive))
    run = _Run(report, options, owner=owner, exclusive=exclusive, stop=stop)
    run.edition_id = edition.id
    try:
        run.started_at = _prepare(engine, edition.id, run, clock())
        await transport.open()
        try:
            await _drain(
                engine,
                edition.id,
                transport,
                build_messages,
                options,
                clock,
                run,
                progress,
            )
        finally:
            await transport.close()
        _conclude(engine, edition.id, clock(), report)
    finally:
        heartbeat.cancel()
        with engine.begin() as conn:
            deliveries.release(conn, owner=owner)
        if exclusive:
            leases.release(engine, name=name, owner=owner)
        report.elapsed = time.monotonic() - report.started
    return report


def _prepare(engine: Engine, edition_id: int, run: _Run, now: datetime) -> datetime:
    """Plan the ledger once, resolve rows in doubt; return when sending began."""
    report = run.report
    E = deliveries.E
    with engine.begin() as conn:
        planned_at, planned = conn.execute(
            select(E.c.planned_at, E.c.planned_count).where(E.c.id == edition_id)
        ).one()
        if planned_at is None:
            planned = deliveries.plan(
                conn, edition_id=edition_id, now=now, due_for=run.options.local_due
            )
            planned_at = now
        report.planned = int(planned)
        report.recovered = _recover(conn, edition_id, run, now)
        tally = deliveries.counts(conn, edition_id=edition_id)
    report.pending_at_start = sum(tally.get(s, 0) for s in deliveries.PENDING)
    assert isinstance(planned_at, datetime)
    return planned_at


def _conclude(engine: Engine, edition_id: int, now: datetime, report: SendReport) -> None:
    with engine.begin() as conn:
        report.finished = deliveries.finish_if_done(conn, edition_id=edition_id, now=now)
        tally = deliveries.counts(conn, edition_id=edition_id)
    report.pending = sum(tally.get(s, 0) for s in deliveries.PENDING)


def _recover(conn: Connection, edition_id: int, run: _Run, now: datetime) -> int:
    """Take back what dead senders held: their claimed rows are freed, their rows in
    ``sending`` resolved by policy. An exclusive run (the edition lease) knows every
    other sender is dead; otherwise only senders known dead on this host, and
    leases that expired, count."""
    dead = [
        o
        for o in deliveries.lease_owners(conn, edition_id=edition_id)
        if o != run.owner and leases.holder_is_dead(o)
    ]
    deliveries.release_claims(
        conn, edition_id=edition_id, owners=None if run.exclusive else dead, keep=run.owner
    )
    return deliveries.recover(
        conn,
        edition_id=edition_id,
        policy=run.options.retry.unknown_policy,
        now=now,
        exclusive=run.exclusive,
        dead_owners=dead,
    )


async def _renew(
    engine: Engine, name: str, owner: str, ttl: timedelta, clock: Clock, exclusive: bool
) -> None:
    """Keep the edition lease (exclusive runs) and this sender's row leases alive."""
    while True:
        await asyncio.sleep(ttl.total_seconds() / 4)
        now = clock()
        if exclusive:
            leases.acquire(engine, name=name, owner=owner, ttl=ttl, now=now)
        with engine.begin() as conn:
            deliveries.renew(conn, owner=owner, until=now + ttl)


async def _drain(
    engine: Engine,
    edition_id: int,
    transport: Transport,
    build: MessageFactory,
    options: SendOptions,
    clock: Clock,
    run: _Run,
    progress: Callable[[SendReport], None] | None,
) -> None:
    queue: asyncio.Queue[list[Recipient] | None] = asyncio.Queue(maxsize=2 * transport.concurrency)
    writer = Writer(
        engine=engine,
        transport=type(transport).kind,
        retry=options.retry,
        clock=clock,
        owner=run.owner,
        lease=timedelta(seconds=options.lease_ttl),
        started_at=lambda: run.started_at,
        report=run.report,
    )
    ledger = GroupCommit(writer)
    serving = asyncio.create_task(ledger.serve())
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(transport.concurrency):
                group.create_task(_worker(queue, transport, build, ledger, run, progress))
            await _produce(engine, edition_id, queue, transport.max_batch, options, clock, run)
            # Only after a normal end: when a worker failed, the group cancels the rest,
            # and waiting to hand them a sentinel through a full queue would hang.
            for _ in range(transport.concurrency):
                await queue.put(None)
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


async def _produce(
    engine: Engine,
    edition_id: int,
    queue: asyncio.Queue[list[Recipient] | None],
    max_batch: int,
    options: SendOptions,
    clock: Clock,
    run: _Run,
) -> None:
    deadline = time.monotonic() + options.max_retry_wait
    lease = timedelta(seconds=options.lease_ttl)
    while not run.stop:
        with engine.begin() as conn:
            status, note = deliveries.edition_state(conn, edition_id=edition_id)
            if status in (EditionStatus.paused, EditionStatus.cancelled):
                run.report.stopped_reason = f"edition {status}: {note or 'by the operator'}"
                return
            rows = deliveries.claim(
                conn,
                edition_id=edition_id,
                owner=run.owner,
                limit=options.batch_size,
                now=clock(),
                lease=lease,
            )
        if rows:
            for chunk in _requests(rows, max_batch):
                await queue.put(chunk)
            continue
        await queue.join()  # let in-flight answers land: their retries may be due
        with engine.begin() as conn:
            run.report.recovered += _recover(conn, edition_id, run, clock())
            due = deliveries.next_due(conn, edition_id=edition_id, now=clock())
        if due is None or run.stop:
            return
        wait = (due - clock()).total_seconds()
        if wait > 0 and time.monotonic() + wait > deadline:
            run.report.stopped_reason = _waiting_reason(engine, edition_id, due, clock())
            return
        await asyncio.sleep(max(wait, 0.0))


def _waiting_reason(engine: Engine, edition_id: int, due: datetime, now: datetime) -> str:
    """Why a run stops with rows still queued: the next ones are due at ``due``, too
    late to wait for. Names the local delivery time when that is what holds them."""
    with engine.connect() as conn:
        waiting, earliest = deliveries.due_later(conn, edition_id=edition_id, now=now)
    if waiting and earliest is not None and earliest <= due:
        return (
            f"{waiting} deliveries are waiting for their readers' local delivery time, the "
            f"next due at {earliest:%Y-%m-%d %H:%M} UTC, later than [send] "
            "max_retry_wait_seconds allows: run 'digest send' again then (a running "
            "'digest worker' picks them up by itself)"
        )
    return (
        f"some deliveries are deferred until {due:%Y-%m-%d %H:%M:%S} UTC, later than "
        "[send] max_retry_wait_seconds allows: run 'digest send' again then"
    )


def _requests(rows: list[Recipient], max_batch: int) -> Iterator[list[Recipient]]:
    """Split claimed rows into batches of at most ``max_batch``; rows that went out
    together before under an idempotency key (same ``batch_key``) stay together."""
    loose = [r for r in rows if not r.batch_key]
    for i in range(0, len(loose), max_batch):
        yield loose[i : i + max_batch]
    groups: dict[str, list[Recipient]] = {}
    for r in rows:
        if r.batch_key:
            groups.setdefault(r.batch_key, []).append(r)
    for group in groups.values():
        for i in range(0, len(group), max_batch):
            yield group[i : i + max_batch]


async def _worker(
    queue: asyncio.Queue[list[Recipient] | None],
    transport: Transport,
    build: MessageFactory,
    ledger: GroupCommit,
    run: _Run,
    progress: Callable[[SendReport], None] | None,
) -> None:
    """Mark, send and record batch after batch. Recording the batch just sent goes
    with marking the next one, in the group commit (:mod:`digest.send_ledger`)
    shared by all workers; a worker records alone only when nothing is queued or
    before a throttle wait, so it never holds an answer while it waits. Nothing is
    sent before its mark is committed. A batch is ``task_done`` only once recorded:
    the producer's ``join()`` must not find this worker's rows in ``sending``."""
    done: Batch | None = None  # sent, not yet recorded

    async def record_done() -> None:
        nonlocal done
        if done is not None:
            finished, done = done, None
            await ledger.commit(finished, None)
            queue.task_done()

    try:
        while True:
            if done is None:
                batch = await queue.get()
            else:
                try:
                    batch = queue.get_nowait()
                except asyncio.QueueEmpty:
                    await record_done()
                    continue
            if batch is None or run.stop:
                queue.task_done()
                if batch is None:
                    return
                continue
            if run.throttled_for() > 0:
                await record_done()
            await run.wait_if_throttled()
            previous, done = done, None  # handed to the ledger: recorded by this commit
            try:
                attempts = await ledger.commit(previous, batch)
            except BaseException:
                queue.task_done()  # this batch
                if previous is not None:
                    queue.task_done()
                raise
            if previous is not None:  # recorded by that commit
                queue.task_done()
            current = _build_batch(batch, attempts, build, ledger.writer, run, transport)
            if current is None:
                queue.task_done()
            else:
                try:
                    await _send(ledger.writer.engine, current, transport, run)
                finally:
                    done = current
            if progress is not None:
                progress(run.report)
    finally:
        if done is not None:  # cancelled or failed after sending: record what came back
            ledger.writer.record(done)
            queue.task_done()
        if progress is not None:
            progress(run.report)


def _build_batch(
    batch: list[Recipient],
    attempts: dict[int, int],
    build: MessageFactory,
    writer: Writer,
    run: _Run,
    transport: Transport,
) -> Batch | None:
    """Build the marked rows' messages; None when none of them is to be sent."""
    run.report.skipped += len(batch) - len(attempts)
    chosen = [r for r in batch if r.delivery_id in attempts]
    if not chosen:
        return None
    now = writer.clock()
    built = build(chosen, now)
    skips = [(b.delivery_id, b.reason) for b in built if isinstance(b, Skip)]
    messages = [b for b in built if not isinstance(b, Skip)]
    if skips:
        with writer.engine.begin() as conn:
            run.report.skipped += deliveries.record_skips(conn, skips=skips, now=now)
    if not messages:
        return None
    if getattr(transport, "idempotent", False):  # the provider drops a repeated key
        with writer.engine.begin() as conn:
            key = batch_key(messages)
            deliveries.set_batch_key(conn, ids=[m.delivery_id for m in messages], key=key)
    return Batch(chosen, attempts, messages)


async def _send(engine: Engine, batch: Batch, transport: Transport, run: _Run) -> None:
    """Hand the batch to the transport; keep its answers on ``batch.results``."""
    messages = batch.messages
    try:
        batch.results = await transport.send_batch(messages)
    except TransportError as exc:  # the whole batch's fate is unknown
        unknown = Outcome.unknown
        batch.results = [SendResult(m.delivery_id, unknown, detail=str(exc)) for m in messages]
        run.report.error = f"transport failed: {exc}"
        run.stop = True
    run.observe(batch.results)
    if run.pause_note and not run.report.stopped_reason:
        run.report.stopped_reason = run.pause_note
        with engine.begin() as conn:
            deliveries.pause_edition(conn, edition_id=run.edition_id, note=run.pause_note)
