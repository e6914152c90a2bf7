"""``digest schedule``: APScheduler 3.x, in its own process, never in web workers.

APScheduler's defaults are wrong for a weekly send, so every choice is deliberate:

- **Persistent job store** (SQLAlchemy, table ``apscheduler_jobs`` in the project's
  database): a restart knows when each job was due.
- **Fixed ids, registered at start-up** (``weekly``, ``poll``, ``dispatch``; ``votes``,
  the votes webhook, only while ``[votes] webhook_url`` is set: removed otherwise) with
  ``replace_existing=True``: restarting never adds a second copy. APScheduler
  recomputes ``next_run_time`` from *now* when it replaces a job, which would drop
  a run that fell due while the scheduler was down; so the stored next run time is
  kept whenever the trigger is unchanged.
- ``misfire_grace_time`` = ``[schedule] grace_hours`` (default 6 h; APScheduler's
  default of 1 s silently skips a week) and ``coalesce=True``: down at 09:00 and
  back at 10:30, the week's job runs once; down for three weeks and back on a
  Monday morning, it runs once, not three times. Later than the grace, the run is
  missed, logged, and the dead man's switch (``digest check``) tells the operators.
- ``max_instances=1``, and one scheduler per database: the ``scheduler`` lease. A
  second ``digest schedule`` stands by and takes over when the first stops (two
  schedulers on one job store would run every job twice).
- SIGTERM: no new fires; a running send finishes its in-flight messages and gives
  the rest back; then the process exits.
- **A job it cannot restore never stops it.** A stored job whose pickled state
  cannot be read back (garbage bytes, a pickle from an incompatible APScheduler, a
  function reference that no longer imports) is removed and registered again from
  code, and the repair is recorded as a run of the ``scheduler`` job with outcome
  ``repaired``, which :mod:`digest.ops.health` reports as an incident (the operators
  are emailed once). APScheduler 3.11 already drops such a job when it looks for
  due jobs ("Unable to restore job … -- removing it"), but ``get_job``, which every
  start calls, raises: :class:`~digest.ops.jobstore.RepairingJobStore`
  handles it there. Any failure to start gives the scheduler lease back at once.

The job store pickles a reference to :func:`fire` and two strings, never a
runtime: :func:`fire` finds the runtime this process opened.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from digest.config import Config
from digest.config.runtime import Runtime
from digest.delivery import leases
from digest.editions import weeks
from digest.errors import LeaseHeld
from digest.ops import alerts, bounce_job, health, jobs
from digest.ops.jobstore import JOBS_TABLE as JOBS_TABLE
from digest.ops.jobstore import REPAIRED as REPAIRED
from digest.ops.jobstore import RepairingJobStore
from digest.ops.jobstore import next_fires as next_fires

log = logging.getLogger(__name__)

LEASE = "scheduler"
LEASE_TTL = timedelta(minutes=2)
JOB_IDS = ("weekly", "poll", "dispatch")
VOTES_JOB = "votes"  # only while [votes] webhook_url is set

_RUNTIMES: dict[str, Runtime] = {}  # what fire() runs with, by config path
_STOPPING = threading.Event()


def triggers(cfg: Config) -> dict[str, BaseTrigger]:
    """The jobs' triggers, from ``[schedule]``: weekly cron in the schedule's zone.

    With ``local_delivery`` the weekly job fires the day before, at the same time
    (``mon`` → ``sun``, ``sun`` → ``sat``): it composes the coming edition a day
    early (:func:`digest.editions.weeks.due_week`) so readers ahead of the site get
    it at their hour; ``dispatch`` sends each row when its reader's hour comes."""
    schedule = cfg.schedule
    zone = schedule.zone(cfg.site)
    hour, minute = (int(part) for part in schedule.time.split(":"))
    day = weeks.day_before(schedule) if schedule.local_delivery else schedule.day
    found: dict[str, BaseTrigger] = {
        "weekly": CronTrigger(day_of_week=day, hour=hour, minute=minute, timezone=zone),
        "poll": IntervalTrigger(minutes=schedule.poll_minutes, timezone=zone),
        "dispatch": IntervalTrigger(seconds=schedule.dispatch_seconds, timezone=zone),
    }
    if cfg.votes.enabled and cfg.votes.webhook_url:
        found[VOTES_JOB] = IntervalTrigger(minutes=1, timezone=zone)
    found.update(bounce_job.triggers(cfg, zone))  # while [bounces] enabled
    return found


