"""``digest edit KEY``: shape an edition before it goes (issue 15).

With options it changes the edition through :func:`digest.desk.editing.edit` (the
function the desk and the API use, audited as ``via cli``) and prints each change on
a line of its own, "no change" when there was none, and whether an approval was
withdrawn. Without options it shows the edition's lineup and editorial.

Exit codes: 0 done (or nothing to change); 1 the edition cannot change any more
(sending started, sent, cancelled); 2 a bad edit, an unknown edition or comparison,
or a note file that cannot be read.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from digest.cli.common import EXIT_FAILED, EXIT_USAGE, fail, out, runtime
from digest.config.runtime import Runtime
from digest.desk import editing
from digest.editions import lifecycle as editions
from digest.editions import shaping
from digest.editions.shaping import Edit, EditInvalid, EditRefused, Sponsor
from digest.store import audit
from digest.store.db import session_scope


def _ids(what: str) -> Any:
    return typer.Option(metavar="ID", show_default=False, help=what + " (repeat for more).")


def _text(what: str, metavar: str = "TEXT") -> Any:
    return typer.Option(metavar=metavar, show_default=False, help=what)


def register(app: typer.Typer) -> None:
    app.command("edit")(edit)


def edit(
    key: Annotated[str, typer.Argument(help="Edition key, e.g. 2026-W48, or 'next'.")],
    note: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="The editor's note, Markdown, from FILE ('-': standard input).",
            show_default=False,
        ),
    ] = None,
    clear_note: Annotated[bool, typer.Option("--clear-note", help="Remove the note.")] = False,
    subject: Annotated[
        str | None, _text("Replaces the generated subject ('': restore it).")
    ] = None,
    preheader: Annotated[
        str | None, _text("Replaces the generated preheader ('': restore it).")
    ] = None,
    sponsor_text: Annotated[str | None, _text("The sponsor block's text.")] = None,
    sponsor_url: Annotated[str | None, _text("The sponsor's http(s) link.", "URL")] = None,
    sponsor_label: Annotated[str | None, _text("Its label (default 'Sponsor').")] = None,
    no_sponsor: Annotated[
        bool, typer.Option("--no-sponsor", help="Remove the sponsor block.")
    ] = False,
    exclude: Annotated[list[str] | None, _ids("Leave this comparison out")] = None,
    include: Annotated[list[str] | None, _ids("Put this comparison (back) in")] = None,
    order: Annotated[
        str | None,
        typer.Option(metavar="ID,ID,...", help="Display order; ids not named follow."),
    ] = None,
    by: Annotated[
        str | None, typer.Option(help="Who edits (audit log); default cli:<login name>.")
    ] = None,
) -> None:
    """Shape an edition: include, exclude and reorder its comparisons, set the note,
    subject, preheader and a sponsor block. Without options, show the edition as it
    stands. Refused once the edition has started sending."""
    change = Edit(
        note=_note(note, clear_note),
        subject=subject,
        preheader=preheader,
        sponsor=_sponsor(sponsor_text, sponsor_url, sponsor_label, no_sponsor),
        clear_sponsor=no_sponsor,
        exclude=tuple(exclude or ()),
        include=tuple(include or ()),
        order=None if order is None else tuple(i.strip() for i in order.split(",") if i.strip()),
    )
    with runtime() as rt:
        if change.empty:
            show(rt, editing.next_key(rt) if key == "next" else key)
            return
        if key != "next":
            _known(rt, key)
        try:
            result = editing.edit(
                rt, key=key, change=change, actor=by or audit.cli_actor(), via="cli"
            )
        except EditInvalid as exc:
            fail(EXIT_USAGE, str(exc))
        except EditRefused as exc:
            fail(EXIT_FAILED, f"{exc}; nothing was changed")
    if not result.changes:
        out.print(f"Edition {result.key}: no change.")
        return
    out.print(f"Edition {result.key}, revision {result.revision}:")
    changes = result.changes[:-1] if result.approval_withdrawn else result.changes
    for line in changes:
        out.print(f"  {escape(line)}", highlight=False)
    if result.approval_withdrawn:
        out.print(
            f"[yellow]The approval was withdrawn[/]: it was for the version before this "
            f"edit. 'digest approve {escape(result.key)}' approves this one."
        )


def show(rt: Runtime, key: str) -> None:
    """The lineup (position, id, title, excluded) and the editorial of ``key``."""
    with session_scope(rt.engine) as session:
        edition = editions.get(session, key=key)
        if edition is None:
            fail(EXIT_USAGE, f"there is no edition {key}: 'digest compose' makes this week's")
        entries = shaping.lineup(session, edition)
        found = shaping.editorial_of(session, edition)
        refused = shaping.why_not_editable(edition)
        status = str(edition.status)
    revision = found.revision if found is not None else 0
    out.print(f"Edition {escape(key)} ({escape(status)}, revision {revision})", highlight=False)
    if refused:
        out.print(f"  [yellow]{escape(refused)}[/]", highlight=False)
    for position, entry in enumerate(entries, start=1):
        c = entry.comparison
        mark = "  [dim](excluded)[/]" if entry.excluded else ""
        out.print(f"  {position:>2}. {escape(c.id)}  {escape(c.title)}{mark}", highlight=False)
    subject = found.subject if found is not None else ""
    preheader = found.preheader if found is not None else ""
    out.print(f"Subject: {escape(subject) or '(generated)'}", highlight=False)
    out.print(f"Preheader: {escape(preheader) or '(generated)'}", highlight=False)
    if found is not None and found.sponsor_text:
        label = found.sponsor_label or shaping.SPONSOR_LABEL
        sponsor = f"{label}: {found.sponsor_text} ({found.sponsor_url})"
        out.print(f"Sponsor: {escape(sponsor)}", highlight=False)
    else:
        out.print("Sponsor: none")
    if found is not None and found.note:
        out.print("Note:")
        for line in found.note.splitlines():
            out.print(f"  {escape(line)}", highlight=False)
    else:
        out.print("Note: none")


def _known(rt: Runtime, key: str) -> None:
    with session_scope(rt.engine) as session:
        if editions.get(session, key=key) is None:
            fail(EXIT_USAGE, f"there is no edition {key}: 'digest status' lists them")


def _note(path: Path | None, clear: bool) -> str | None:
    if clear and path is not None:
        fail(EXIT_USAGE, "--note and --clear-note cannot be used together")
    if clear:
        return ""
    if path is None:
        return None
    try:
        raw = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
        return raw.decode("utf-8")
    except OSError as exc:
        fail(EXIT_USAGE, f"cannot read the note {path}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        fail(EXIT_USAGE, f"the note {path} is not UTF-8 text")


def _sponsor(text: str | None, url: str | None, label: str | None, remove: bool) -> Sponsor | None:
    if text is None and url is None and label is None:
        return None
    if remove:
        fail(EXIT_USAGE, "--no-sponsor cannot be used with --sponsor-text/--sponsor-url")
    if text is None or url is None:
        fail(EXIT_USAGE, "a sponsor block needs both --sponsor-text and --sponsor-url")
    return Sponsor(text=text, url=url, label=label or shaping.SPONSOR_LABEL)
