"""What the webhook route answers to requests it has seen before, and to Mailgun's
late retries (both backends, through the real app and the real Mailgun adapter).

Providers retry any answer that is not 2xx (Mailgun for about 8 hours, Postmark,
SendGrid and Resend for longer) and some disable an endpoint that keeps refusing:
a request or an event already processed is answered 200 and applied once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from digest.store.db import session_scope
from digest.store.models import WebhookReplay
from digest.webhooks.mailgun import DEFAULT_RETRY_WINDOW, ENV_SIGNING_KEY
from subscribers.models import SubscriberStatus
from tests.support import write_config
from tests.test_webhooks_mailgun import SIGNING_KEY, failed, signature_block
from tests.webhook_site import ADA, NOW, WebhookSite, open_site


class Site(WebhookSite):
    def bounce(self, event_id: str = "evt-1", **changes: Any) -> dict[str, Any]:
        """A Mailgun permanent failure of Ada's copy of this week's edition."""
        variables = {"digest_message_id": self.message_id}
        stamp = (NOW - timedelta(hours=3)).timestamp()  # when it bounced: fixed
        return failed(
            id=event_id, timestamp=stamp, recipient=ADA, **{"user-variables": variables}, **changes
        )

    def post(self, event_data: dict[str, Any], signature: dict[str, str]) -> Any:
        body = json.dumps({"signature": signature, "event-data": event_data}).encode()
        headers = {"content-type": "application/json"}
        return self.client.post("/webhooks/mailgun", content=body, headers=headers)


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    path = write_config(tmp_path, webhooks={"providers": ["mailgun"]})
    env = {"DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k", ENV_SIGNING_KEY: SIGNING_KEY}
    yield from open_site(Site, path, env)


def test_the_same_request_again_is_answered_200_and_applied_once(site: Site) -> None:
    signature = signature_block(at=NOW)
    first = site.post(site.bounce(), signature)
    assert first.status_code == 200, first.text
    assert site.status() == SubscriberStatus.bounced
    written = site.written()
    assert written[:4] == (1, 1, 1, 1)
    site.clock.advance(minutes=5)
    again = site.post(site.bounce(), signature)  # the same token: Mailgun's retry
    assert again.status_code == 200, again.text  # was 409, which Mailgun retries
    assert again.json()["replayed"] is True and again.json()["duplicates"] == 1
    assert site.written() == written


def test_a_late_retry_with_a_new_event_id_is_accepted(site: Site) -> None:
    # Our endpoint was down when Mailgun first posted; its retry two hours later
    # carries the first attempt's signature, long past the 5-minute tolerance.
    late = signature_block(at=NOW - timedelta(hours=2))
    response = site.post(site.bounce(), late)
    assert response.status_code == 200, response.text
    assert response.json()["received"] == 1 and response.json()["changed"] == 1
    assert site.status() == SubscriberStatus.bounced
    with session_scope(site.rt.engine) as session:
        [replay] = session.execute(select(WebhookReplay)).scalars()
    # The token stays recorded until the signature could no longer be accepted.
    assert replay.expires_at >= NOW - timedelta(hours=2) + timedelta(seconds=DEFAULT_RETRY_WINDOW)


def test_a_late_replay_of_a_known_event_id_is_answered_200_and_ignored(site: Site) -> None:
    assert site.post(site.bounce(), signature_block(at=NOW)).status_code == 200
    written = site.written()
    site.clock.advance(hours=1)
    # Another signature (a new token) over the same event, an hour old: valid, late,
    # and about an event already applied.
    late = signature_block(at=NOW - timedelta(minutes=10))
    response = site.post(site.bounce(), late)
    assert response.status_code == 200, response.text
    assert response.json()["duplicates"] == 1 and response.json()["changed"] == 0
    assert site.written()[:3] == written[:3]


def test_a_late_retry_with_a_wrong_signature_is_refused(site: Site) -> None:
    forged = signature_block(at=NOW - timedelta(hours=2), key="key-somebody-else")
    assert site.post(site.bounce(), forged).status_code == 401
    assert site.written() == (0, 0, 0, 0, "active")


def test_a_retry_older_than_the_window_is_refused_as_before(site: Site) -> None:
    too_old = signature_block(at=NOW - timedelta(seconds=DEFAULT_RETRY_WINDOW + 60))
    assert site.post(site.bounce(), too_old).status_code == 401
    assert site.written() == (0, 0, 0, 0, "active")


def test_a_token_seen_before_cannot_carry_another_event(site: Site) -> None:
    # Mailgun signs the timestamp and token, not the body: the recorded token is
    # what stops a captured signature from carrying a forged event, for the whole
    # retry window.
    signature = signature_block(at=NOW - timedelta(hours=1))
    assert site.post(site.bounce(), signature).status_code == 200
    written = site.written()
    other = site.bounce("evt-forged", event="complained")
    site.clock.advance(hours=6)
    response = site.post(other, signature)
    assert response.status_code == 200 and response.json()["replayed"] is True
    assert site.written() == written
