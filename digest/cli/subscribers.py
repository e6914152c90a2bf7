"""``digest subscribers …``: add, import, export, list, remove, forget, export-data.

Every consent decision made here goes to the consent log with source ``cli`` (or
``import``). Nothing here activates a suppressed address: that takes the reader's
own double opt-in confirmation. Bad input is one line on stderr and exit 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from sqlmodel import Session

from digest.cli.common import EXIT_FAILED, EXIT_USAGE, err, fail, out, runtime
from digest.cli.console import Meter
from digest.desk import readers
from digest.store import audit
from digest.store.db import ensure_current, session_scope
from subscribers import consent, csvformats, csvio, lifecycle, repository
from subscribers.addresses import normalize_email
from subscribers.consent import Context
from subscribers.models import ConsentAction, ConsentSource, SubscriberStatus, SuppressionReason

subscribers_app = typer.Typer(help="Manage subscribers.", no_args_is_help=True)
CLI = Context(ConsentSource.cli)
FORMATS = ", ".join(csvformats.FORMATS)
_FILE = typer.Argument(help=f"CSV: ours ({', '.join(csvio.COLUMNS)}) or an export: {FORMATS}.")
_MAP = typer.Option(
    "--map", metavar="FIELD=COLUMN", help="Repeat: email=E-Mail, name=First+Last, categories=Tags."
)
_FORMAT = typer.Option("--format", help=f"Read the file as this format: {FORMATS}.")


def _audit(session: Session, action: str, target: str, detail: str) -> None:
    """The audit log entry (targets name readers by id, never by address)."""
    actor = audit.cli_actor()
    audit.record(session, actor=actor, via="cli", action=action, target=target, detail=detail)


@subscribers_app.command("add")
def add(
    email: str,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    category: Annotated[
        list[str] | None,
        typer.Option("--category", help="A category the reader wants (repeat; none = all)."),
    ] = None,
    time_zone: Annotated[
        str,
        typer.Option(
            "--time-zone",
            metavar="ZONE",
            help="The reader's IANA time zone, e.g. America/New_York (local delivery time; "
            "none = the site's).",
        ),
    ] = "",
) -> None:
    """Add one subscriber (active); refused for a suppressed address or unknown zone."""
    with runtime() as rt:
        ensure_current(rt.engine)
        with session_scope(rt.engine) as session:
            result = repository.add(
                session,
                email=email,
                name=name,
                categories=category or (),
                time_zone=time_zone,
                now=rt.now(),
            )
            s = result.subscriber
            if result.created:
                consent.record(
                    session,
                    subscriber_id=s.id,
                    email=s.email,
                    action=ConsentAction.subscribed,
                    context=CLI,
                    now=rt.now(),
                    detail="added as active by the operator ('digest subscribers add')",
                )
                _audit(session, "subscribers.add", f"reader:{s.id}", "added as active")
        if result.created:
            out.print(f"Added {s.email}.")
        else:
            out.print(f"{s.email} is already a subscriber ({s.status}); nothing changed.")


@subscribers_app.command("import")
def import_(
    file: Annotated[Path, _FILE],
    consented: Annotated[
        bool, typer.Option("--consented", help="The readers already consented: import active.")
    ] = False,
    source: Annotated[
        str | None, typer.Option("--source", help='Where consent came from, e.g. "signup form".')
    ] = None,
    mapping: Annotated[list[str] | None, _MAP] = None,
    forced: Annotated[str | None, _FORMAT] = None,
) -> None:
    """Import subscribers from CSV (UTF-8), ours or a service's export (its opt-ins active,
    its unsubscribes suppressed): pending unless --consented; bad rows reported by line. A
    file that is not UTF-8 or leaves a quote open is refused (exit 2); all rows bad: exit 1."""
    if consented and not (source or "").strip():
        fail(EXIT_USAGE, '--consented needs --source "…": say where the consent came from')
    if source is not None and not consented:
        fail(EXIT_USAGE, "--source says where consent came from; it goes with --consented")
    try:
        stream = file.open("rb")  # decoded by csvio: a bad byte is named with its offset
    except OSError as exc:
        fail(EXIT_USAGE, f"cannot read {file}: {exc.strerror}")
    started = time.perf_counter()
    with stream, runtime() as rt, Meter("import", "Importing", "rows") as meter:
        ensure_current(rt.engine)
        with session_scope(rt.engine) as session:
            try:
                report = csvio.import_csv(
                    session,
                    stream=stream,
                    source=f"import:{file.name}",
                    now=rt.now(),
                    consent_source=source.strip() if source else None,
                    file_name=file.name,
                    forced=forced,
                    mapping=csvformats.parse_mapping(mapping or []),
                    progress=meter.update,
                )
            except csvio.CsvFileError as exc:  # the whole file refused, nothing written
                fail(EXIT_USAGE, exc.about(str(file)))
            _audit(session, "subscribers.import", f"import:{file.name}", report.summary())
    _print_import(file, report, time.perf_counter() - started)
    if report.all_rejected:
        fail(EXIT_FAILED, f"every row of {file} was rejected; nothing was imported")


def _print_import(file: Path, report: csvio.ImportReport, elapsed: float) -> None:
    lines = [(e.line, e.reason) for e in report.errors]
    lines += [(n.line, f"{n.email} skipped: {n.note}") for n in report.skipped]
    lines += [(n.line, f"{n.email}: {n.note}") for n in [*report.merged, *report.notes]]
    for line, text in sorted(lines):
        out.print(f"  {escape(str(file))}:{line}: {escape(text)}", highlight=False)
    if report.ignored_columns:
        out.print(f"  ignored columns: {escape(', '.join(report.ignored_columns))}")
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(report.added_by_status.items()))
    out.print(
        f"Imported {report.added} new subscribers from {escape(str(file))}"
        f"{f' ({by_status})' if by_status else ''}; {report.already_present} already present, "
        f"{len(report.skipped)} skipped (suppressed), {len(report.merged)} merged duplicates, "
        f"{len(report.errors)} rows rejected; {elapsed:.1f} s."
    )
    out.print(escape(report.summary()), highlight=False)
    if report.added_by_status.get(SubscriberStatus.pending):
        out.print(
            "  Pending readers get no digest until they confirm. If the list already "
            'consented, import it with --consented --source "where they signed up".'
        )


@subscribers_app.command("export")
def export(
    file: Annotated[Path | None, typer.Argument(help="Output CSV; default stdout.")] = None,
) -> None:
    """Export every subscriber as CSV (email, name, categories, status, created_at, time_zone)."""
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
    """Unsubscribe an address and suppress it: no import or add brings it back."""
    with runtime() as rt, session_scope(rt.engine) as session:
        address = normalize_email(email)
        subscriber = repository.get_by_email(session, email=address)
        if subscriber is not None and subscriber.id is not None:
            was = subscriber.status
            lifecycle.unsubscribe(session, subscriber_id=subscriber.id, context=CLI, now=rt.now())
            message = f"{address} was already unsubscribed; it stays suppressed."
            if was != SubscriberStatus.unsubscribed:
                message = (
                    f"Unsubscribed {address}; it is suppressed: no import or add brings it back."
                )
                _audit(session, "subscribers.remove", f"reader:{subscriber.id}", f"was {was}")
        elif (entry := consent.suppression_of(session, email=address)) is not None:
            message = f"{address} is not a subscriber; it is already suppressed ({entry.reason})."
        else:
            note = "the operator suppressed an address that was not a subscriber"
            reason = SuppressionReason.unsubscribed
            consent.suppress(session, email=address, reason=reason, source="cli", now=rt.now())
            consent.record(session, subscriber_id=None, email=address, now=rt.now(),
                           action=ConsentAction.unsubscribed, context=CLI, detail=note)  # fmt: skip
            _audit(session, "subscribers.remove", "", note)
            message = f"{address} was not a subscriber; it is now suppressed, so none is added."
    out.print(message)


@subscribers_app.command("forget")
def forget(email: str) -> None:
    """Erase a reader's personal data (GDPR Art. 17); the address stays suppressed by hash."""
    with runtime() as rt, session_scope(rt.engine) as session:
        address = normalize_email(email)
        subscriber = repository.get_by_email(session, email=address)
        events = len(consent.history(session, email=address))
        sid = subscriber.id if subscriber is not None else None
        scrubbed = readers.scrub_deliveries(session, sid, address) if sid is not None else 0
        provider_events = readers.scrub_provider_events(session, address)
        erased = lifecycle.forget(session, email=address, context=CLI, now=rt.now())
        if erased and subscriber is not None:
            detail = "personal data erased; the address stays suppressed by its hash"
            _audit(session, "subscribers.forget", f"reader:{subscriber.id}", detail)
    if not erased:
        out.print(f"Nothing to erase: {address} is not a subscriber (perhaps already erased).")
        return
    out.print(
        f"Erased {address}: its address, name and preferences; IP address and user agent "
        f"of {events} consent events; the address in {scrubbed} delivery notes and "
        f"{provider_events} stored provider events (payloads dropped). The consent "
        "log keeps what happened and when, and the address stays suppressed by its hash only."
    )


@subscribers_app.command("export-data")
def export_data(email: str) -> None:
    """Print, as JSON, everything held about one reader (GDPR Art. 15 and 20)."""
    with runtime() as rt, session_scope(rt.engine) as session:
        address = normalize_email(email)
        held = lifecycle.export_data(session, email=address)
        subscriber = repository.get_by_email(session, email=address)
        deliveries = (
            readers.deliveries(session, subscriber.id) if subscriber and subscriber.id else []
        )
    data: dict[str, Any] = {"email": address, "subscriber": None, "consent_log": []}
    data |= {"suppression": None, **(held or {}), "deliveries": deliveries}
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    if held is None:
        err.print(f"Nothing is held about {escape(address)}.", highlight=False)
