"""A small site for the scheduling tests: config, a feed file the test writes
comparisons into, readers, and a memory transport that keeps what was sent (or an
SMTP sink on loopback: :func:`smtp_transport`, :func:`sink_operator_subjects`);
:func:`running` keeps a scheduler started for a ``with`` block."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import time_machine
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from digest import config
from digest.config.runtime import Runtime
from digest.ops import scheduler
from digest.store.db import session_scope, upgrade
from digest.store.models import Edition, RunRecord
from digest.transports.memory import MemoryTransport
from subscribers import repository
from tests.smtp_sink import SmtpSink
from tests.support import SAMPLE_FEED, write_config

OPERATOR = "ops@test.example"


class Site:
    def __init__(self, tmp_path: Path, db_url: str, **sections: dict[str, Any]) -> None:
        self.feed = tmp_path / "feed.json"
        self.document = json.loads(SAMPLE_FEED.read_text(encoding="utf-8"))
        self.template = self.document["comparisons"][0]
        self.document["comparisons"] = []
        self.document["next_url"] = None
        self._write()
        sections.setdefault("operators", {"emails": [OPERATOR]})
        sections.setdefault("transport", {"kind": "memory"})
        self.config_path = write_config(
            tmp_path, feed={"kind": "files", "path": str(self.feed)}, **sections
        )
        self.env = {"DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"}
        self.rt = Runtime.open(config.load(self.config_path, environ=self.env))
        upgrade(self.rt.engine)

    def _write(self) -> None:
        self.feed.write_text(json.dumps(self.document), encoding="utf-8")

    def publish(self, when: datetime, n: int = 1) -> None:
        """Add ``n`` comparisons published at ``when`` to the feed."""
        for i in range(n):
            item = json.loads(json.dumps(self.template))
            stamp = when.strftime("%Y%m%d%H%M")
            item["id"] = f"cmp-{stamp}-{i}"
            item["url"] = f"https://verdicts.example.com/compare/{item['id']}"
            item["title"] = f"Comparison of {when:%Y-%m-%d} #{i}"
            item["published_at"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            self.document["comparisons"].append(item)
        self._write()

    def readers(self, count: int) -> None:
        with session_scope(self.rt.engine) as session:
            for i in range(count):
                repository.add(session, email=f"r{i}@example.com", now=self.rt.now())

    @property
    def transport(self) -> MemoryTransport:
        transport = self.rt.transport()
        assert isinstance(transport, MemoryTransport)
        return transport

    def operator_subjects(self) -> list[str]:
        return [
            str(message_from_bytes(m.data)["Subject"])
            for m in self.transport.sent
            if m.recipient == OPERATOR
        ]

    def cli(self, *args: str) -> Result:
        """``digest ARGS`` in this process (so the controlled clock applies)."""
        from digest.cli import app

        runner = CliRunner()
        return runner.invoke(app, ["--config", str(self.config_path), *args], env=self.env)

    def digests_to(self, address: str) -> int:
        return sum(1 for m in self.transport.sent if m.recipient == address and m.delivery_id)

    def editions(self) -> list[Edition]:
        with session_scope(self.rt.engine) as session:
            return list(session.execute(select(Edition).order_by(Edition.key)).scalars())  # type: ignore[arg-type]

    def runs(self, job: str) -> int:
        with self.rt.engine.connect() as conn:
            done = RunRecord.finished_at.is_not(None)  # type: ignore[union-attr]
            stmt = select(func.count()).where(RunRecord.job == job, done)  # type: ignore[arg-type]
            return int(conn.execute(stmt).scalar_one())


def smtp_transport(port: int) -> dict[str, Any]:
    """A ``[transport]`` table sending to an :class:`SmtpSink` on ``port``."""
    return {"kind": "smtp", "host": "127.0.0.1", "port": port, "security": "none"}


def sink_operator_subjects(sink: SmtpSink) -> list[str]:
    """The subjects of the messages the operators got through ``sink``, unfolded."""
    with sink.handler.lock:
        received = list(sink.handler.messages)
    subjects = [message_from_bytes(m.data)["Subject"] for m in received if OPERATOR in m.rcpt_tos]
    return [" ".join(str(s).split()) for s in subjects]


@contextmanager
def approval_monday(
    tmp_path: Path, db_url: str, sink: SmtpSink, *, readers: int
) -> Iterator[tuple[Site, time_machine.Coordinates]]:
    """A site sending through ``sink`` whose editions need approval within 4 hours,
    with ``readers`` readers; inside the block it is Monday 2026-11-23 09:00 in
    Berlin (the clock stopped) and a comparison was published the Friday before."""
    site = Site(
        tmp_path,
        db_url,
        transport=smtp_transport(sink.port),
        edition={"require_approval": True, "approval_hours": 4.0},
    )
    site.readers(readers)
    berlin = ZoneInfo("Europe/Berlin")
    with time_machine.travel(at(berlin, 2026, 11, 23, 9, 0), tick=False) as clock:
        site.publish(at(berlin, 2026, 11, 20, 14, 0))
        yield site, clock


@contextmanager
def running(rt: Runtime) -> Iterator[scheduler.Service]:
    """A scheduler started on ``rt`` for the ``with`` block, stopped however it ends."""
    service = scheduler.Service(rt)
    service.start()
    try:
        yield service
    finally:
        service.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def settle(seconds: float = 0.5) -> None:
    """Give a scheduler thread time to run anything it (wrongly) would."""
    time.sleep(seconds)


def at(zone: Any, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone)  # type: ignore[misc]


HOUR = timedelta(hours=1)
