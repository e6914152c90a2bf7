"""``digest subscribers …``: add, import, export, list, remove."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from digest.cli.common import EXIT_USAGE, fail, out, runtime
from digest.db import ensure_current, session_scope
from subscribers import csvio, repository
from subscribers.models import SubscriberStatus

subscribers_app = typer.Typer(help="Manage subscribers.", no_args_is_help=True)


@subscribers_app.command("add")
def add(
    email: str,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
) -> None:
    """Add one subscriber (active)."""
    with runtime() as rt:
        ensure_current(rt.engine)
        with session_scope(rt.engine) as session:
            result = repository.add(session, email=email, name=name, source="cli", now=rt.now())
        s = result.subscriber
        if result.created:
            out.print(f"Added {s.email}.")
        else:
            out.print(f"{s.email} is already a subscriber ({s.status}); nothing changed.")


@subscribers_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV with a header: email, optional name.")],
) -> None:
    """Import subscribers from CSV; bad rows are reported by line, the rest imported."""
    try:
        stream = file.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        fail(EXIT_USAGE, f"cannot read {file}: {exc.strerror}")
    with stream, runtime() as rt:
        ensure_current(rt.engine)
        with session_scope(rt.engine) as session:
            report = csvio.import_csv(
                session, stream=stream, source=f"import:{file.name}", now=rt.now()
            )
    for error in report.errors:
        out.print(f"  {file}:{error.line}: {error.reason}", highlight=False)
    if report.ignored_columns:
        out.print(f"  ignored columns: {', '.join(report.ignored_columns)}")
    out.print(
        f"Imported {report.added} new subscribers from {file}; {report.already_present} "
        f"already present, {len(report.errors)} rows rejected."
    )


@subscribers_app.command("export")
def export(
    file: Annotated[Path | None, typer.Argument(help="Output CSV; default stdout.")] = None,
) -> None:
    """Export every subscriber as CSV (email, name, status, created_at)."""
    with runtime() as rt, session_scope(rt.engine) as session:
        if file is None:
            csvio.export_csv(session, stream=sys.stdout)
            return
        with file.open("w", encoding="utf-8", newline="") as stream:
            count = csvio.export_csv(session, stream=stream)
    out.print(f"Exported {count} subscribers to {file}.")


@subscribers_app.command("list")
def list_(
    status: Annotated[SubscriberStatus | None, typer.Option(help="Only this status.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """List subscribers."""
    with runtime() as rt, session_scope(rt.engine) as session:
        rows = repository.list_subscribers(session, status=status, limit=limit)
        table = Table("id", "email", "name", "status", "since")
        for s in rows:
            table.add_row(str(s.id), s.email, s.name, s.status, f"{s.created_at:%Y-%m-%d}")
    out.print(table)


@subscribers_app.command("remove")
def remove(email: str) -> None:
    """Unsubscribe an address (it stays suppressed: no future import re-adds it)."""
    with runtime() as rt, session_scope(rt.engine) as session:
        changed = repository.remove(session, email=email, now=rt.now())
    out.print(f"Unsubscribed {email}." if changed else f"{email} was not an active subscriber.")
