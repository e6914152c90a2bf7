"""Shared helpers for the web tests (no tests here): a runtime on each backend with a
settable clock, a TestClient, the outbox, and editions made to order."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from digest import config as config_mod
from digest import pipeline
from digest.config.runtime import Runtime
from digest.store.db import session_scope, upgrade
from digest.store.models import Comparison, Edition, EditionComparison, EditionStatus
from digest.web.app import create_app
from subscribers.models import ConsentEvent, Subscriber, Suppression
from tests.support import write_config

START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
CONFIRM_LINK = re.compile(r"https://digest\.test\.example/confirm/[A-Za-z0-9._-]+")


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Site:
    rt: Runtime
    client: TestClient
    clock: Clock
    root: Path

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    def mails(self, tag: str = "transactional") -> list[EmailMessage]:
        folder = self.outbox / tag
        files = sorted(folder.glob("*.eml")) if folder.is_dir() else []
        return [parse(p.read_bytes()) for p in files]

    def subscriber(self, email: str) -> Subscriber | None:
        with session_scope(self.rt.engine) as session:
            stmt = select(Subscriber).where(Subscriber.email == email)  # type: ignore[arg-type]
            return session.execute(stmt).scalar_one_or_none()

    def events(self) -> list[ConsentEvent]:
        with session_scope(self.rt.engine) as session:
            return list(session.execute(select(ConsentEvent).order_by(ConsentEvent.id)).scalars())  # type: ignore[arg-type]

    def suppressions(self) -> list[Suppression]:
        with session_scope(self.rt.engine) as session:
            return list(session.execute(select(Suppression)).scalars())

    def snapshot(self) -> tuple[Any, ...]:
        """Every row a reader's request could change, to compare before/after."""
        tables = (Subscriber, ConsentEvent, Suppression)
        with self.rt.engine.connect() as conn:
            return tuple(
                sorted((tuple(row) for row in conn.execute(t.__table__.select())), key=repr)  # type: ignore[attr-defined]
                for t in tables
            )

    def signup(self, email: str, **extra: Any) -> str:
        """Sign up through the form and return the confirmation link's path."""
        response = self.client.post("/subscribe", data={"email": email, **extra})
        assert response.status_code == 200, response.text
        return confirm_path(self.mails()[-1])

    def confirmed(self, email: str) -> int:
        path = self.signup(email)
        assert self.client.post(path).status_code == 200
        subscriber = self.subscriber(email)
        assert subscriber is not None and subscriber.id is not None
        return subscriber.id

    def fetch(self) -> None:
        pipeline.fetch(self.rt)

    def edition(self, key: str, ids: Sequence[str], status: EditionStatus) -> None:
        with session_scope(self.rt.engine) as session:
            edition = Edition(
                key=key,
                status=status,
                cutoff=self.clock.now,
                composed_at=self.clock.now,
                finished_at=self.clock.now if status == EditionStatus.sent else None,
            )
            session.add(edition)
            session.flush()
            for position, ident in enumerate(ids):
                session.add(
                    EditionComparison(
                        edition_id=edition.id,  # type: ignore[arg-type]
                        comparison_id=ident,
                        position=position,
                    )
                )

    def comparison(self, ident: str, *, title: str, category: str = "Dev") -> None:
        with session_scope(self.rt.engine) as session:
            session.add(
                Comparison(
                    id=ident,
                    url=f"https://x.test/{ident}",
                    title=title,
                    question="",
                    category=category,
                    published_at=self.clock.now,
                    updated_at=self.clock.now,
                    tools=[],
                    reviews=[],
                    first_seen_at=self.clock.now,
                    last_seen_at=self.clock.now,
                )
            )


def parse(data: bytes) -> EmailMessage:
    return message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


def bodies(message: EmailMessage) -> str:
    return "\n".join(
        str(part.get_content())  # type: ignore[attr-defined]
        for part in message.walk()
        if part.get_content_maintype() == "text"
    )


def confirm_path(message: EmailMessage) -> str:
    found = CONFIRM_LINK.search(bodies(message))
    assert found is not None, bodies(message)
    return found.group(0).removeprefix("https://digest.test.example")


def open_site(tmp_path: Path, db_url: str, **sections: dict[str, Any]) -> Iterator[Site]:
    web = {"signups_per_minute": 1000, **sections.pop("web", {})}
    path = write_config(tmp_path, web=web, **sections)
    cfg = config_mod.load(path, environ={"DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"})
    clock = Clock()
    rt = Runtime.open(cfg, clock=clock)
    upgrade(rt.engine)
    # A peer address, so [web] trusted_proxies can name it ("127.0.0.1" is no IP).
    peer = ("127.0.0.1", 50000)
    with TestClient(create_app(rt), raise_server_exceptions=False, client=peer) as client:
        yield Site(rt, client, clock, tmp_path)
    rt.close()
