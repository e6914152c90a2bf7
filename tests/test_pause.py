"""pause / resume / cancel, and an edition that pauses itself after too many errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from sqlalchemy import Engine

from digest import config, pipeline
from digest.config.runtime import Runtime
from digest.editions import lifecycle as editions
from digest.store.db import session_scope, upgrade
from digest.store.models import EditionStatus
from digest.transports.memory import MemoryTransport
from subscribers import repository
from tests.support import run_digest, write_config


def _runtime(tmp_path: Path, db_url: str, transport: dict, **send: object) -> Runtime:
    path = write_config(tmp_path, transport={"kind": "memory", **transport}, send=send)
    cfg = config.load(path, environ={"DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"})
    rt = Runtime.open(cfg)
    upgrade(rt.engine)
    return rt


def _seed(rt: Runtime) -> None:
    with session_scope(rt.engine) as session:
        for i in range(30):
            repository.add(session, email=f"r{i}@example.com", now=rt.now())
    pipeline.fetch(rt)


def _edition(rt: Runtime, key: str):  # type: ignore[no-untyped-def]
    with session_scope(rt.engine) as session:
        return editions.get(session, key=key)


def test_an_edition_pauses_itself_after_too_many_errors(tmp_path: Path, db_url: str) -> None:
    rejected = [f"r{i}@example.com" for i in range(0, 30, 2)]
    rt = _runtime(
        tmp_path,
        db_url,
        {"reject": rejected, "max_batch": 2},
        pause_window=10,
        pause_error_share=0.5,
    )
    _seed(rt)
    edition = pipeline.compose(rt).edition
    assert edition is not None
    report = asyncio.run(pipeline.send(rt, edition=edition))
    assert "paused automatically" in report.error
    assert not report.finished
    paused = _edition(rt, edition.key)
    assert paused.status == EditionStatus.paused and "of the last 10" in paused.status_note
    transport = rt.transport()
    assert isinstance(transport, MemoryTransport)
    handed = len(transport.handed)
    again = asyncio.run(pipeline.send(rt, edition=paused))  # a paused edition sends nothing
    assert len(transport.handed) == handed and "paused" in again.stopped_reason
    rt.close()
    # The cause is fixed (the server accepts again); the operator resumes.
    fixed = _runtime(tmp_path, db_url, {"max_batch": 2})
    with session_scope(fixed.engine) as session:
        resumed = editions.resume(session, key=edition.key)
    final = asyncio.run(pipeline.send(fixed, edition=resumed))
    assert final.finished
    fixed.close()


def test_cancel_skips_what_is_left(tmp_path: Path, db_url: str) -> None:
    rt = _runtime(tmp_path, db_url, {})
    _seed(rt)
    edition = pipeline.compose(rt).edition
    assert edition is not None
    with session_scope(rt.engine) as session:
        from digest.delivery import ledger as deliveries

        deliveries.plan(session.connection(), edition_id=edition.id or 0, now=rt.now())
    with session_scope(rt.engine) as session:
        _, skipped = editions.cancel(session, key=edition.key, note="wrong week", now=rt.now())
    assert skipped == 30
    report = asyncio.run(pipeline.send(rt, edition=_edition(rt, edition.key)))
    transport = rt.transport()
    assert isinstance(transport, MemoryTransport) and transport.handed == []
    assert "cancelled" in report.stopped_reason
    rt.close()


def test_cli_pause_resume_cancel(tmp_path: Path, sqlite_engine: Engine) -> None:
    db_url = str(sqlite_engine.url)
    config_path = write_config(tmp_path)
    env = {**os.environ, "DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"}

    def digest(*args: str) -> subprocess.CompletedProcess[str]:
        return run_digest(config_path, *args, env=env, timeout=120)

    digest("subscribers", "add", "ada@example.com")
    digest("fetch")
    key = digest("compose").stdout.split("Edition ", 1)[1].split(":", 1)[0]
    paused = digest("pause", key, "--reason", "checking a link")
    assert paused.returncode == 0, paused.stderr
    status = digest("status").stdout
    assert f"{key} paused: checking a link" in status
    assert "paused" in digest("send", "--edition", key).stdout
    resumed = digest("resume", key)
    assert resumed.returncode == 0 and "sent 1" in resumed.stdout
    refused = digest("cancel", key)
    assert refused.returncode == 1 and "cannot cancel" in refused.stderr
    unknown = digest("pause", "1999-W01")
    assert unknown.returncode == 1 and "no edition 1999-W01" in unknown.stderr
