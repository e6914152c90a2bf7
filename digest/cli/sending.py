"""Sending and its controls: ``digest send``, ``worker``, ``pause``, ``resume``,
``cancel``.

Exit codes of ``send``, ``resume`` and ``worker``: 0 done (or idle); 1 the transport
failed or the edition was paused for errors; 3 interrupted or deliveries left
pending, resumable: run the command again, nobody is sent a second copy.
``pause``, ``resume`` and ``cancel`` are recorded in the audit log (actor
``cli:<login>``, via ``cli``) in the same transaction as the change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from sqlmodel import Session

from digest.cli.common import err, fail, out, run_until_signalled, runtime
from digest.cli.desk import send_test
from digest.cli.helpers import Helpers, finish
from digest.cli.output import Stages, print_ledger, print_send
from digest.delivery.sending import EXIT_INCOMPLETE, SendReport
from digest.store import audit

EditionKey = Annotated[str, typer.Argument(help="Edition key, e.g. 2026-W48.")]


def register(app: typer.Typer) -> None:
    app.command()(send)
    app.command()(pause)
    app.command()(resume)
    app.command()(cancel)
    app.command()(worker)


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
        with Helpers(workers - 1) as helpers, Stages(out, rt) as stages:
            report = run_until_signalled(
                lambda stop: helpers.send_with(rt, found, progress=stages.sending, stop=stop)
            )
        stages.sent(report)  # once the helpers have ended
        for note in helpers.notes():
            out.print(f"  [yellow]{escape(note)}[/]", highlight=False)
        if helpers.count:
            print_ledger(out, rt, found.key)
        finish(report)


def pause(
    key: EditionKey,
    reason: Annotated[str, typer.Option(help="Why, for 'digest status'.")] = "by the operator",
) -> None:
    """Pause an edition: senders stop at their next batch; 'digest resume' goes on."""
    from digest.editions import lifecycle as editions
    from digest.store.db import session_scope

    with runtime() as rt, session_scope(rt.engine) as session:
        editions.pause(session, key=key, note=reason, now=rt.now())
        _audit(session, key, "pause", reason, rt.now())
    out.print(f"Edition {key} is paused ({reason}).")


def resume(key: EditionKey) -> None:
    """Resume a paused edition and send the rest of it now."""
    from digest import pipeline
    from digest.editions import lifecycle as editions
    from digest.store.db import session_scope

    with runtime() as rt:
        with session_scope(rt.engine) as session:
            edition = editions.resume(session, key=key)
            _audit(session, key, "resume", "", rt.now())
        out.print(f"Edition {key} resumed.")
        with Stages(out, rt) as stages:
            report = run_until_signalled(
                lambda stop: pipeline.send(rt, edition=edition, progress=stages.sending, stop=stop)
            )
            stages.sent(report)
        finish(report)


def cancel(
    key: EditionKey,
    reason: Annotated[str, typer.Option(help="Why, kept on the edition.")] = "by the operator",
) -> None:
    """Cancel an edition: nothing more of it is sent; its queued deliveries are skipped."""
    from digest.editions import lifecycle as editions
    from digest.store.db import session_scope

    with runtime() as rt, session_scope(rt.engine) as session:
        _, skipped = editions.cancel(
            session, key=key, note=f"edition cancelled: {reason}", now=rt.now()
        )
        _audit(session, key, "cancel", f"{reason}; {skipped} queued deliveries skipped", rt.now())
    out.print(f"Edition {key} is cancelled; {skipped} queued deliveries skipped.")


def _audit(session: Session, key: str, action: str, detail: str, now: datetime) -> None:
    audit.record(
        session, actor=audit.cli_actor(), via="cli", action=f"edition.{action}",
        target=f"edition:{key}", detail=detail, now=now,
    )  # fmt: skip


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

    last: dict[str, SendReport] = {}  # each edition's latest report from this worker

    def report(r: SendReport) -> None:
        print_send(out, rt, r)  # once per edition worked, as that edition ends
        last[r.edition_key] = r

    with runtime() as rt:
        sent = run_until_signalled(
            lambda stop: pipeline.work(
                rt, stop=stop, exit_when_idle=exit_when_idle, poll_seconds=poll, on_report=report
            )
        )
        out.print(f"Worker done: {sent} messages sent.")
        if any(r.lost for r in last.values()):  # work() ends at the first lost lease
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
