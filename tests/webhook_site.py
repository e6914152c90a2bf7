"""One reader, Ada, and her sent copy of this week's edition, for the webhook tests.

:func:`seed_sent_delivery` writes them into a migrated database (both backends);
:func:`open_site` opens the real app over them for the route tests
(``test_webhooks_route``, ``test_webhooks_answers``), which subclass
:class:`WebhookSite` with the requests their providers send.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from digest import config as config_mod
from digest.config.runtime import Runtime
from digest.store.db import session_scope, upgrade
from digest.store.models import (
    Delivery,
    DeliveryEventRecord,
    DeliveryState,
    Edition,
    EditionStatus,
    WebhookReplay,
)
from digest.web.app import create_app
from subscribers.models import ConsentEvent, Subscriber, Suppression
from subscribers.repository import add
from tests.test_web_support import Clock

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
ADA = "ada@example.com"
KEY = "2026-W48"


@dataclass
class WebhookSite:
    rt: Runtime
    client: TestClient
    clock: Clock
    subscriber_id: int
    delivery_id: int

    @property
    def message_id(self) -> str:
        return f"<{KEY}.s{self.subscriber_id}.digest@test.example>"

    def count(self, model: Any) -> int:
        with session_scope(self.rt.engine) as session:
            return int(session.execute(select(func.count()).select_from(model)).scalar_one())

    def status(self) -> str:
        with session_scope(self.rt.engine) as session:
            found = session.get(Subscriber, self.subscriber_id)
            assert found is not None
            return str(found.status)

    def written(self) -> tuple[int, int, int, int, str]:
        """Everything a webhook request could write."""
        return (
            self.count(DeliveryEventRecord),
            self.count(ConsentEvent),
            self.count(Suppression),
            self.count(WebhookReplay),
            self.status(),
        )


SiteT = TypeVar("SiteT", bound=WebhookSite)


def seed_sent_delivery(engine: Engine, **delivery: Any) -> tuple[int, int]:
    """Add Ada and this week's sent edition with her sent copy of it (``delivery``:
    more fields of that row, e.g. ``provider_id``); return her id and the row's."""
    with session_scope(engine) as session:
        subscriber = add(session, email=ADA, now=NOW - timedelta(days=90)).subscriber
        edition = Edition(key=KEY, status=EditionStatus.sent, cutoff=NOW, composed_at=NOW)
        session.add(edition)
        session.flush()
        assert edition.id is not None and subscriber.id is not None
        row = Delivery(
            edition_id=edition.id,
            subscriber_id=subscriber.id,
            state=DeliveryState.sent,
            updated_at=NOW,
            **delivery,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        return subscriber.id, row.id


def open_site(
    site_class: type[SiteT], config_path: Path, environ: Mapping[str, str], **delivery: Any
) -> Iterator[SiteT]:
    """Open the app on the config at ``config_path`` over :func:`seed_sent_delivery`."""
    clock = Clock(NOW)
    rt = Runtime.open(config_mod.load(config_path, environ=dict(environ)), clock=clock)
    upgrade(rt.engine)
    subscriber_id, delivery_id = seed_sent_delivery(rt.engine, **delivery)
    with TestClient(create_app(rt), raise_server_exceptions=False) as client:
        yield site_class(rt, client, clock, subscriber_id, delivery_id)
    rt.close()
