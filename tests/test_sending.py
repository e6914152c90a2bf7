"""The delivery ledger and send loop, on SQLite and PostgreSQL, with the memory transport."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select, update

from digest.delivery import leases
from digest.delivery import ledger as deliveries
from digest.delivery.ledger import Recipient
from digest.delivery.sending import SendReport, send_edition
from digest.errors import LeaseHeld
from digest.store.db import session_scope
from digest.store.models import Delivery, DeliveryState, Edition, EditionStatus
from digest.transports.base import OutgoingMessage
from digest.transports.memory import MemoryTransport
from subscribers import repository
from tests.sending_support import run_send, send_options

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _clock() -> datetime:
    return datetime.now(UTC)


def _build(recipients: Sequence[Recipient], now: datetime) -> list[OutgoingMessage]:
    return [
        OutgoingMessage(
            r.delivery_id,
            "digest@test.example",
            r.email,
            f"<e.{r.subscriber_id}@test.example>",
            b"Subject: x\r\n\r\nhi\r\n",
            "W",
        )
        for r in recipients
    ]


def _setup(engine: Engine, n: int) -> Edition:
    with session_scope(engine) as session:
        for i in range(n):
            repository.add(session, email=f"reader{i}@example.com", now=NOW)
        edition = Edition(key="2026-W48", cutoff=NOW, composed_at=NOW)
        session.add(edition)
    return edition


def _send(engine: Engine, edition: Edition, transport: MemoryTransport, **kw: object) -> SendReport:
    return run_send(engine, edition, transport, _build, **kw)


def _states(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return deliveries.counts(conn, edition_id=1)


def test_every_active_reader_gets_exactly_one_message(engine: Engine) -> None:
    edition = _setup(engine, 25)
    with session_scope(engine) as session:
        repository.remove(session, email="reader3@example.com", now=NOW)
    transport = MemoryTransport(concurrency=3, max_batch=4)
    report = _send(engine, edition, transport)
    recipients = [m.recipient for m in transport.sent]
    assert sorted(recipients) == sorted(
        {f"reader{i}@example.com" for i in range(25)} - {"reader3@example.com"}
    )
    assert report.planned == 24 and report.sent == 24 and report.finished
    assert _states(engine) == {"sent": 24}
    with session_scope(engine) as session:
        assert session.get(Edition, edition.id).status == EditionStatus.sent  # type: ignore[union-attr]
    again = MemoryTransport()
    second = _send(engine, edition, again)
    assert again.handed == [] and second.sent == 0 and second.finished


def test_rejections_fail_permanently_and_deferrals_give_up_by_age(engine: Engine) -> None:
    edition = _setup(engine, 6)
    transport = MemoryTransport(reject=["reader1@example.com"], defer=["reader2@example.com"])
    report = _send(engine, edition, transport, give_up_after=timedelta(seconds=0.3))
    assert report.sent == 4 and report.failed == 2 and report.finished
    with session_scope(engine) as session:
        rows = {d.subscriber_id: d for d in session.exec(select(Delivery)).scalars()}  # type: ignore[call-overload]
    assert rows[2].state == DeliveryState.failed and rows[2].attempts == 1
    assert rows[3].state == DeliveryState.failed
    assert "still deferred after" in rows[3].detail
    deferred_tries = [m for m in transport.handed if m.recipient == "reader2@example.com"]
    assert len(deferred_tries) == rows[3].attempts > 3  # deferrals do not count as failures


def test_unknown_outcomes_give_up_after_max_attempts(engine: Engine) -> None:
    edition = _setup(engine, 2)
    transport = MemoryTransport(unknown=["reader0@example.com"])
    report = _send(engine, edition, transport, max_attempts=3)
    assert report.sent == 1 and report.failed == 1
    with session_scope(engine) as session:
        row = session.exec(select(Delivery).where(Delivery.subscriber_id == 1)).scalar_one()  # type: ignore[call-overload, arg-type]
    assert row.attempts == 3 and "gave up after 3 attempts" in row.detail


def test_smtp_5_1_x_rejections_are_hard_bounces(engine: Engine) -> None:
    from digest.transports.base import Outcome, SendResult

    edition = _setup(engine, 2)
    transport = MemoryTransport()
    original = transport.send_batch

    async def answer(messages: Sequence[OutgoingMessage]):  # type: ignore[no-untyped-def]
        results = await original(messages)
        return [
            SendResult(r.delivery_id, Outcome.rejected, detail="550 5.1.1 <x>: no such user")
            if r.delivery_id == 1
            else r
            for r in results
        ]

    transport.send_batch = answer  # type: ignore[method-assign]
    _send(engine, edition, transport)
    assert _states(engine) == {"bounced": 1, "sent": 1}
    from subscribers import consent
    from subscribers.models import SubscriberStatus

    with session_scope(engine) as session:
        reader = repository.get_by_email(session, email="reader0@example.com")
        suppressed = consent.suppression_of(session, email="reader0@example.com")
        log = consent.history(session, email="reader0@example.com")
    assert reader is not None and reader.status == SubscriberStatus.bounced
    assert suppressed is not None and suppressed.reason == "bounced"
    assert log[-1].source == "smtp" and "5.1.1" in log[-1].detail


def test_rows_left_sending_by_a_dead_run_are_resent_by_policy(engine: Engine) -> None:
    edition = _setup(engine, 10)
    first = MemoryTransport()
    _send(engine, edition, first)
    # Simulate a crash: three rows were marked sending and never recorded.
    with engine.begin() as conn:
        conn.execute(
            update(Delivery.__table__)
            .where(Delivery.__table__.c.id <= 3)
            .values(  # type: ignore[attr-defined]
                state="sending"
            )
        )
        conn.execute(update(Edition.__table__).values(status="sending"))  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        edition = session.get(Edition, edition.id)  # type: ignore[assignment]
    second = MemoryTransport()
    report = _send(engine, edition, second)
    assert report.recovered == 3
    assert sorted(m.delivery_id for m in second.handed) == [1, 2, 3]
    assert _states(engine) == {"sent": 10}


def test_skip_policy_never_sends_a_second_copy(engine: Engine) -> None:
    edition = _setup(engine, 4)
    with session_scope(engine) as session:
        edition = session.get(Edition, edition.id)  # type: ignore[assignment]
    with engine.begin() as conn:
        deliveries.plan(conn, edition_id=1, now=NOW)
        conn.execute(
            update(Delivery.__table__)
            .where(Delivery.__table__.c.id == 1)
            .values(  # type: ignore[attr-defined]
                state="sending", attempts=1
            )
        )
    transport = MemoryTransport()
    report = _send(engine, edition, transport, unknown_policy="skip")
    assert report.recovered == 1
    assert sorted(m.delivery_id for m in transport.handed) == [2, 3, 4]
    assert _states(engine) == {"sent": 3, "skipped": 1}


def test_a_reader_who_unsubscribes_mid_send_gets_nothing(engine: Engine) -> None:
    edition = _setup(engine, 5)
    with engine.begin() as conn:
        deliveries.plan(conn, edition_id=1, now=NOW)
    with session_scope(engine) as session:
        repository.remove(session, email="reader4@example.com", now=NOW)
    transport = MemoryTransport()
    report = _send(engine, edition, transport)
    assert "reader4@example.com" not in [m.recipient for m in transport.handed]
    assert report.skipped == 1 and report.finished
    with session_scope(engine) as session:
        row = session.exec(select(Delivery).where(Delivery.subscriber_id == 5)).scalar_one()  # type: ignore[call-overload, arg-type]
    assert row.state == DeliveryState.skipped and "no longer active" in row.detail


def test_on_sqlite_a_second_sender_is_refused_while_the_lease_is_held(
    sqlite_engine: Engine,
) -> None:
    engine = sqlite_engine
    edition = _setup(engine, 2)
    leases.acquire(
        engine, name="send:2026-W48", owner="someone-else", ttl=timedelta(minutes=5), now=_clock()
    )
    with pytest.raises(LeaseHeld, match="someone-else"):
        _send(engine, edition, MemoryTransport())
    # An expired lease is taken over.
    leases.acquire(
        engine, name="send:2026-W48", owner="someone-else", ttl=timedelta(seconds=-1), now=_clock()
    )
    assert _send(engine, edition, MemoryTransport()).sent == 2


def test_a_transport_that_breaks_mid_run_leaves_nothing_lost(engine: Engine) -> None:
    edition = _setup(engine, 6)
    transport = MemoryTransport(max_batch=2)
    original = transport.send_batch
    calls = 0

    async def flaky(messages: Sequence[OutgoingMessage]):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:
            from digest.errors import TransportUnavailable

            raise TransportUnavailable("connection reset by peer")
        return await original(messages)

    transport.send_batch = flaky  # type: ignore[method-assign]
    report = _send(engine, edition, transport)
    assert "connection reset" in report.error and not report.finished
    states = _states(engine)
    assert states.get("sent") == 2 and states.get("sending", 0) == 0
    report = _send(engine, edition, MemoryTransport())
    assert report.finished
    assert _states(engine) == {"sent": 6}


def test_a_lease_held_by_a_dead_process_on_this_host_is_taken_over(engine: Engine) -> None:
    import socket
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = f"{socket.gethostname()}:{child.stdout.strip()}:deadbeef"
    live = f"{socket.gethostname()}:1:init"  # pid 1 exists: alive, so it is respected
    ttl = timedelta(minutes=5)
    leases.acquire(engine, name="a", owner=dead, ttl=ttl, now=_clock())
    leases.acquire(engine, name="a", owner="me", ttl=ttl, now=_clock())  # no LeaseHeld
    leases.acquire(engine, name="b", owner=live, ttl=ttl, now=_clock())
    with pytest.raises(LeaseHeld):
        leases.acquire(engine, name="b", owner="me", ttl=ttl, now=_clock())
    leases.acquire(engine, name="c", owner="other-host:123:x", ttl=ttl, now=_clock())
    with pytest.raises(LeaseHeld):
        leases.acquire(engine, name="c", owner="me", ttl=ttl, now=_clock())


def test_on_postgresql_concurrent_senders_share_the_work(engine: Engine) -> None:
    """Two senders on one edition at once (workers): each reader gets one message."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one sender per edition (see the test above)")
    edition = _setup(engine, 300)
    first, second = MemoryTransport(delay=0.002), MemoryTransport(delay=0.002)

    async def both() -> list[SendReport]:
        return list(
            await asyncio.gather(
                *(
                    send_edition(
                        engine,
                        edition=edition,
                        transport=t,
                        build_messages=_build,
                        options=send_options(),
                        clock=_clock,
                        owner=f"w{i}",
                    )
                    for i, t in enumerate((first, second))
                )
            )
        )

    reports = asyncio.run(both())
    recipients = [m.recipient for m in first.handed + second.handed]
    assert len(recipients) == len(set(recipients)) == 300
    assert first.handed and second.handed  # both did part of the work
    assert sum(r.sent for r in reports) == 300
    assert _states(engine) == {"sent": 300}


