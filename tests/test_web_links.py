"""The links in emails: one-click unsubscribe (RFC 8058), the unsubscribe page and
the preferences page, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from digest.delivery import messages
from subscribers.models import ConsentAction, ConsentSource, SubscriberStatus
from subscribers.tokens import Purpose
from tests.test_web_support import Site, open_site


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    yield from open_site(tmp_path, db_url)


def _paths(site: Site, subscriber_id: int) -> tuple[str, str]:
    urls = messages.personal_urls(site.rt, subscriber_id)
    base = "https://digest.test.example"
    return (
        urls["unsubscribe_url"].removeprefix(base),
        urls["preferences_url"].removeprefix(base),
    )


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_unsubscribe_answers_200_without_cookies_or_redirects(
    site: Site, encoding: str
) -> None:
    reader = site.confirmed("one@example.com")
    unsubscribe, _ = _paths(site, reader)
    site.client.cookies.clear()
    body = {"List-Unsubscribe": "One-Click"}
    kwargs = (
        {"data": body}
        if encoding == "urlencoded"
        else {"files": {"List-Unsubscribe": (None, "One-Click")}}
    )
    for _ in range(2):  # repeating it is harmless
        response = site.client.post(unsubscribe, follow_redirects=False, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200 and not response.history
        assert "set-cookie" not in response.headers
        assert "You are unsubscribed" in response.text
    subscriber = site.subscriber("one@example.com")
    assert subscriber is not None and subscriber.status == SubscriberStatus.unsubscribed
    assert [s.reason for s in site.suppressions()] == ["unsubscribed"]
    unsubscribed = [e for e in site.events() if e.action == ConsentAction.unsubscribed]
    assert [e.source for e in unsubscribed] == [ConsentSource.one_click]


def test_the_unsubscribe_page_changes_nothing_until_its_button(site: Site) -> None:
    reader = site.confirmed("page@example.com")
    unsubscribe, _ = _paths(site, reader)
    before = site.snapshot()
    for _ in range(5):
        page = site.client.get(unsubscribe)
        assert page.status_code == 200 and 'name="confirm"' in page.text
    assert site.snapshot() == before
    done = site.client.post(unsubscribe, data={"confirm": "1"}, follow_redirects=False)
    assert done.status_code == 200
    (event,) = [e for e in site.events() if e.action == ConsentAction.unsubscribed]
    assert event.source == ConsentSource.link
    assert "already unsubscribed" in site.client.get(unsubscribe).text


def test_bad_tokens_on_every_link_get_one_generic_page_and_change_nothing(site: Site) -> None:
    reader = site.confirmed("tok@example.com")
    unsubscribe, preferences = _paths(site, reader)
    signer = site.rt.signer()
    confirm = signer.sign(Purpose.confirm, reader)
    bad = [
        unsubscribe[:-2] + ("AA" if not unsubscribe.endswith("AA") else "BB"),
        preferences.replace(f"/p/{reader}.", f"/p/{reader + 1}."),
        "/u/" + preferences.removeprefix("/p/"),  # wrong purpose
        "/p/" + unsubscribe.removeprefix("/u/"),
        f"/u/{confirm}",
        f"/p/{confirm}",
        "/u/x",
        "/p/%00",
    ]
    before = site.snapshot()
    bodies = set()
    for path in bad:
        for method, data in (("GET", None), ("POST", {"List-Unsubscribe": "One-Click"})):
            response = site.client.request(method, path, data=data)
            assert response.status_code in (400, 404), path
            if response.status_code == 400:
                bodies.add(response.content)
    assert len(bodies) == 1
    assert site.snapshot() == before


def test_preferences_show_feed_categories_and_save_categories_and_pause(site: Site) -> None:
    site.fetch()
    reader = site.confirmed("prefs@example.com")
    _, preferences = _paths(site, reader)
    page = site.client.get(preferences)
    assert page.status_code == 200
    assert "No topic chosen: you get all of them." in page.text
    assert 'value="Research"' in page.text and "Not paused." in page.text
    assert 'href="/u/' in page.text  # a fresh unsubscribe link
    saved = site.client.post(
        preferences,
        data={"categories": ["Research", "Made Up"], "pause_weeks": "4"},
        follow_redirects=False,
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    subscriber = site.subscriber("prefs@example.com")
    assert subscriber is not None
    assert subscriber.categories == ["Research"]
    assert subscriber.paused_until == site.clock.now + timedelta(weeks=4)
    (event,) = [e for e in site.events() if e.action == ConsentAction.preferences_changed]
    assert event.source == ConsentSource.link
    assert json.loads(event.detail) == {"categories": ["Research"], "pause_weeks": 4}
    assert "Paused until 21 December 2026." in saved.text

    site.clock.advance(days=3)  # saving again with "keep" leaves the pause's end alone
    kept = site.client.post(preferences, data={"categories": [], "pause_weeks": "keep"})
    assert kept.status_code == 200
    subscriber = site.subscriber("prefs@example.com")
    assert subscriber is not None and subscriber.categories == []
    assert subscriber.paused_until == site.clock.now - timedelta(days=3) + timedelta(weeks=4)
    site.client.post(preferences, data={"pause_weeks": "0"})
    subscriber = site.subscriber("prefs@example.com")
    assert subscriber is not None and subscriber.paused_until is None
