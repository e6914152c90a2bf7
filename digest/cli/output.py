"""How commands show their results: stage by stage with progress, summaries, tables,
preview files (the consoles and meters themselves: :mod:`digest.cli.console`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Connection

from digest import pipeline
from digest.cli.console import Meter, err
from digest.comparisons.fetch import FetchReport
from digest.config.runtime import Runtime
from digest.delivery import ledger as deliveries
from digest.delivery import messages
from digest.delivery.events import Attention
from digest.delivery.events import attention as webhook_attention
from digest.delivery.sending import SendReport
from digest.desk import editing
from digest.editions import lifecycle as editions
from digest.editions.lifecycle import ComposeResult
from digest.store.db import session_scope
from digest.store.models import EditionStatus
from subscribers.repository import count_by_status


class Stages:
    """What a command shows while it works (``run``, ``fetch``, ``send``): a meter per
    stage, each removed when its stage ends, and each stage's summary as it ends; the
    send bar appears only once sending has begun (no "0/?" bar during fetch and compose).
    The ``…ing`` methods are the progress callbacks; a context manager."""

    def __init__(self, console: Console, rt: Runtime) -> None:
        self.console, self.rt = console, rt
        self.fetch = Meter("fetch", "Reading the feed", "comparisons")
        self.send: Meter | None = None
        self.shown: set[str] = set()

    def fetching(self, count: int) -> None:
        self.fetch.update(count)

    def sending(self, report: SendReport) -> None:
        self.fetch.close()
        if self.send is None:
            self.send = Meter("send", "Sending", "messages")
        done = report.sent + report.failed + report.skipped
        self.send.update(done, report.pending_at_start or None)

    def fetched(self, report: FetchReport) -> None:
        self.fetch.close()
        if self._first("fetch"):
            print_fetch(self.console, report)
            if report.error is not None:
                err.print(f"[bold red]feed error:[/] {escape(str(report.error))}", highlight=False)

    def composed(self, result: ComposeResult) -> None:
        self.fetch.close()
        if self._first("compose"):
            print_compose(self.console, result)

    def sent(self, report: SendReport) -> None:
        self.close()
        if self._first("send"):
            print_send(self.console, self.rt, report)

    def _first(self, stage: str) -> bool:
        """True the first time ``stage`` ends (its summary is printed once)."""
        first = stage not in self.shown
        self.shown.add(stage)
        return first

    def close(self) -> None:
        self.fetch.close()
        if self.send is not None:
            self.send.close()

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def print_fetch(console: Console, report: FetchReport) -> None:
    """What a fetch read and stored (the caller prints ``report.error`` itself)."""
    if report.not_modified:
        console.print("Feed: not modified since the last poll; nothing new.")
        return
    if report.error is not None and not report.pages:
        return  # nothing was read: the error says it all
    before = " before the feed failed" if report.error is not None else ""
    console.print(
        f"Feed: {report.entries} comparisons read from {report.pages} document(s){before}: "
        f"{len(report.new)} new, {len(report.updated)} updated, {report.unchanged} unchanged, "
        f"{len(report.invalid)} invalid."
    )
    # Feed text is data: escape it so "[red]" in a title is never read as markup.
    for note in [*map(str, report.invalid), *report.problems]:
        console.print(f"  [yellow]skipped[/] {escape(note)}", highlight=False)


def print_compose(console: Console, result: ComposeResult) -> None:
    if result.edition is None:
        console.print(f"Nothing new: {result.reason}.")
    elif result.created:
        console.print(f"Edition {result.edition.key}: {result.reason}.")
    elif result.edition.status == EditionStatus.sent:
        done = result.edition.finished_at or result.edition.composed_at
        console.print(
            f"Nothing new: edition {result.edition.key} was already sent ({done:%Y-%m-%d %H:%M} "
            "UTC); new comparisons go into next week's edition."
        )
    else:
        console.print(
            f"Edition {result.edition.key} is already composed ({result.edition.status})."
        )


def print_send(console: Console, rt: Runtime, report: SendReport) -> None:
    if report.finished and not report.planned and not report.pending_at_start:
        console.print(f"Edition {report.edition_key} was already sent; nothing to send.")
        return
    console.print(
        f"Edition {report.edition_key}: sent {report.sent}, failed {report.failed}, "
        f"skipped {report.skipped}, retried later {report.retried}; "
        f"{report.elapsed:.1f} s, {report.rate:.0f} messages/s."
    )
    if report.recovered:
        console.print(
            f"  {report.recovered} deliveries left in doubt by a sender that stopped were "
            "taken over (outcome unknown)."
        )
    doubt = unknown_line(report, rt.config.send.unknown_policy)
    if doubt:
        console.print(f"  {escape(doubt)}", highlight=False)
    if report.finished:
        console.print(f"  Edition {report.edition_key} is complete: no delivery pending.")
    else:
        console.print(f"  {report.pending} deliveries still pending.")
    if report.due_later and not report.finished:
        console.print(
            f"  {report.due_later} of them are held for their readers' local delivery time: "
            "'digest send' (or a running 'digest worker') sends them when due."
        )
    if report.late:
        console.print(
            f"  {report.late} answers came for deliveries another sender had taken over "
            "(see the log); they were not stored over that sender's."
        )
    for note in (report.stopped_reason, report.interrupted, report.error):
        if note:
            console.print(f"  [yellow]{escape(note)}[/]", highlight=False)
    where = outbox_folder(rt, report.edition_key)
    if where is not None and report.sent:
        console.print(f"Outbox: {where} — one .eml per message; open preview.html in a browser.")


def unknown_line(report: SendReport, policy: str) -> str:
    """How the run's unknown outcomes were resolved, one line ("" when none)."""
    resolved = report.reconciled + report.resent + report.unknown_skipped + report.unknown_failed
    if not report.unknown and not resolved:
        return ""
    parts = [
        f"{report.reconciled} found sent by the provider's message search",
        f"{report.resent} queued again",
        f"{report.unknown_skipped} skipped",
    ]
    if report.unknown_failed:
        parts.append(f"{report.unknown_failed} failed (out of attempts)")
    return (
        f"Outcome unknown (maybe delivered): {report.unknown} answers this run; resolved "
        f"{resolved}: {', '.join(parts)} ([send] unknown_policy = {policy!r})."
    )


