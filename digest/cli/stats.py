"""``digest stats [KEY] [--csv FILE|-]``: what the editions did (issue 16).

Without KEY: the last :data:`~digest.engagement.stats.TRENDS` editions that went
out, one row each (``--csv``: the same, one CSV row per edition). With KEY: that
edition's figures, then clicks and votes per comparison and tool (``--csv``: one
CSV row per link). ``--csv -`` writes the CSV to standard output. The rules behind
each figure: :mod:`digest.engagement.stats`. An unknown KEY is one line and exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from sqlmodel import Session

from digest.cli.common import EXIT_USAGE, fail, out, runtime
from digest.engagement import stats
from digest.store.db import ensure_current

CsvOption = Annotated[
    str | None,
    typer.Option(
        "--csv", metavar="FILE|-", help="Write the figures as CSV to FILE ('-': standard output)."
    ),
]


def register(app: typer.Typer) -> None:
    app.command("stats")(stats_command)


def stats_command(
    key: Annotated[
        str | None, typer.Argument(help="An edition key, e.g. 2026-W48: its links and votes.")
    ] = None,
    csv: CsvOption = None,
) -> None:
    """Sent, delivered, bounced, complained, unsubscribed, clicks and votes per edition."""
    with runtime() as rt:
        ensure_current(rt.engine)
        with Session(rt.engine) as session:
            try:
                found = [stats.edition_stats(session, key)] if key else stats.trends(session)
            except stats.NoSuchEdition as exc:
                fail(EXIT_USAGE, str(exc))
    if csv is not None:
        body = stats.links_to_csv(found[0]) if key else stats.to_csv(found)
        _write(body, csv, f"the links of {found[0].key}" if key else f"{len(found)} edition(s)")
    elif key:
        print_edition(found[0])
    else:
        print_trends(found)


def _write(body: str, where: str, what: str) -> None:
    if where == "-":
        typer.echo(body, nl=False)
        return
    try:
        Path(where).write_text(body, encoding="utf-8", newline="")
    except OSError as exc:
        fail(1, f"cannot write {where}: {exc.strerror or exc}")
    out.print(f"Wrote {what} to {escape(where)}.")


def _rate(found: stats.EditionStats) -> str:
    return "—" if found.click_rate is None else f"{found.click_rate:.1f}%"


def print_trends(found: list[stats.EditionStats]) -> None:
    """One row per edition, oldest first; opens only when any edition has some."""
    if not found:
        out.print("No edition has gone out yet: 'digest run' sends the first.")
        return
    opens = any(s.opens for s in found)
    heads = ["sent", "delivered", "bounced", "complaints", "unsub.", "unique clicks"]
    heads += ["click rate", "clicks", "scanner clicks", "ship", "skip", *(["opens"] * opens)]
    table = _table("Last editions", "edition", heads)
    for s in found:
        delivered = f"{s.delivered}{'*' if s.delivered_source == 'estimate' else ''}"
        cells = [s.sent, delivered, s.bounced, s.complained, s.unsubscribed, s.unique_clicks]
        cells += [_rate(s), s.clicks, s.scanner_clicks, s.ship, s.skip]
        table.add_row(escape(s.key), *map(str, cells), *([str(s.opens)] if opens else []))
    out.print(table)
    if any(s.delivered_source == "estimate" for s in found):
        out.print("* sent − bounced: no provider reported deliveries for that edition.")


def print_edition(s: stats.EditionStats) -> None:
    """The edition's figures, then each comparison's clicks and its tools' clicks and votes."""
    when = f"{s.planned_at:%Y-%m-%d %H:%M} UTC" if s.planned_at else "not sent yet"
    source = "as the provider reported" if s.delivered_source == "provider" else "sent − bounced"
    out.print(f"Edition {escape(s.key)} ({s.status}; sending began {when})", highlight=False)
    lines = [
        ("Sent", s.sent, "messages the transport took"),
        ("Delivered", s.delivered, source),
        ("Bounced", s.bounced, f"{s.bounced_hard} hard, {s.bounced_soft} soft"),
        ("Complained", s.complained, ""),
        ("Unsubscribed", s.unsubscribed, "while this was the latest edition they had"),
        ("Unique clicks", s.unique_clicks, "messages with a reader's click"),
        ("Click rate", _rate(s), "unique clicks ÷ delivered"),
        ("Clicks", s.clicks, "readers' clicks on every link"),
        ("Scanner clicks", s.scanner_clicks, "mail scanners, kept apart"),
        *([("Opens", s.opens, "unreliable")] if s.opens else []),
        ("Votes", s.ship + s.skip, f"{s.ship} ship it, {s.skip} skip it"),
    ]
    for name, value, note in lines:
        out.print(f"  {name + ':':<16}{value!s:>8}  {note}", highlight=False)
    if not s.comparisons:
        out.print("No comparisons in this edition.")
        return
    table = _table("Per comparison", "comparison / tool", ["clicks", "ship it", "skip it"])
    for c in s.comparisons:
        table.add_row(f"[bold]{escape(c.title)}[/] (page)", str(c.clicks), "", "")
        for t in c.tools:
            table.add_row(f"  {escape(t.name)}", str(t.clicks), str(t.ship), str(t.skip))
    out.print(table)


def _table(title: str, first: str, numbers: list[str]) -> Table:
    """A table whose first column names the row and the rest are numbers (right-aligned,
    kept whole: on a narrow terminal the headings fold instead)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(first, no_wrap=True)
    for head in numbers:
        table.add_column(head, justify="right", overflow="fold", min_width=5)
    return table
