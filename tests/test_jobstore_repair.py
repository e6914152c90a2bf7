"""``digest schedule`` with a job store it cannot fully restore (issue 12, done-means 5).

A row whose pickled state is garbage, or whose function no longer imports: the
scheduler removes it, registers the job again from code, raises one operator
incident, and runs. A start that fails for any reason gives the lease back.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import text

from digest.ops import scheduler
from digest.store.models import Lease
from tests.scheduling_support import (
    Site,
    at,
    running,
    settle,
    sink_operator_subjects,
    smtp_transport,
    wait_for,
)
from tests.smtp_sink import SmtpSink

BERLIN = ZoneInfo("Europe/Berlin")


def _set_state(site: Site, job_id: str, state: bytes) -> None:
    with site.rt.engine.begin() as conn:
        conn.execute(
            text("UPDATE apscheduler_jobs SET job_state = :s WHERE id = :i"),
            {"s": state, "i": job_id},
        )


def _state(site: Site, job_id: str) -> bytes:
    with site.rt.engine.connect() as conn:
        row = conn.execute(
            text("SELECT job_state FROM apscheduler_jobs WHERE id = :i"), {"i": job_id}
        ).scalar_one()
    return bytes(row)


def _with_func(state: bytes, func: str) -> bytes:
    """The same stored job, pointing at another function (code moved or removed)."""
    loaded = pickle.loads(state)
    loaded["func"] = func
    return pickle.dumps(loaded)


def _leases(site: Site) -> list[str]:
    with site.rt.engine.connect() as conn:
        return [str(n) for n in conn.execute(text(f"SELECT name FROM {Lease.__tablename__}"))]


def _schedule_until_started(site: Site, log: Path) -> subprocess.CompletedProcess[str]:
    """``digest schedule`` in a subprocess, stopped with SIGTERM once it has started."""
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(site.config_path), "schedule"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, **site.env, "COLUMNS": "200"},
        )
        try:
            deadline = time.monotonic() + 60
            while "job weekly: next fire" not in log.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            stdout, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, log.read_text())


@pytest.mark.slow
def test_schedule_starts_over_a_row_it_cannot_unpickle_and_check_reports_it_once(
    tmp_path: Path, db_url: str, sink: SmtpSink
) -> None:
    site = Site(tmp_path, db_url, transport=smtp_transport(sink.port))
    first = scheduler.Service(site.rt)
    first.start()
    first.stop()
    _set_state(site, "weekly", b"\x80\x05garbage, not a pickle")

    run = _schedule_until_started(site, tmp_path / "schedule.log")

    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert "job weekly in the job store cannot be restored" in run.stderr
    assert "Scheduler stopped." in run.stdout
    assert pickle.loads(_state(site, "weekly"))["id"] == "weekly"
    assert set(scheduler.next_fires(site.rt.engine)) == {"weekly", "poll", "dispatch"}
    assert "scheduler" not in _leases(site)
    checks = [site.cli("check"), site.cli("check")]
    for check in checks:
        assert check.exit_code == 1, check.stdout
        assert check.stdout.count("repaired its job store") == 1, check.stdout
        assert "weekly: UnpicklingError" in " ".join(check.stdout.split())
    subjects = sink_operator_subjects(sink)
    assert len(subjects) == 1 and "needs attention: digest schedule repaired" in subjects[0]
    status = site.cli("status")
    assert "repaired its job store" in status.stdout


def test_a_job_whose_function_no_longer_imports_is_registered_again(
    tmp_path: Path, sqlite_url: str
) -> None:
    site = Site(tmp_path, sqlite_url)
    first = scheduler.Service(site.rt)
    first.start()
    first.stop()
    _set_state(site, "poll", _with_func(_state(site, "poll"), "digest.gone_module:fire"))

    with running(site.rt) as second:  # today: LookupError from get_job, and the lease kept
        assert second.scheduler is not None
        job = second.scheduler.get_job("poll")
        assert job is not None and job.func is scheduler.fire
    check = site.cli("check")
    assert check.exit_code == 1
    assert "poll: LookupError" in " ".join(check.stdout.split())
    assert "registered again from code: poll" in " ".join(check.stdout.split())
    assert len(site.operator_subjects()) == 1


def test_a_fire_due_while_down_survives_an_unrestorable_row(
    tmp_path: Path, sqlite_url: str
) -> None:
    with time_machine.travel(at(BERLIN, 2026, 11, 23, 8, 50), tick=False) as clock:
        site = Site(tmp_path, sqlite_url, site={"timezone": "Europe/Berlin"})
        site.readers(1)
        site.publish(at(BERLIN, 2026, 11, 20, 14, 0))
        first = scheduler.Service(site.rt)
        first.start()
        first.stop()
        _set_state(site, "weekly", b"not a pickle at all")
        clock.move_to(at(BERLIN, 2026, 11, 23, 10, 30))  # Monday 09:00 passed while down
        with running(site.rt):
            wait_for(lambda: site.runs("weekly") == 1)
            settle()
    assert [e.key for e in site.editions()] == ["2026-W48"]
    assert site.digests_to("r0@example.com") == 1


def test_a_failed_start_releases_the_lease(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = Site(tmp_path, sqlite_url)

    def broken(cfg: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(scheduler, "triggers", broken)
    with pytest.raises(RuntimeError, match="boom"):
        scheduler.Service(site.rt).start()
    assert "scheduler" not in _leases(site)
    monkeypatch.undo()
    standby = scheduler.Service(site.rt, owner="elsewhere:1:x")  # another host: no takeover
    standby.start()
    standby.stop()
