"""Every reader at their own hour (issue 17, Done-means 4): with ``[schedule]
local_delivery`` the edition starts a day early, as Mailchimp's Timewarp does, so a
Tokyo reader of a site in Europe/Berlin gets it at 09:00 Tokyo time.

SQLite and PostgreSQL; the scheduler's own jobs (:func:`digest.ops.jobs.weekly`,
:func:`digest.ops.jobs.dispatch`) on the real pipeline with the memory transport,
under a moved clock (``Clock`` from tests/test_local_delivery.py: the set instant plus
the real time since, so the checks on send times bound them by the clock after the run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from digest import config
from digest.config.runtime import Runtime
from digest.editions import lifecycle, weeks
from digest.ops import jobs
from digest.ops.scheduler import triggers
from digest.store.db import session_scope, upgrade
from digest.store.models import Delivery, DeliveryState, Edition, EditionStatus
from digest.transports.memory import MemoryTransport
from subscribers import repository
from subscribers.models import Subscriber
from tests.support import write_config
from tests.test_local_delivery import (
    MONDAY_9_BERLIN,
    NINE_NEW_YORK,
    NINE_TOKYO,
    Clock,
    _runtime,
)

BERLIN = ZoneInfo("Europe/Berlin")
SUNDAY_9_BERLIN = MONDAY_9_BERLIN - timedelta(days=1)  # 22 Nov 2026, ISO week 2026-W47
READERS = {
    "tokyo@example.com": "Asia/Tokyo",
    "berlin@example.com": "Europe/Berlin",
    "ny@example.com": "America/New_York",
    "plain@example.com": "",  # no zone: the site's time
}


def _open(tmp_path: Path, db_url: str, clock: Clock, **edition: object) -> Runtime:
    return _runtime(
        tmp_path, db_url, clock, local=True, readers=READERS, added=SUNDAY_9_BERLIN, edition=edition
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(SUNDAY_9_BERLIN)


@pytest.fixture
def rt(tmp_path: Path, db_url: str, clock: Clock) -> Iterator[Runtime]:
    runtime = _open(tmp_path, db_url, clock)
    yield runtime
    runtime.close()


def _sent(rt: Runtime) -> dict[str, datetime]:
    """``{reader: when their row was recorded sent}``."""
    stmt = (
        select(Subscriber.email, Delivery.updated_at)  # type: ignore[call-overload]
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.state == DeliveryState.sent.value)
    )
    with session_scope(rt.engine) as session:
        return {str(e): at for e, at in session.execute(stmt)}


def _handed(rt: Runtime) -> list[str]:
    transport = rt.transport()
    assert isinstance(transport, MemoryTransport)
    return sorted(m.recipient for m in transport.sent)


def _dispatch_at(rt: Runtime, clock: Clock, when: datetime) -> tuple[jobs.JobResult, datetime]:
    """Run the scheduler's dispatch job at ``when``; return it and the clock after it."""
    clock.set(when)
    result = asyncio.run(jobs.dispatch(rt, trigger="schedule"))
    return result, clock()


def _edition(rt: Runtime) -> Edition:
    with session_scope(rt.engine) as session:
        found = session.execute(select(Edition)).scalars().all()
    assert [e.key for e in found] == ["2026-W48"]
    edition: Edition = found[0]
    return edition


def test_tokyo_gets_the_edition_at_nine_tokyo_time(rt: Runtime, clock: Clock) -> None:
    # Sunday 09:00 in Berlin: the scheduler's early weekly fire composes Monday's
    # edition (the next ISO week) and sends nothing: nobody's 09:00 Monday has come.
    weekly = asyncio.run(jobs.weekly(rt, trigger="schedule"))
    assert _edition(rt).key == "2026-W48"
    assert weekly.outcome == jobs.SCHEDULED and weekly.exit_code == 0
    assert "4 deliveries are waiting for their readers' local delivery time" in weekly.detail
    assert "next due at 2026-11-23 00:00 UTC" in weekly.detail
    assert _handed(rt) == [] and _sent(rt) == {}

    # Monday 00:00 UTC = 09:00 in Tokyo: the dispatch job sends Tokyo only.
    first, after = _dispatch_at(rt, clock, NINE_TOKYO - timedelta(minutes=1))
    assert first.outcome == jobs.NOTHING and _handed(rt) == []
    first, after = _dispatch_at(rt, clock, NINE_TOKYO)
    assert first.outcome == jobs.SENT and _handed(rt) == ["tokyo@example.com"]
    assert NINE_TOKYO <= _sent(rt)["tokyo@example.com"] <= after

    # 08:00 UTC = 09:00 in Berlin: the Berlin reader and the one without a zone.
    _, after = _dispatch_at(rt, clock, MONDAY_9_BERLIN)
    assert _handed(rt) == ["berlin@example.com", "plain@example.com", "tokyo@example.com"]
    sent = _sent(rt)
    assert MONDAY_9_BERLIN <= sent["berlin@example.com"] <= after
    assert MONDAY_9_BERLIN <= sent["plain@example.com"] <= after

    # 14:00 UTC = 09:00 in New York: the last one; the edition is sent.
    _, after = _dispatch_at(rt, clock, NINE_NEW_YORK)
    assert NINE_NEW_YORK <= _sent(rt)["ny@example.com"] <= after
    assert len(_handed(rt)) == 4 and _edition(rt).status == EditionStatus.sent


