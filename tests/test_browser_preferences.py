"""The time-zone select on the preferences page, in a real browser against the real
``digest serve`` (headless Chromium through Playwright; skipped with the reason where
it cannot run, failed under ``CI=true``), SQLite and PostgreSQL.

The browser's zone is emulated (Playwright ``timezone_id``); the page's own CSP
applies (no bypass), so the inline script runs only because its hash is allowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from digest import config
from digest.config.runtime import Runtime
from digest.store.db import session_scope
from subscribers import repository
from subscribers.tokens import Purpose
from tests.browser_support import Site
from tests.support import REPO, write_config

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

NOT_SET = "Not set (the site's time: Europe/Berlin)"


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    """A served site with local delivery on; readers are added with :func:`_reader`."""
    site = Site(tmp_path, db_url)
    site.feed.write_bytes((REPO / "examples" / "feed.json").read_bytes())
    write_config(
        site.root,
        site={"base_url": site.base, "allow_insecure_base_url": True},
        feed={"kind": "files", "path": str(site.feed)},
        schedule={"day": "mon", "time": "09:00", "local_delivery": True},
    )
    site.digest("init")
    with site.serve():
        yield site


def _reader(site: Site, email: str) -> str:
    """Add a reader without a time zone; return their preferences page's URL."""
    rt = Runtime.open(config.load(site.config, environ=site.env))
    try:
        with session_scope(rt.engine) as session:
            added = repository.add(session, email=email, now=rt.now())
            subscriber_id = added.subscriber.id
        assert subscriber_id is not None
        return f"{site.base}/p/{rt.signer().sign(Purpose.preferences, subscriber_id)}"
    finally:
        rt.close()


def _page(browser: Browser, *, javascript: bool) -> Page:
    context = browser.new_context(timezone_id="Asia/Tokyo", java_script_enabled=javascript)
    context.set_default_timeout(10_000)
    return context.new_page()


def _selected_label(page: Page) -> str:
    return str(page.eval_on_selector("#time_zone", "s => s.options[s.selectedIndex].text"))


@pytest.mark.slow
def test_the_browsers_zone_is_preselected_and_saved(site: Site, browser: Browser) -> None:
    url = _reader(site, "ada@example.com")
    page = _page(browser, javascript=True)
    try:
        page.goto(url)
        assert page.input_value("#time_zone") == "Asia/Tokyo"
        assert page.is_visible("#time-zone-detected")
        hint = page.inner_text("#time-zone-hint")
        assert hint == "The digest arrives at 09:00 Monday your time."
        page.click("button[type=submit]")
        assert page.inner_text("p.notice") == "Saved."
        assert site.subscriber("ada@example.com").time_zone == "Asia/Tokyo"
        assert page.input_value("#time_zone") == "Asia/Tokyo"  # now from the server
        assert not page.is_visible("#time-zone-detected")
    finally:
        page.context.close()


@pytest.mark.slow
def test_without_javascript_the_select_stays_not_set(site: Site, browser: Browser) -> None:
    url = _reader(site, "bob@example.com")
    page = _page(browser, javascript=False)
    try:
        page.goto(url)
        assert page.input_value("#time_zone") == ""
        assert _selected_label(page) == NOT_SET
        page.click("button[type=submit]")
        assert page.inner_text("p.notice") == "Saved."
        assert site.subscriber("bob@example.com").time_zone == ""
    finally:
        page.context.close()


@pytest.mark.slow
def test_an_unknown_zone_is_refused_and_nothing_is_saved(site: Site, browser: Browser) -> None:
    url = _reader(site, "cy@example.com")
    page = _page(browser, javascript=True)
    try:
        page.goto(url)
        # A forged value: the Tokyo option made to post a zone nobody knows.
        page.eval_on_selector(
            "#time_zone option[value='Asia/Tokyo']", "o => { o.value = 'Mars/Olympus'; }"
        )
        page.select_option("#time_zone", "Mars/Olympus")
        page.select_option("#pause", "2")
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.click("button[type=submit]")
        assert posted.value.status == 400
        problem = page.inner_text("p.problem")
        assert problem.startswith("Nothing was saved: unknown time zone 'Mars/Olympus'")
        assert page.locator("p.notice").count() == 0
        reader = site.subscriber("cy@example.com")
        assert reader.time_zone == "" and reader.paused_until is None  # the pause neither
    finally:
        page.context.close()
