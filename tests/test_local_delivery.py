"""Local delivery time: each reader's row is due at the scheduled hour in their own
zone, and the sender only takes rows that are due. SQLite and PostgreSQL, the real
pipeline with the memory transport and an injected clock."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console
from sqlalchemy import select

from digest import config, pipeline
from digest.cli.output import print_ledger, print_status
from digest.config.runtime import Runtime
from digest.delivery.localtime import due_for
from digest.delivery.sending import SendReport
from digest.store.db import session_scope, upgrade
from digest.store.models import Delivery, Edition
from digest.transports.memory import MemoryTransport
from subscribers import csvio, repository
from subscribers.errors import SubscriberInputError
from subscribers.models import Subscriber
from tests.support import write_config

# Monday 23 November 2026 (ISO week 2026-W48), 09:00 in Berlin, the site's zone.
MONDAY_9_BERLIN = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
NINE_NEW_YORK = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)  # 15:00 in Berlin
NINE_TOKYO = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # 01:00 in Berlin: passed
READERS = {
    "ny@example.com": "America/New_York",
    "tokyo@example.com": "Asia/Tokyo",
    "plain@example.com": "",
}


class Clock:
    """Now is ``start`` plus the real time since it was set (so waits end)."""

    def __init__(self, start: datetime) -> None:
        self.set(start)

    def set(self, start: datetime) -> None:
        self.start, self.origin = start, time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.origin)


def _runtime(
    tmp_path: Path,
    db_url: str,
    clock: Clock,
    *,
    local: bool,
    readers: dict[str, str] = READERS,
    added: datetime = MONDAY_9_BERLIN,
    edition: dict[str, object] | None = None,
) -> Runtime:
    """A memory-transport runtime, Monday 09:00 delivery, with ``readers`` (address →
    zone) added at ``added`` (tests/test_local_early.py uses it too)."""
    path = write_config(
        tmp_path,
        transport={"kind": "memory"},
        schedule={"day": "mon", "time": "09:00", "local_delivery": local},
        send={"max_retry_wait_seconds": 5},
        edition=edition or {},
    )
    env = {"DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"}
    rt = Runtime.open(config.load(path, environ=env), clock=clock)
    upgrade(rt.engine)
    with session_scope(rt.engine) as session:
        for email, zone in readers.items():
            repository.add(session, email=email, time_zone=zone, now=added)
    return rt


def _edition(rt: Runtime) -> Edition:
    pipeline.fetch(rt)
    edition = pipeline.compose(rt).edition
    assert edition is not None and edition.key == "2026-W48"
    return edition


def _send(rt: Runtime, edition: Edition) -> SendReport:
    return asyncio.run(pipeline.send(rt, edition=edition))


def _sent_to(rt: Runtime) -> list[str]:
    transport = rt.transport()
    assert isinstance(transport, MemoryTransport)
    return sorted(m.recipient for m in transport.sent)


def _due(rt: Runtime) -> dict[str, datetime | None]:
    stmt = select(Subscriber.email, Delivery.due_at).join(  # type: ignore[call-overload]
        Subscriber, Subscriber.id == Delivery.subscriber_id
    )
    with session_scope(rt.engine) as session:
        return {str(e): d for e, d in session.execute(stmt)}


Open = Callable[..., tuple[Runtime, Clock]]


@pytest.fixture
def run_local(tmp_path: Path, db_url: str) -> Iterator[Open]:
    """Opens the runtime (three readers: New York, Tokyo, no zone) at Monday 09:00
    in Berlin; ``local=False`` turns local delivery time off."""
    opened: list[Runtime] = []

    def make(*, local: bool = True) -> tuple[Runtime, Clock]:
        clock = Clock(MONDAY_9_BERLIN)
        rt = _runtime(tmp_path, db_url, clock, local=local)
        opened.append(rt)
        return rt, clock

    yield make
    for rt in opened:
        rt.close()


def test_each_reader_is_due_at_nine_in_their_own_zone(
    run_local: Open,
) -> None:
    rt, clock = run_local()
    edition = _edition(rt)

    first = _send(rt, edition)  # Monday 09:00 in Berlin
    assert _due(rt) == {
        "ny@example.com": NINE_NEW_YORK,
        "tokyo@example.com": NINE_TOKYO,  # its 09:00 passed: due at once, instant kept
        "plain@example.com": MONDAY_9_BERLIN,  # no zone: the site's time, now
    }
    assert _sent_to(rt) == ["plain@example.com", "tokyo@example.com"]
    assert first.sent == 2 and first.pending == 1 and not first.finished
    assert "1 deliveries are waiting for their readers' local delivery time" in (
        first.stopped_reason
    )
    assert "next due at 2026-11-23 14:00 UTC" in first.stopped_reason

    clock.set(NINE_NEW_YORK - timedelta(minutes=1))  # 14:59 in Berlin: not yet
    assert _send(rt, edition).sent == 0 and _sent_to(rt) == [
        "plain@example.com",
        "tokyo@example.com",
    ]

    clock.set(NINE_NEW_YORK)  # 15:00 in Berlin, 09:00 in New York
    last = _send(rt, edition)
    assert last.sent == 1 and last.finished and not last.stopped_reason
    assert _sent_to(rt) == ["ny@example.com", "plain@example.com", "tokyo@example.com"]


def test_a_run_waits_for_a_row_due_within_the_retry_wait(
    run_local: Open,
) -> None:
    rt, clock = run_local()
    edition = _edition(rt)
    clock.set(NINE_NEW_YORK - timedelta(seconds=1))  # planned a second before New York's 09:00
    report = _send(rt, edition)
    assert report.sent == 3 and report.finished
    assert _sent_to(rt) == ["ny@example.com", "plain@example.com", "tokyo@example.com"]


def test_with_local_delivery_off_everyone_is_due_at_once(
    run_local: Open,
) -> None:
    rt, _ = run_local(local=False)
    report = _send(rt, _edition(rt))
    assert report.sent == 3 and report.finished
    assert set(_due(rt).values()) == {None}


def test_status_shows_rows_due_later(run_local: Open) -> None:
    rt, _ = run_local()
    edition = _edition(rt)
    _send(rt, edition)
    console = Console(file=io.StringIO(), width=200)
    print_ledger(console, rt, edition.key)
    print_status(console, rt)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "1 queued, 2 sent" in text
    assert "1 due later (local delivery time), next at 2026-11-23 14:00 UTC" in text
    assert "2026-W48: 1 due later (local delivery time)" in text


def test_due_times_follow_daylight_saving_and_bad_zones_are_due_at_the_sites_time() -> None:
    schedule = config.ScheduleConfig(day="mon", time="09:00", local_delivery=True)
    summer, winter = due_for(schedule, "2026-W27"), due_for(schedule, "2026-W48")
    assert summer("America/New_York") == datetime(2026, 6, 29, 13, 0, tzinfo=UTC)  # EDT
    assert winter("America/New_York") == NINE_NEW_YORK  # EST
    assert winter("Nowhere/Atlantis") is None
    site = due_for(schedule, "2026-W48", ZoneInfo("Europe/Berlin"))
    assert site("") == site("Nowhere/Atlantis") == MONDAY_9_BERLIN  # the site's time


def test_subscriber_time_zones_are_checked(engine: Any) -> None:
    with session_scope(engine) as session:
        with pytest.raises(SubscriberInputError, match="unknown time zone 'Mars/Olympus'"):
            repository.add(
                session, email="m@example.com", time_zone="Mars/Olympus", now=MONDAY_9_BERLIN
            )
        with pytest.raises(SubscriberInputError, match="did you mean 'America/New_York'"):
            repository.add(
                session, email="m@example.com", time_zone="america/new_york", now=MONDAY_9_BERLIN
            )
        added = repository.add(
            session, email="t@example.com", time_zone=" Asia/Tokyo ", now=MONDAY_9_BERLIN
        )
        assert added.subscriber.time_zone == "Asia/Tokyo"


def test_csv_import_names_the_line_of_a_bad_time_zone(engine: Any) -> None:
    text = (
        "email,name,time_zone\n"
        "ada@example.com,Ada,Europe/Berlin\n"
        "bob@example.com,Bob,Mars/Olympus\n"
        "cy@example.com,Cy,\n"
        "CY@example.com,,Asia/Tokyo\n"  # another spelling: merged, fills the blank zone
    )
    with session_scope(engine) as session:
        report = csvio.import_csv(
            session, stream=io.StringIO(text), source="t", now=MONDAY_9_BERLIN, consent_source="x"
        )
        zones = {s.email: s.time_zone for s in repository.list_subscribers(session)}
    assert [(e.line, e.reason) for e in report.errors] == [
        (3, "unknown time zone 'Mars/Olympus' (an IANA name: 'America/New_York')")
    ]
    assert report.ignored_columns == []
    assert zones == {"ada@example.com": "Europe/Berlin", "cy@example.com": "Asia/Tokyo"}


@pytest.mark.slow
def test_the_cli_sets_imports_exports_and_shows_the_time_zone(tmp_path: Path, db_url: str) -> None:
    path = write_config(tmp_path)
    env = {**os.environ, "DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"}

    def digest(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "digest", "--config", str(path), *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)

    assert digest("init").returncode == 0
    added = digest("subscribers", "add", "ny@example.com", "--time-zone", "America/New_York")
    assert added.returncode == 0, added.stderr
    bad = digest("subscribers", "add", "x@example.com", "--time-zone", "Mars/Olympus")
    assert bad.returncode == 2 and "unknown time zone 'Mars/Olympus'" in bad.stderr
    csv = tmp_path / "list.csv"
    csv.write_text("email,time_zone\nok@example.com,Asia/Tokyo\nno@example.com,Moon\n")
    out = digest("subscribers", "import", str(csv)).stdout
    assert f"{csv}:3: unknown time zone 'Moon'" in out
    exported = digest("subscribers", "export").stdout.splitlines()
    assert exported[0].endswith(",time_zone")
    assert exported[1].startswith("ny@example.com,") and exported[1].endswith(",America/New_York")
    held = json.loads(digest("subscribers", "export-data", "ny@example.com").stdout)
    assert held["subscriber"]["time_zone"] == "America/New_York"
