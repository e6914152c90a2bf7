"""The ``digest`` command (Typer + Rich).

Exit codes: 0 success or nothing to do; 1 the job failed; 2 bad usage or
configuration; 3 interrupted or incomplete, resumable (deliveries still pending:
run the command again); 130 a second Ctrl-C. Errors are one readable message,
never a traceback. ``digest status`` before ``digest init`` exits 2 and says to run it.

``--config PATH`` (or ``-c``) may come before or after the subcommand:
:class:`~digest.cli.common.ConfigAnywhere` moves it to the front before Click parses.
"""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler
from rich.markup import escape

from digest import __version__
from digest import config as config_mod
from digest.cli.api_keys import register as register_api_keys
from digest.cli.common import (
    EXIT_USAGE,
    ConfigAnywhere,
    State,
    err,
    fail,
    out,
    run_until_signalled,
    runtime,
)
from digest.cli.desk import register as register_desk
from digest.cli.desk import write_viewer_preview
from digest.cli.edit import register as register_edit
from digest.cli.feed import register as register_feed
from digest.cli.helpers import finish
from digest.cli.operators import register as register_operators
from digest.cli.ops import notice_line, print_health
from digest.cli.ops import register as register_ops
from digest.cli.output import (
    open_preview,
    print_compose,
    print_fetch,
    print_send,
    print_status,
    send_progress,
    spinner,
    write_preview,
)
from digest.cli.sending import register as register_sending
from digest.cli.stats import register as register_stats
from digest.cli.subscribers import subscribers_app
from digest.common import redaction
from digest.delivery.sending import EXIT_INCOMPLETE


def _print_version(value: bool) -> None:
    if value:
        out.print(f"digest {__version__}", highlight=False)
        raise typer.Exit(0)


app = typer.Typer(
    name="digest",
    cls=ConfigAnywhere,
    help="Weekly digest of AI-tool comparisons: fetch → compose → send.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(subscribers_app, name="subscribers")
register_desk(app)  # check-edition, approve
register_ops(app)  # schedule, check
register_sending(app)  # send, pause, resume, cancel, worker
register_edit(app)  # edit
register_operators(app)  # operators, audit
register_api_keys(app)  # api-keys
register_stats(app)  # stats
register_feed(app)  # feed-schema, validate-feed
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
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    State.config_path = config
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
    )
    redaction.install()  # no URL credential, token or Bearer value in any log line


@app.command()
def init() -> None:
    """Create the database schema, or upgrade it to this version."""
    from digest.store.db import upgrade

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
        open_preview(out, paths[0])


@app.command()
def run() -> None:
    """The weekly job: fetch, compose, send. Safe from cron and beside 'digest schedule':
    a run while another works on the edition says so and exits 0. Exit codes: 0 done,
    nothing to do, in progress elsewhere or awaiting approval; 1 failed; 2 bad config;
    3 interrupted or deliveries left pending: run 'digest send' to finish."""
    from digest.ops import jobs

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
            out.print(notice_line(rt, subject), highlight=False)
        if report is not None and report.send is not None and result.exit_code == EXIT_INCOMPLETE:
            finish(report.send)  # says how many are pending and how to resume; exit 3
        if result.exit_code:
            raise typer.Exit(result.exit_code)


@app.command()
def status() -> None:
    """Editions with their delivery counts, and subscribers by status."""
    from digest.ops import health
    from digest.store.db import current_revision

    with runtime() as rt:
        if current_revision(rt.engine) is None:
            fail(EXIT_USAGE, "the database has no tables yet: run 'digest init' first.")
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
        # proxy_headers off: create_app installs uvicorn's ProxyHeadersMiddleware
        # itself, trusting only [web] trusted_proxies (uvicorn's own default would
        # trust 127.0.0.1, and FORWARDED_ALLOW_IPS from the environment).
        try:
            uvicorn.run(create_app(rt), host=host, port=port, proxy_headers=False)
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


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