def test_a_run_at_the_sites_hour_still_sends_zones_that_passed_at_once(
    rt: Runtime, clock: Clock
) -> None:
    """``digest run`` from cron at the site's time works as before: Tokyo's 09:00 has
    passed, so Tokyo gets it at once with Berlin; New York waits (exit 0, scheduled)."""
    clock.set(MONDAY_9_BERLIN)
    weekly = asyncio.run(jobs.weekly(rt, trigger="cli"))
    assert _handed(rt) == ["berlin@example.com", "plain@example.com", "tokyo@example.com"]
    assert weekly.outcome == jobs.SCHEDULED and weekly.exit_code == 0
    assert "3 sent" in weekly.detail and "next due at 2026-11-23 14:00 UTC" in weekly.detail


def test_an_early_draft_asks_for_approval_a_day_ahead(
    tmp_path: Path, db_url: str, clock: Clock
) -> None:
    """With ``require_approval`` the early fire composes a draft (deadline: 24 h after
    composing); approved after Tokyo's hour, Tokyo gets it at once, the rest at theirs."""
    rt = _open(tmp_path, db_url, clock, require_approval=True)
    try:
        weekly = asyncio.run(jobs.weekly(rt, trigger="schedule"))
        assert weekly.outcome == jobs.AWAITING and weekly.exit_code == 0
        deadline = _edition(rt).approval_deadline
        assert deadline is not None
        assert SUNDAY_9_BERLIN + timedelta(hours=24) <= deadline <= clock() + timedelta(hours=24)
        result, _ = _dispatch_at(rt, clock, NINE_TOKYO + timedelta(minutes=30))
        assert result.outcome == jobs.NOTHING and _handed(rt) == []  # not approved yet
        with session_scope(rt.engine) as session:
            lifecycle.approve(session, key="2026-W48", by="ed", now=clock())
        _dispatch_at(rt, clock, NINE_TOKYO + timedelta(minutes=31))
        assert _handed(rt) == ["tokyo@example.com"]
    finally:
        rt.close()


def test_without_local_delivery_nothing_starts_early(
    tmp_path: Path, db_url: str, clock: Clock
) -> None:
    path = write_config(tmp_path, transport={"kind": "memory"}, schedule={"day": "mon"})
    env = {"DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"}
    rt = Runtime.open(config.load(path, environ=env), clock=clock)
    try:
        upgrade(rt.engine)
        with session_scope(rt.engine) as session:
            repository.add(session, email="tokyo@example.com", time_zone="Asia/Tokyo", now=clock())
        weekly = asyncio.run(jobs.weekly(rt, trigger="schedule"))  # Sunday: week W47's
        assert weekly.outcome == jobs.SENT and _handed(rt) == ["tokyo@example.com"]
        with session_scope(rt.engine) as session:
            assert [e.key for e in session.execute(select(Edition)).scalars()] == ["2026-W47"]
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("day", "local", "fires"),
    [
        ("mon", True, datetime(2026, 11, 22, 9, 0, tzinfo=BERLIN)),  # Sunday, before
        ("mon", False, datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN)),
        ("sun", True, datetime(2026, 11, 21, 9, 0, tzinfo=BERLIN)),  # "sun" → "sat"
    ],
)
def test_the_weekly_trigger_fires_the_day_before_with_local_delivery(
    tmp_path: Path, day: str, local: bool, fires: datetime
) -> None:
    path = write_config(tmp_path, schedule={"day": day, "local_delivery": local})
    cfg = config.load(path, environ={"DIGEST_SECRET_KEY": "k"})
    after = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # a Friday
    assert triggers(cfg)["weekly"].get_next_fire_time(None, after) == fires


def test_the_week_an_early_fire_composes() -> None:
    monday = config.ScheduleConfig(day="mon", time="09:00", local_delivery=True)
    sunday = config.ScheduleConfig(day="sun", time="09:00", local_delivery=True)
    off = config.ScheduleConfig(day="mon", time="09:00")
    at = SUNDAY_9_BERLIN
    assert weeks.due_week(monday, at, BERLIN, BERLIN) == "2026-W48"  # next ISO week
    assert weeks.due_week(monday, at - timedelta(hours=2), BERLIN, BERLIN) == "2026-W47"
    assert weeks.due_week(off, at, BERLIN, BERLIN) == "2026-W47"
    assert weeks.due_week(sunday, at - timedelta(days=1), BERLIN, BERLIN) == "2026-W47"
    # Clocks go back on Sunday 25 Oct 2026: the fire at Sunday 01:00 CEST is 25 h before
    # Monday 01:00 CET, an hour before the early start; it still composes Monday's week.
    one = config.ScheduleConfig(day="mon", time="01:00", local_delivery=True)
    fall = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)  # Sunday 01:00 in Berlin (CEST)
    assert weeks.due_week(one, fall, BERLIN, BERLIN) == "2026-W44"
    assert weeks.starts_at(one, "2026-W44", BERLIN) == fall + timedelta(hours=1)  # 24 h
    fall_edition = Edition(key="2026-W44", cutoff=fall, composed_at=fall)
    assert weeks.not_yet_due(fall_edition, now=fall, tz=BERLIN, schedule=one)
    early = Edition(key="2026-W48", cutoff=at, composed_at=at)
    assert not weeks.not_yet_due(early, now=at, tz=BERLIN, schedule=monday)
    assert weeks.not_yet_due(early, now=at, tz=BERLIN, schedule=off)
    second = at - timedelta(seconds=1)
    assert weeks.not_yet_due(early, now=second, tz=BERLIN, schedule=monday)
