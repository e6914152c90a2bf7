"""The bounce mailbox over POP3 (stdlib ``poplib``).

POP3 has no folders, so "Processed" and "Unknown" become two rules:

- ``[bounces] delete = true``: a message whose ingest committed (applied, or a
  duplicate) is deleted (``DELE``, effective at ``QUIT``; a connection lost
  before it deletes nothing, and the next poll's re-read is a duplicate). A
  message nobody could classify, one that matched nobody, or one too big to read
  is never deleted: it stays on the server for the operator.
- Every message handled (deleted or not) has its UIDL (RFC 1939 7) recorded in the
  database (``webhook_replay``, namespace ``pop3-seen``, the mailbox's own prefix,
  kept 400 days), and a later poll skips recorded UIDLs without reading them.
  This, not the duplicate rule alone, was chosen: a maildrop that keeps its
  messages would otherwise be re-read on every poll, and once it held more than
  ``max_messages`` the same oldest messages would be re-read forever while newer
  ones waited. A server without UIDL gets every message read again (duplicates,
  applied once).
"""

from __future__ import annotations

import contextlib
import hashlib
import poplib
import ssl
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

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
from digest.store.models import WebhookReplay

SEEN = WebhookReplay.__table__  # type: ignore[attr-defined]
NAMESPACE = "pop3-seen"
KEEP_SEEN = timedelta(days=400)


class Pop3Box:
    """One logged-in POP3 session; ``seen`` UIDLs are skipped by :meth:`listing`."""

    def __init__(
        self,
        cfg: BouncesConfig,
        password: str,
        context: ssl.SSLContext,
        deadline: Deadline,
        *,
        engine: Engine,
        now: datetime,
    ) -> None:
        self.cfg, self.deadline, self.engine, self.now = cfg, deadline, engine, now
        self.where = f"pop3 {cfg.user}@{cfg.host}:{cfg.effective_port} ({cfg.security})"
        mailbox = f"{cfg.user}\0{cfg.host.lower()}\0{cfg.effective_port}".encode()
        self.prefix = hashlib.sha256(mailbox).hexdigest()[:16] + ":"
        self.session = self._connect(context)
        try:
            self._call("USER", self.session.user, cfg.user)
            self._call("PASS", self.session.pass_, password)
        except BaseException:
            self._abandon()
            raise

    def _connect(self, context: ssl.SSLContext) -> poplib.POP3:
        cfg, timeout = self.cfg, self.deadline.timeout()
        host, port = cfg.host, cfg.effective_port
        try:
            if cfg.security == "tls":
                return poplib.POP3_SSL(host, port, timeout=timeout, context=context)
            session = poplib.POP3(host, port, timeout=timeout)
        except (OSError, poplib.error_proto) as exc:
            raise unreachable(cfg, exc) from None
        self.session = session
        try:
            if cfg.security == "starttls":
                try:
                    caps = session.capa()
                except poplib.error_proto:
                    caps = {}
                if "STLS" not in caps:
                    raise no_starttls(cfg, "STLS")
                self._call("STLS", session.stls, context)
            check_plain_text(cfg, isinstance(session.sock, ssl.SSLSocket))
        except BaseException:
            self._abandon()
            raise
        return session

    def _call(self, what: str, method: Any, *args: Any) -> Any:
        """One command within the per-operation timeout and the deadline; an ``-ERR``
        answer or a network error becomes one MailboxError line."""
        self.session.sock.settimeout(self.deadline.timeout())
        try:
            return method(*args)
        except (TimeoutError, OSError, poplib.error_proto) as exc:
            raise MailboxError(f"{self.where}: {what} failed: {describe(exc)}") from None

    def listing(self) -> list[Item]:
        """The messages not handled before, in maildrop order, with their sizes."""
        _, lines, _ = self._call("LIST", self.session.list)
        sizes = dict(_pairs(lines))
        try:
            _, lines, _ = self._call("UIDL", self.session.uidl)
            uidls = dict(_pairs(lines))
        except MailboxError:
            uidls = {}  # no UIDL: every message is read again, duplicates applied once
        seen = self._seen([self.prefix + u for u in uidls.values()])
        return [
            Item(number, int(size), uidls.get(number, ""))
            for number, size in sizes.items()
            if self.prefix + uidls.get(number, "") not in seen
        ]

    def fetch(self, item: Item) -> bytes:
        _, lines, _ = self._call("RETR", self.session.retr, int(item.key))
        return b"\r\n".join(lines) + b"\r\n"

    def settle(self, item: Item, outcome: str) -> str:
        """Delete a handled message (with ``delete = true``); record its UIDL."""
        where = "kept"
        if outcome in HANDLED and self.cfg.delete:
            self._call("DELE", self.session.dele, int(item.key))
            where = "deleted"
        if item.uidl:
            self._remember(self.prefix + item.uidl)
        return where

    def close(self) -> None:
        """QUIT: the server deletes what was marked only now."""
        try:
            self._call("QUIT", self.session.quit)
        except MailboxError:
            self._abandon()

    def _abandon(self) -> None:
        with contextlib.suppress(OSError):
            self.session.close()

    def _seen(self, keys: list[str]) -> set[str]:
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 500):
                stmt = select(SEEN.c.key).where(
                    SEEN.c.provider == NAMESPACE,
                    SEEN.c.key.in_(keys[start : start + 500]),
                    SEEN.c.expires_at >= self.now,
                )
                found.update(conn.execute(stmt).scalars())
        return found

    def _remember(self, key: str) -> None:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(SEEN).values(
            provider=NAMESPACE, key=key[:200], expires_at=self.now + KEEP_SEEN
        )
        stmt = insert.on_conflict_do_update(
            index_elements=["provider", "key"], set_={"expires_at": insert.excluded.expires_at}
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)


def _pairs(lines: list[bytes]) -> list[tuple[str, str]]:
    """``b"1 abc"`` lines of a LIST/UIDL answer as (message number, value)."""
    found = []
    for line in lines:
        parts = line.decode(errors="replace").split()
        if len(parts) >= 2 and parts[0].isdigit():
            found.append((parts[0], parts[1]))
    return found
