"""Unattended operation: ``digest schedule``, ``digest serve``, ``digest check`` and the
health part of ``digest status``.

Exit codes of ``digest check``: 0 all is well; 1 something needs a human (each
incident is printed, and the operators are emailed once per incident); 2 bad
configuration. With no ``[operators] emails`` it says nobody was emailed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from digest.cli.common import err, fail, out, runtime
from digest.config.runtime import Runtime


def register(app: typer.Typer) -> None:
    app.command()(schedule)
    app.command()(check)
    app.command()(serve)


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


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the reader pages (sign-up, unsubscribe, preferences, archive). Never
    starts a scheduler: run 'digest schedule' or cron for the weekly job."""
    import uvicorn

    from digest.web.app import create_app

    with runtime() as rt:
        problem = port_problem(host, port)
        if problem:
            fail(
                1,
                f"cannot listen on {host}:{port}: {problem}. Is another 'digest serve' "
                "running? Stop it, or choose another --port.",
            )
        # proxy_headers off: create_app installs uvicorn's ProxyHeadersMiddleware
        # itself, trusting only [web] trusted_proxies (uvicorn's own default would
        # trust 127.0.0.1, and FORWARDED_ALLOW_IPS from the environment).
        try:
            # log_config None: uvicorn's lines go through our handler (timestamped or
            # JSON off a terminal, like every other line), at INFO like schedule's.
            logging.getLogger("uvicorn").setLevel(logging.INFO)
            app = create_app(rt)
            uvicorn.run(app, host=host, port=port, proxy_headers=False, log_config=None)
        except SystemExit as exc:  # uvicorn exits 3 when it could not start
            if exc.code not in (0, None):
                fail(1, f"the web server could not start on {host}:{port} (see the log above)")
            raise


def port_problem(host: str, port: int) -> str:
    """Why ``host:port`` cannot be listened on ("" when it can)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return ""


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
