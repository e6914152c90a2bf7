"""The dead man's switch on a fresh install (issue 12): a week due before the instance
first ran is not "missed", however old the feed's history; the first week due after
it is judged as usual."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import time_machine

from digest.ops import health, jobs
from tests.scheduling_support import Site, at

BERLIN = ZoneInfo("Europe/Berlin")


def _site(tmp_path: Path, db_url: str) -> Site:
    site = Site(tmp_path, db_url)
    site.readers(1)
    site.publish(at(BERLIN, 2026, 11, 20, 14, 0), n=2)  # the Friday before Monday 23 Nov
    return site


def test_a_fresh_install_does_not_report_the_week_before_it_existed(
    tmp_path: Path, db_url: str
) -> None:
    site = _site(tmp_path, db_url)
    with time_machine.travel(at(BERLIN, 2026, 11, 25, 10, 0), tick=False):  # a Wednesday
        fetched = site.cli("fetch")  # the first thing the new instance does
        check = site.cli("check")
        status = site.cli("status")
    assert fetched.exit_code == 0, fetched.stdout
    assert check.exit_code == 0, check.stdout
    assert "All is well." in check.stdout
    assert "no edition went out" not in status.stdout
    assert site.operator_subjects() == []


def test_installed_on_the_monday_after_the_send_time_is_not_missed(
    tmp_path: Path, sqlite_url: str
) -> None:
    site = _site(tmp_path, sqlite_url)
    with time_machine.travel(at(BERLIN, 2026, 11, 23, 14, 0), tick=False) as clock:
        jobs.poll(site.rt, trigger="cli")  # installed at 14:00, five hours after 09:00
        clock.move_to(at(BERLIN, 2026, 11, 23, 15, 30))  # past the 6-hour grace
        assert health.incidents(site.rt, now=site.rt.now()) == []


def test_the_first_week_after_the_install_is_judged(tmp_path: Path, sqlite_url: str) -> None:
    site = _site(tmp_path, sqlite_url)
    with time_machine.travel(at(BERLIN, 2026, 11, 25, 10, 0), tick=False) as clock:
        jobs.poll(site.rt, trigger="schedule")
        clock.move_to(at(BERLIN, 2026, 11, 30, 15, 30))  # nobody sent on Monday 30 Nov
        found = health.incidents(site.rt, now=site.rt.now())
    assert [i.name for i in found] == ["missed:2026-W49"]


def test_a_job_run_before_the_send_time_counts_as_running(tmp_path: Path, sqlite_url: str) -> None:
    site = _site(tmp_path, sqlite_url)
    site.feed.write_text("{not json")  # the feed was down while the instance ran
    with time_machine.travel(at(BERLIN, 2026, 11, 22, 12, 0), tick=False) as clock:
        assert jobs.poll(site.rt, trigger="schedule").outcome == jobs.FAILED
        site.publish(at(BERLIN, 2026, 11, 20, 14, 0))  # back, with Friday's comparisons
        clock.move_to(at(BERLIN, 2026, 11, 23, 15, 0))
        jobs.poll(site.rt, trigger="schedule")  # first stored after Monday 09:00
        clock.move_to(at(BERLIN, 2026, 11, 23, 15, 30))
        found = health.incidents(site.rt, now=site.rt.now())
    assert [i.name for i in found] == ["missed:2026-W48"]
