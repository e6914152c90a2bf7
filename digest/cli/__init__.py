"""The ``digest`` command (Typer + Rich).

Exit codes: 0 success or nothing to do; 1 the job failed; 2 bad usage or
configuration; 3 interrupted or incomplete, resumable (deliveries still pending:
run the command again); 130 a second Ctrl-C. Errors are one readable message,
never a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler
from rich.markup import escape

from digest import config as config_mod
from digest.cli.common import State, err, fail, out, run_until_signalled, runtime
from digest.cli.desk import register as register_desk
from digest.cli.desk import send_test, write_viewer_preview
from digest.cli.helpers import Helpers, finish, port_problem
from digest.cli.ops import print_health
from digest.cli.ops import register as register_ops
from digest.cli.output import (
    print_compose,
    print_fetch,
    print_ledger,
    print_send,
    print_status,
    send_progress,
    spinner,
    write_preview,
)
from digest.cli.subscribers import subscribers_app
from digest.sending import EXIT_INCOMPLETE, SendReport

app = typer.Typer(
    name="digest",
    help="Weekly digest of AI-tool comparisons: fetch → compose → send.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(subscribers_app, name="subscribers")
register_desk(app)  # check-edition, approve
register_ops(app)  # schedule, check
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar=config_mod.ENV_CONFIG,
        help="config.toml to use (default ./config.toml).",
        show_envvar=True,
    ),
]


@app.callback()
def _main(
    config: ConfigOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    State.config_path = config
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
    )


@app.command()
def init() -> None:
    """Create the database schema, or upgrade it to this version."""
    from digest.db import upgrade

    with runtime() as rt:
        before, after = upgrade(rt.engine)
        what = (
            "created"
            if before is None
            else ("already current" if before == after else f"upgraded from {before}")
        )
        out.print(f"Database {what} (schema revision {after}).")


@app.command()
def fetch() -> None:
    """Read the feed and store new or updated comparisons. A failure after some pages
    keeps what they gave, then exits 1; SIGTERM stops the fetch (what was read is kept)."""
    from digest import pipeline

    with runtime() as rt, spinner(out, "Reading the feed") as tick:
        report = run_until_signalled(lambda stop: pipeline.read_feed(rt, progress=tick, stop=stop))
    print_fetch(out, report)
    if report.error is not None:
        fail(1, str(report.error))


@app.command()
def compose() -> None:
    """Choose this week's comparisons and create the edition (idempotent)."""
    from digest import pipeline

    with runtime() as rt:
        print_compose(out, pipeline.compose(rt))


@app.command()
def preview(
    edition: Annotated[str | None, typer.Option(help="Edition key, e.g. 2026-W48.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the files.")] = Path("preview"),
    open_browser: Annotated[bool, typer.Option("--open", help="Open the HTML.")] = False,
    as_email: Annotated[
        str | None,
        typer.Option("--as", help="A subscriber's copy: their categories, inert links."),
    ] = None,
) -> None:
    """Write the HTML, text and full message of an edition to files. Never sends."""
    with runtime() as rt:
        if as_email:
            paths = write_viewer_preview(rt, edition, as_email, out_dir)
        else:
            paths = write_preview(rt, edition, out_dir)
    for path in paths:
        out.print(f"Wrote {path}")
    if open_browser:
        import webbrowser

        webbrowser.open(paths[0].resolve().as_uri())


@app.command()
def send(
    edition: Annotated[str | None, typer.Option(help="Edition key; default the newest.")] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Sender processes (PostgreSQL only).")
    ] = 1,
    test: Annotated[
        list[str] | None,
        typer.Option(
            "--test",
            help="Send only a [TEST] copy to this address (repeat, or comma-separate); "
            "default edition: the next one. Never recorded as a delivery.",
        ),
    ] = None,
    as_email: Annotated[
        str | None, typer.Option("--as", help="With --test: this subscriber's copy.")
    ] = None,
) -> None:
    """Send an edition to every active subscriber, resuming where a run stopped.

    Exit 3 when deliveries it was meant to send are still pending (SIGTERM, a lost
    lease, retries due later): it says how many; run it again to finish them."""
    from digest import pipeline

    if test:
        with runtime() as rt:
            if not send_test(rt, edition, as_email or "", test):
                raise typer.Exit(1)
        return
    with runtime() as rt:
        found = pipeline.find_edition(rt, edition)
        if found is None:
            what = f"edition {edition}" if edition else "any edition"
            fail(1, f"there is no {what} yet: run 'digest compose' (or 'digest run') first")
        if workers > 1 and rt.engine.dialect.name != "postgresql":
            fail(2, "--workers needs PostgreSQL: on SQLite one process sends an edition")
        with Helpers(workers - 1) as helpers, send_progress(out) as progress:
            report = run_until_signalled(
                lambda stop: helpers.send_with(rt, found, progress=progress, stop=stop)
            )
        print_send(out, rt, report)
        for note in helpers.notes():
            out.print(f"  [yellow]{escape(note)}[/]", highlight=False)
        if helpers.count:
            print_ledger(out, rt, found.key)
        finish(report)