class _BrokenTransport(MemoryTransport):
    """A transport with a bug: its third call raises something no transport should."""

    def __init__(self) -> None:
        super().__init__(concurrency=2, max_batch=1)
        self.calls = 0

    async def send_batch(self, messages: Sequence[OutgoingMessage]):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("a bug in the transport")
        return await super().send_batch(messages)


def test_a_transport_bug_ends_the_run_with_the_error_instead_of_hanging(engine: Engine) -> None:
    """The producer must not wait forever to hand sentinels to workers that died:
    before, a full queue and no consumer left `digest send` idle for ever."""
    edition = _setup(engine, 40)
    transport = _BrokenTransport()

    async def run() -> BaseException | None:
        task = asyncio.create_task(
            send_edition(
                engine,
                edition=edition,
                transport=transport,
                build_messages=_build,
                options=send_options(),
                clock=_clock,
                owner="test-owner",
            )
        )
        finished, _ = await asyncio.wait({task}, timeout=30)
        if not finished:  # hung: stop it so the test can fail
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            pytest.fail("send_edition hung after the transport raised")
        return task.exception()

    error = asyncio.run(run())
    assert isinstance(error, ExceptionGroup)
    assert error.subgroup(RuntimeError) is not None
    assert "a bug in the transport" in str(error.exceptions[0])
    states = _states(engine)
    assert states.get("sent", 0) == len(transport.sent) >= 2
    # In doubt, for the next run's policy: at most concurrency x max_batch rows.
    assert 1 <= states.get("sending", 0) <= 2
