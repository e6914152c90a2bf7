"""The jobs, the same whether ``digest schedule`` or cron (``digest run``) starts them.

- :func:`weekly`: fetch, compose this week's edition, send it (or, with
  ``[edition] require_approval``, email the operators that a draft awaits them).
  With ``[schedule] local_delivery`` the scheduler fires it a day early and it
  composes the next week's edition (:func:`digest.editions.weeks.due_week`); rows
  whose readers' hour has not come stay queued for :func:`dispatch` (outcome
  ``scheduled``, exit code 0: they wait by design, nothing is left undone).
  It first cancels drafts past their approval deadline (:func:`expire_drafts`,
  which ``digest check`` calls too), so approval expiry needs no scheduler.
  Holds the ``job:weekly`` lease: a second run while one works (a cron run during
  the scheduler's, two cron runs overlapping) says the edition is in progress and
  ends with outcome ``in-progress``, exit code 0, sending nothing.
- :func:`poll`: fetch the feed, so comparisons are stored as they are published.
- :func:`dispatch`: cancel drafts past their approval deadline (telling the
  operators), send editions that are approved, resumed or locally due, and check
  health (one operator email per incident).
- :func:`notify_votes`: POST changed vote counts to ``[votes] webhook_url``
  (:mod:`digest.engagement.votes_webhook`; the scheduler runs it every minute while
  a URL is set).

Each run is recorded (:class:`~digest.store.models.RunRecord`) for ``digest status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import insert, update

from digest import pipeline
from digest.common.redaction import redact_text
from digest.config.runtime import Runtime
from digest.delivery import leases
from digest.delivery.sending import EXIT_INCOMPLETE
from digest.editions import lifecycle as editions
from digest.editions import weeks
from digest.engagement import votes_webhook
from digest.errors import FeedError, LeaseHeld
from digest.ops import alerts, health
from digest.store.db import ensure_current, session_scope
from digest.store.models import Edition, EditionStatus, RunRecord

log = logging.getLogger(__name__)

R = RunRecord.__table__  # type: ignore[attr-defined]
WEEKLY_LEASE = "job:weekly"
LEASE_TTL = timedelta(minutes=2)

# Outcomes, in the words ``digest status`` shows.
SENT, NOTHING, IN_PROGRESS, AWAITING, INCOMPLETE, FAILED = (
    "sent",
    "nothing to do",
    "in progress",
    "awaiting approval",
    "incomplete",
    "failed",
)
SCHEDULED = "scheduled"  # the rest wait for their readers' local delivery time


@dataclass(slots=True)
class JobResult:
    job: str
    outcome: str = NOTHING
    detail: str = ""
    run: pipeline.RunReport | None = None
    notices: list[str] = field(default_factory=list)  # operator emails sent

    @property
    def exit_code(self) -> int:
        """0 done or nothing to do (including "in progress elsewhere"), 1 failed, 3
        the send was interrupted or left deliveries pending (see SendReport.exit_code;
        rows held for their local delivery time do not count)."""
        if self.outcome == FAILED:
            return 1
        if self.run is not None and self.run.stopped_in_fetch:
            return EXIT_INCOMPLETE  # SIGTERM while fetching: nothing composed or sent
        send = self.run.send if self.run is not None else None
        return send.exit_code if send is not None else 0


@contextlib.contextmanager
def recorded(rt: Runtime, job: str, trigger: str) -> Iterator[JobResult]:
    """Record the run of ``job`` (started by ``trigger``: schedule, cron, cli)."""
    ensure_current(rt.engine)
    result = JobResult(job)
    with rt.engine.begin() as conn:
        run_id = conn.execute(
            insert(R).values(job=job, trigger=trigger, started_at=rt.now()).returning(R.c.id)
        ).scalar_one()
    try:
        yield result
    except BaseException as exc:
        result.outcome, result.detail = FAILED, f"{type(exc).__name__}: {exc}"
        raise
    finally:
        # An exception's text or a feed error may quote a URL: stored and logged redacted.
        result.detail = redact_text(result.detail)
        with rt.engine.begin() as conn:
            conn.execute(
                update(R)
                .where(R.c.id == run_id)
                .values(finished_at=rt.now(), outcome=result.outcome, detail=result.detail[:2000])
            )
        log.info("job %s (%s): %s. %s", job, trigger, result.outcome, result.detail)


async def weekly(
    rt: Runtime,
    *,
    trigger: str,
    stop: asyncio.Event | None = None,
    watch: pipeline.Watch | None = None,
) -> JobResult:
    """The weekly job (see the module docstring). Never raises for an outcome."""
    with recorded(rt, "weekly", trigger) as result:
        result.notices.extend(expiry_subject(k) for k in await expire_drafts(rt))
        owner = leases.new_owner()
        cfg = rt.config
        key = weeks.due_week(cfg.schedule, rt.now(), cfg.site.tz, cfg.schedule.zone(cfg.site))
        try:
            leases.acquire(rt.engine, name=WEEKLY_LEASE, owner=owner, ttl=LEASE_TTL, now=rt.now())
        except LeaseHeld as exc:
            result.outcome = IN_PROGRESS
            result.detail = f"edition {key} is in progress in another run ({exc}): nothing to do"
            return result
        renewer = asyncio.create_task(_renew(rt, owner))
        try:
            report = await pipeline.run(rt, watch=watch, stop=stop, key=key)
        except LeaseHeld as exc:  # SQLite: 'digest send' has this edition
            result.outcome = IN_PROGRESS
            result.detail = f"edition {key} is being sent by another process ({exc})"
            return result
        finally:
            renewer.cancel()
            leases.release(rt.engine, name=WEEKLY_LEASE, owner=owner)
        result.run = report
        await _judge(rt, result, report)
        return result


async def _renew(rt: Runtime, owner: str) -> None:
    while True:
        await asyncio.sleep(LEASE_TTL.total_seconds() / 4)
        leases.acquire(rt.engine, name=WEEKLY_LEASE, owner=owner, ttl=LEASE_TTL, now=rt.now())


async def _judge(rt: Runtime, result: JobResult, report: pipeline.RunReport) -> None:
    """Turn the run's report into an outcome; email the operators about a new draft."""
    compose = report.compose
    edition = compose.edition if compose else None
    words = [compose.reason] if compose else []
    if report.fetch_error:
        words.insert(0, f"feed failed: {report.fetch_error}")
    send = report.send
    if report.stopped_in_fetch:
        result.outcome = INCOMPLETE
    elif edition is None:
        result.outcome = FAILED if report.fetch_error else NOTHING
    elif editions.awaiting_approval(edition):
        result.outcome = AWAITING
        if compose is not None and compose.created:
            result.notices.append(await draft_notice(rt, edition))
    elif edition.status == EditionStatus.cancelled:
        result.outcome = NOTHING
        words.append(f"edition {edition.key} was cancelled ({edition.status_note})")
    elif send is not None and send.error:
        result.outcome = FAILED
        words.append(send.error)
    elif send is not None and not send.finished:
        # Only rows held for their readers' hour left (or, around a daylight-saving
        # change, the early fire an hour before the early start): scheduled, exit 0.
        held = send.due_later and not send.outstanding and not send.interrupted
        waiting = held or (send.halted and pipeline.not_yet_due(rt, edition))
        result.outcome = SCHEDULED if waiting else INCOMPLETE
        words.append(f"{send.sent} sent" if waiting else "")
        words.append(send.stopped_reason or f"{send.pending} deliveries still pending")
    else:
        result.outcome = FAILED if report.fetch_error else SENT
        if send is not None:
            words.append(f"{send.sent} sent, {send.failed} failed, {send.skipped} skipped")
    result.detail = "; ".join(w for w in words if w)


