"""Is everything all right? One evaluation for ``digest check``, ``digest status``
and the operator desk.

Incidents (each needs a human; :func:`incidents`):

- ``feed:<feed>``: the feed failed ``[operators] feed_failures`` polls in a row
  (``<feed>`` is its key: for the http feed the URL without user-info or
  secret-looking query values; every URL shown here is redacted again on output);
- ``missed:<week>``: the scheduled time plus ``[schedule] grace_hours`` has passed
  and the week's edition has not gone out (none composed though at least
  ``[edition] min_comparisons`` were waiting, or composed and never sent): the dead
  man's switch;
- ``paused:<week>``: an edition is paused (by the operator or by itself);
- ``jobstore:<run>``: ``digest schedule`` found a job it could not restore in its
  job store, removed it and registered it again (:mod:`digest.ops.jobstore`); shown
  for :data:`REPAIR_SHOWN` after the repair, so a ``digest check`` from cron sees
  it even after the scheduler has emailed the operators;
- ``policy:<week>``: mail refused for policy reasons (5.7.x) at send time or by a
  provider's webhook in the last 7 days (:mod:`digest.ops.policy_incidents`).

An edition awaiting approval is not missed until its approval deadline (then
:func:`digest.ops.jobs.expire_drafts` cancels it and tells the operators); a cancelled
one is a human's decision. A week due before the instance first ran
(:func:`running_since`) is never missed. :func:`report` adds what ``digest status``
shows: the next scheduled fires, the last run of each job, each feed's health, the
current edition's ledger.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, func, select
from sqlmodel import Session

from digest.common.redaction import redact_text
from digest.config.runtime import Runtime
from digest.delivery import ledger as deliveries
from digest.editions import lifecycle as editions
from digest.editions import weeks as weekly
from digest.ops import jobstore, policy_incidents
from digest.ops.alerts import Incident
from digest.store.db import session_scope
from digest.store.models import Comparison, Edition, EditionStatus, FeedState, RunRecord

C = Comparison.__table__  # type: ignore[attr-defined]
F = FeedState.__table__  # type: ignore[attr-defined]
R = RunRecord.__table__  # type: ignore[attr-defined]
REPAIR_SHOWN = timedelta(hours=24)


def incidents(rt: Runtime, *, now: datetime) -> list[Incident]:
    """What needs a human right now (empty: all is well)."""
    cfg = rt.config
    found: list[Incident] = []
    with session_scope(rt.engine) as session:
        conn = session.connection()
        limit = cfg.operators.feed_failures
        failing = conn.execute(
            select(F.c.feed, F.c.consecutive_failures, F.c.last_error).where(
                F.c.consecutive_failures >= limit
            )
        )
        for feed, failures, error in failing:
            found.append(
                Incident(
                    f"feed:{feed}",
                    f"the feed {feed} failed {failures} polls in a row (last error: {error})",
                )
            )
        missed = _missed(rt, session, now)
        if missed is not None:
            found.append(missed)
        for e in editions.all_editions(session):
            if e.status == EditionStatus.paused:
                why = e.status_note or "by the operator"
                found.append(
                    Incident(
                        f"paused:{e.key}",
                        f"edition {e.key} is paused ({why}); 'digest resume {e.key}' continues it",
                    )
                )
        found.extend(_repairs(conn, now, cfg.site.tz))
        found.extend(policy_incidents.incidents(conn, now=now))
    return found


def _repairs(conn: Connection, now: datetime, tz: ZoneInfo) -> list[Incident]:
    """Job store repairs by ``digest schedule`` in the last :data:`REPAIR_SHOWN`.

    Nothing is left to fix (the job was registered again), but an operator should
    know, and read the scheduler's log: one incident per repair, emailed once."""
    stmt = select(R.c.id, R.c.started_at, R.c.detail).where(
        R.c.job == "scheduler",
        R.c.outcome == jobstore.REPAIRED,
        R.c.started_at > now - REPAIR_SHOWN,
    )
    return [
        Incident(
            f"jobstore:{run_id}",
            f"digest schedule repaired its job store at {started.astimezone(tz):%Y-%m-%d %H:%M %Z}:"
            f" {detail}; nothing else to do, see its log",
        )
        for run_id, started, detail in conn.execute(stmt)
    ]


