"""The bounce mailbox over IMAP (stdlib ``imaplib``): UID commands throughout.

``[bounces] folder`` (INBOX) is read; ``processed_folder`` and ``unknown_folder``
are created when missing. A message is fetched with ``BODY.PEEK[]`` (a failed poll
leaves it unread) after its ``RFC822.SIZE`` is checked, and moved only after its
ingest committed: applied or duplicate → Processed (or deleted with ``delete =
true``); unknown, unmatched or too big → Unknown, never deleted. ``UID MOVE``
(RFC 6851) when the server has MOVE, else ``UID COPY`` + ``\\Deleted`` + ``UID
EXPUNGE`` (RFC 4315 UIDPLUS; without it, one ``EXPUNGE`` when the session ends).
A crash between the ingest and the move re-reads the message next time: its
events are then duplicates, applied once.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
from typing import Any

from digest.bounces.connection import (
    HANDLED,
    Deadline,
    Item,
    MailboxError,
    check_plain_text,
    describe,
    no_starttls,
    unreachable,
)
from digest.config.bounce_sections import BouncesConfig

_SIZE = re.compile(rb"UID (\d+)|RFC822\.SIZE (\d+)")
_CHUNK = 200  # UIDs per size FETCH: keeps each command line short


def quoted(name: str) -> str:
    """A mailbox name as an IMAP quoted string (ASCII names; RFC 3501 9)."""
    if not name.isascii() or any(c in name for c in "\r\n\0"):
        raise MailboxError(f"[bounces] folder name {name!r}: use an ASCII name")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapBox:
    """One logged-in IMAP session on ``[bounces] folder``."""

    def __init__(
        self, cfg: BouncesConfig, password: str, context: ssl.SSLContext, deadline: Deadline
    ) -> None:
        self.cfg = cfg
        self.deadline = deadline
        self.where = (
            f"imap {cfg.user}@{cfg.host}:{cfg.effective_port}/{cfg.folder} ({cfg.security})"
        )
        self.session = self._connect(context)
        self.expunge_at_close = False
        try:
            self._call("LOGIN", self.session.login, cfg.user, password)
            caps = self._call("CAPABILITY", self.session.capability)
            self.caps = set(b" ".join(caps).decode(errors="replace").upper().split())
            for name in (cfg.processed_folder, cfg.unknown_folder):
                self._ensure_folder(name)
            self._call("SELECT", self.session.select, quoted(cfg.folder))
        except BaseException:
            self._abandon()
            raise

    def _connect(self, context: ssl.SSLContext) -> imaplib.IMAP4:
        cfg, timeout = self.cfg, self.deadline.timeout()
        host, port = cfg.host, cfg.effective_port
        try:
            if cfg.security == "tls":
                return imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=timeout)
            session = imaplib.IMAP4(host, port, timeout=timeout)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise unreachable(cfg, exc) from None
        try:
            if cfg.security == "starttls":
                if "STARTTLS" not in session.capabilities:
                    raise no_starttls(cfg, "STARTTLS")
                self._call("STARTTLS", session.starttls, context, session=session)
            check_plain_text(cfg, isinstance(session.sock, ssl.SSLSocket))
        except BaseException:
            session.shutdown()
            raise
        return session

    def _call(
        self, what: str, method: Any, *args: Any, session: imaplib.IMAP4 | None = None
    ) -> Any:
        """Run one command within the per-operation timeout and the deadline; a
        ``NO``/``BAD`` answer or a network error becomes one MailboxError line."""
        sock = (session or self.session).sock
        sock.settimeout(self.deadline.timeout())
        try:
            status, data = method(*args)
        except (TimeoutError, OSError, imaplib.IMAP4.error) as exc:
            raise MailboxError(f"{self.where}: {what} failed: {describe(exc)}") from None
        if status != "OK":
            said = b" ".join(d for d in data if isinstance(d, bytes)).decode(errors="replace")
            raise MailboxError(f"{self.where}: {what} answered {status} {said}"[:300])
        return data

    def _ensure_folder(self, name: str) -> None:
        found = self._call("LIST", self.session.list, '""', quoted(name))
        if not [d for d in found if d]:
            self._call(f"CREATE {name}", self.session.create, quoted(name))

    def listing(self) -> list[Item]:
        """Every message in the folder, oldest UID first, with its size."""
        data = self._call("UID SEARCH", self.session.uid, "SEARCH", "ALL")
        uids = [u.decode() for u in b" ".join(d for d in data if d).split()]
        sizes: dict[str, int] = {}
        for start in range(0, len(uids), _CHUNK):
            chunk = ",".join(uids[start : start + _CHUNK])
            for line in self._call("UID FETCH", self.session.uid, "FETCH", chunk, "(RFC822.SIZE)"):
                head = line[0] if isinstance(line, tuple) else line
                uid = size = None
                for match in _SIZE.finditer(head or b""):
                    uid = match.group(1) or uid
                    size = match.group(2) or size
                if uid and size:
                    sizes[uid.decode()] = int(size)
        return [Item(uid, sizes[uid]) for uid in uids if uid in sizes]

    def fetch(self, item: Item) -> bytes:
        data = self._call("UID FETCH", self.session.uid, "FETCH", item.key, "(BODY.PEEK[])")
        for part in data:
            if isinstance(part, tuple):
                return bytes(part[1])
        raise MailboxError(f"{self.where}: message UID {item.key} vanished before it was read")

    def settle(self, item: Item, outcome: str) -> str:
        """Move (or delete) a message whose ingest committed; returns where it went."""
        cfg = self.cfg
        if outcome in HANDLED and cfg.delete:
            self._delete(item.key)
            return "deleted"
        target = cfg.processed_folder if outcome in HANDLED else cfg.unknown_folder
        if "MOVE" in self.caps:
            self._call(f"UID MOVE to {target}", self.session.uid, "MOVE", item.key, quoted(target))
        else:
            self._call(f"UID COPY to {target}", self.session.uid, "COPY", item.key, quoted(target))
            self._delete(item.key)
        return target

    def _delete(self, uid: str) -> None:
        self._call("UID STORE", self.session.uid, "STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
        if "UIDPLUS" in self.caps:
            self._call("UID EXPUNGE", self.session.uid, "EXPUNGE", uid)
        else:
            self.expunge_at_close = True

    def close(self) -> None:
        """EXPUNGE if still owed, then LOGOUT; a failure here loses nothing."""
        try:
            if self.expunge_at_close:
                self._call("EXPUNGE", self.session.expunge)
            self.session.sock.settimeout(max(0.1, min(5.0, self.deadline.remaining())))
            self.session.logout()
        except (MailboxError, OSError, imaplib.IMAP4.error):
            self._abandon()

    def _abandon(self) -> None:
        with contextlib.suppress(OSError):
            self.session.shutdown()
