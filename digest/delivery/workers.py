"""The workers of a send run: mark, build, send and record batch after batch
(see :mod:`digest.delivery.sending` and the group commit in :mod:`digest.delivery.group_commit`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from sqlalchemy import Engine

from digest.delivery import answers, marks
from digest.delivery import ledger as deliveries
from digest.delivery.group_commit import Batch, GroupCommit, Writer
from digest.delivery.ledger import Recipient
from digest.delivery.run import Run, SendReport
from digest.editions.segments import Skip
from digest.errors import TransportError
from digest.transports.base import Outcome, SendResult, batch_key


def requests(rows: list[Recipient], max_batch: int) -> Iterator[list[Recipient]]:
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


async def worker(
    queue: asyncio.Queue[list[Recipient] | None],
    ledger: GroupCommit,
    run: Run,
    progress: Callable[[SendReport], None] | None,
) -> None:
    """Mark, send and record batch after batch. Recording the batch just sent goes
    with marking the next one, in the group commit (:mod:`digest.delivery.group_commit`)
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
            current = _build_batch(batch, attempts, ledger.writer, run)
            if current is None:
                queue.task_done()
            else:
                try:
                    await _send(ledger.writer.engine, current, run)
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
    batch: list[Recipient], attempts: dict[int, int], writer: Writer, run: Run
) -> Batch | None:
    """Build the marked rows' messages; None when none of them is to be sent. Rows
    whose claim changed meanwhile (lost to another sender) are never sent."""
    chosen = [r for r in batch if r.delivery_id in attempts]
    if not chosen:
        return None
    token = chosen[0].token
    now = writer.clock()
    built = run.build(chosen, now)
    skips = [(b.delivery_id, b.reason) for b in built if isinstance(b, Skip)]
    messages = [b for b in built if not isinstance(b, Skip)]
    if skips:
        with writer.engine.begin() as conn:
            done = answers.record_skips(conn, skips=skips, owner=writer.owner, token=token, now=now)
        run.report.skipped += done
        writer.holdings.drop(i for i, _ in skips)
        if done < len(skips):
            writer.holdings.lost += len(skips) - done
    if messages and getattr(run.transport, "idempotent", False):  # the provider drops a repeat
        key = batch_key(messages)
        ids = [m.delivery_id for m in messages]
        with writer.engine.begin() as conn:
            kept = marks.set_batch_key(conn, ids=ids, key=key, owner=writer.owner, token=token)
        writer.holdings.lose([i for i in ids if i not in kept], "setting the batch key")
        messages = [m for m in messages if m.delivery_id in kept]
    if not messages:
        return None
    sending = {m.delivery_id for m in messages}
    return Batch([r for r in chosen if r.delivery_id in sending], attempts, messages)


async def _send(engine: Engine, batch: Batch, run: Run) -> None:
    """Hand the batch to the transport; keep its answers on ``batch.results``."""
    messages = batch.messages
    try:
        batch.results = await run.transport.send_batch(messages)
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