def outbox_folder(rt: Runtime, edition_key: str) -> Path | None:
    cfg = rt.config.transport
    if cfg.kind != "outbox":
        return None
    return Path(str(cfg.options["path"])) / edition_key


def print_ledger(console: Console, rt: Runtime, edition_key: str) -> None:
    """The edition's whole ledger (all senders together), one line."""
    with session_scope(rt.engine) as session:
        edition = editions.get(session, key=edition_key)
        tally = (
            deliveries.counts(session.connection(), edition_id=edition.id or 0) if edition else {}
        )
        later = _due_later(session.connection(), edition.id if edition else None, rt.now())
    summary = ", ".join(f"{n} {state}" for state, n in sorted(tally.items()))
    console.print(f"Edition {edition_key}, all senders: {summary or 'no deliveries'}.")
    if later:
        console.print(f"  {later}")


def _due_later(conn: Connection, edition_id: int | None, now: datetime) -> str:
    """One line on the queued rows not yet due (local delivery time); "" if none."""
    waiting, earliest = deliveries.due_later(conn, edition_id=edition_id or 0, now=now)
    if not waiting or earliest is None:
        return ""
    return f"{waiting} due later (local delivery time), next at {earliest:%Y-%m-%d %H:%M} UTC"


def print_status(console: Console, rt: Runtime) -> None:
    with session_scope(rt.engine) as session:
        rows = editions.all_editions(session)
        subs = count_by_status(session)
        conn = session.connection()
        tallies = {e.key: deliveries.counts(conn, edition_id=e.id or 0) for e in rows}
        later = {e.key: _due_later(conn, e.id, rt.now()) for e in rows if e.status != "sent"}
        needs = webhook_attention(session)
    states = ["queued", "sending", "sent", "failed", "bounced", "skipped", "unknown"]
    table = Table("edition", "status", "composed", *states, title="Editions")
    for e in rows:
        tally = tallies[e.key]
        table.add_row(
            e.key,
            e.status,
            f"{e.composed_at:%Y-%m-%d %H:%M}",
            *(str(tally.get(s, 0)) for s in states),
        )
    if rows:
        console.print(table)
    else:
        console.print("No editions yet: run 'digest run'.")
    for e in rows:
        if e.status_note and e.status in ("paused", "cancelled"):
            console.print(f"  {e.key} {e.status}: {escape(e.status_note)}", highlight=False)
        if later.get(e.key):
            console.print(f"  {e.key}: {later[e.key]}")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(subs.items())) or "none"
    console.print(f"Subscribers: {summary}.")
    print_attention(console, needs)


def print_attention(console: Console, needs: Attention) -> None:
    """Provider events the operator should look at (nothing when all is quiet)."""
    if not needs.per_edition and not needs.notices:
        return
    console.print("Needs attention:")
    if needs.policy_blocks:
        console.print(
            f"  policy blocks: {needs.policy_blocks} — check your sending reputation/DNS "
            "(SPF/DKIM/DMARC)"
        )
    words = {"hard": "hard bounce", "soft": "soft bounce", "complaints": "complaint"}
    words["policy"] = "policy block"
    for key, tally in needs.per_edition:
        counts = ", ".join(f"{n} {words[k]}{'s' * (n != 1)}" for k, n in tally.items() if n)
        console.print(f"  {key or 'no matching delivery'}: {counts}")
    for provider, what in needs.notices:
        # The text holds a provider URL: print it as data, not markup, on one line.
        console.print(f"  {escape(provider)}: {escape(what)}", highlight=False, soft_wrap=True)


def write_preview(rt: Runtime, edition_key: str | None, folder: Path) -> list[Path]:
    """Write ``KEY.html``, ``KEY.txt`` and ``KEY.eml`` with the very sending code."""
    if edition_key:
        edition = pipeline.find_edition(rt, edition_key)
        if edition is None:
            from digest.errors import DigestError

            raise DigestError(f"there is no edition {edition_key}")
        key = edition.key
        digest = pipeline.render_edition(rt, edition)
    else:
        key, comparisons = editing.preview_comparisons(rt)
        digest = pipeline.render(rt, key, comparisons)
    urls = messages.reader_values(rt, key, digest, 0)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        folder / f"{key}.html": digest.html_with(urls).encode("utf-8"),
        folder / f"{key}.txt": digest.text_with(urls).encode("utf-8"),
        folder / f"{key}.eml": messages.preview_message(rt, key, digest),
    }
    for path, data in files.items():
        path.write_bytes(data)
    return list(files)


def open_preview(console: Console, path: Path) -> None:
    """Open ``path`` in a browser; when none can be opened (a headless server), say where
    the file is instead."""
    import webbrowser

    try:
        opened = webbrowser.open(path.resolve().as_uri())
    except Exception:  # webbrowser.Error, or a broken browser command: not fatal here
        opened = False
    if not opened:
        console.print(f"No browser could be opened; the preview is at {path.resolve()}")
