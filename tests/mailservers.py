"""Real Postfix and Dovecot on loopback for the bounce-mailbox tests (no tests here).

:func:`started` configures and starts, under one temporary directory, a dedicated
Dovecot (``dovecot -c FILE``: IMAP with STARTTLS and IMAPS, POP3S, LMTP; a
self-signed certificate for 127.0.0.1; passwd-file users; maildirs) and a private
Postfix instance (``postfix -c DIR start``, its own config, queue and data
directories) whose smtpd listens on 127.0.0.1. Both pick free high ports, so two
test sessions on one machine do not clash, and neither touches the system's own
instances or ``/etc``.

Postfix hands ``bounce.example`` (the bounce mailboxes) and ``mail.example`` (the
readers) to Dovecot over LMTP. Dovecot knows ``bounces@bounce.example``, one
``box-<n>@bounce.example`` per test (:meth:`MailServers.new_box`) and, of the
readers, only ``good@mail.example``: for any other reader it answers ``550 5.1.1``
after Postfix has accepted the message, so Postfix itself writes a real RFC 3464
DSN to the envelope sender, which with VERP (``box-3+token@bounce.example``,
``recipient_delimiter = +``) lands in that mailbox's INBOX. The files themselves
are written by :mod:`tests.mailserver_files`.

Needs root (Postfix and Dovecot drop privileges to their own users) and Debian's
``postfix``, ``dovecot-imapd``, ``dovecot-pop3d`` and ``dovecot-lmtpd``.
:func:`unavailable` says why they cannot run; the fixture skips with that reason,
or fails under ``CI=true`` (.ci/run installs them).
"""

from __future__ import annotations

import contextlib
import imaplib
import itertools
import os
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.mailserver_files import (
    BOUNCE_USER,
    BOXES,
    GOOD_READER,
    PASSWORD,
    START_SECONDS,
    box_address,
    certificate,
    dovecot_config,
    postfix_config,
    run,
)

__all__ = ["BOUNCE_USER", "GOOD_READER", "MailServers", "started", "unavailable"]

BINARIES = ("/usr/sbin/postfix", "/usr/sbin/dovecot", "/usr/bin/openssl")
PROTOCOLS = {
    "imap": "/usr/lib/dovecot/imap",
    "pop3": "/usr/lib/dovecot/pop3",
    "lmtp": "/usr/lib/dovecot/lmtp",
}


