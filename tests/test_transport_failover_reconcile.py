"""Failover: ``reconcile`` asks both transports; one that cannot be asked is skipped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from digest.errors import TransportUnavailable
from digest.transports.base import InDoubt, Outcome
from digest.transports.failover import FailoverTransport
from digest.transports.memory import MemoryTransport

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def item(i: int) -> InDoubt:
    return InDoubt(i, f"r{i}@example.org", f"<m{i}@x>", "2026-W48", NOW)


async def test_each_transport_accounts_for_what_it_sent() -> None:
    primary = MemoryTransport(reconcile_found=["r1@example.org"])
    secondary = MemoryTransport(reconcile_found=["r2@example.org"])
    failover = FailoverTransport(primary, secondary, cooldown=60)
    found = await failover.reconcile([item(1), item(2), item(3)])
    assert [(r.delivery_id, r.outcome, r.transport) for r in found] == [
        (1, Outcome.queued, "memory"),
        (2, Outcome.queued, "memory"),
    ]
    assert [i.delivery_id for i in secondary.reconciled] == [2, 3]  # not asked about 1


async def test_a_transport_that_cannot_be_asked_is_skipped() -> None:
    primary = MemoryTransport(unavailable=True)
    secondary = MemoryTransport(reconcile_found=["r2@example.org"])
    found = await FailoverTransport(primary, secondary, cooldown=60).reconcile([item(1), item(2)])
    assert [r.delivery_id for r in found] == [2]
    with pytest.raises(TransportUnavailable):
        await FailoverTransport(
            MemoryTransport(unavailable=True), MemoryTransport(unavailable=True), cooldown=60
        ).reconcile([item(1)])
