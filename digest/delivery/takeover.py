"""A send run's hold on its rows (see :mod:`digest.delivery.sending`).

- :func:`recover`: take back what dead senders held (their claims freed, their rows
  in ``sending`` taken in doubt by this run);
- :func:`resolve_unknown`: resolve the ``unknown`` rows this run holds, by the
  provider's message search, then by ``[send] unknown_policy``
  (:mod:`digest.delivery.unknowns`);
- :func:`renew`: keep this run's leases alive and notice rows lost to another
  sender (this process was stopped past its lease).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from digest.delivery import claims, leases, unknowns
from digest.delivery.group_commit import Clock
from digest.delivery.run import Run
from digest.errors import LeaseHeld

log = logging.getLogger(__name__)


def recover(conn: Connection, run: Run, now: datetime) -> int:
    """Take back what dead senders held: their claimed rows are freed, their rows in
    ``sending`` (and unresolved ``unknown`` rows) are taken in doubt, to be resolved
    by this run. An exclusive run (the edition lease) knows every other sender is
    dead; otherwise only senders known dead on this host, and expired leases, count.
    Returns how many rows were taken in doubt."""
    dead = [
        o
        for o in claims.lease_owners(conn, edition_id=run.edition_id)
        if o != run.owner and leases.holder_is_dead(o)
    ]
    claims.release_claims(
        conn, edition_id=run.edition_id, owners=None if run.exclusive else dead, keep=run.owner
    )
    return claims.take_in_doubt(
        conn,
        edition_id=run.edition_id,
        owner=run.owner,
        now=now,
        lease=timedelta(seconds=run.options.lease_ttl),
        exclusive=run.exclusive,
        dead_owners=dead,
    )


async def resolve_unknown(engine: Engine, run: Run, clock: Clock) -> None:
    """Resolve the ``unknown`` rows this run holds: provider search, then policy."""
    done = await unknowns.resolve(
        engine,
        edition_id=run.edition_id,
        tag=run.report.edition_key,
        owner=run.owner,
        transport=run.transport,
        build=run.build,
        policy=run.options.retry,
        settle=run.options.settle_seconds,
        lease=timedelta(seconds=run.options.lease_ttl),
        clock=clock,
    )
    run.holdings.drop(done.ids)
    report = run.report
    report.reconciled += done.reconciled
    report.sent += done.reconciled
    report.resent += done.resent
    report.unknown_skipped += done.skipped
    report.skipped += done.skipped
    report.unknown_failed += done.failed
    report.failed += done.failed


async def renew(engine: Engine, name: str, run: Run, ttl: timedelta, clock: Clock) -> None:
    """Keep the edition lease ``name`` (exclusive runs) and this sender's row leases
    alive, every quarter ``ttl``; notice rows lost to another sender (this process
    was stopped past its lease). Runs until cancelled, or until the edition lease
    is lost."""
    while True:
        await asyncio.sleep(ttl.total_seconds() / 4)
        now = clock()
        if run.exclusive:
            try:
                leases.acquire(engine, name=name, owner=run.owner, ttl=ttl, now=now)
            except LeaseHeld as exc:
                log.warning("sender %s lost the edition lease: %s", run.owner, exc)
                run.holdings.lose(list(run.holdings.rows), "renewing the edition lease")
                run.holdings.lost = max(run.holdings.lost, 1)
                return
        rows = list(run.holdings.rows.items())
        try:
            with engine.begin() as conn:
                kept = claims.renew(conn, owner=run.owner, rows=rows, until=now + ttl)
        except OperationalError as exc:  # the database is away: try again next beat
            log.warning("could not renew the leases of sender %s: %s", run.owner, exc)
            continue
        run.holdings.lose([i for i, t in rows if (i, t) not in kept], "renewing its leases")