def unavailable() -> str | None:
    """Why Postfix and Dovecot cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "the Postfix/Dovecot tests need root (the daemons drop to their own users)"
    for path in BINARIES:
        if not Path(path).exists():
            return f"{path} is missing: apt-get install postfix dovecot-imapd dovecot-pop3d"
    for protocol, path in PROTOCOLS.items():
        if not Path(path).exists():
            return f"{path} is missing: apt-get install dovecot-{protocol}d"
    return None


@dataclass(frozen=True, slots=True)
class MailServers:
    """Where the running servers listen, and the bounce mailbox's login."""

    root: Path
    cert: Path
    smtp_port: int  # Postfix smtpd, no TLS
    imap_port: int  # IMAP, STARTTLS offered
    imaps_port: int  # IMAP over TLS
    pop3s_port: int  # POP3 over TLS
    lmtp_port: int
    user: str = BOUNCE_USER
    password: str = PASSWORD
    handed_out: Iterator[int] = field(default_factory=itertools.count)

    def new_box(self) -> str:
        """A fresh, empty bounce mailbox (``box-<n>@bounce.example``, the same
        password): each test reads its own. The passwd-file lists them all from the
        start (Dovecot notices a changed file by its mtime, too coarse for adding
        users mid-session)."""
        number = next(self.handed_out)
        if number >= BOXES:
            raise RuntimeError(f"only {BOXES} test mailboxes: raise BOXES")
        return box_address(number)

    def imap(self, user: str = BOUNCE_USER) -> imaplib.IMAP4_SSL:
        """A logged-in IMAPS session on ``user``'s mailbox (the tests' own look)."""
        context = ssl.create_default_context(cafile=str(self.cert))
        session = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=context, timeout=10)
        session.login(user, self.password)
        return session

    def messages(self, folder: str, user: str = BOUNCE_USER) -> list[bytes]:
        """Every message in ``folder`` of ``user``'s mailbox ([] if there is no such
        folder)."""
        with self.imap(user) as session:
            status, _ = session.select(f'"{folder}"', readonly=True)
            if status != "OK":
                return []
            _, data = session.uid("SEARCH", "ALL")
            found: list[bytes] = []
            for uid in data[0].split():
                _, parts = session.uid("FETCH", uid, "(BODY.PEEK[])")
                found.extend(p[1] for p in parts if isinstance(p, tuple))
            return found

    def append(self, raw: bytes, user: str = BOUNCE_USER, folder: str = "INBOX") -> None:
        """IMAP APPEND ``raw`` to ``user``'s ``folder``."""
        with self.imap(user) as session:
            status, said = session.append(f'"{folder}"', None, None, raw)
            assert status == "OK", said

    def wait_for(
        self, count: int, user: str = BOUNCE_USER, folder: str = "INBOX", seconds: float = 30.0
    ) -> list[bytes]:
        """The messages of ``folder`` once it holds ``count`` (a bounded wait), or
        whatever it holds when the wait ends, for the caller to assert on."""
        deadline = time.monotonic() + seconds
        found = self.messages(folder, user)
        while len(found) < count and time.monotonic() < deadline:
            time.sleep(0.2)
            found = self.messages(folder, user)
        return found

    def log(self) -> str:
        """Both servers' logs, for an assertion message."""
        parts = [(self.root / name) for name in ("dovecot.log", "postfix.log")]
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in parts if p.exists())


def started() -> Iterator[MailServers]:
    """Start both servers for a session-scoped fixture; stop them and remove the
    directory afterwards. Skips (fails under CI=true) where they cannot run."""
    reason = unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the Postfix/Dovecot tests cannot run: {reason}")
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="digest-mail-"))
    root.chmod(0o755)  # the daemons' users must reach their files below
    ports = _free_ports(5)
    servers = MailServers(root, root / "cert.pem", *ports)
    try:
        certificate(root)
        dovecot_config(
            root, servers.imap_port, servers.imaps_port, servers.pop3s_port, servers.lmtp_port
        )
        postfix_config(root, servers.smtp_port, servers.lmtp_port)
        run(["dovecot", "-c", str(root / "dovecot.conf")])
        run(["postfix", "-c", str(root / "postfix"), "start"])
        _wait_listening([servers.smtp_port, servers.imaps_port, servers.lmtp_port])
        yield servers
    finally:
        masters = _pids(root / "dovecot" / "master.pid", root / "queue" / "pid" / "master.pid")
        with contextlib.suppress(Exception):
            run(["postfix", "-c", str(root / "postfix"), "stop"])
        with contextlib.suppress(Exception):
            run(["doveadm", "-c", str(root / "dovecot.conf"), "stop"])
        _wait_gone(masters)
        shutil.rmtree(root, ignore_errors=True)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_listening(ports: list[int]) -> None:
    deadline = time.monotonic() + START_SECONDS
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
                time.sleep(0.05)


def _pids(*pidfiles: Path) -> list[int]:
    found = []
    for path in pidfiles:
        with contextlib.suppress(OSError, ValueError):
            found.append(int(path.read_text().split()[0]))
    return found


def _wait_gone(pids: list[int]) -> None:
    """Wait (bounded) until the masters have exited: a zombie counts as gone."""
    deadline = time.monotonic() + START_SECONDS
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        while time.monotonic() < deadline:
            try:
                if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            except OSError:
                break
            time.sleep(0.05)
