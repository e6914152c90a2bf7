"""Unattended operation: ``digest schedule``, ``digest check`` and the health part of
``digest status``.

Exit codes of ``digest check``: 0 all is well; 1 something needs a human (each
incident is printed, and the operators are emailed once per incident); 2 bad
configuration. With no ``[operators] emails`` it says nobody was emailed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import FrameType
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from digest.cli.common import err, out, runtime
from digest.config.runtime import Runtime


def register(app: typer.Typer) -> None:
    app.command()(schedule)
    app.command()(check)


def schedule() -> None:
    """Run the scheduler (weekly edition, feed polls, dispatch) until SIGTERM.

    One scheduler per database: a second one stands by and takes over when the
    first stops. Logs each fire, its outcome and the next fire time."""
    from digest.ops import scheduler

    logging.getLogger("digest").setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.INFO)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        err.print(f"{signal.Signals(signum).name}: finishing the running job, then stopping")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with runtime() as rt:
        out.print(f"Scheduler starting for {rt.config.site.name} ({rt.config.source}).")
        scheduler.serve(
            rt,
            stop=stop,
            on_standby=lambda why: out.print(f"Another scheduler is active ({why}): standing by."),
        )
        out.print("Scheduler stopped.")


def check() -> None:
    """Exit 1 when something needs a human (feed failing, a missed or paused
    edition); email the operators once per incident. For monitoring and cron.
    Also cancels drafts past their approval deadline (telling the operators)."""
    from digest.ops import alerts, health, jobs

    with runtime() as rt:
        expired = asyncio.run(jobs.expire_drafts(rt))
        now = rt.now()
        found = health.incidents(rt, now=now)
        notices = asyncio.run(alerts.sync(rt, found, now=now))
        lines = [notice_line(rt, s) for s in [*map(jobs.expiry_subject, expired), *notices]]
    for key in expired:
        out.print(f"Edition {key} was not approved by its deadline: cancelled, nothing sent.")
    for line in lines:
        out.print(line, highlight=False)
    if not found:
        out.print("All is well.")
        return
    for incident in found:
        out.print(f"[bold red]needs attention:[/] {escape(incident.summary)}", highlight=False)
    raise typer.Exit(1)


def notice_line(rt: Runtime, subject: str) -> str:
    """What became of an operator notice: emailed, or nobody configured to email."""
    if rt.config.operators.emails:
        return f"Emailed the operators: {escape(subject)}"
    why = escape("No operators are configured to email ([operators] emails is empty)")
    return f"{why}; not emailed: {escape(subject)}"


def print_health(console: Console, report: dict[str, Any]) -> None:
    """The health part of ``digest status``: schedule, last runs, feeds, incidents."""
    fires = report["next_fires"]
    if fires:
        console.print(
            "Next fires: " + ", ".join(f"{job} {when[:16]}" for job, when in sorted(fires.items()))
        )
    else:
        console.print("Next fires: none recorded ('digest schedule' has not run here).")
    runs = Table("job", "started", "by", "outcome", "detail", title="Last runs")
    for job, run in report["last_runs"].items():
        runs.add_row(
            job, run["started_at"][:16], run["trigger"], run["outcome"], run["detail"][:80]
        )
    if report["last_runs"]:
        console.print(runs)
    for feed in report["feeds"]:
        failures = feed["consecutive_failures"]
        state = f"{failures} failed poll(s) in a row: {feed['last_error'][:120]}"
        success = feed["last_success_at"][:16] or "never"
        line = f"Feed {feed['feed']}: last success {success}; {state if failures else 'ok'}"
        console.print(escape(line), highlight=False)
    for incident in report["incidents"]:
        console.print(
            f"[bold red]needs attention:[/] {escape(incident['summary'])}", highlight=False
        )
