"""Operator notices through the outbox: each one kept, from ``[email] transactional_from``."""

from __future__ import annotations

import asyncio
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from digest import config
from digest.config.runtime import Runtime
from digest.ops import alerts
from tests.support import write_config

OPERATOR = "ops@test.example"


def open_runtime(tmp_path: Path, **sections: Any) -> Runtime:
    sections.setdefault("operators", {"emails": [OPERATOR]})
    path = write_config(tmp_path, **sections)
    return Runtime.open(config.load(path, environ={"DIGEST_SECRET_KEY": "k"}))


def notices(tmp_path: Path) -> list[Any]:
    files = sorted((tmp_path / "outbox" / alerts.TAG).glob("*.eml"))
    return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in files]


def test_every_operator_notice_is_kept_in_the_outbox(tmp_path: Path) -> None:
    rt = open_runtime(tmp_path)
    try:
        for subject in ("needs attention: feed down", "resolved: feed down", "draft 2026-W48"):
            assert asyncio.run(alerts.notify(rt, subject, ["a line"]))
    finally:
        rt.close()
    subjects = [str(m["Subject"]).removeprefix("[Test Weekly] ") for m in notices(tmp_path)]
    assert subjects == ["needs attention: feed down", "resolved: feed down", "draft 2026-W48"]


def test_operator_notices_come_from_transactional_from(tmp_path: Path) -> None:
    own = "Test Weekly Desk <desk@ops.test.example>"
    rt = open_runtime(tmp_path, email={"transactional_from": own})
    try:
        assert asyncio.run(alerts.notify(rt, "needs attention: x", ["a line"]))
    finally:
        rt.close()
    (message,) = notices(tmp_path)
    assert message["From"].addresses[0].addr_spec == "desk@ops.test.example"
    assert message["Message-ID"].endswith("@ops.test.example>")
