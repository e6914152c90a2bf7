"""The ledger is fenced: a sender that lost its claim changes nothing, on SQLite and
PostgreSQL; and ``unknown`` outcomes are recorded, reconciled, then resolved by policy."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, update

from digest.delivery import answers, claims, marks
from digest.delivery import ledger as deliveries
from digest.delivery.ledger import Recipient, RetryPolicy
from digest.delivery.sending import EXIT_INCOMPLETE, SendReport
from digest.editions.segments import Skip
from digest.store.db import session_scope
from digest.store.models import Delivery, Edition
from digest.transports.base import InDoubt, Outcome, OutgoingMessage, SendResult
from digest.transports.memory import MemoryTransport
from subscribers import repository
from tests.sending_support import run_send

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
D = Delivery.__table__  # type: ignore[attr-defined]
POLICY = RetryPolicy(max_attempts=3, backoff_seconds=0.01, unknown_policy="resend")


def _setup(engine: Engine, n: int, *, plan: bool = True) -> Edition:
    with session_scope(engine) as session:
        for i in range(n):
            repository.add(session, email=f"reader{i}@example.com", now=NOW)
        edition = Edition(key="2026-W48", cutoff=NOW, composed_at=NOW)
        session.add(edition)
    if plan:
        with engine.begin() as conn:
            deliveries.plan(conn, edition_id=1, now=NOW)
    with session_scope(engine) as session:
        found = session.get(Edition, 1)
        assert found is not None
        return found


def _rows(engine: Engine) -> dict[int, tuple[str, str, str]]:
    with engine.connect() as conn:
        found = conn.execute(select(D.c.id, D.c.state, D.c.lease_owner, D.c.detail)).all()
    return {int(i): (str(s), str(o), str(d)) for i, s, o, d in found}


def _claim(engine: Engine, owner: str, now: datetime, limit: int = 10) -> list[Recipient]:
    with engine.begin() as conn:
        return claims.claim(conn, edition_id=1, owner=owner, limit=limit, now=now, lease=LEASE)


def _mark(engine: Engine, owner: str, rows: Sequence[Recipient], now: datetime) -> marks.Marked:
    pairs = [(r.delivery_id, r.token) for r in rows]
    with engine.begin() as conn:
        return marks.mark_sending(conn, rows=pairs, owner=owner, now=now, lease=LEASE)


def _record(
    engine: Engine, owner: str, token: int, results: Sequence[SendResult], now: datetime
) -> answers.Recorded:
    with engine.begin() as conn:
        return answers.record(
            conn,
            results=results,
            attempts={},
            owner=owner,
            token=token,
            transport="memory",
            policy=POLICY,
            now=now,
            lease=LEASE,
        )


def test_a_stale_owner_changes_nothing_after_another_sender_claimed(engine: Engine) -> None:
    _setup(engine, 3)
    stale = _claim(engine, "A", NOW)
    token = stale[0].token
    assert len(_mark(engine, "A", stale[:1], NOW).sending) == 1  # row 1 in flight for A
    later = NOW + LEASE + timedelta(seconds=1)  # A was stopped past its lease
    with engine.begin() as conn:
        taken = claims.take_in_doubt(
            conn, edition_id=1, owner="B", now=later, lease=LEASE, exclusive=False
        )
    assert taken == 1  # row 1: sending, lease expired: unknown, held by B
    fresh = _claim(engine, "B", later)  # rows 2 and 3: queued, lease expired
    assert [r.delivery_id for r in fresh] == [2, 3]
    assert _mark(engine, "A", stale[1:], later) == marks.Marked({}, {})  # A marks nothing
    assert set(_mark(engine, "B", fresh, later).sending) == {2, 3}
    answers_b = [SendResult(i, Outcome.sent, provider_id=f"b{i}") for i in (2, 3)]
    assert _record(engine, "B", fresh[0].token, answers_b, later).tally == {"sent": 2}
    # A wakes up: its answers for rows it no longer holds are late, never stored.
    late = [SendResult(i, Outcome.deferred, detail="4.2.0 try later") for i in (1, 2, 3)]
    recorded = _record(engine, "A", token, late, later)
    assert recorded.tally == {} and [r.delivery_id for r in recorded.late] == [1, 2, 3]
    with engine.begin() as conn:
        assert answers.record_skips(conn, skips=[(2, "x")], owner="A", token=token, now=later) == 0
        assert marks.set_batch_key(conn, ids=[2, 3], key="k", owner="A", token=token) == set()
        assert claims.renew(conn, owner="A", rows=[(2, token)], until=later) == set()
        assert claims.release(conn, owner="A") == 0
    rows = _rows(engine)
    assert rows[1][:2] == ("unknown", "B")
    assert rows[2][:2] == ("sent", "") and rows[3][:2] == ("sent", "")


def test_the_same_owner_claiming_again_fences_its_own_older_claim(engine: Engine) -> None:
    _setup(engine, 2)
    first = _claim(engine, "A", NOW)
    again = _claim(engine, "A", NOW + LEASE + timedelta(seconds=1))
    assert [r.delivery_id for r in again] == [1, 2] and again[0].token != first[0].token
    both = [*first, *again]  # both batches marked in one group commit
    marked = _mark(engine, "A", both, NOW + LEASE)
    assert {i: t for i, (_, t) in marked.sending.items()} == {1: again[0].token, 2: again[1].token}
    stale = _record(engine, "A", first[0].token, [SendResult(1, Outcome.sent)], NOW + LEASE)
    assert stale.tally == {} and len(stale.late) == 1


def test_an_unknown_answer_is_recorded_unknown_and_kept_by_its_sender(engine: Engine) -> None:
    _setup(engine, 1)
    rows = _claim(engine, "A", NOW)
    _mark(engine, "A", rows, NOW)
    result = SendResult(1, Outcome.unknown, detail="connection lost after DATA")
    assert _record(engine, "A", rows[0].token, [result], NOW).tally == {"unknown": 1}
    state, owner, detail = _rows(engine)[1]
    assert (state, owner) == ("unknown", "A") and "connection lost after DATA" in detail
    with engine.begin() as conn:  # unknown is pending: the edition is not done
        assert not deliveries.finish_if_done(conn, edition_id=1, now=NOW)
        assert deliveries.counts(conn, edition_id=1) == {"unknown": 1}


# Runs through send_edition with the memory transport.


def _build(recipients: Sequence[Recipient], now: datetime) -> list[OutgoingMessage | Skip]:
    return [
        OutgoingMessage(r.delivery_id, "d@test.example", r.email, f"<e.{r.subscriber_id}@t>", b"x")
        for r in recipients
    ]


def _send(
    engine: Engine, edition: Edition, transport: MemoryTransport, policy: str = "resend"
) -> SendReport:
    return run_send(engine, edition, transport, _build, unknown_policy=policy)


class OnceUnknown(MemoryTransport):
    """Answers ``unknown`` for ``address`` the first time only (it did arrive)."""

    def __init__(self, address: str, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.address = address
        self.asked: list[InDoubt] = []

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        results = await super().send_batch(messages)
        first = self.address not in [m.recipient for m in self.handed[: -len(messages)]]
        return [
            SendResult(r.delivery_id, Outcome.unknown, detail="connection lost after DATA")
            if m.recipient == self.address and first
            else r
            for m, r in zip(messages, results, strict=True)
        ]


class Searchable(OnceUnknown):
    """A provider whose message search finds what it accepted."""

    async def reconcile(self, items: Sequence[InDoubt]) -> list[SendResult]:
        self.asked.extend(items)
        return [SendResult(i.delivery_id, Outcome.queued, provider_id="pm-42") for i in items]


class Unsearchable(OnceUnknown):
    async def reconcile(self, items: Sequence[InDoubt]) -> list[SendResult]:
        from digest.errors import TransportUnavailable

        raise TransportUnavailable("search is down")


def _handed(transport: MemoryTransport, address: str) -> int:
    return sum(1 for m in transport.handed if m.recipient == address)


def test_an_unknown_outcome_the_provider_finds_is_sent_once(engine: Engine) -> None:
    edition = _setup(engine, 5, plan=False)
    transport = Searchable("reader2@example.com")
    report = _send(engine, edition, transport)
    assert report.finished and report.unknown == 1 and report.reconciled == 1
    assert report.resent == 0 and _handed(transport, "reader2@example.com") == 1
    (asked,) = transport.asked
    assert asked.recipient == "reader2@example.com" and asked.message_id == "<e.3@t>"
    assert asked.tag == "2026-W48"
    state, _, detail = _rows(engine)[3]
    assert state == "sent" and "found by the provider's message search" in detail
    with engine.connect() as conn:
        assert conn.execute(select(D.c.provider_id).where(D.c.id == 3)).scalar_one() == "pm-42"


def test_an_unknown_outcome_is_resent_by_policy_when_the_provider_cannot_say(
    engine: Engine,
) -> None:
    edition = _setup(engine, 4, plan=False)
    transport = Unsearchable("reader1@example.com")
    report = _send(engine, edition, transport)
    assert report.finished and report.unknown == 1 and report.resent == 1
    assert _handed(transport, "reader1@example.com") == 2  # same Message-ID, by policy
    assert {s for s, _, _ in _rows(engine).values()} == {"sent"}


def test_an_unknown_outcome_is_skipped_by_policy_and_the_row_says_so(engine: Engine) -> None:
    edition = _setup(engine, 4, plan=False)
    transport = MemoryTransport(unknown=["reader0@example.com"])
    report = _send(engine, edition, transport, policy="skip")
    assert report.finished and report.unknown == 1 and report.unknown_skipped == 1
    assert _handed(transport, "reader0@example.com") == 1
    state, owner, detail = _rows(engine)[1]
    assert state == "skipped" and owner == ""
    assert "unknown" in detail and "at most one copy" in detail


def test_rows_found_sending_after_a_crash_are_reconciled_before_the_policy(
    engine: Engine,
) -> None:
    edition = _setup(engine, 3)
    with engine.begin() as conn:  # a dead run marked row 2 and never recorded it
        conn.execute(update(D).where(D.c.id == 2).values(state="sending", attempts=1))
    transport = Searchable("nobody@example.com")
    report = _send(engine, edition, transport)
    assert report.recovered == 1 and report.reconciled == 1 and report.finished
    assert _handed(transport, "reader1@example.com") == 0  # the provider had it
    assert _rows(engine)[2][0] == "sent"


class Stolen(MemoryTransport):
    """While the first batch is in flight, this sender is 'stopped' past its lease and
    a second sender takes over every row it held."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(max_batch=2)
        self.engine = engine
        self.stolen: list[int] = []

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not self.stolen:
            later = datetime.now(UTC) + timedelta(hours=1)
            with self.engine.begin() as conn:
                claims.take_in_doubt(
                    conn, edition_id=1, owner="thief", now=later, lease=LEASE, exclusive=False
                )
                taken = claims.claim(
                    conn, edition_id=1, owner="thief", limit=100, now=later, lease=LEASE
                )
            self.stolen = [r.delivery_id for r in taken]
        return await super().send_batch(messages)


