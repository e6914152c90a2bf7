"""A reader's whole life in a real browser, against the real ``digest serve``.

Headless Debian Chromium (``/usr/bin/chromium``) driven by Playwright's sync API;
the server and the weekly job are the ``digest`` command in subprocesses, on a
config in ``tmp_path`` (outbox transport, a copy of the sample feed, ``[site]
base_url`` = the local server, so the links in emails work as they are).

Without Chromium or the ``playwright`` package these tests skip with the reason;
with ``CI=true`` they fail instead: CI must not skip them silently.

Screenshots of every page, at 375 px and 1280 px wide (full page), go to
``test-artifacts/screenshots/<step>-<width>.png`` (git-ignored) from the SQLite
run; the PostgreSQL run walks the same pages without writing them again.
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from digest import config as config_mod
from digest import pipeline
from digest.config.runtime import Runtime
from subscribers.models import SubscriberStatus
from tests.browser_support import (
    SCREENSHOTS,
    Shooter,
    Site,
    html_of,
    text_of,
    wait_for,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SAMPLE = json.loads((Path(__file__).parent.parent / "examples/feed.json").read_text("utf-8"))
TITLES = {c["category"]: c["title"] for c in SAMPLE["comparisons"]}
CHOSEN = "Research"
READER = "ada@example.com"  # signs up in the browser, chooses Research only
OTHER = "bob@example.com"  # added by the operator, chooses nothing: gets everything
NEXT_WEEK_TITLE = "Owl Reader vs Finch Notes (next week's sample)"


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # ``browser`` is tests/conftest.py's. 800 px high, not 900: the screenshots'
    # size. The real CSP applies (no bypass): the pages must work without scripts of ours.
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Site:
    site = Site(tmp_path, db_url)
    site.write_config()
    return site


# --- the walk ------------------------------------------------------------------------


@pytest.mark.slow
def test_reader_signs_up_chooses_a_topic_gets_only_it_and_unsubscribes(
    site: Site, page: Page, db_url: str
) -> None:
    """sign-up form → confirmation email → confirm page → POST → preferences → one
    category → the digest holds only that category → unsubscribe link → page →
    button → no further email.

    "No further email" is proven with a real next edition: a digest is one per ISO
    week and the ``digest`` command has no clock setting, so after the unsubscribe
    the test adds a new Research comparison to the feed file and runs the weekly
    job in-process (``pipeline.run``, the code ``digest run`` calls) on a
    ``Runtime`` whose clock is seven days later. That edition goes to the other
    reader and writes nothing for the unsubscribed one (who would have wanted a
    Research comparison). The real ``digest run`` of this week, run again, writes
    nothing at all.
    """
    from playwright.sync_api import expect

    shoot = Shooter(SCREENSHOTS if db_url.startswith("sqlite") else None)
    site.digest("init")
    site.digest("fetch")  # the categories the forms offer come from the feed
    site.digest("subscribers", "add", OTHER, "--name", "Bob")  # the operator's reader: active
    base = site.base

    with site.serve():
        # 1. The sign-up form, filled in and submitted as a person would.
        page.goto(f"{base}/subscribe")
        expect(page.get_by_role("heading", level=1)).to_have_text("Subscribe to Test Weekly")
        shoot(page, "01-subscribe")
        page.get_by_label("Email address").fill(READER)
        page.get_by_label("Your name").fill("Ada")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
        shoot(page, "02-check-inbox")

        # 2. The confirmation email in the outbox; its link works as it is.
        mail = wait_for("the confirmation email", lambda: site.mails("transactional").get(READER))
        assert mail["List-Unsubscribe"] is None  # transactional, not a digest
        confirm_url = site.link(mail, "confirm")
        assert site.subscriber(READER).status == SubscriberStatus.pending

        # 3. The confirm page: a button; the GET changed nothing.
        page.goto(confirm_url)
        expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your subscription")
        shoot(page, "03-confirm")
        assert site.subscriber(READER).status == SubscriberStatus.pending

        # 4. The button (POST) confirms.
        page.get_by_role("button", name="Confirm subscription").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("You are subscribed")
        shoot(page, "04-confirmed")
        assert site.subscriber(READER).status == SubscriberStatus.active

        # 5. On to the preferences page; choose exactly one topic; save.
        page.get_by_role("link", name="your preferences page").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Your email preferences")
        boxes = page.get_by_role("checkbox")
        expect(boxes).to_have_count(len(TITLES))
        for category in TITLES:
            expect(page.get_by_label(category)).not_to_be_checked()
        shoot(page, "05-preferences")
        page.get_by_label(CHOSEN).check()
        page.get_by_role("button", name="Save preferences").click()
        expect(page.get_by_role("status")).to_have_text("Saved.")
        for category in TITLES:
            box = expect(page.get_by_label(category))
            box.to_be_checked() if category == CHOSEN else box.not_to_be_checked()
        shoot(page, "06-preferences-saved")
        assert site.subscriber(READER).categories == [CHOSEN]

        # 6. The weekly job: this week's edition holds every category; the reader's
        #    copy holds only Research, the other reader's all of them.
        site.digest("run")
        (edition,) = site.edition_folders()
        digests = site.mails(edition)
        assert set(digests) == {READER, OTHER}
        for title in TITLES.values():
            escaped = html.escape(title, quote=False)
            assert title in text_of(digests[OTHER]) and escaped in html_of(digests[OTHER])
            wanted = title == TITLES[CHOSEN]
            assert (title in text_of(digests[READER])) is wanted, title
            assert (escaped in html_of(digests[READER])) is wanted, title

        # 7. The public archive lists the edition; its web version holds all of it.
        page.goto(f"{base}/archive")
        expect(page.get_by_role("heading", level=1)).to_have_text("Past editions")
        shoot(page, "07-archive")
        page.locator(f'a[href="/archive/{edition}"]').click()
        page.wait_for_url(f"{base}/archive/{edition}")
        for title in TITLES.values():
            expect(page.get_by_text(title).first).to_be_visible()
        shoot(page, "08-archive-edition")

        # 8. The unsubscribe link in the digest's footer (the same URL as the
        #    List-Unsubscribe header): a page with a button; the GET changes nothing.
        unsubscribe_url = site.link(digests[READER], "u")
        assert digests[READER]["List-Unsubscribe"] == f"<{unsubscribe_url}>"
        page.goto(unsubscribe_url)
        expect(page.get_by_role("heading", level=1)).to_have_text("Unsubscribe")
        shoot(page, "09-unsubscribe")
        assert site.subscriber(READER).status == SubscriberStatus.active
        page.get_by_role("button", name="Unsubscribe").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
        shoot(page, "10-unsubscribed")

    assert site.subscriber(READER).status == SubscriberStatus.unsubscribed
    assert site.suppression(READER) is not None
    assert "Traceback" not in site.server_log()

    # 9. No further email: this week's job again writes nothing; next week's
    #    edition goes to the other reader only.
    before = site.eml_files()
    assert "nothing new" in site.digest("run").stdout.lower()
    assert site.eml_files() == before
    report = _run_next_week(site)
    assert report.ok and report.send is not None and report.send.finished
    (_, following) = site.edition_folders()
    assert following != edition
    later = site.mails(following)
    assert set(later) == {OTHER}
    assert NEXT_WEEK_TITLE in text_of(later[OTHER])
    assert not [p for p in site.eml_files() - before if READER in p.name]

    if shoot.folder is not None:
        assert len(shoot.written) == 20
        print(f"\nscreenshots: {shoot.folder}")


def _run_next_week(site: Site) -> pipeline.RunReport:
    """Add a Research comparison to the feed, then run the weekly job in-process
    with a clock a week ahead (the same ``pipeline.run`` as ``digest run``)."""
    feed = json.loads(site.feed.read_text("utf-8"))
    research = next(c for c in feed["comparisons"] if c["category"] == CHOSEN)
    now = datetime.now(UTC)
    fresh = {
        **research,
        "id": "owl-reader-vs-finch-notes",
        "url": "https://verdicts.example.com/compare/owl-reader-vs-finch-notes",
        "title": NEXT_WEEK_TITLE,
        "published_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    fresh.pop("updated_at", None)
    feed["comparisons"].append(fresh)
    site.feed.write_text(json.dumps(feed), encoding="utf-8")

    later = now + timedelta(days=7)
    rt = Runtime.open(config_mod.load(site.config, environ=site.env), clock=lambda: later)
    try:
        # Its own thread: Playwright's sync API owns this thread's event loop.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(lambda: asyncio.run(pipeline.run(rt))).result(timeout=60)
    finally:
        rt.close()


# --- every page at 375 px --------------------------------------------------------------


PAGE_FACTS = """() => {
  const visible = (el) => {
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    return box.width > 0 && box.height > 0 && style.visibility !== "hidden"
      && style.display !== "none" && el.textContent.trim() !== "";
  };
  return {
    scrollWidth: document.documentElement.scrollWidth,
    lang: document.documentElement.getAttribute("lang") || "",
    title: document.title.trim(),
    h1: Array.from(document.querySelectorAll("h1")).some(visible),
  };
}"""


@pytest.mark.slow
def test_every_page_fits_375px_and_has_lang_title_and_h1(tmp_path: Path, browser: Browser) -> None:
    """Every page a reader can reach, at 375 px: no horizontal scroll, an
    ``<html lang>``, a ``<title>``, a visible ``<h1>`` (SQLite: the pages do not
    depend on the backend)."""
    from playwright.sync_api import expect

    site = Site(tmp_path, f"sqlite:///{tmp_path / 'digest.db'}")
    site.write_config()
    site.digest("init")
    problems: list[str] = []
    seen: list[str] = []
    context = browser.new_context(viewport={"width": 375, "height": 700})
    context.set_default_timeout(10_000)
    page = context.new_page()

    def check(name: str) -> None:
        facts: dict[str, Any] = page.evaluate(PAGE_FACTS)
        seen.append(name)
        if facts["scrollWidth"] > 375:
            problems.append(f"{name}: scrolls sideways ({facts['scrollWidth']} px wide)")
        if not facts["lang"]:
            problems.append(f"{name}: no <html lang>")
        if not facts["title"]:
            problems.append(f"{name}: no <title>")
        if not facts["h1"]:
            problems.append(f"{name}: no visible <h1>")

    base = site.base
    try:
        with site.serve():
            page.goto(f"{base}/subscribe")
            check("subscribe")
            page.get_by_label("Email address").fill(READER)
            page.get_by_role("button", name="Subscribe").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
            check("check-inbox")
            mail = wait_for("the confirmation", lambda: site.mails("transactional").get(READER))
            page.goto(site.link(mail, "confirm"))
            check("confirm")
            page.get_by_role("button", name="Confirm subscription").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("You are subscribed")
            check("confirmed")
            page.get_by_role("link", name="your preferences page").click()
            check("preferences")
            page.get_by_role("button", name="Save preferences").click()
            expect(page.get_by_role("status")).to_have_text("Saved.")
            check("preferences-saved")

            site.digest("run")  # fetch, compose, send: an edition for the archive
            (edition,) = site.edition_folders()
            digest_mail = site.mails(edition)[READER]
            page.goto(f"{base}/archive")
            check("archive")
            page.goto(f"{base}/archive/{edition}")
            check("archive-edition")
            page.goto(f"{base}/links")
            check("links")
            page.goto(site.link(digest_mail, "u"))
            check("unsubscribe")
            page.get_by_role("button", name="Unsubscribe").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
            check("unsubscribed")
            page.goto(f"{base}/u/not-a-token")
            check("bad-link")
            page.goto(f"{base}/no-such-page")
            check("not-found")
    finally:
        context.close()
    assert len(seen) == 13
    assert not problems, "\n".join(problems)
