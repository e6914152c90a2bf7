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
also sets each row's due time from its reader's zone (:mod:`digest.delivery.localtime`);
rows not yet due are not claimed, and are waited for like deferred rows.

Every write after a claim is fenced (:mod:`digest.delivery.claims`): a run that finds it
lost rows to another sender (it was stopped past its lease) sends none of them,
stops, and reports itself interrupted. Rows answered ``unknown``, and rows found in
``sending`` after their sender died, are resolved before the run ends
(:mod:`digest.delivery.unknowns`, :mod:`digest.delivery.takeover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, select

from digest.delivery import claims, leases
from digest.delivery import ledger as deliveries
from digest.delivery.group_commit import Clock, GroupCommit, Writer
from digest.delivery.ledger import Recipient, RetryPolicy
from digest.delivery.run import EXIT_INCOMPLETE, MessageFactory, Run, SendOptions, SendReport
from digest.delivery.takeover import recover, renew, resolve_unknown
from digest.delivery.workers import requests, worker
from digest.store.models import Edition, EditionStatus
from digest.transports.base import Transport

__all__ = [
    "EXIT_INCOMPLETE",
    "MessageFactory",
    "Recipient",
    "RetryPolicy",
    "SendOptions",
    "SendReport",
    "send_edition",
]


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
    others_working: Callable[[], bool] | None = None,
) -> SendReport:
    """Send ``edition`` to every planned reader.

    On SQLite the run is *exclusive*: it holds the edition's send lease, and a
    second sender gets ``LeaseHeld``. On PostgreSQL any number of senders (``digest
    send``, ``digest worker``) cooperate through row leases. Setting ``stop``
    (SIGTERM) ends claiming, lets in-flight sends finish and gives unsent rows
    back. ``others_working``: while it returns True (helper processes of this
    ``digest send`` still run), the run waits for rows leased to others instead of
    ending, and takes over the rows of senders that die. Raises
    ``TransportUnavailable`` if the transport cannot open.
    """
    assert edition.id is not None
    report = SendReport(edition.key)
    exclusive = engine.dialect.name == "sqlite"
    name = f"send:{edition.key}"
    ttl = timedelta(seconds=options.lease_ttl)
    if exclusive:
        leases.acquire(engine, name=name, owner=owner, ttl=ttl, now=clock())
    run = Run(
        report,
        options,
        edition_id=edition.id,
        transport=transport,
        build=build_messages,
        owner=owner,
        exclusive=exclusive,
        stop=stop,
        others_working=others_working,
    )
    heartbeat = asyncio.create_task(renew(engine, name, run, ttl, clock))
    try:
        try:
            run.started_at = _prepare(engine, run, clock())
        except ContentChanged as exc:
            report.halted = True
            report.stopped_reason = str(exc)
            return report
        await transport.open()
        try:
            await resolve_unknown(engine, run, clock)
            await _drain(engine, run, clock, progress)
            await resolve_unknown(engine, run, clock)
        finally:
            await transport.close()
        _conclude(engine, run, clock())
    finally:
        heartbeat.cancel()
        with engine.begin() as conn:
            claims.release(conn, owner=owner)
        run.holdings.rows.clear()
        if exclusive:
            leases.release(engine, name=name, owner=owner)
        report.elapsed = time.monotonic() - report.started
    return report


class ContentChanged(Exception):
    """Planning refused: the edition changed (or lost its approval) since rendering."""


def _prepare(engine: Engine, run: Run, now: datetime) -> datetime:
    """Plan the ledger once, take over rows in doubt; return when sending began."""
    report = run.report
    edition_id = run.edition_id
    E = deliveries.E
    with engine.begin() as conn:
        planned_at, planned = conn.execute(
            select(E.c.planned_at, E.c.planned_count).where(E.c.id == edition_id)
        ).one()
        if planned_at is None:
            revision = run.options.content_revision
            if revision is not None:
                why = deliveries.freeze(conn, edition_id=edition_id, revision=revision)
                if why:
                    raise ContentChanged(why)
            planned = deliveries.plan(
                conn, edition_id=edition_id, now=now, due_for=run.options.local_due
            )
            planned_at = now
        report.planned = int(planned)
        report.recovered = recover(conn, run, now)
        tally = deliveries.counts(conn, edition_id=edition_id)
    report.pending_at_start = sum(tally.get(s, 0) for s in deliveries.PENDING)
    assert isinstance(planned_at, datetime)
    return planned_at


def _conclude(engine: Engine, run: Run, now: datetime) -> None:
    """The run's end state on its report: finished, pending, halted, interrupted."""
    report = run.report
    edition_id = run.edition_id
    with engine.begin() as conn:
        report.finished = deliveries.finish_if_done(conn, edition_id=edition_id, now=now)
        tally = deliveries.counts(conn, edition_id=edition_id)
        report.due_later = deliveries.due_later(conn, edition_id=edition_id, now=now)[0]
        status, _ = deliveries.edition_state(conn, edition_id=edition_id)
    report.pending = sum(tally.get(s, 0) for s in deliveries.PENDING)
    report.halted = status in (EditionStatus.paused, EditionStatus.cancelled)
    report.lost = run.holdings.lost
    if report.lost:
        report.interrupted = (
            f"this sender lost its lease on {report.lost} deliveries (it was stopped longer "
            f"than [send] lease_seconds = {run.options.lease_ttl:g}); another sender took "
            "them over, and none of them was sent from here after that"
        )
    elif run.stop_event is not None and run.stop_event.is_set() and report.outstanding:
        report.interrupted = "stopped by a signal before the edition was done"


async def _drain(
    engine: Engine, run: Run, clock: Clock, progress: Callable[[SendReport], None] | None
) -> None:
    """Claim due rows and feed them to ``transport.concurrency`` workers until none
    is left (or the run stops); every answer is recorded before this returns."""
    transport, options = run.transport, run.options
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
        holdings=run.holdings,
    )
    ledger = GroupCommit(writer)
    serving = asyncio.create_task(ledger.serve())
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(transport.concurrency):
                group.create_task(worker(queue, ledger, run, progress))
            await _produce(engine, queue, run, clock)
            # Only after a normal end: when a worker failed, the group cancels the rest,
            # and waiting to hand them a sentinel through a full queue would hang.
            for _ in range(transport.concurrency):
                await queue.put(None)
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


async def _produce(
    engine: Engine, queue: asyncio.Queue[list[Recipient] | None], run: Run, clock: Clock
) -> None:
    options, edition_id = run.options, run.edition_id
    deadline = time.monotonic() + options.max_retry_wait
    lease = timedelta(seconds=options.lease_ttl)
    while not run.stop:
        with engine.begin() as conn:
            status, note = deliveries.edition_state(conn, edition_id=edition_id)
            if status in (EditionStatus.paused, EditionStatus.cancelled):
                run.report.stopped_reason = f"edition {status}: {note or 'by the operator'}"
                return
            rows = claims.claim(
                conn,
                edition_id=edition_id,
                owner=run.owner,
                limit=options.batch_size,
                now=clock(),
                lease=lease,
            )
        if rows:
            run.holdings.take(rows)
            for chunk in requests(rows, run.transport.max_batch):
                await queue.put(chunk)
            continue
        await queue.join()  # let in-flight answers land: their retries may be due
        if run.stop:
            return
        with engine.begin() as conn:
            run.report.recovered += recover(conn, run, clock())
        await resolve_unknown(engine, run, clock)  # "resend" queues rows again
        with engine.begin() as conn:
            due = deliveries.next_due(conn, edition_id=edition_id, now=clock())
        if run.stop:
            return
        if due is None:
            if run.others_working is None or not run.others_working():
                return
            await asyncio.sleep(1.0)  # rows leased to helpers: take over any that die
            continue
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