def test_a_run_that_lost_its_lease_sends_none_of_the_lost_rows_and_says_so(
    engine: Engine,
) -> None:
    edition = _setup(engine, 6)
    transport = Stolen(engine)
    report = _send(engine, edition, transport)
    assert transport.stolen  # queued rows this run had claimed
    handed = [m.delivery_id for m in transport.handed]
    assert handed == [1, 2]  # only the batch already in flight went out
    assert not set(handed) & set(transport.stolen)
    assert report.lost >= len(transport.stolen) and report.late == 2
    assert "lost its lease" in report.interrupted and report.exit_code == EXIT_INCOMPLETE
    rows = _rows(engine)
    assert {rows[i][:2] for i in (1, 2)} == {("unknown", "thief")}  # the late answer lost
    assert {rows[i][:2] for i in transport.stolen} == {("queued", "thief")}


def test_the_run_summary_counts_each_way_unknown_rows_were_resolved() -> None:
    from types import SimpleNamespace

    from rich.console import Console

    from digest.cli.output import print_send

    report = SendReport("2026-W48", planned=10, sent=9, unknown=3, reconciled=1, resent=1)
    report.unknown_skipped, report.pending, report.due_later = 1, 4, 4
    config = SimpleNamespace(
        send=SimpleNamespace(unknown_policy="skip"), transport=SimpleNamespace(kind="smtp")
    )
    console = Console(record=True, width=300)
    print_send(console, SimpleNamespace(config=config), report)  # type: ignore[arg-type]
    text = console.export_text()
    assert "Outcome unknown (maybe delivered): 3 answers this run; resolved 3" in text
    assert "1 found sent by the provider's message search, 1 queued again, 1 skipped" in text
    assert "[send] unknown_policy = 'skip'" in text
    assert "4 of them are held for their readers' local delivery time" in text
    assert report.exit_code == 0  # held for later is not incomplete
    report.due_later = 1
    assert report.exit_code == EXIT_INCOMPLETE and report.outstanding == 3
