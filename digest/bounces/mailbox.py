"""``digest bounces poll``: read the bounce mailbox once and ingest what it holds.

:func:`poll` opens ``[bounces]`` over IMAP (:mod:`digest.bounces.imap`) or POP3
(:mod:`digest.bounces.pop3`) with TLS or STARTTLS (clear text only with
``security = "none"`` to a loopback host), the password from
``DIGEST_BOUNCES_PASSWORD`` (never logged, never in a message), and for each
message, oldest first, at most ``max_messages`` per poll:

1. its size as the server reports it is checked against ``max_message_bytes``:
   a larger one is not read; it goes to Unknown (IMAP) or stays on the server
   (POP3), counted with the unknown ones and named in ``problems``;
2. it is read and handed to :func:`digest.bounces.ingest.ingest`, which commits
   its events;
3. only then is it moved (IMAP: applied/duplicate → Processed, or deleted with
   ``delete = true``; unknown/unmatched → Unknown) or, on POP3, deleted or
   recorded as seen. A crash between 2 and 3 re-reads it next time: a duplicate.

A message whose ingest fails stays where it is for the next poll (counted as
failed); the database unreachable ends the poll, as every later message would
fail too. Each network operation waits at most ``timeout_seconds``; the whole
poll ends by its deadline (``poll_minutes``, so a poll never runs into the next
one), and ``stop`` (SIGTERM) is honoured between messages: both end the poll
cleanly, with what is left reported.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError

from digest.bounces.connection import Box, Deadline, Item, MailboxError, describe
from digest.bounces.connection import tls_context as _tls_context
from digest.bounces.imap import ImapBox
from digest.bounces.ingest import ingest
from digest.bounces.pop3 import Pop3Box
from digest.config.bounce_sections import ENV_PASSWORD, password
from digest.config.runtime import Runtime

log = logging.getLogger(__name__)

__all__ = ["MailboxError", "PollReport", "poll"]


@dataclass(slots=True)
class PollReport:
    """What one poll did. ``unknown`` includes messages too big to read."""

    seen: int = 0  # messages read or size-checked this poll
    applied: int = 0
    duplicates: int = 0
    unknown: int = 0
    unmatched: int = 0
    failed: int = 0  # ingest raised: left in place for the next poll
    left: int = 0  # not reached this poll (max_messages, deadline, stop, lost connection)
    where: str = ""
    interrupted: str = ""  # why an error ended the poll early, if one did
    stopped: bool = False  # ended early by ``stop`` (SIGTERM): not an error
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing failed and the poll was not cut short by an error."""
        return not self.failed and not self.interrupted

    def line(self) -> str:
        """One summary line for the terminal and the job record."""
        counts = (
            f"{self.seen} message(s): {self.applied} applied, {self.duplicates} duplicate, "
            f"{self.unknown} unknown, {self.unmatched} unmatched, {self.failed} failed"
        )
        tail = f"; {self.left} left for the next poll" if self.left else ""
        why = f" ({self.interrupted})" if self.interrupted else " (stopped)" if self.stopped else ""
        return f"bounce mailbox {self.where}: {counts}{tail}{why}"


def poll(
    rt: Runtime, *, stop: threading.Event | None = None, deadline_seconds: float | None = None
) -> PollReport:
    """Read ``[bounces]`` once; see the module docstring. Raises :class:`MailboxError`
    (one line) when the mailbox cannot be opened: unreachable, TLS or login refused."""
    cfg = rt.config.bounces
    secret = password(rt.config.env)
    if not secret:
        raise MailboxError(f"{ENV_PASSWORD} is not set: the bounce mailbox needs its password")
    total = deadline_seconds if deadline_seconds is not None else cfg.poll_minutes * 60.0
    deadline = Deadline(total, cfg.timeout_seconds)
    context = _tls_context(cfg, rt.config.base_dir)
    box: Box
    if cfg.kind == "imap":
        box = ImapBox(cfg, secret, context, deadline)
    else:
        box = Pop3Box(cfg, secret, context, deadline, engine=rt.engine, now=rt.now())
    report = PollReport(where=box.where)
    try:
        _drain(rt, box, report, stop)
    finally:
        box.close()
    if report.interrupted:
        report.problems.append(f"poll ended early: {report.interrupted}; {report.left} left")
    for problem in report.problems:
        log.warning("bounce mailbox: %s", problem)
    return report


def _drain(rt: Runtime, box: Box, report: PollReport, stop: threading.Event | None) -> None:
    limit = rt.config.bounces.max_messages
    try:
        items = box.listing()
    except MailboxError as exc:
        report.interrupted = str(exc)
        return
    report.left = len(items)
    for item in items[:limit]:
        if stop is not None and stop.is_set():
            report.stopped = True
            return
        try:
            _one(rt, box, item, report)
        except MailboxError as exc:  # the deadline, a lost connection: stop here
            report.interrupted = str(exc)
            return
        except DBAPIError as exc:  # every later message would fail the same way
            report.failed, report.left = report.failed + 1, report.left - 1
            report.interrupted = f"the database failed: {describe(exc.orig or exc)}"
            return
        report.left -= 1


def _one(rt: Runtime, box: Box, item: Item, report: PollReport) -> None:
    """Size check, read, ingest, then settle one message."""
    limit = rt.config.bounces.max_message_bytes
    report.seen += 1
    if item.size > limit:
        went = box.settle(item, "too-big")
        report.unknown += 1
        report.problems.append(
            f"message {item.key} of {item.size} bytes is over max_message_bytes ({limit}): "
            f"not read, {went}"
        )
        return
    raw = box.fetch(item)
    try:
        got = ingest(rt, raw)
    except DBAPIError:
        raise
    except Exception as exc:  # one bad message must not stop the others; it stays put
        report.failed += 1
        report.problems.append(f"message {item.key}: {describe(exc)}; left in place")
        return
    went = box.settle(item, got.kind)
    if got.kind == "applied":
        report.applied += 1
    elif got.kind == "duplicate":
        report.duplicates += 1
    elif got.kind == "unmatched":
        report.unmatched += 1
    else:
        report.unknown += 1
    log.info("bounce mailbox: message %s: %s → %s", item.key, got.line, went)
