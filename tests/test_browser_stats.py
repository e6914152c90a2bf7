"""The editors' statistics on the desk (issue 16, "The editors see it"): the pages
and CSV downloads over HTTP (the app in process), then in a real browser against
the real ``digest serve``.

Headless Debian Chromium through Playwright (tests/browser_support.py). A viewer
(the least role) signs in with password and TOTP, enrolling from the page; the
counts are written straight into the database first (the click and webhook code
that fills those tables is tested on its own). The page must show the trend charts
as inline SVG (no script runs: the desk's CSP forbids it) with the seeded numbers
in the table beside them, in the charts' ``<title>``s and printed on the bars.

Screenshots of each step go to the test's tmp folder; with
``DIGEST_UPDATE_SCREENSHOTS=1`` the page is also saved as ``docs/images/stats.png``
(committed, shown in docs/OPERATOR_DESK.md).
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from digest.desk import operators
from digest.engagement import stats
from digest.store.db import make_engine, session_scope
from digest.web.app import create_app
from tests.browser_support import Shooter, Site, wait_for
from tests.desk_support import desk_runtime, sign_in_as
from tests.support import REPO
from tests.test_stats import (
    FORMULA,
    T0,
    comparison,
    counts,
    deliveries,
    edition,
    readers,
    scenario,
    seen,
    vote,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

VIEWER, PASSWORD = "viewer@example.com", "viewer-password-for-tests"
DOC_SHOT = REPO / "docs" / "images" / "stats.png"


def seed(site: Site) -> None:
    """The editions of tests/test_stats.py's scenario (W45, W46 sent; W44 cancelled,
    W47 composed), ten weeks of history before them (2026-W34 to W43, a few hundred
    readers), and a viewer."""
    engine = make_engine(site.db_url)
    try:
        scenario(engine)
        with session_scope(engine) as s:
            comparison(s, "cmp-h", "Coding agents, compared", [("tool", "Tool")])
            people = readers(s, 260, start=100)
            for week in range(10):
                key = f"2026-W{34 + week}"
                eid = edition(s, key, T0 - timedelta(weeks=11 - week), ["cmp-h"])
                sent = 160 + 10 * week
                deliveries(s, eid, sent=people[:sent])
                seen(s, key, 30 + (7 * week) % 23)
                counts(s, key, {("cmp-h", "c", "click"): 50 + 3 * week})
                for i in range(4 + week % 4):
                    choice = "skip" if i % 3 == 2 else "ship"
                    vote(s, "cmp-h", "tool", choice, key, people[10 * week + i])
            operators.add(
                s, email=VIEWER, role="viewer", password=PASSWORD, actor="test", via="cli",
                now=T0,
            )  # fmt: skip
    finally:
        engine.dispose()


def sign_in(page: Page, site: Site) -> None:
    """Password, then enrolment: the secret read from the page, the current code."""
    from playwright.sync_api import expect

    page.goto(f"{site.base}/admin/login")
    page.get_by_label("Email").fill(VIEWER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Set up your authenticator")
    secret = "".join(page.locator("#totp-secret").inner_text().split())
    # A code in the last second of its step may be stale when it arrives: wait it out.
    wait_for("a fresh TOTP step", lambda: time.time() % operators.STEP_SECONDS < 25)
    page.get_by_label("Code").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Confirm and sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Editions")


@pytest.mark.slow
def test_a_viewer_sees_the_trends_and_one_edition(tmp_path: Path, page: Page) -> None:
    from playwright.sync_api import expect

    site = Site(tmp_path, f"sqlite:///{tmp_path / 'digest.db'}")
    site.write_config()
    site.digest("init")
    seed(site)
    shots = Shooter(tmp_path / "screenshots")
    with site.serve():
        sign_in(page, site)
        page.get_by_role("navigation", name="Desk").get_by_role("link", name="Statistics").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Statistics")
        charts = page.locator("#trends svg[role=img]")
        expect(charts).to_have_count(3)
        for name in ("Sent and unique clicks per edition", "Readers' votes per edition"):
            expect(page.get_by_role("img", name=name)).to_be_visible()
        sent = page.locator("#chart-sent")
        expect(sent.locator("title", has_text="2026-W46: sent 3")).to_have_count(1)
        expect(sent.locator("title", has_text="2026-W43: unique clicks 47")).to_have_count(1)
        expect(page.locator("#chart-rate text", has_text="75.0%")).to_have_count(1)
        rows = page.locator("#trend-table tbody tr")
        expect(rows).to_have_count(12)
        expect(rows.first).to_contain_text("2026-W34")
        w45 = page.locator("#trend-2026-W45")
        for cell in ("6", "4", "2", "1", "3", "75.0%", "11"):
            expect(w45.get_by_role("cell", name=cell, exact=True).first).to_be_visible()
        expect(page.locator("#trend-2026-W43")).to_contain_text("250")
        expect(page.locator("#trend-2026-W44")).to_have_count(0)  # cancelled
        expect(page.get_by_role("heading", name="Latest edition: 2026-W46")).to_be_visible()
        expect(page.locator("#links")).to_contain_text("Left out")
        assert page.evaluate("document.scripts.length") == 0
        shots(page, "stats")
        if os.environ.get("DIGEST_UPDATE_SCREENSHOTS") == "1":
            DOC_SHOT.parent.mkdir(parents=True, exist_ok=True)
            page.set_viewport_size({"width": 1280, "height": 900})
            page.screenshot(path=str(DOC_SHOT), full_page=True)

        # One edition: its figures, each comparison and tool, escaped as text.
        w45.get_by_role("link", name="2026-W45").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Statistics of 2026-W45")
        figures = page.locator("#figures")
        expect(figures.get_by_role("row", name="Click rate")).to_contain_text("75.0%")
        expect(figures.get_by_role("row", name="Bounced")).to_contain_text("1 hard, 1 soft")
        expect(figures.get_by_role("row", name="Opens")).to_contain_text("12")
        links = page.locator("#comparison-cmp-a")
        expect(links.get_by_role("row").first).to_contain_text("Agents & <Co>")
        expect(links.get_by_role("row", name="Alpha")).to_contain_text("3")
        shots(page, "stats-edition")
        answer = page.request.get(f"{site.base}/admin/stats/2026-W45.csv")
        assert answer.status == 200
        assert answer.headers["content-disposition"].startswith("attachment")
        assert "2026-W45,cmp-a,Agents & <Co>,c,,,7,," in answer.text()
    assert all(p.stat().st_size > 10_000 for p in shots.written), shots.written


def test_the_desk_pages_and_downloads_for_a_viewer(tmp_path: Path) -> None:
    rt = desk_runtime(tmp_path)
    scenario(rt.engine)
    with TestClient(create_app(rt), follow_redirects=False) as client:
        assert client.get("/admin/stats.csv").status_code == 401
        sign_in_as(client, rt, "viewer")
        page = client.get("/admin/stats")
        assert page.status_code == 200 and "<script" not in page.text
        assert page.text.count('role="img"') == 3 and "Latest edition: 2026-W46" in page.text
        one = client.get("/admin/stats/2026-W45")
        assert "Agents &amp; &lt;Co&gt;" in one.text and "<Co>" not in one.text
        assert "75.0%" in one.text and 'href="/admin/stats/2026-W45.csv"' in one.text
        links = client.get("/admin/stats/2026-W45.csv")
        where = 'attachment; filename="stats-2026-W45.csv"'
        assert (links.status_code, links.headers["content-disposition"]) == (200, where)
        assert "'" + FORMULA.replace('"', '""') in links.text
        with Session(rt.engine) as s:
            assert client.get("/admin/stats.csv").text == stats.to_csv(stats.trends(s))
        missing = client.get("/admin/stats/2026-W01")
        assert missing.status_code == 404 and "there is no edition" in missing.text
        assert client.get("/admin/stats/2026-W01.csv").status_code == 404
    rt.close()
