"""``digest schedule``: APScheduler 3.x driven by a controlled clock (time-machine).

The scheduler runs for real (job store in the database, thread pool, listeners);
only the clock is moved, and :meth:`Service.wakeup` makes it look at the job store
at once instead of after its real-time sleep.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
from packaging.requirements import Requirement
from sqlalchemy import text

from digest.ops import scheduler
from digest.store.models import EditionStatus
from tests.scheduling_support import HOUR, Site, at, running, settle, wait_for
from tests.support import REPO

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(at(BERLIN, 2026, 1, 1, 0, 0), tick=False) as traveller:
        yield traveller


def _site(tmp_path: Path, db_url: str, zone: ZoneInfo) -> Site:
    site = Site(tmp_path, db_url, site={"timezone": zone.key})
    site.readers(2)
    return site


@pytest.mark.slow
@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK], ids=["berlin", "new_york"])
def test_a_year_of_mondays_gives_one_edition_per_week(
    tmp_path: Path, sqlite_url: str, clock: time_machine.Coordinates, zone: ZoneInfo
) -> None:
    site = _site(tmp_path, sqlite_url, zone)
    first = at(zone, 2026, 1, 5, 8, 0)  # a Monday, in both zones' winter time
    clock.move_to(first)
    with running(site.rt) as service:
        offsets = set()
        for week in range(52):  # through the spring and autumn clock changes
            monday = first + timedelta(weeks=week)
            site.publish((monday - timedelta(days=3)).astimezone(zone))  # the Friday before
            for hours in (0, 0.5, 1.02, 1.5, 4):  # 08:00 … 12:00 local: one fire at 09:00
                clock.move_to(monday.replace(hour=8) + hours * HOUR)
                service.wakeup()
                if hours == 1.02:
                    wait_for(lambda w=week: site.runs("weekly") == w + 1)
                    offsets.add(monday.replace(hour=9).utcoffset())
            settle(0.05)
        assert site.runs("weekly") == 52
    keys = [e.key for e in site.editions()]
    assert len(keys) == len(set(keys)) == 52  # one per ISO week: never two, never none
    assert all(e.status == EditionStatus.sent for e in site.editions())
    assert len(offsets) == 2  # the year crossed both daylight-saving changes
    assert site.digests_to("r0@example.com") == 52


def test_down_from_0850_to_1030_runs_the_week_once(
    tmp_path: Path, sqlite_url: str, clock: time_machine.Coordinates
) -> None:
    site = _site(tmp_path, sqlite_url, BERLIN)
    site.publish(at(BERLIN, 2026, 11, 20, 14, 0))
    clock.move_to(at(BERLIN, 2026, 11, 23, 8, 50))
    first = scheduler.Service(site.rt)
    first.start()
    first.stop()
    clock.move_to(at(BERLIN, 2026, 11, 23, 10, 30))
    with running(site.rt) as second:
        wait_for(lambda: site.runs("weekly") == 1)
        settle()
        second.wakeup()
        settle()
    assert site.runs("weekly") == 1
    assert [e.key for e in site.editions()] == ["2026-W48"]
    assert site.digests_to("r1@example.com") == 1


def test_down_for_three_weeks_runs_once_not_three_times(
    tmp_path: Path, sqlite_url: str, clock: time_machine.Coordinates
) -> None:
    site = _site(tmp_path, sqlite_url, BERLIN)
    clock.move_to(at(BERLIN, 2026, 11, 2, 8, 50))
    first = scheduler.Service(site.rt)
    first.start()
    first.stop()
    for week in range(4):
        site.publish(at(BERLIN, 2026, 10, 30, 14, 0) + timedelta(weeks=week))
    clock.move_to(at(BERLIN, 2026, 11, 23, 10, 30))  # three Mondays later
    with running(site.rt):
        wait_for(lambda: site.runs("weekly") == 1)
        settle()
    assert site.runs("weekly") == 1
    assert [e.key for e in site.editions()] == ["2026-W48"]


def test_restarting_twice_keeps_one_job_per_id(
    tmp_path: Path, db_url: str, clock: time_machine.Coordinates
) -> None:
    site = _site(tmp_path, db_url, BERLIN)
    clock.move_to(at(BERLIN, 2026, 11, 24, 12, 0))
    for _ in range(3):
        service = scheduler.Service(site.rt)
        service.start()
        service.stop()
    with site.rt.engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM apscheduler_jobs ORDER BY id")).scalars().all()
    assert ids == ["dispatch", "poll", "weekly"]
    fires = scheduler.next_fires(site.rt.engine)
    assert fires["weekly"] == at(BERLIN, 2026, 11, 30, 9, 0)


def test_a_second_scheduler_does_not_start(
    tmp_path: Path, sqlite_url: str, clock: time_machine.Coordinates
) -> None:
    from digest.errors import LeaseHeld

    site = _site(tmp_path, sqlite_url, BERLIN)
    with running(site.rt), pytest.raises(LeaseHeld):
        scheduler.Service(site.rt, owner="elsewhere:1:x").start()


def test_apscheduler_is_required_at_3_11_2_or_later_and_below_4() -> None:
    """3.11.x fixed cron fires across daylight-saving changes; 4.x is another API."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (required,) = [
        Requirement(r) for r in project["dependencies"] if Requirement(r).name == "apscheduler"
    ]
    assert not required.specifier.contains("3.11.1")
    assert required.specifier.contains("3.11.2")
    assert not required.specifier.contains("4.0.0")
    assert required.specifier.contains(version("apscheduler"))