def fire(job: str, config_key: str) -> str:
    """Run ``job`` (what the job store calls). Returns the outcome, for the log."""
    rt = _RUNTIMES[config_key]
    if job == "poll":
        return jobs.poll(rt, trigger="schedule").outcome
    if job == VOTES_JOB:
        return asyncio.run(jobs.notify_votes(rt, trigger="schedule")).outcome
    if job == bounce_job.JOB:
        return bounce_job.fire(rt, _STOPPING)
    return asyncio.run(_fire_async(rt, job)).outcome


async def _fire_async(rt: Runtime, job: str) -> jobs.JobResult:
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_stop(stop))
    try:
        if job == "weekly":
            return await jobs.weekly(rt, trigger="schedule", stop=stop)
        return await jobs.dispatch(rt, trigger="schedule", stop=stop)
    finally:
        watcher.cancel()


async def _watch_stop(stop: asyncio.Event) -> None:
    """Bridge SIGTERM (a thread event) into the running job's asyncio stop event."""
    while not _STOPPING.is_set():
        await asyncio.sleep(0.2)
    stop.set()


class Service:
    """One scheduler process: the lease, the APScheduler instance, the jobs."""

    def __init__(self, rt: Runtime, *, owner: str | None = None) -> None:
        self.rt = rt
        self.key = str(rt.config.source)
        self.owner = owner or leases.new_owner()
        self.scheduler: BackgroundScheduler | None = None
        self._renewer: threading.Thread | None = None
        self._quit = threading.Event()

    def start(self) -> None:
        """Take the scheduler lease (raises LeaseHeld), register the jobs, start.

        Any failure after the lease is taken stops what was started and releases
        the lease before the error propagates, so a standby can take over at once."""
        rt = self.rt
        leases.acquire(rt.engine, name=LEASE, owner=self.owner, ttl=LEASE_TTL, now=rt.now())
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        for job_id, when in self.next_fires().items():
            log.info("job %s: next fire %s", job_id, when.isoformat())

    def _start(self) -> None:
        rt = self.rt
        _STOPPING.clear()
        _RUNTIMES[self.key] = rt
        grace = int(rt.config.schedule.grace_hours * 3600)
        store = RepairingJobStore(engine=rt.engine, tablename=JOBS_TABLE)
        scheduler = BackgroundScheduler(
            jobstores={"default": store},
            executors={"default": ThreadPoolExecutor(max_workers=3)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": grace},
            timezone=rt.config.schedule.zone(rt.config.site),
        )
        scheduler.add_listener(
            self._log_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED
        )
        scheduler.start(paused=True)  # nothing fires before every stored job is checked
        self.scheduler = scheduler
        store.check_all()
        wanted = triggers(rt.config)
        for job_id, trigger in wanted.items():
            self._register(job_id, trigger, store.lost_fires.get(job_id))
        if VOTES_JOB not in wanted and scheduler.get_job(VOTES_JOB) is not None:
            scheduler.remove_job(VOTES_JOB)  # the webhook URL was taken out of the config
        if bounce_job.JOB not in wanted and scheduler.get_job(bounce_job.JOB) is not None:
            scheduler.remove_job(bounce_job.JOB)  # [bounces] was switched off
        if store.broken:
            self._report_repair(store.broken)
        scheduler.resume()
        self._renewer = threading.Thread(target=self._renew, name="scheduler-lease", daemon=True)
        self._renewer.start()

    def _register(self, job_id: str, trigger: BaseTrigger, lost: datetime | None) -> None:
        """Add ``job_id`` from code with ``replace_existing``. The stored next fire is
        kept when the trigger is unchanged; for a job that could not be restored,
        its stored next fire ``lost`` is kept when it has passed. Either way a fire
        that fell due while the scheduler was down still happens (within the grace)."""
        assert self.scheduler is not None
        stored = self.scheduler.get_job(job_id)
        keep: dict[str, Any] = {}
        if stored is not None and str(stored.trigger) == str(trigger):
            keep["next_run_time"] = stored.next_run_time  # a fire due while we were down
        elif stored is None and lost is not None and lost <= self.rt.now():
            keep["next_run_time"] = lost
        self.scheduler.add_job(
            fire,
            trigger,
            args=(job_id, self.key),
            id=job_id,
            name=job_id,
            replace_existing=True,
            **keep,
        )

    def _report_repair(self, broken: dict[str, str]) -> None:
        """Record the repair (an incident, :mod:`digest.ops.health`); tell the operators."""
        rt = self.rt
        ours = [job_id for job_id in triggers(rt.config) if job_id in broken]
        why = "; ".join(f"{job_id}: {error}" for job_id, error in sorted(broken.items()))
        again = f"; registered again from code: {', '.join(ours)}" if ours else ""
        with jobs.recorded(rt, "scheduler", "schedule") as result:
            result.outcome = REPAIRED
            result.detail = f"removed job(s) the job store could not restore ({why}){again}"
        now = rt.now()
        for subject in asyncio.run(alerts.sync(rt, health.incidents(rt, now=now), now=now)):
            log.info("emailed the operators: %s", subject)

    def _renew(self) -> None:
        while not self._quit.wait(LEASE_TTL.total_seconds() / 4):
            try:
                leases.acquire(
                    self.rt.engine, name=LEASE, owner=self.owner, ttl=LEASE_TTL, now=self.rt.now()
                )
            except LeaseHeld:
                log.error("lost the scheduler lease to another scheduler: stopping")
                self._quit.set()
                threading.Thread(target=self.stop, daemon=True).start()

    def _log_event(self, event: JobExecutionEvent) -> None:
        nxt = self.next_fires().get(event.job_id)
        after = f"; next fire {nxt.isoformat()}" if nxt else ""
        if event.code == EVENT_JOB_MISSED:
            log.warning(
                "job %s missed its %s fire (past the grace time)%s",
                event.job_id,
                event.scheduled_run_time,
                after,
            )
        elif event.exception is not None:
            log.error("job %s failed: %s%s", event.job_id, event.exception, after)
        else:
            log.info(
                "job %s fired (%s): %s%s",
                event.job_id,
                event.scheduled_run_time,
                event.retval,
                after,
            )

    def wakeup(self) -> None:
        """Look at the job store now (after the clock moved, in tests)."""
        if self.scheduler is not None:
            self.scheduler.wakeup()

    def next_fires(self) -> dict[str, datetime]:
        return next_fires(self.rt.engine)

    def stop(self) -> None:
        """No new fires; let a running job finish its in-flight sends; release."""
        _STOPPING.set()
        self._quit.set()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        leases.release(self.rt.engine, name=LEASE, owner=self.owner)
        _RUNTIMES.pop(self.key, None)


def serve(rt: Runtime, *, stop: threading.Event, on_standby: Callable[[str], None]) -> None:
    """Run the scheduler until ``stop`` is set; stand by while another one runs."""
    service = Service(rt)
    while not stop.is_set():
        try:
            service.start()
            break
        except LeaseHeld as exc:
            on_standby(str(exc))
            stop.wait(LEASE_TTL.total_seconds() / 2)
    else:
        return
    try:
        while not stop.wait(1.0):
            if service._quit.is_set():
                break
    finally:
        service.stop()
