"""Each reader's copy holds only their categories; rendered once per segment."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from digest import config, pipeline
from digest.config.runtime import Runtime
from digest.editions.segments import segment_for, skip_reason
from digest.store.db import session_scope, upgrade
from digest.store.models import Delivery
from digest.transports.memory import MemoryTransport
from subscribers import repository
from subscribers.models import Subscriber
from tests.support import SAMPLE_FEED, write_config

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_segment_rules() -> None:
    available = ["Developer Tools", "Research"]
    assert segment_for([], available) == ("Developer Tools", "Research")
    assert segment_for(["Research", "Cooking"], available) == ("Research",)
    assert skip_reason(chosen=["Cooking"], available=available, paused_until=None, now=NOW)
    paused = skip_reason(
        chosen=[], available=available, paused_until=NOW + timedelta(days=1), now=NOW
    )
    assert paused is not None and "paused" in paused
    assert skip_reason(chosen=[], available=available, paused_until=NOW, now=NOW) is None


def test_readers_get_only_their_categories(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, transport={"kind": "memory"})
    cfg = config.load(path, environ={"DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"})
    rt = Runtime.open(cfg, clock=lambda: NOW)
    upgrade(rt.engine)
    choices = {
        "all@example.com": [],
        "dev@example.com": ["Developer Tools"],
        "research@example.com": ["Research", "Infrastructure"],
        "cooking@example.com": ["Cooking"],
        "paused@example.com": [],
    }
    with session_scope(rt.engine) as session:
        for email, categories in choices.items():
            subscriber = repository.add(session, email=email, now=NOW).subscriber
            subscriber.categories = categories
            if email.startswith("paused"):
                subscriber.paused_until = NOW + timedelta(weeks=2)
            session.add(subscriber)
    for i in range(20):  # more readers of an existing segment cost no render
        with session_scope(rt.engine) as session:
            repository.add(session, email=f"more{i}@example.com", now=NOW)
    renders: list[tuple[str, ...]] = []
    real_render = pipeline.render

    def counting_render(rt_: Runtime, key: str, comparisons: list, **kw: Any) -> object:  # type: ignore[type-arg]
        if not kw.get("web_copy"):  # the archive's copy is rendered once, whole
            renders.append(tuple(sorted(c.category for c in comparisons)))
        return real_render(rt_, key, comparisons, **kw)

    monkeypatch.setattr(pipeline, "render", counting_render)
    pipeline.fetch(rt)
    edition = pipeline.compose(rt).edition
    assert edition is not None
    report = asyncio.run(pipeline.send(rt, edition=edition))
    transport = rt.transport()
    assert isinstance(transport, MemoryTransport)

    titles = {c["category"]: c["title"] for c in json.loads(SAMPLE_FEED.read_text())["comparisons"]}
    got: dict[str, set[str]] = {}
    for message in transport.sent:
        parsed = message_from_bytes(message.data, policy=policy.default)
        text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        got[message.recipient] = {cat for cat, title in titles.items() if title in text}
    got = {k: v for k, v in got.items() if not k.startswith("more")}
    assert got == {
        "all@example.com": set(titles),
        "dev@example.com": {"Developer Tools"},
        "research@example.com": {"Research", "Infrastructure"},
    }
    assert report.sent == 23 and report.skipped == 2 and report.finished
    assert sorted(renders) == sorted(
        [tuple(sorted(titles)), ("Developer Tools",), ("Infrastructure", "Research")]
    )
    with session_scope(rt.engine) as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.state, Delivery.detail).join(  # type: ignore[call-overload]
                Delivery,
                Delivery.subscriber_id == Subscriber.id,  # type: ignore[arg-type]
            )
        ).all()
    skipped = {email: detail for email, state, detail in rows if state == "skipped"}
    assert set(skipped) == {"cooking@example.com", "paused@example.com"}
    assert "Cooking" in skipped["cooking@example.com"]
    assert "paused by the reader until 2026-12-07" in skipped["paused@example.com"]
    rt.close()
