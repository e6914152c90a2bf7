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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, select
from sqlmodel import Session

from digest import deliveries, leases
from digest.deliveries import Recipient, RetryPolicy
from digest.errors import TransportError
from digest.models import Edition, EditionStatus
from digest.segments import Skip
from digest.transports.base import Outcome, OutgoingMessage, SendResult, Transport, batch_key
from subscribers import lifecycle
from subscribers.models import ConsentSource

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
    async with asyncio.TaskGroup() as group:
        for _ in range(transport.concurrency):
            group.create_task(
                _worker(engine, queue, transport, build, options.retry, clock, run, progress)
            )
        try:
            await _produce(engine, edition_id, queue, transport.max_batch, options, clock, run)
        finally:
            for _ in range(transport.concurrency):
                await queue.put(None)


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


@dataclass(slots=True)
class _Batch:
    """One batch between marking and recording: what was marked and built."""

    chosen: list[Recipient]  # the rows marked ``sending``
    attempts: dict[int, int]
    messages: list[OutgoingMessage]
    now: datetime
    results: list[SendResult] = field(default_factory=list)
    bounced: bool = False  # some answer was a hard bounce (suppress after recording)


async def _worker(
    engine: Engine,
    queue: asyncio.Queue[list[Recipient] | None],
    transport: Transport,
    build: MessageFactory,
    retry: RetryPolicy,
    clock: Clock,
    run: _Run,
    progress: Callable[[SendReport], None] | None,
) -> None:
    """Mark, send and record batch after batch. When the next batch is already
    waiting, recording this one and marking the next share one transaction: one
    commit per batch instead of two (with SMTP's one message a batch, half the
    ledger's commits; docs/BENCHMARKS.md). Nothing is sent before its mark commits."""
    # A batch counts as done for the queue (task_done, which the producer's join()
    # waits for before it recovers rows left in ``sending``) only once recorded.
    done: _Batch | None = None  # sent, not yet recorded

    def record_done() -> None:
        nonlocal done
        if done is not None:
            _record(engine, done, transport, retry, clock, run)
            done = None
            queue.task_done()

    try:
        while True:
            if done is None:
                batch = await queue.get()
            else:
                try:
                    batch = queue.get_nowait()
                except asyncio.QueueEmpty:  # do not hold an answer while waiting
                    record_done()
                    continue
            if batch is None or run.stop:
                queue.task_done()
                if batch is None:
                    return
                continue
            if run.throttled_for() > 0:  # record before waiting out a throttle
                record_done()
            await run.wait_if_throttled()
            try:
                current = _mark(engine, batch, build, clock, run, transport, previous=done)
            except BaseException:
                queue.task_done()  # this batch; ``done`` is recorded below
                raise
            if done is not None:  # recorded by _mark
                done = None
                queue.task_done()
            if current is None:
                queue.task_done()
            else:
                try:
                    await _send(engine, current, transport, run)
                finally:
                    done = current
            if progress is not None:
                progress(run.report)
    finally:
        record_done()
        if progress is not None:
            progress(run.report)


def _mark(
    engine: Engine,
    batch: list[Recipient],
    build: MessageFactory,
    clock: Clock,
    run: _Run,
    transport: Transport,
    *,
    previous: _Batch | None,
) -> _Batch | None:
    """Record ``previous`` (if any) and mark ``batch`` sending, in one transaction;
    build its messages. None when no row of it may be sent."""
    now = clock()
    with engine.begin() as conn:
        if previous is not None:
            _store(conn, previous, transport, run.options.retry, now, run)
        attempts = deliveries.mark_sending(
            conn,
            ids=[r.delivery_id for r in batch],
            owner=run.owner,
            now=now,
            lease=timedelta(seconds=run.options.lease_ttl),
        )
    if previous is not None:
        _after_record(engine, previous, now)
    run.report.skipped += len(batch) - len(attempts)
    chosen = [r for r in batch if r.delivery_id in attempts]
    if not chosen:
        return None
    built = build(chosen, now)
    skips = [(b.delivery_id, b.reason) for b in built if isinstance(b, Skip)]
    messages = [b for b in built if not isinstance(b, Skip)]
    if skips:
        with engine.begin() as conn:
            run.report.skipped += deliveries.record_skips(conn, skips=skips, now=now)
    if not messages:
        return None
    if getattr(transport, "idempotent", False):  # the provider drops a repeated key
        with engine.begin() as conn:
            key = batch_key(messages)
            deliveries.set_batch_key(conn, ids=[m.delivery_id for m in messages], key=key)
    return _Batch(chosen, attempts, messages, now)


async def _send(engine: Engine, batch: _Batch, transport: Transport, run: _Run) -> None:
    """Hand the batch to the transport; keep its answers on ``batch.results``."""
    messages = batch.messages
    try:
        batch.results = await transport.send_batch(messages)
    except TransportError as exc:  # the whole batch's fate is unknown
        detail = str(exc)
        batch.results = [
            SendResult(m.delivery_id, Outcome.unknown, detail=detail) for m in messages
        ]
        run.report.error = f"transport failed: {exc}"
        run.stop = True
    run.observe(batch.results)
    if run.pause_note and not run.report.stopped_reason:
        run.report.stopped_reason = run.pause_note
        with engine.begin() as conn:
            deliveries.pause_edition(conn, edition_id=run.edition_id, note=run.pause_note)


def _record(
    engine: Engine, batch: _Batch, transport: Transport, retry: RetryPolicy, clock: Clock, run: _Run
) -> None:
    """Record a sent batch's answers on their own (no next batch was waiting)."""
    now = clock()
    with engine.begin() as conn:
        _store(conn, batch, transport, retry, now, run)
    _after_record(engine, batch, now)


def _store(
    conn: Connection,
    batch: _Batch,
    transport: Transport,
    retry: RetryPolicy,
    now: datetime,
    run: _Run,
) -> None:
    tally = deliveries.record(
        conn,
        results=batch.results,
        attempts=batch.attempts,
        transport=type(transport).kind,
        policy=retry,
        now=now,
        started_at=run.started_at,
    )
    report = run.report
    report.sent += tally.get("sent", 0)
    report.failed += tally.get("failed", 0)
    report.skipped += tally.get("skipped", 0)
    report.retried += tally.get("queued", 0)
    batch.bounced = bool(tally.get("bounced"))


def _after_record(engine: Engine, batch: _Batch, now: datetime) -> None:
    """Hard bounces among the answers just recorded suppress their readers."""
    if batch.bounced:
        _suppress_hard_bounces(engine, batch.results, batch.chosen, now)


def _suppress_hard_bounces(
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
