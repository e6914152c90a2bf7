"""One digest instance for the bounce-mailbox tests (no tests here): its config
pointed at the test Postfix and a fresh Dovecot mailbox, the ``digest`` command in
a subprocess, its database; and an IMAP server that offers no STARTTLS.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path
from typing import Any

from sqlalchemy import select

import digest.config as config_mod
from digest.config.runtime import Runtime
from digest.store.db import make_engine, session_scope, upgrade
from digest.store.models import Delivery
from subscribers import repository
from subscribers.models import Subscriber
from tests.mailservers import GOOD_READER, MailServers
from tests.support import write_config

GONE = "gone@mail.example"
UNCLASSIFIABLE = (
    b"From: Someone <someone@elsewhere.example>\r\nTo: box@bounce.example\r\n"
    b"Subject: lunch on friday?\r\nMessage-ID: <lunch-1@elsewhere.example>\r\n"
    b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nAre you free on Friday?\r\n"
)


class Site:
    """One instance's config, environment and database, driven through ``digest``."""

    def __init__(self, tmp_path: Path, mail: MailServers, db_url: str, **bounces: Any) -> None:
        self.mail, self.db_url = mail, db_url
        self.box = mail.new_box()
        table = {
            "enabled": True,
            "kind": "imap",
            "host": "127.0.0.1",
            "port": mail.imaps_port,
            "security": "tls",
            "user": self.box,
            "ca_file": str(mail.cert),
            "timeout_seconds": 10.0,
            **bounces,
        }
        transport = {"kind": "smtp", "host": "127.0.0.1", "port": mail.smtp_port}
        self.config = write_config(
            tmp_path,
            email={"bounce_address": self.box},
            transport={**transport, "security": "none"},
            bounces=table,
        )
        self.env = {
            **os.environ,
            "DIGEST_DATABASE_URL": db_url,
            "DIGEST_SECRET_KEY": "bounce-test-key",
            "DIGEST_BOUNCES_PASSWORD": mail.password,
            "COLUMNS": "200",
        }

    def digest(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "digest", "--config", str(self.config), *args],
            input=stdin.decode("utf-8", "surrogateescape"),
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        return done

    def prepare(self, *readers: str) -> None:
        """What ``digest init`` and ``digest subscribers add`` do, in this process
        (each ``digest`` subprocess costs seconds of imports)."""
        engine = make_engine(self.db_url)
        try:
            upgrade(engine)
            with session_scope(engine) as session:
                for email in readers:
                    repository.add(session, email=email, source="test", now=datetime.now(UTC))
        finally:
            engine.dispose()

    def send_to_two_readers(self) -> bytes:
        """``digest run`` to the good reader and the gone one; the DSN Postfix wrote."""
        self.prepare(GOOD_READER, GONE)
        run = self.digest("run")
        assert run.returncode == 0, run.stdout + run.stderr
        found = self.mail.wait_for(1, self.box)
        assert len(found) == 1, self.mail.log()
        dsn = message_from_bytes(found[0])
        assert dsn.get_content_type() == "multipart/report"
        assert dsn["To"].startswith(self.box.split("@")[0] + "+")  # the VERP address
        return found[0]

    def reader(self, email: str) -> tuple[str, str, str]:
        """(reader status, delivery state, delivery detail) for ``email``."""
        engine = make_engine(self.db_url)
        try:
            with session_scope(engine) as session:
                row = session.execute(
                    select(Subscriber.status, Delivery.state, Delivery.detail)  # type: ignore[call-overload]
                    .join(Delivery, Delivery.subscriber_id == Subscriber.id)
                    .where(Subscriber.email == email)
                ).one()
                return str(row[0]), str(row[1]), str(row[2])
        finally:
            engine.dispose()


@contextlib.contextmanager
def runtime_of(site: Site) -> Iterator[Runtime]:
    """The site's Runtime in this process (its config, environment and database)."""
    rt = Runtime.open(config_mod.load(site.config, environ=site.env))
    try:
        yield rt
    finally:
        rt.close()


@contextlib.contextmanager
def plain_imap_server() -> Iterator[tuple[int, list[str]]]:
    """An IMAP server on loopback that offers no STARTTLS and records every line it
    hears (to show that no password reaches it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    heard: list[str] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn, conn.makefile("rwb") as stream:
                stream.write(b"* OK ready\r\n")
                stream.flush()
                for raw in stream:
                    line = raw.decode(errors="replace").strip()
                    heard.append(line)
                    tag, _, command = line.partition(" ")
                    if command.upper().startswith("CAPABILITY"):
                        stream.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n")
                    stream.write(f"{tag} OK done\r\n".encode())
                    stream.flush()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], heard
    finally:
        listener.close()
        thread.join(timeout=5)
