"""A throttling SMTP server slows an edition down; it completes and nobody fails."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from digest import config, pipeline
from digest.config.runtime import Runtime
from digest.store.db import session_scope, upgrade
from subscribers import repository
from tests.smtp_sink import RecordingHandler, free_port
from tests.support import write_config


class ThrottlingHandler(RecordingHandler):
    """Answers ``454 4.7.0 Throttling`` to every RCPT until ``until`` (monotonic)."""

    until: float = 0.0
    refused: int = 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if time.monotonic() < self.until:
            self.refused += 1
            return "454 4.7.0 Throttling: try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_a_throttling_server_slows_the_edition_down_and_it_completes(
    tmp_path: Path, db_url: str
) -> None:
    handler = ThrottlingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        path = write_config(
            tmp_path,
            transport={
                "kind": "smtp",
                "host": "127.0.0.1",
                "port": controller.port,
                "security": "none",
                "connections": 2,
            },
            send={"retry_backoff_seconds": 0.05, "max_retry_wait_seconds": 60},
        )
        cfg = config.load(path, environ={"DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"})
        rt = Runtime.open(cfg)
        upgrade(rt.engine)
        with session_scope(rt.engine) as session:
            for i in range(40):
                repository.add(session, email=f"r{i}@example.com", now=rt.now())
        pipeline.fetch(rt)
        edition = pipeline.compose(rt).edition
        assert edition is not None
        handler.until = time.monotonic() + 1.5
        report = asyncio.run(pipeline.send(rt, edition=edition))
        rt.close()
    finally:
        controller.stop()
    assert handler.refused > 0
    assert report.finished and report.failed == 0 and report.sent == 40
    counts = handler.per_recipient()
    assert len(counts) == 40 and set(counts.values()) == {1}
