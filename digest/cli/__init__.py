"""The ``digest`` command (Typer + Rich).

Exit codes: 0 success or nothing to do; 1 the job failed; 2 bad usage or
configuration; 3 interrupted or incomplete, resumable (deliveries still pending:
run the command again); 130 a second Ctrl-C. Errors are one readable message,
never a traceback. ``digest status`` before ``digest init`` exits 2 and says to run it.

``--config PATH`` (or ``-c``) may come before or after the subcommand:
:class:`~digest.cli.common.ConfigAnywhere` moves it to the front before Click parses.

Terminal output (:mod:`digest.cli.console`): bars and Rich log lines on a terminal;
plain timestamped lines when stderr is a file, pipe or journal; ``--log-format json``
(or ``DIGEST_LOG_FORMAT=json``) for log shippers. Help is plain text, so a config
name in brackets ("[edition] require_approval") is shown as written.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from digest import __version__
from digest import config as config_mod
from digest.cli import console
from digest.cli.api_keys import register as register_api_keys
from digest.cli.bounces import register as register_bounces
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
    Stages,
    open_preview,
    print_compose,
    print_fetch,
    print_status,
    write_preview,
)
from digest.cli.sending import register as register_sending
from digest.cli.stats import register as register_stats
from digest.cli.subscribers import subscribers_app
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
    rich_markup_mode=None,  # plain help: "[edition] require_approval" is not markup
)
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


class LogFormat(StrEnum):
    text = "text"
    json = "json"


LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        envvar=console.ENV_LOG_FORMAT,
        help="Log lines on stderr: text (Rich on a terminal, else timestamped lines) or "
        "json (one object per line, for log shippers).",
        show_envvar=True,
    ),
]


@app.callback()
def _main(
    config: ConfigOption = None,
    log_format: LogFormatOption = LogFormat.text,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    State.config_path, State.log_format = config, log_format.value
    console.setup(verbose, log_format.value)  # also installs the secrets' redaction


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

    with runtime() as rt, Stages(out, rt) as stages:
        report = run_until_signalled(
            lambda stop: pipeline.read_feed(rt, progress=stages.fetching, stop=stop)
        )
        stages.close()
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
    from digest import pipeline
    from digest.ops import jobs

    with runtime() as rt, Stages(out, rt) as stages:
        result = run_until_signalled(
            lambda stop: jobs.weekly(
                rt,
                trigger="cli",
                watch=pipeline.Watch(
                    fetching=stages.fetching,
                    fetched=stages.fetched,
                    composed=stages.composed,
                    sending=stages.sending,
                ),
                stop=stop,
            )
        )
        report = result.run  # fetch and compose were summed up as each ended
        if report is not None and report.stopped_in_fetch:
            err.print(
                "[bold yellow]interrupted:[/] nothing was composed or sent: run 'digest run' "
                "again to finish the week",
                highlight=False,
            )
        if report is not None and report.send is not None:
            stages.sent(report.send)
        stages.close()
        if result.outcome in (jobs.IN_PROGRESS, jobs.AWAITING, jobs.SCHEDULED):
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


# Registered after the weekly job's own commands, so 'digest --help' lists those first.
app.add_typer(subscribers_app, name="subscribers")
register_desk(app)  # check-edition, approve
register_ops(app)  # schedule, check, serve
register_sending(app)  # send, pause, resume, cancel, worker
register_edit(app)  # edit
register_operators(app)  # operators, audit
register_api_keys(app)  # api-keys
register_stats(app)  # stats
register_feed(app)  # feed-schema, validate-feed
register_bounces(app)  # bounces ingest, bounces poll


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