async def draft_notice(rt: Runtime, edition: Edition) -> str:
    """Email the operators that ``edition`` awaits approval; return the subject."""
    with session_scope(rt.engine) as session:
        titles = [c.title for c in editions.comparisons_of(session, edition=edition)]
    deadline = edition.approval_deadline
    when = f"{deadline.astimezone(rt.config.site.tz):%a %Y-%m-%d %H:%M %Z}" if deadline else ""
    subject = f"edition {edition.key} awaits your approval"
    lines = [
        f"The draft of {edition.key} holds {len(titles)} comparison(s):",
        *(f"- {t}" for t in titles),
        f"Approve it by {when} with 'digest approve {edition.key}' or on the operator desk;"
        " otherwise it will not be sent.",
    ]
    link = f"{rt.config.site.base_url}/admin/editions/{edition.key}"
    await alerts.notify(rt, subject, lines, link)
    return subject


def poll(rt: Runtime, *, trigger: str) -> JobResult:
    """Fetch the feed; a failure is recorded on the feed's health, not raised."""
    with recorded(rt, "poll", trigger) as result:
        try:
            report = pipeline.fetch(rt)
        except FeedError as exc:
            result.outcome, result.detail = FAILED, str(exc)
        else:
            result.outcome = "fetched"
            result.detail = f"{len(report.new)} new, {len(report.updated)} updated"
        found = health.incidents(rt, now=rt.now())
        result.notices = asyncio.run(alerts.sync(rt, found, now=rt.now()))
        return result


async def dispatch(rt: Runtime, *, trigger: str, stop: asyncio.Event | None = None) -> JobResult:
    """Expire unapproved drafts, send what is sendable, check health."""
    with recorded(rt, "dispatch", trigger) as result:
        expired = await expire_drafts(rt)
        sent = await pipeline.work(
            rt, stop=stop or asyncio.Event(), exit_when_idle=True, poll_seconds=0
        )
        found = health.incidents(rt, now=rt.now())
        result.notices = await alerts.sync(rt, found, now=rt.now())
        result.outcome = SENT if sent else NOTHING
        parts = [f"{sent} sent"] + [f"{k} not approved in time: cancelled" for k in expired]
        result.detail = "; ".join(parts)
        return result


async def notify_votes(rt: Runtime, *, trigger: str) -> JobResult:
    """Send the due vote-count changes; a failure stays on its row, never raised."""
    with recorded(rt, "votes", trigger) as result:
        summary = await votes_webhook.deliver_pending(rt, now=rt.now())
        failed = summary.refused or summary.retrying or summary.gave_up
        result.outcome = SENT if summary.sent else FAILED if failed else NOTHING
        result.detail = summary.describe()
        return result


async def expire_drafts(rt: Runtime) -> list[str]:
    """Cancel drafts whose approval deadline passed and tell the operators, once per
    draft. Returns the keys cancelled by this call.

    The one place approval expiry happens: the scheduler's ``dispatch``, ``digest
    run`` (:func:`weekly`) and ``digest check`` all call it, so a draft expires in
    cron mode too. Of several racing callers only the one whose conditional update
    cancelled the draft emails (:func:`digest.editions.lifecycle.expire_unapproved`)."""
    with session_scope(rt.engine) as session:
        cancelled = editions.expire_unapproved(session, now=rt.now())
    for key in cancelled:
        log.warning("edition %s: %s", key, editions.APPROVAL_EXPIRED)
        await alerts.notify(
            rt,
            expiry_subject(key),
            [
                f"Nobody approved {key} by its deadline, so it was cancelled and nothing was "
                "sent. Its comparisons are not offered again automatically.",
            ],
        )
    return cancelled


def expiry_subject(key: str) -> str:
    return f"edition {key} was not approved in time and will not be sent"
