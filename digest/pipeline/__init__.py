"""The weekly job, one call per stage (see DESIGN.md's diagram)::

    fetch ──► compose ──► render ──► send
    feeds      editions    render/    deliveries + transports

Every stage is a function of the runtime and an explicit ``now`` from its clock; preview
runs the same render and personalize code (:mod:`digest.delivery.messages`), never sends.
Rendering an edition (its digest, its editorial, the web copy): :mod:`.rendering`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

from digest.comparisons import fetch as ingest
from digest.comparisons.fetch import FetchReport
from digest.config.runtime import Runtime
from digest.delivery import localtime, messages, sending
from digest.delivery.leases import new_owner
from digest.delivery.ledger import RetryPolicy
from digest.delivery.sending import SendOptions, SendReport
from digest.editions import lifecycle as editions
from digest.editions import shaping, weeks
from digest.editions.lifecycle import ComposeResult
from digest.errors import LeaseHeld
from digest.pipeline.rendering import (
    editorial_of,
    find_edition,
    keep_web_copy,
    render,
    render_edition,
)
from digest.store.db import ensure_current, session_scope
from digest.store.models import Edition, EditionStatus


def fetch(rt: Runtime, *, progress: Callable[[int], None] | None = None) -> FetchReport:
    """Read the feed and store its comparisons. Raises FeedError, after storing what
    the pages read before the failure gave (nothing stored earlier is lost)."""
    ensure_current(rt.engine)
    report = ingest.fetch_and_store(rt.engine, rt.feed(), now=rt.now(), progress=progress)
    if report.error is not None:
        raise report.error
    return report


async def read_feed(
    rt: Runtime,
    *,
    progress: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> FetchReport:
    """:func:`fetch` for asyncio callers (``digest run``, ``digest fetch``): on a thread
    of its own, so signals are still handled; ``stop`` ends it within seconds, keeping
    what was read. Never raises FeedError: a failure is in ``report.error``."""
    ensure_current(rt.engine)
    return await ingest.fetch_in_thread(
        rt.engine, rt.feed(), now=rt.now(), progress=progress, stop=stop
    )


def compose(rt: Runtime, *, key: str | None = None) -> ComposeResult:
    """This week's edition (created from eligible comparisons, or the existing one);
    ``key``: a later week's, composed early (see :func:`digest.editions.weeks.not_yet_due`)."""
    ensure_current(rt.engine)
    cfg = rt.config
    with session_scope(rt.engine) as session:
        return editions.compose(
            session,
            now=rt.now(),
            tz=cfg.site.tz,
            max_comparisons=cfg.edition.max_comparisons,
            max_age=timedelta(days=cfg.edition.max_age_days),
            min_comparisons=cfg.edition.min_comparisons,
            key=key,
            approval_deadline=(
                rt.now() + timedelta(hours=cfg.edition.approval_hours)
                if cfg.edition.require_approval
                else None
            ),
        )


async def send(
    rt: Runtime,
    *,
    edition: Edition,
    progress: Callable[[SendReport], None] | None = None,
    stop: asyncio.Event | None = None,
    others_working: Callable[[], bool] | None = None,
) -> SendReport:
    """Send ``edition`` (resuming where any earlier run stopped). Raises LeaseHeld
    (SQLite: another process is sending it). ``stop`` ends the run gracefully.
    ``others_working``: see :func:`digest.delivery.sending.send_edition` (helper processes)."""
    if edition.status == EditionStatus.sent:
        return SendReport(edition.key, finished=True)
    held = _held(rt, edition)
    if held:
        return SendReport(edition.key, halted=True, stopped_reason=held)
    with session_scope(rt.engine) as session:
        comparisons = editions.comparisons_of(session, edition=edition)
        revision = shaping.revision_of(session, edition)
    build = messages.message_factory(rt, edition.key, comparisons, render=render)
    keep_web_copy(rt, edition, comparisons)
    cfg = rt.config.send
    options = SendOptions(
        batch_size=cfg.batch_size,
        retry=RetryPolicy(cfg.max_attempts, cfg.retry_backoff_seconds, cfg.unknown_policy),
        pause_error_share=cfg.pause_error_share,
        pause_window=cfg.pause_window,
        max_retry_wait=cfg.max_retry_wait_seconds,
        lease_ttl=float(cfg.lease_seconds),
        local_due=localtime.local_due(rt.config.schedule, edition.key, _zone(rt)),
        content_revision=revision,
    )
    return await sending.send_edition(
        rt.engine,
        edition=edition,
        transport=rt.transport(),
        build_messages=build,
        options=options,
        clock=rt.clock,
        owner=new_owner(),
        progress=progress,
        stop=stop,
        others_working=others_working,
    )