def _missed(rt: Runtime, session: Session, now: datetime) -> Incident | None:
    """The dead man's switch: the latest scheduled send, if it has not happened."""
    cfg = rt.config
    zone = cfg.schedule.zone(cfg.site)
    due = weekly.last_due(cfg.schedule, now, zone)
    grace = timedelta(hours=cfg.schedule.grace_hours)
    if now <= due + grace:
        return None
    key = editions.edition_key(due, cfg.site.tz)
    edition = editions.get(session, key=key)
    late = f"by {due:%a %Y-%m-%d %H:%M %Z} plus {cfg.schedule.grace_hours:g} h grace"
    if edition is None:
        since = running_since(session.connection())
        if since is None or due < since:
            return None  # the instance did not run yet when that edition was due
        waiting = editions.eligible(
            session,
            now=due,
            max_age=timedelta(days=cfg.edition.max_age_days),
            limit=cfg.edition.max_comparisons,
        )
        if len(waiting) < cfg.edition.min_comparisons:
            return None  # nothing to send that week: rolled over, as configured
        return Incident(
            f"missed:{key}",
            f"no edition went out for {key} {late}, though {len(waiting)} comparison(s) "
            "were waiting: is 'digest schedule' (or the cron job) running?",
        )
    if edition.status == EditionStatus.composed and not editions.awaiting_approval(edition):
        return Incident(
            f"missed:{key}",
            f"edition {key} was composed but not sent {late}: run 'digest send'",
        )
    return None


def running_since(conn: Connection) -> datetime | None:
    """When this instance is first known to have run: its first stored comparison
    (``first_seen_at``) or its first recorded job run, whichever came first; None
    when it has done neither.

    The dead man's switch judges only weeks due after this moment, so a fresh
    install whose first fetch brings in a feed's history does not report the week
    before it existed as missed. Both stamps come from this instance's own clock
    when it stored something (never from the feed), and survive a backup and
    restore or a move to another database together with the data. Not chosen:
    Alembic records no migration times; ``instance_secret`` exists only without
    ``DIGEST_SECRET_KEY``; subscriber rows may be imported with older dates."""
    first_seen = conn.execute(select(func.min(C.c.first_seen_at))).scalar_one_or_none()
    first_run = conn.execute(select(func.min(R.c.started_at))).scalar_one_or_none()
    known = [t for t in (first_seen, first_run) if t is not None]
    return min(known) if known else None


def report(rt: Runtime, *, now: datetime) -> dict[str, Any]:
    """Everything ``digest status`` shows, as JSON-ready values."""
    found = incidents(rt, now=now)
    fires = jobstore.next_fires(rt.engine)
    with session_scope(rt.engine) as session:
        conn = session.connection()
        current = editions.latest(session)
        return {
            "ok": not found,
            "now": now.isoformat(),
            "incidents": [{"name": i.name, "summary": i.summary} for i in found],
            "next_fires": {job: when.isoformat() for job, when in fires.items()},
            "last_runs": last_runs(conn),
            "feeds": _feeds(conn),
            "current_edition": _edition(conn, current),
        }


def last_runs(conn: Connection) -> dict[str, dict[str, str]]:
    """The newest run of each job: when, how started, outcome and what it said."""
    newest = select(R.c.job, func.max(R.c.id).label("id")).group_by(R.c.job).subquery()
    rows = conn.execute(select(R).join(newest, newest.c.id == R.c.id).order_by(R.c.job))
    return {
        r.job: {
            "started_at": r.started_at.isoformat(),
            "finished_at": r.finished_at.isoformat() if r.finished_at else "",
            "trigger": r.trigger,
            "outcome": r.outcome or "running",
            "detail": redact_text(r.detail),
        }
        for r in rows
    }


def _feeds(conn: Connection) -> list[dict[str, Any]]:
    return [
        {
            "feed": redact_text(r.feed),
            "last_success_at": r.last_success_at.isoformat() if r.last_success_at else "",
            "last_attempt_at": r.last_attempt_at.isoformat() if r.last_attempt_at else "",
            "consecutive_failures": r.consecutive_failures,
            "last_error": redact_text(r.last_error),
        }
        for r in conn.execute(select(F).order_by(F.c.feed))
    ]


def _edition(conn: Connection, edition: Edition | None) -> dict[str, Any] | None:
    if edition is None or edition.id is None:
        return None
    return {
        "key": edition.key,
        "status": edition.status,
        "awaiting_approval": editions.awaiting_approval(edition),
        "approval_deadline": (
            edition.approval_deadline.isoformat() if edition.approval_deadline else ""
        ),
        "ledger": deliveries.counts(conn, edition_id=edition.id),
    }
