"""The ``bounces`` job: read the bounce mailbox once, recorded like the other jobs.

The scheduler runs it every ``[bounces] poll_minutes`` while ``[bounces] enabled``
(the poll's own deadline is that interval, so one run never overlaps the next);
``digest bounces poll`` is the same poll from the command line. The run is
recorded (:func:`digest.ops.jobs.recorded`) for ``digest status``: outcome ``ok``
with the poll's summary line, or ``failed`` when the mailbox could not be opened,
a message's ingest failed (it stays in the mailbox for the next run) or the poll
was cut short by an error. Never raises for an outcome: a broken mailbox must not
take the scheduler down, and the next run tries again.
"""

from __future__ import annotations

import threading
from datetime import tzinfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from digest.bounces.mailbox import MailboxError, PollReport, poll
from digest.config.runtime import Runtime
from digest.config.sections import Config
from digest.ops.jobs import FAILED, JobResult, recorded

JOB = "bounces"
OK = "ok"


def poll_bounces(rt: Runtime, *, trigger: str, stop: threading.Event | None = None) -> JobResult:
    """Poll ``[bounces]`` once and record the run; see the module docstring."""
    with recorded(rt, JOB, trigger) as result:
        if not rt.config.bounces.enabled:
            result.detail = "[bounces] enabled = false: the bounce mailbox is not read"
            return result
        try:
            report = poll(rt, stop=stop)
        except MailboxError as exc:
            result.outcome, result.detail = FAILED, str(exc)
            return result
        result.outcome = OK if report.ok else FAILED
        result.detail = describe(report)
        return result


def triggers(cfg: Config, zone: tzinfo) -> dict[str, BaseTrigger]:
    """The job's trigger for :func:`digest.ops.scheduler.triggers`: every
    ``poll_minutes`` while ``[bounces] enabled``, else none (and the scheduler
    removes a stored ``bounces`` job, as it does the votes job)."""
    if not cfg.bounces.enabled:
        return {}
    return {JOB: IntervalTrigger(minutes=cfg.bounces.poll_minutes, timezone=zone)}


def fire(rt: Runtime, stop: threading.Event) -> str:
    """What the scheduler's ``fire`` runs for this job; the outcome, for its log.
    ``stop`` is the scheduler's SIGTERM event: the poll ends between two messages."""
    return poll_bounces(rt, trigger="schedule", stop=stop).outcome


def describe(report: PollReport) -> str:
    """The summary line, then the first problems (the record keeps 2,000 chars)."""
    problems = report.problems[:5]
    more = len(report.problems) - len(problems)
    if more:
        problems.append(f"and {more} more")
    return "; ".join([report.line(), *problems])