@dataclass(slots=True)
class RunReport:
    fetch: FetchReport | None = None
    fetch_error: str = ""
    stopped_in_fetch: bool = False  # stop was set during the fetch: nothing composed or sent
    compose: ComposeResult | None = None
    send: SendReport | None = None

    @property
    def ok(self) -> bool:
        send_ok = self.send is None or not self.send.error
        return not self.fetch_error and send_ok


@dataclass(frozen=True, slots=True)
class Watch:
    """What a watcher of the weekly job (the CLI's bars and summaries) is told as it
    happens: feed progress, each stage's report as that stage ends, send progress."""

    fetching: Callable[[int], None] | None = None
    fetched: Callable[[FetchReport], None] | None = None
    composed: Callable[[ComposeResult], None] | None = None
    sending: Callable[[SendReport], None] | None = None


async def run(
    rt: Runtime,
    *,
    watch: Watch | None = None,
    stop: asyncio.Event | None = None,
    key: str | None = None,
) -> RunReport:
    """The weekly job: fetch, compose (week ``key``'s edition, default this week's),
    send. A failed fetch (after bounded retries, or past ``[feed] deadline_seconds``)
    is reported (exit 1) but does not stop the week's edition: comparisons stored
    earlier still go out. ``stop`` set during the fetch ends it: nothing is composed."""
    report, watch = RunReport(), watch or Watch()
    report.fetch = await read_feed(rt, progress=watch.fetching, stop=stop)
    if watch.fetched is not None:
        watch.fetched(report.fetch)
    if report.fetch.error is not None:
        report.fetch_error = str(report.fetch.error)
        if stop is not None and stop.is_set():
            report.fetch_error += (
                "; nothing was composed or sent: run 'digest run' again to finish the week"
            )
            report.stopped_in_fetch = True
            return report
    report.compose = compose(rt, key=key)
    if watch.composed is not None:
        watch.composed(report.compose)
    edition = report.compose.edition
    if edition is not None and edition.status != EditionStatus.sent:
        report.send = await send(rt, edition=edition, progress=watch.sending, stop=stop)
    return report


async def work(
    rt: Runtime,
    *,
    stop: asyncio.Event,
    exit_when_idle: bool,
    poll_seconds: float,
    on_report: Callable[[SendReport], None] | None = None,
) -> int:
    """``digest worker``: send every composed or sending edition, again and again.

    Any number of workers may run on PostgreSQL (they share the rows through row
    leases); a worker plans an edition's ledger itself when nobody has yet. Returns
    the number of messages sent. Ends when ``stop`` is set or, with
    ``exit_when_idle``, when no edition has anything this worker could send; and
    at once when a run lost its lease (it was stopped longer than ``[send]
    lease_seconds``): that run's report says so (``interrupted``, exit 3).
    """
    sent = 0
    while not stop.is_set():
        busy = False
        for edition in pending_editions(rt):
            try:
                report = await send(rt, edition=edition, stop=stop)
            except LeaseHeld:
                continue  # SQLite: another sender has this edition
            sent += report.sent
            busy = busy or bool(report.sent or report.failed or report.skipped)
            if on_report is not None:
                on_report(report)
            if report.lost:
                return sent
        if not busy and exit_when_idle:
            break
        if not busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
    return sent


def pending_editions(rt: Runtime) -> list[Edition]:
    """Editions a sender should work on: composed or sending, oldest first."""
    with session_scope(rt.engine) as session:
        return [
            e
            for e in reversed(editions.all_editions(session))
            if e.status in (EditionStatus.composed, EditionStatus.sending)
            and not editions.awaiting_approval(e)
            and not not_yet_due(rt, e)
        ]


def _held(rt: Runtime, edition: Edition) -> str:
    """Why ``edition`` may not be sent now ("": it may)."""
    if edition.status in (EditionStatus.paused, EditionStatus.cancelled):
        return f"edition {edition.status}: {edition.status_note or 'by the operator'}"
    if editions.awaiting_approval(edition):
        return f"edition {edition.key} awaits approval: 'digest approve {edition.key}'"
    if not_yet_due(rt, edition):
        starts = weeks.starts_at(rt.config.schedule, edition.key, _zone(rt))
        return f"edition {edition.key} was composed early: it starts {starts:%Y-%m-%d %H:%M %Z}"
    return ""


def not_yet_due(rt: Runtime, edition: Edition) -> bool:
    """:func:`digest.editions.weeks.not_yet_due` with this runtime's clock and schedule."""
    tz, schedule = rt.config.site.tz, rt.config.schedule
    return weeks.not_yet_due(edition, now=rt.now(), tz=tz, schedule=schedule, zone=_zone(rt))


def _zone(rt: Runtime) -> ZoneInfo:
    return rt.config.schedule.zone(rt.config.site)


__all__ = [
    "RunReport",
    "Watch",
    "compose",
    "editorial_of",
    "fetch",
    "find_edition",
    "keep_web_copy",
    "pending_editions",
    "read_feed",
    "render",
    "render_edition",
    "run",
    "send",
    "work",
]
