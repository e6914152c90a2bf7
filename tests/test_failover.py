"""Failover: a secondary transport takes over while the primary is down or throttling;
the ledger says which transport sent each message."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from digest import config, pipeline
from digest.config.runtime import Runtime
from digest.store.db import session_scope, upgrade
from digest.store.models import Delivery
from subscribers import repository
from tests.smtp_sink import free_port
from tests.support import write_config
from tests.test_throttling import ThrottlingHandler


def _run(tmp_path: Path, db_url: str, port: int) -> tuple[Runtime, dict[str, int]]:
    path = write_config(
        tmp_path,
        transport={
            "kind": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "connections": 2,
            "timeout": 2,
        },
        failover={"kind": "outbox", "path": str(tmp_path / "outbox"), "cooldown_seconds": 60},
        send={"retry_backoff_seconds": 0.05},
    )
    cfg = config.load(path, environ={"DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"})
    rt = Runtime.open(cfg)
    upgrade(rt.engine)
    with session_scope(rt.engine) as session:
        for i in range(12):
            repository.add(session, email=f"r{i}@example.com", now=rt.now())
    pipeline.fetch(rt)
    edition = pipeline.compose(rt).edition
    assert edition is not None
    report = asyncio.run(pipeline.send(rt, edition=edition))
    assert report.finished and report.failed == 0 and report.sent == 12
    with session_scope(rt.engine) as session:
        rows = session.execute(
            select(Delivery.transport, func.count()).group_by(Delivery.transport)  # type: ignore[call-overload]
        ).all()
    rt.close()
    return rt, {str(t): int(n) for t, n in rows}


def test_a_primary_that_is_down_fails_over_to_the_secondary(tmp_path: Path, db_url: str) -> None:
    _, by_transport = _run(tmp_path, db_url, free_port())  # nothing listens there
    assert by_transport == {"outbox": 12}
    assert len(list((tmp_path / "outbox").glob("*/*.eml"))) == 12


def test_a_throttling_primary_hands_over_what_it_deferred(tmp_path: Path, db_url: str) -> None:
    handler = ThrottlingHandler()
    handler.until = time.monotonic() + 3600  # throttles for the whole test
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        _, by_transport = _run(tmp_path, db_url, controller.port)
    finally:
        controller.stop()
    assert handler.refused >= 1
    assert by_transport == {"outbox": 12}
    assert handler.per_recipient() == {}  # the primary delivered nothing: no duplicates
