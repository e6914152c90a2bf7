"""The operator's desk in a real browser, against the real ``digest serve``.

Headless Debian Chromium through Playwright (see tests/test_browser.py). The
operator signs in, previews the next edition (not composed yet), photographs it at
375 px and 600 px, views it as a reader of one category, sends a test to a
loopback SMTP server (aiosmtpd) and approves the composed edition. Screenshots go
to ``test-artifacts/screenshots/admin-*.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from digest.store.db import make_engine, session_scope
from digest.store.models import Edition
from tests.browser_support import (
    SCREENSHOTS,
    Site,
    html_of,
    wait_for,
)
from tests.smtp_sink import SmtpSink
from tests.support import REPO, write_config

if TYPE_CHECKING:
    from playwright.sync_api import Page

PASSWORD = "desk-password-for-tests"
SAMPLE = json.loads((REPO / "examples/feed.json").read_text("utf-8"))
TITLES = {c["category"]: c["title"] for c in SAMPLE["comparisons"]}
READER = "rae@example.com"  # Research only


class DeskSite(Site):
    """The browser tests' site, with the operator password and an SMTP transport."""

    smtp_port: int = 0

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "DIGEST_ADMIN_PASSWORD": PASSWORD}

    def write_config(self) -> None:
        self.feed.write_bytes((REPO / "examples" / "feed.json").read_bytes())
        write_config(
            self.root,
            site={"base_url": self.base, "allow_insecure_base_url": True},
            feed={"kind": "files", "path": str(self.feed)},
            transport={
                "kind": "smtp",
                "host": "127.0.0.1",
                "port": self.smtp_port,
                "security": "none",
            },
            # The sample's links point at verdicts.example.com (no network here);
            # link checks have their own loopback tests (tests/test_preflight.py).
            preflight={"check_links": False},
        )


def _require_approval(site: Site, key: str) -> None:
    """What the scheduler does under ``require_approval``: mark the edition."""
    engine = make_engine(site.db_url)
    try:
        with session_scope(engine) as session:
            edition = session.execute(select(Edition).where(Edition.key == key)).scalar_one()  # type: ignore[arg-type]
            edition.needs_approval = True
            session.add(edition)
    finally:
        engine.dispose()


def _edition(site: Site) -> Edition:
    engine = make_engine(site.db_url)
    try:
        with session_scope(engine) as session:
            found: Edition = session.execute(select(Edition)).scalar_one()
            return found
    finally:
        engine.dispose()


@pytest.mark.slow
def test_operator_previews_sends_a_test_and_approves(tmp_path: Path, page: Page) -> None:
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with SmtpSink() as sink:
        site = DeskSite(tmp_path, f"sqlite:///{tmp_path / 'digest.db'}")
        site.smtp_port = sink.port
        site.write_config()
        site.digest("init")
        site.digest("fetch")
        site.digest("subscribers", "add", READER, "--category", "Research")
        with site.serve():
            # 1. Deny by default: the desk sends a browser to the login page.
            page.goto(f"{site.base}/admin/editions")
            expect(page.get_by_role("heading", level=1)).to_have_text("Operator sign-in")
            page.get_by_label("Your name").fill("Ada")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Editions")

            # 2. The next edition, not composed yet: preview at both widths.
            page.get_by_role("link", name="Preview").first.click()
            expect(page.get_by_role("heading", level=1)).to_contain_text("not composed yet")
            for width in (375, 600):
                frame = page.frame_locator(f'iframe[title="Preview at {width} px"]')
                for title in TITLES.values():
                    expect(frame.get_by_text(title).first).to_be_visible()
            shots = []
            for width in (375, 600):
                path = SCREENSHOTS / f"admin-preview-{width}.png"
                page.locator(f'iframe[title="Preview at {width} px"]').screenshot(path=str(path))
                shots.append(path)
            page.screenshot(path=str(SCREENSHOTS / "admin-preview-page.png"), full_page=True)
            assert all(p.stat().st_size > 5_000 for p in shots)

            # 3. As a reader of one category: only that category's comparisons.
            page.get_by_label("or subscriber").fill(READER)
            page.get_by_role("button", name="Show").click()
            expect(page.locator("#viewer")).to_contain_text(READER)
            expect(page.locator("#in-copy li")).to_have_count(1)
            expect(page.locator("#in-copy")).to_contain_text(TITLES["Research"])
            frame = page.frame_locator('iframe[title="Preview at 600 px"]')
            expect(frame.get_by_text(TITLES["Research"]).first).to_be_visible()
            for category, title in TITLES.items():
                if category != "Research":
                    expect(frame.get_by_text(title)).to_have_count(0)
            page.screenshot(path=str(SCREENSHOTS / "admin-preview-reader.png"), full_page=True)

            # 4. A test send, found at the loopback SMTP server with [TEST].
            page.get_by_label("To").fill("desk@example.com")
            page.get_by_role("button", name="Send test").click()
            expect(page.get_by_role("status")).to_contain_text("Test sent to desk@example.com")
            received = wait_for("the test message", lambda: sink.handler.messages)
            message = received[0].parsed()
            assert received[0].rcpt_tos == ["desk@example.com"]
            assert str(message["Subject"]).startswith("[TEST] ")
            assert TITLES["Research"] in html_of(message)
            assert TITLES["Infrastructure"] not in html_of(message)

            # 5. Composed under require_approval: the Approve button approves it.
            site.digest("compose")
            key = _edition(site).key
            _require_approval(site, key)
            page.goto(f"{site.base}/admin/editions")
            expect(page.locator(f"#edition-{key}")).to_contain_text("awaiting approval")
            page.get_by_role("button", name=f"Approve {key}").click()
            expect(page.get_by_role("status")).to_have_text(f"Edition {key} approved.")
            page.screenshot(path=str(SCREENSHOTS / "admin-approved.png"), full_page=True)
    edition = _edition(site)
    assert edition.approved_at is not None and edition.approved_by == "Ada (bootstrap session)"
    assert edition.planned_count == 0  # a test send is not a delivery
    assert "Traceback" not in site.server_log()
