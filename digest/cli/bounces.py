"""``digest bounces ingest`` and ``digest bounces poll``: bounces and complaints that
come back by mail (:mod:`digest.bounces`).

``ingest`` reads one message on standard input, for a Postfix pipe::

    bounces unix - n n - - pipe
      flags=R user=digest argv=/path/digest bounces ingest --recipient ${recipient}

Exit codes are the ones a pipe needs: 0 whenever the message is dealt with
(applied, a duplicate, matching nobody, or unclassifiable: then it is first saved
under ``[bounces] unknown_dir``, so Postfix never retries it and it is never lost);
75 (``EX_TEMPFAIL``) when the database is unreachable, so Postfix keeps it and
retries; 2 for bad configuration; 1 for a message over ``max_message_bytes``.

``poll`` reads the ``[bounces]`` mailbox once (IMAP or POP3) and prints what it
did; exit 1 when a message failed or the mailbox had a problem.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape
from sqlalchemy.exc import OperationalError

from digest.bounces.ingest import ingest
from digest.bounces.parse import classify
from digest.cli.common import EXIT_FAILED, EXIT_USAGE, err, fail, out, runtime
from digest.errors import DigestError
from digest.store.db import ensure_current

EX_TEMPFAIL = 75  # sysexits.h: Postfix's pipe keeps the message and retries
_LATER = "the MTA should retry later"
bounces_app = typer.Typer(
    name="bounces",
    help="Bounces and complaints that come back by mail (VERP, a bounce mailbox).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(bounces_app, name="bounces")


@bounces_app.command("ingest")
def ingest_command(
    recipient: Annotated[
        str,
        typer.Option(
            "--recipient",
            metavar="ADDR",
            help="The envelope recipient (Postfix: ${recipient}): the VERP address.",
        ),
    ] = "",
) -> None:
    """Read one bounce or complaint on standard input and apply it (a Postfix pipe)."""
    with runtime() as rt:
        limit = rt.config.bounces.max_message_bytes
        raw = sys.stdin.buffer.read(limit + 1)
        if len(raw) > limit:
            fail(EXIT_FAILED, f"message over [bounces] max_message_bytes ({limit}); not read")
        saved = ""
        if not classify(raw, envelope_recipient=recipient).events:
            directory = rt.config.bounces.unknown_path(rt.config.base_dir)
            try:
                saved = str(save_unknown(raw, directory))
            except OSError as exc:
                fail(EX_TEMPFAIL, f"cannot save it under {directory} ({exc.strerror}); {_LATER}")
        try:
            ensure_current(rt.engine)  # no database or no schema yet: Postfix keeps it
        except DigestError as exc:
            fail(EX_TEMPFAIL, f"{exc}; {_LATER}")
        try:
            result = ingest(rt, raw, envelope_recipient=recipient)
        except OperationalError as exc:
            fail(EX_TEMPFAIL, f"database unreachable ({exc.orig}); {_LATER}")
    line = result.line + (f" (saved to {saved})" if saved else "")
    out.print(escape(line), highlight=False)


def save_unknown(raw: bytes, directory: Path) -> Path:
    """Keep an unclassifiable message as ``<utc timestamp>-<sha12>.eml`` (mode 0600).
    The same bytes again (an MTA's retry) reuse the file already there."""
    digest = hashlib.sha256(raw).hexdigest()[:12]
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = sorted(directory.glob(f"*-{digest}.eml"))
    if existing:
        return existing[0]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{stamp}-{digest}.eml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    return path


@bounces_app.command("poll")
def poll_command() -> None:
    """Read the bounce mailbox once (IMAP or POP3) and apply what is in it."""
    from digest.bounces import mailbox  # IMAP/POP3 clients: loaded only to poll

    with runtime() as rt:
        if not rt.config.bounces.enabled:
            fail(EXIT_USAGE, f"[bounces] enabled = false in {rt.config.source}: nothing to poll")
        ensure_current(rt.engine)
        stop = threading.Event()  # SIGTERM: finish the message in hand, then stop

        def on_signal(signum: int, frame: FrameType | None) -> None:
            err.print(f"{signal.Signals(signum).name}: finishing this message, then stopping")
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        report = mailbox.poll(rt, stop=stop)
    out.print(
        f"Bounce mailbox: {report.seen} seen, {report.applied} applied, "
        f"{report.duplicates} duplicate(s), {report.unknown} unknown, "
        f"{report.unmatched} unmatched, {report.failed} failed"
        + (f", {report.left} left for the next poll." if report.left else "."),
        highlight=False,
    )
    for problem in report.problems:
        err.print(f"problem: {escape(problem)}", highlight=False)
    if report.failed or report.problems:
        raise typer.Exit(EXIT_FAILED)
