"""Approval expiry without ``digest schedule`` (issue 12): in cron mode ``digest run``
and ``digest check`` cancel a draft past its approval deadline and tell the operators
once; racing callers cancel it once."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from digest.editions import lifecycle as editions
from digest.store.db import session_scope
from digest.store.models import Comparison, EditionStatus
from tests.scheduling_support import OPERATOR, approval_monday, at, sink_operator_subjects
from tests.smtp_sink import SmtpSink

BERLIN = ZoneInfo("Europe/Berlin")
EXPIRED = "[Test Weekly] edition 2026-W48 was not approved in time and will not be sent"


def _digests(sink: SmtpSink) -> int:
    return sum(n for to, n in sink.handler.per_recipient().items() if to != OPERATOR)


def test_cron_check_cancels_a_late_draft_and_tells_the_operators_once(
    tmp_path: Path, db_url: str, sink: SmtpSink
) -> None:
    with approval_monday(tmp_path, db_url, sink, readers=2) as (site, clock):
        composed = site.cli("run")  # cron, no scheduler: a draft awaits approval
        assert composed.exit_code == 0 and "awaits approval" in composed.stdout
        clock.shift(3 * 3600)
        assert site.cli("check").exit_code == 0  # within the deadline: nothing happens
        assert site.editions()[0].status == EditionStatus.composed
        clock.shift(3600 + 60)  # past the 4-hour deadline
        first = site.cli("check")
        second = site.cli("check")
        late = site.cli("run")
    assert first.exit_code == 0, first.stdout
    assert "2026-W48 was not approved by its deadline: cancelled" in first.stdout
    assert "2026-W48" not in second.stdout
    assert site.editions()[0].status == EditionStatus.cancelled
    assert site.editions()[0].status_note == editions.APPROVAL_EXPIRED
    assert sink_operator_subjects(sink).count(EXPIRED) == 1
    assert late.exit_code == 0, late.stdout
    assert "awaits approval" not in late.stdout
    assert "cancelled: not approved by its deadline" in late.stdout
    assert _digests(sink) == 0


def test_cron_run_cancels_a_late_draft_and_tells_the_operators_once(
    tmp_path: Path, sqlite_url: str, sink: SmtpSink
) -> None:
    with approval_monday(tmp_path, sqlite_url, sink, readers=2) as (site, clock):
        assert site.cli("run").exit_code == 0
        clock.shift(5 * 3600)
        expired = site.cli("run")
        again = site.cli("run")
        check = site.cli("check")
    assert expired.exit_code == 0, expired.stdout
    assert f"Emailed the operators: {EXPIRED.removeprefix('[Test Weekly] ')}" in expired.stdout
    assert "Emailed the operators" not in again.stdout
    assert check.exit_code == 0, check.stdout  # cancelled by a human's silence: no incident
    assert site.editions()[0].status == EditionStatus.cancelled
    assert sink_operator_subjects(sink).count(EXPIRED) == 1
    assert _digests(sink) == 0


def test_expiring_twice_cancels_a_late_draft_once(engine: Engine) -> None:
    monday = at(BERLIN, 2026, 11, 23, 9, 0)
    with session_scope(engine) as session:
        session.add(_comparison(monday))
    with session_scope(engine) as session:
        editions.compose(
            session,
            now=monday,
            tz=BERLIN,
            max_comparisons=10,
            approval_deadline=monday.replace(hour=13),
        )
    later = monday.replace(hour=14)
    with session_scope(engine) as one, session_scope(engine) as other:
        first = editions.expire_unapproved(one, now=later)
        one.commit()
        second = editions.expire_unapproved(other, now=later)
    assert first == ["2026-W48"] and second == []
    with session_scope(engine) as session:
        assert editions.expire_unapproved(session, now=later) == []


def _comparison(when: Any) -> Comparison:
    return Comparison(
        id="c1",
        url="https://x.test/c1",
        title="c1",
        question="",
        category="Dev",
        published_at=when.replace(day=20),
        updated_at=when.replace(day=20),
        tools=[],
        reviews=[],
        first_seen_at=when.replace(day=20),
        last_seen_at=when.replace(day=20),
    )
