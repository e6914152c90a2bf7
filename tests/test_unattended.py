"""Runs nobody watches: cron beside the scheduler, approval, the dead man's switch,
feed failures, and one operator email per incident.

Operator notices and digests go through a real SMTP conversation (aiosmtpd on
loopback), so what the CLI sends from its own runtime is seen too.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import time_machine

from digest.editions import lifecycle as editions
from digest.ops import jobs
from digest.store.db import session_scope
from digest.store.models import EditionStatus
from tests.scheduling_support import (
    OPERATOR,
    Site,
    approval_monday,
    at,
    sink_operator_subjects,
    smtp_transport,
)
from tests.smtp_sink import RecordingHandler, SmtpSink

BERLIN = ZoneInfo("Europe/Berlin")


class SlowHandler(RecordingHandler):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.01)
        return await super().handle_DATA(server, session, envelope)


def _digests(sink: SmtpSink) -> dict[str, int]:
    counts = sink.handler.per_recipient()
    counts.pop(OPERATOR, None)
    return dict(counts)


def test_a_cron_run_while_the_scheduled_run_sends_exits_0_and_sends_nothing(
    tmp_path: Path, db_url: str
) -> None:
    with SmtpSink() as sink:
        sink.handler.__class__ = SlowHandler  # about 10 ms a message: the send takes seconds
        site = Site(tmp_path, db_url, transport={**smtp_transport(sink.port), "connections": 1})
        site.readers(300)
        site.publish(site.rt.now() - timedelta(days=1))
        result: dict[str, jobs.JobResult] = {}
        scheduled = threading.Thread(
            target=lambda: result.update(run=asyncio.run(jobs.weekly(site.rt, trigger="schedule")))
        )
        scheduled.start()
        while sink.handler.count() < 20:  # the scheduled run is sending
            threading.Event().wait(0.01)
        cron = subprocess.run(
            [sys.executable, "-m", "digest", "--config", str(site.config_path), "run"],
            capture_output=True,
            text=True,
            env={**os.environ, **site.env},
            timeout=120,
        )
        in_flight = sink.handler.count()
        scheduled.join(timeout=120)
        counts = _digests(sink)
    assert cron.returncode == 0, cron.stdout + cron.stderr
    assert "in progress" in cron.stdout
    assert in_flight < 300  # the cron run ended while the scheduled one was still sending
    assert result["run"].outcome == jobs.SENT
    assert len(counts) == 300 and set(counts.values()) == {1}


def test_require_approval_sends_nothing_until_approved(
    tmp_path: Path, sqlite_url: str, sink: SmtpSink
) -> None:
    site = Site(
        tmp_path,
        sqlite_url,
        transport=smtp_transport(sink.port),
        edition={"require_approval": True},
    )
    site.readers(3)
    with time_machine.travel(at(BERLIN, 2026, 11, 23, 9, 0), tick=False) as clock:
        site.publish(at(BERLIN, 2026, 11, 20, 14, 0), n=2)
        first = asyncio.run(jobs.weekly(site.rt, trigger="schedule"))
        assert first.outcome == jobs.AWAITING
        assert _digests(sink) == {}
        assert sink_operator_subjects(sink) == [
            "[Test Weekly] edition 2026-W48 awaits your approval"
        ]
        clock.shift(3600)
        asyncio.run(jobs.dispatch(site.rt, trigger="schedule"))
        again = site.cli("run")
        assert again.exit_code == 0 and "awaits approval" in again.stdout
        assert _digests(sink) == {}  # neither the dispatcher nor a second run sends a draft
        with session_scope(site.rt.engine) as session:
            editions.approve(session, key="2026-W48", by="test", now=site.rt.now())
        clock.shift(60)
        asyncio.run(jobs.dispatch(site.rt, trigger="schedule"))
    assert _digests(sink) == {f"r{i}@example.com": 1 for i in range(3)}
    assert site.editions()[0].status == EditionStatus.sent


def test_a_draft_past_its_deadline_is_not_sent_and_the_operators_are_told(
    tmp_path: Path, sqlite_url: str, sink: SmtpSink
) -> None:
    with approval_monday(tmp_path, sqlite_url, sink, readers=3) as (site, clock):
        asyncio.run(jobs.weekly(site.rt, trigger="schedule"))
        clock.shift(4 * 3600 + 60)
        result = asyncio.run(jobs.dispatch(site.rt, trigger="schedule"))
        late = site.cli("approve", "2026-W48")
    assert "2026-W48 not approved in time" in result.detail
    assert late.exit_code != 0
    assert site.editions()[0].status == EditionStatus.cancelled
    assert _digests(sink) == {}
    assert sink_operator_subjects(sink)[-1] == (
        "[Test Weekly] edition 2026-W48 was not approved in time and will not be sent"
    )


def test_too_few_comparisons_roll_over_to_next_week(tmp_path: Path, sqlite_url: str) -> None:
    site = Site(tmp_path, sqlite_url, edition={"min_comparisons": 2})
    site.readers(1)
    with time_machine.travel(at(BERLIN, 2026, 11, 23, 9, 0), tick=False) as clock:
        site.publish(at(BERLIN, 2026, 11, 20, 14, 0))
        first = asyncio.run(jobs.weekly(site.rt, trigger="schedule"))
        assert first.outcome == jobs.NOTHING and "min_comparisons" in first.detail
        site.publish(at(BERLIN, 2026, 11, 27, 14, 0))
        clock.move_to(at(BERLIN, 2026, 11, 30, 9, 0))
        second = asyncio.run(jobs.weekly(site.rt, trigger="schedule"))
    assert second.outcome == jobs.SENT
    (edition,) = site.editions()
    assert edition.key == "2026-W49"
    with session_scope(site.rt.engine) as session:
        assert len(editions.comparisons_of(session, edition=edition)) == 2


def test_a_failing_feed_makes_one_incident_until_it_recovers(
    tmp_path: Path, db_url: str, sink: SmtpSink
) -> None:
    site = Site(
        tmp_path,
        db_url,
        transport=smtp_transport(sink.port),
        operators={"emails": [OPERATOR], "feed_failures": 3},
    )
    good = site.feed.read_text()
    with time_machine.travel(at(BERLIN, 2026, 11, 24, 12, 0), tick=False) as clock:
        site.feed.write_text("{not json")
        for poll in range(5):
            result = jobs.poll(site.rt, trigger="schedule")
            assert result.outcome == jobs.FAILED
            clock.shift(3600)
            if poll == 1:
                assert site.cli("check").exit_code == 0  # two failures: not yet
        check = site.cli("check")
        assert check.exit_code == 1 and "failed 5 polls in a row" in check.stdout
        assert len(sink_operator_subjects(sink)) == 1  # once per incident, not per poll
        assert "needs attention: the feed" in sink_operator_subjects(sink)[0]
        site.feed.write_text(good)
        jobs.poll(site.rt, trigger="schedule")
        recovered = site.cli("check")
    assert recovered.exit_code == 0, recovered.stdout
    subjects = sink_operator_subjects(sink)
    assert len(subjects) == 2 and "resolved: the feed" in subjects[1]


def test_a_missed_monday_trips_the_dead_mans_switch_once(
    tmp_path: Path, sqlite_url: str, sink: SmtpSink
) -> None:
    site = Site(tmp_path, sqlite_url, transport=smtp_transport(sink.port))
    site.readers(2)
    with time_machine.travel(at(BERLIN, 2026, 11, 20, 15, 0), tick=False) as clock:
        site.publish(at(BERLIN, 2026, 11, 20, 14, 0))
        jobs.poll(site.rt, trigger="schedule")  # running since Friday: Monday is judged
        clock.move_to(at(BERLIN, 2026, 11, 23, 14, 0))
        assert site.cli("check").exit_code == 0  # 14:00: within the 6-hour grace
        clock.move_to(at(BERLIN, 2026, 11, 23, 15, 30))
        missed = site.cli("check")
        again = site.cli("check")
        health = site.cli("status")
        assert missed.exit_code == again.exit_code == 1
        assert "no edition went out for 2026-W48" in missed.stdout
        assert "no edition went out for 2026-W48" in health.stdout
        assert len(sink_operator_subjects(sink)) == 1
        assert site.cli("run").exit_code == 0  # the operator sends it late
        recovered = site.cli("check")
    assert recovered.exit_code == 0, recovered.stdout
    assert _digests(sink) == {"r0@example.com": 1, "r1@example.com": 1}


def test_healthz_is_liveness_only_and_check_names_the_incident(
    tmp_path: Path, sqlite_url: str
) -> None:
    """/healthz and /readyz say nothing of incidents (they need no login); `digest
    check` and `digest status` are where the missed edition shows."""
    from fastapi.testclient import TestClient

    from digest.ops import health
    from digest.web.app import create_app

    site = Site(tmp_path, sqlite_url)
    site.readers(1)
    with time_machine.travel(at(BERLIN, 2026, 11, 20, 15, 0), tick=False) as clock:
        site.publish(at(BERLIN, 2026, 11, 20, 14, 0))
        jobs.poll(site.rt, trigger="schedule")  # running since Friday: Monday is judged
        clock.move_to(at(BERLIN, 2026, 11, 23, 16, 0))
        with TestClient(create_app(site.rt)) as client:
            live, ready = client.get("/healthz"), client.get("/readyz")
        report = health.report(site.rt, now=site.rt.now())
    assert [i["name"] for i in report["incidents"]] == ["missed:2026-W48"]
    assert (live.status_code, live.json()) == (200, {"ok": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert "missed" not in live.text + ready.text
