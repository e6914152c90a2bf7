"""The operator's desk on the command line: ``check-edition``, ``approve``, and the
helpers behind ``digest preview --as`` and ``digest send --test``.

``digest check-edition KEY`` exits 1 when the pre-flight finds an error (warnings
alone exit 0); ``digest approve KEY`` refuses such an edition unless ``--force``.
A link that resolves or redirects to a loopback, private or link-local address is
refused, not fetched (an error: ``link … refused: …``), unless ``[preflight]
allow_private_addresses = true`` (:mod:`digest.common.netguard`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from digest.cli.common import fail, out, run_until_signalled, runtime
from digest.config.runtime import Runtime
from digest.desk import preview as desk
from digest.desk.preflight import PreflightReport, run_preflight
from digest.transports.base import Outcome


def register(app: typer.Typer) -> None:
    app.command("check-edition")(check_edition)
    app.command("approve")(approve)


def check_edition(
    key: Annotated[str, typer.Argument(help="Edition key, e.g. 2026-W48, or 'next'.")] = "next",
    links: Annotated[
        bool | None,
        typer.Option(
            "--links/--no-links",
            help="Fetch every link (default: [preflight] check_links); links to internal "
            "addresses are refused unless [preflight] allow_private_addresses.",
        ),
    ] = None,
) -> None:
    """Pre-flight checks of an edition: size, images, links, subject, text, headers.
    Exits 1 when any check fails; warnings do not."""
    with runtime() as rt:
        report = run_preflight(rt, key=key, check_links=links)
    print_report(out, report)
    if report.errors:
        raise typer.Exit(1)


def approve(
    key: Annotated[str, typer.Argument(help="Edition key, e.g. 2026-W48.")],
    force: Annotated[
        bool, typer.Option("--force", help="Approve even when the pre-flight finds errors.")
    ] = False,
    by: Annotated[str, typer.Option(help="Who approves (kept on the edition).")] = "operator (cli)",
) -> None:
    """Run the pre-flight, then approve an edition for sending ([edition] require_approval)."""
    with runtime() as rt:
        approval = desk.approve_edition(rt, key=key, by=by, now=rt.now(), force=force)
    print_report(out, approval.report)
    forced = " despite the errors above (--force)" if approval.forced else ""
    out.print(f"Edition {key} is approved{forced}.")


def print_report(console: Console, report: PreflightReport) -> None:
    """One line per finding, then a summary line."""
    for finding in [*report.errors, *report.warnings]:
        colour = "red" if finding.level == "error" else "yellow"
        console.print(
            f"  [{colour}]{finding.level}[/] {escape(finding.describe())}", highlight=False
        )
    links = (
        f"{report.links_checked} links checked in {report.link_seconds:.1f} s"
        if report.links_checked
        else "links not fetched"
    )
    console.print(
        f"Pre-flight of {report.edition_key}: {len(report.errors)} error(s), "
        f"{len(report.warnings)} warning(s); HTML {report.html_bytes:,} bytes on the wire; "
        f"{links}."
    )


def write_viewer_preview(rt: Runtime, key: str | None, email: str, folder: Path) -> list[Path]:
    """``digest preview --as EMAIL``: that reader's copy (inert links) as files, and
    its subject, comparisons and headers on the terminal. Never sends."""
    content = desk.edition_content(rt, key)
    shown = desk.preview(rt, content, desk.viewer_for(rt, email=email))
    out.print(f"Edition {content.key} as {escape(shown.viewer.label)}:", highlight=False)
    if shown.message is None:
        fail(1, f"this reader gets no message: {shown.skipped}")
    if shown.skipped:
        out.print(f"  [yellow]{escape(shown.skipped)}[/]", highlight=False)
    out.print(f"  Subject: {escape(shown.subject)}", highlight=False)
    for c in shown.comparisons:
        out.print(f"  - {escape(c.title)} ({escape(c.category)})", highlight=False)
    for name, value in shown.headers:
        out.print(f"  {name}: {escape(value)}", highlight=False)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{content.key}-{shown.viewer.recipient.email.replace('@', '_at_')}"
    files = {
        folder / f"{stem}.html": shown.html,
        folder / f"{stem}.txt": shown.text.encode("utf-8"),
        folder / f"{stem}.eml": shown.message.data,
    }
    for path, data in files.items():
        path.write_bytes(data)
    return list(files)


def send_test(rt: Runtime, key: str | None, email: str, addresses: list[str]) -> bool:
    """``digest send --test ADDRESS``: the edition as ``email`` (default: a sample
    reader of every category) gets it, ``[TEST]`` in the subject, to each address.
    Nothing is recorded in the ledger. Returns whether every address was accepted."""
    content = desk.edition_content(rt, key)
    viewer = desk.viewer_for(rt, email=email)
    messages = desk.test_messages(rt, content, viewer, addresses)
    results = run_until_signalled(lambda stop: desk.send_tests(rt, messages))
    ok = True
    for message, result in zip(messages, results, strict=True):
        accepted = result.outcome in (Outcome.sent, Outcome.queued)
        ok = ok and accepted
        detail = f" ({escape(result.detail)})" if result.detail else ""
        out.print(
            f"Test of {content.key} as {escape(viewer.label)} to {message.recipient}: "
            f"{result.outcome.value}{detail}",
            highlight=False,
        )
    return ok