@app.command()
def run() -> None:
    """The weekly job: fetch, compose, send. Safe from cron and beside 'digest schedule':
    a run while another works on the edition says so and exits 0. Exit codes: 0 done,
    nothing to do, in progress elsewhere or awaiting approval; 1 failed; 2 bad config;
    3 interrupted or deliveries left pending: run 'digest send' to finish."""
    from digest import jobs

    with runtime() as rt:
        with send_progress(out) as progress:
            result = run_until_signalled(
                lambda stop: jobs.weekly(rt, trigger="cli", send_progress=progress, stop=stop)
            )
        report = result.run
        if report is not None and report.fetch is not None:
            print_fetch(out, report.fetch)
        if report is not None and report.fetch_error:
            err.print(f"[bold red]feed error:[/] {escape(report.fetch_error)}", highlight=False)
        if report is not None and report.compose is not None:
            print_compose(out, report.compose)
        if report is not None and report.send is not None:
            print_send(out, rt, report.send)
        if result.outcome in (jobs.IN_PROGRESS, jobs.AWAITING):
            out.print(escape(result.detail), highlight=False)
        for subject in result.notices:
            out.print(f"Emailed the operators: {escape(subject)}", highlight=False)
        if report is not None and report.send is not None and result.exit_code == EXIT_INCOMPLETE:
            finish(report.send)  # says how many are pending and how to resume; exit 3
        if result.exit_code:
            raise typer.Exit(result.exit_code)


@app.command()
def pause(
    key: Annotated[str, typer.Argument(help="Edition key, e.g. 2026-W48.")],
    reason: Annotated[str, typer.Option(help="Why, for 'digest status'.")] = "by the operator",
) -> None:
    """Pause an edition: senders stop at their next batch; 'digest resume' goes on."""
    from digest import editions
    from digest.db import session_scope

    with runtime() as rt, session_scope(rt.engine) as session:
        editions.pause(session, key=key, note=reason, now=rt.now())
    out.print(f"Edition {key} is paused ({reason}).")


@app.command()
def resume(key: Annotated[str, typer.Argument(help="Edition key, e.g. 2026-W48.")]) -> None:
    """Resume a paused edition and send the rest of it now."""
    from digest import editions, pipeline
    from digest.db import session_scope

    with runtime() as rt:
        with session_scope(rt.engine) as session:
            edition = editions.resume(session, key=key)
        out.print(f"Edition {key} resumed.")
        with send_progress(out) as progress:
            report = run_until_signalled(
                lambda stop: pipeline.send(rt, edition=edition, progress=progress, stop=stop)
            )
        print_send(out, rt, report)
        finish(report)


@app.command()
def cancel(
    key: Annotated[str, typer.Argument(help="Edition key, e.g. 2026-W48.")],
    reason: Annotated[str, typer.Option(help="Why, kept on the edition.")] = "by the operator",
) -> None:
    """Cancel an edition: nothing more of it is sent; its queued deliveries are skipped."""
    from digest import editions
    from digest.db import session_scope

    with runtime() as rt, session_scope(rt.engine) as session:
        _, skipped = editions.cancel(
            session, key=key, note=f"edition cancelled: {reason}", now=rt.now()
        )
    out.print(f"Edition {key} is cancelled; {skipped} queued deliveries skipped.")


@app.command()
def worker(
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="Stop once nothing is left to send.")
    ] = False,
    poll: Annotated[float, typer.Option(help="Seconds between looks for new work.")] = 10.0,
) -> None:
    """Send composed editions; on PostgreSQL run as many as you like, anywhere.

    Workers share an edition's deliveries through row leases (FOR UPDATE SKIP
    LOCKED); a worker that finds a composed edition plans its ledger itself. On
    SQLite one sender works an edition at a time. SIGTERM drains in-flight sends
    and gives unsent rows back (exit 3 when it stopped mid-edition, 0 when idle). A worker stopped
    longer than [send] lease_seconds (SIGSTOP, a paused VM) finds its rows taken
    over, sends none of them, and exits 3.
    """
    from digest import pipeline

    lost: list[str] = []
    last: dict[str, SendReport] = {}  # each edition's latest report from this worker

    def report(r: SendReport) -> None:
        print_send(out, rt, r)
        last[r.edition_key] = r
        if r.lost:
            lost.append(r.interrupted)

    with runtime() as rt:
        sent = run_until_signalled(
            lambda stop: pipeline.work(
                rt, stop=stop, exit_when_idle=exit_when_idle, poll_seconds=poll, on_report=report
            )
        )
        out.print(f"Worker done: {sent} messages sent.")
        if lost:
            err.print(
                "[bold yellow]interrupted:[/] this worker lost its lease; other senders have its "
                "rows. Start it again (or run 'digest send') to go on.",
                highlight=False,
            )
            raise typer.Exit(EXIT_INCOMPLETE)
        stopped = [r for r in last.values() if r.interrupted and r.outstanding]
        if stopped:  # SIGTERM mid-edition: its rows went back, but the edition is not done
            pending = ", ".join(f"{r.edition_key} ({r.outstanding} pending)" for r in stopped)
            err.print(
                f"[bold yellow]interrupted:[/] stopped before finishing {escape(pending)}; "
                "its unsent rows went back to the ledger: start a worker again (or run "
                "'digest send') to finish, nobody gets a second copy.",
                highlight=False,
            )
            raise typer.Exit(EXIT_INCOMPLETE)


@app.command()
def status() -> None:
    """Editions with their delivery counts, and subscribers by status."""
    from digest import health

    with runtime() as rt:
        print_status(out, rt)
        print_health(out, health.report(rt, now=rt.now()))


@app.command()
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
        # proxy_headers off: the app reads X-Forwarded-For itself, and only when
        # [web] trust_forwarded_for is true.
        try:
            uvicorn.run(create_app(rt), host=host, port=port, proxy_headers=False)
        except SystemExit as exc:  # uvicorn exits 3 when it could not start
            if exc.code not in (0, None):
                fail(1, f"the web server could not start on {host}:{port} (see the log above)")
            raise


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
