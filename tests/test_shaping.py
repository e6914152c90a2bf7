"""Shaping an edition (``digest.editions.shaping``) on SQLite and PostgreSQL: what an
edit changes, what it refuses, the audit trail, approval withdrawn by an edit, and
the fence at planning: a send rendered from an older revision plans nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from digest.config import ScheduleConfig
from digest.delivery.ledger import Recipient
from digest.delivery.sending import send_edition
from digest.editions import lifecycle as editions
from digest.editions import shaping
from digest.editions.segments import Skip
from digest.editions.shaping import Edit, EditInvalid, EditRefused, Sponsor
from digest.editions.weeks import not_yet_due
from digest.store import audit
from digest.store.db import session_scope
from digest.store.models import Comparison, Delivery, Edition, EditionStatus
from digest.transports.base import OutgoingMessage
from digest.transports.memory import MemoryTransport
from subscribers import repository
from tests.sending_support import send_options

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def _comparison(ident: str, hours_ago: int) -> Comparison:
    at = MONDAY - timedelta(hours=hours_ago)
    return Comparison(
        id=ident, url=f"https://x.test/{ident}", title=f"Title {ident}", question="",
        category="Dev", published_at=at, updated_at=at, tools=[], reviews=[],
        first_seen_at=at, last_seen_at=at,
    )  # fmt: skip


def _compose(engine: Engine, *, approval: bool = False) -> str:
    with session_scope(engine) as session:
        for i, ident in enumerate(("a", "b", "c")):
            session.add(_comparison(ident, hours_ago=i + 1))
        session.add(_comparison("late", hours_ago=400))  # too old to be chosen
    with session_scope(engine) as session:
        result = editions.compose(
            session, now=MONDAY, tz=BERLIN, max_comparisons=10,
            approval_deadline=MONDAY + timedelta(days=1) if approval else None,
        )  # fmt: skip
        assert result.edition is not None
        return result.edition.key


def _edit(
    engine: Engine, key: str, change: Edit, actor: str = "ed@example.com"
) -> shaping.EditResult:
    with session_scope(engine) as session:
        return shaping.apply_edit(session, key=key, edit=change, actor=actor, via="cli", now=MONDAY)


def _shown(engine: Engine, key: str) -> list[str]:
    with session_scope(engine) as session:
        edition = editions.get(session, key=key)
        assert edition is not None
        return [c.id for c in editions.comparisons_of(session, edition=edition)]


def test_exclude_include_and_order_change_what_the_edition_holds(engine: Engine) -> None:
    key = _compose(engine)
    assert _shown(engine, key) == ["a", "b", "c"]
    result = _edit(engine, key, Edit(exclude=("b",), order=("c", "a")))
    assert _shown(engine, key) == ["c", "a"]
    assert result.revision == 1
    assert result.changes == ["excluded comparison b", "order: c, a"]
    # The excluded one is kept (and shown as excluded), not free for next week.
    with session_scope(engine) as session:
        edition = editions.get(session, key=key)
        assert edition is not None
        assert [(e.comparison.id, e.excluded) for e in shaping.lineup(session, edition)] == [
            ("c", False), ("a", False), ("b", True),
        ]  # fmt: skip
        later = editions.eligible(session, now=MONDAY, max_age=timedelta(days=30), limit=10)
    assert "b" not in [c.id for c in later]
    _edit(engine, key, Edit(include=("b", "late")))
    assert _shown(engine, key) == ["c", "a", "b", "late"]


def test_every_change_is_in_the_audit_log_and_a_repeat_changes_nothing(engine: Engine) -> None:
    key = _compose(engine)
    change = Edit(
        note="**Hello** readers", subject="Our picks\r\nBcc: x@evil.test", preheader="Three",
        sponsor=Sponsor("Try Acme", "https://acme.test/?utm=x"),
    )  # fmt: skip
    first = _edit(engine, key, change)
    assert "subject: Our picks Bcc: x@evil.test" in first.changes  # one line, always
    again = _edit(engine, key, change)
    assert again.changes == [] and again.revision == first.revision
    with session_scope(engine) as session:
        logged = audit.recent(session, target=f"edition:{key}")
        assert {e.actor for e in logged} == {"ed@example.com"}
        assert {e.via for e in logged} == {"cli"}
        assert sorted(e.detail for e in logged) == sorted(first.changes)
        edition = editions.get(session, key=key)
        assert edition is not None
        stored = shaping.editorial_of(session, edition)
        assert stored is not None and stored.sponsor_label == "Sponsor"
    _edit(engine, key, Edit(clear_sponsor=True, note=""))
    with session_scope(engine) as session:
        stored = shaping.editorial_of(session, editions.get(session, key=key))  # type: ignore[arg-type]
        assert stored is not None and (stored.sponsor_text, stored.note) == ("", "")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (Edit(exclude=("zzz",)), "'zzz' is not in edition"),
        (Edit(include=("nope",)), "there is no comparison 'nope'"),
        (Edit(order=("a", "a")), "names a comparison twice"),
        (Edit(exclude=("a", "b", "c")), "at least one comparison"),
        (Edit(subject="x" * 151), "the subject is 151 characters; the limit is 150"),
        (Edit(sponsor=Sponsor("Acme", "javascript:alert(1)")), "must be an http(s) URL"),
        (Edit(sponsor=Sponsor("", "https://acme.test")), "needs a text"),
    ],
)
def test_a_bad_edit_says_why_and_changes_nothing(engine: Engine, change: Edit, words: str) -> None:
    key = _compose(engine)
    with pytest.raises(EditInvalid, match=re.escape(words)):
        _edit(engine, key, dataclasses.replace(change, note="would be lost"))
    assert _shown(engine, key) == ["a", "b", "c"]
    with session_scope(engine) as session:
        assert shaping.editorial_of(session, editions.get(session, key=key)) is None  # type: ignore[arg-type]
        assert audit.recent(session) == []


def test_an_edition_in_another_edition_cannot_be_included_twice(engine: Engine) -> None:
    key = _compose(engine)
    with session_scope(engine) as session:
        session.add(_comparison("new", hours_ago=0))
        later = editions.compose(
            session, now=MONDAY + timedelta(days=7), tz=BERLIN, max_comparisons=10
        )
        assert later.edition is not None
    with pytest.raises(EditInvalid, match=f"already in edition {later.edition.key}"):
        _edit(engine, key, Edit(include=("new",)))


def test_an_edit_after_approval_withdraws_it(engine: Engine) -> None:
    key = _compose(engine, approval=True)
    with session_scope(engine) as session:
        editions.approve(session, key=key, by="boss", now=MONDAY)
    result = _edit(engine, key, Edit(subject="Changed"))
    assert result.approval_withdrawn
    with session_scope(engine) as session:
        edition = editions.get(session, key=key)
        assert edition is not None and edition.approved_at is None
        assert editions.awaiting_approval(edition)


def _start_send(engine: Engine, key: str, revision: int) -> tuple[MemoryTransport, object]:
    with session_scope(engine) as session:
        repository.add(session, email="reader@example.com", now=MONDAY)
        edition = editions.get(session, key=key)
        assert edition is not None
    transport = MemoryTransport()

    def build(recipients: Sequence[Recipient], now: datetime) -> list[OutgoingMessage | Skip]:
        return [
            OutgoingMessage(r.delivery_id, "d@t.example", r.email, "<m@t>", b"x")
            for r in recipients
        ]

    options = dataclasses.replace(send_options(), content_revision=revision)
    report = asyncio.run(
        send_edition(
            engine,
            edition=edition,
            transport=transport,
            build_messages=build,
            options=options,
            clock=lambda: MONDAY,
            owner="t",
        )
    )
    return transport, report


def test_a_send_rendered_before_an_edit_plans_nothing(engine: Engine) -> None:
    key = _compose(engine)
    _edit(engine, key, Edit(subject="v1"))  # revision 1: the send below rendered revision 0
    transport, report = _start_send(engine, key, revision=0)
    assert report.halted and "was edited while this run was starting" in report.stopped_reason  # type: ignore[attr-defined]
    assert transport.handed == []
    with session_scope(engine) as session:
        assert session.execute(select(Delivery)).first() is None
        edition = editions.get(session, key=key)
        assert edition is not None and edition.planned_at is None
    # Rendered from the current revision, it goes; after that nothing can change.
    transport, report = _start_send(engine, key, revision=1)
    assert [m.recipient for m in transport.handed] == ["reader@example.com"]
    with pytest.raises(EditRefused, match="has started sending"):
        _edit(engine, key, Edit(subject="too late"))


def test_cancelled_editions_refuse_edits_and_early_editions_wait(engine: Engine) -> None:
    key = _compose(engine)
    with session_scope(engine) as session:
        editions.cancel(session, key=key, note="no", now=MONDAY)
    with pytest.raises(EditRefused, match="is cancelled"):
        _edit(engine, key, Edit(note="x"))
    early = Edition(key="2026-W49", cutoff=MONDAY, composed_at=MONDAY)
    weekly = ScheduleConfig()
    assert not_yet_due(early, now=MONDAY, tz=BERLIN, schedule=weekly)
    assert not not_yet_due(early, now=MONDAY + timedelta(days=7), tz=BERLIN, schedule=weekly)
    assert early.status == EditionStatus.composed
