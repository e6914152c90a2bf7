"""The editor's desk in a real browser, against the real ``digest serve`` (issue 15,
"Done means" 4).

Headless Debian Chromium through Playwright (see tests/browser_support.py). Two
operators made with ``digest operators add``, no shared DIGEST_ADMIN_PASSWORD. The
editor signs in (password, then enrols an authenticator from the QR code), finds a
reader, leaves a comparison out of the edition, writes a Markdown note and previews
it at 375 px and 600 px. A viewer then signs in on the same browser: no Approve or
Save buttons, and an approval posted with the viewer's session and a valid CSRF
token is refused with 403. The editor signs in again (a fresh code, no QR) and
approves. Screenshots go to ``test-artifacts/screenshots/editor-*.png``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pyotp
import pytest
from sqlalchemy import select
from sqlmodel import Session

from digest.store import audit
from digest.store.db import make_engine, session_scope
from digest.store.models import Edition
from tests.browser_support import SCREENSHOTS, Site, wait_for
from tests.support import REPO, write_config

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

EDITOR = "editor@example.com"
VIEWER = "viewer@example.com"
PASSWORDS = {EDITOR: "editor-password-for-tests", VIEWER: "viewer-password-for-tests"}
SAMPLE = json.loads((REPO / "examples/feed.json").read_text("utf-8"))
TITLES = {c["category"]: c["title"] for c in SAMPLE["comparisons"]}
LEFT_OUT = TITLES["Infrastructure"]
KEPT = [title for category, title in TITLES.items() if category != "Infrastructure"]
READER, OTHER_READER = "rae.research@example.com", "sam@example.com"
NOTE = (
    "**Bold verdicts** this week, and a word on method: "
    "read [how we compare](https://verdicts.example.com/method)."
)
STEP = 30  # seconds of one TOTP code (digest.desk.operators.STEP_SECONDS)


class OperatorSite(Site):
    """The browser tests' site without any shared desk credential (operators only),
    with link checks off (the sample's links lead nowhere here), and the ``digest``
    command with standard input."""

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env.pop("DIGEST_ADMIN_PASSWORD", None)
        env.pop("DIGEST_ADMIN_TOKEN", None)
        return env

    def write_config(self) -> None:
        self.feed.write_bytes((REPO / "examples" / "feed.json").read_bytes())
        write_config(
            self.root,
            site={"base_url": self.base, "allow_insecure_base_url": True},
            feed={"kind": "files", "path": str(self.feed)},
            preflight={"check_links": False},
        )

    def digest_with_input(self, given: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Like :meth:`Site.digest`, with ``given`` on standard input; must exit 0."""
        result = subprocess.run(
            [sys.executable, "-m", "digest", "--config", str(self.config), *args],
            input=given,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        assert result.returncode == 0, f"digest {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result


def _edition(site: Site) -> Edition:
    engine = make_engine(site.db_url)
    try:
        with session_scope(engine) as session:
            found: Edition = session.execute(select(Edition)).scalar_one()
            return found
    finally:
        engine.dispose()


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


def _audit(site: Site, key: str) -> list[tuple[str, str, str, str]]:
    """``(actor, via, action, detail)`` of the edition's audit entries, oldest first."""
    engine = make_engine(site.db_url)
    try:
        with Session(engine) as session:
            events = audit.recent(session, target=f"edition:{key}")
            return [(e.actor, e.via, e.action, e.detail) for e in reversed(events)]
    finally:
        engine.dispose()


class Authenticators:
    """The operators' authenticator apps: the secret read at enrolment, and the step
    of the last code used (a code is accepted once: the next sign-in waits for a
    newer one, as a person would)."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.used: dict[str, int] = {}

    def code(self, email: str) -> str:
        last = self.used.get(email, -1)
        step = wait_for(
            f"a TOTP code newer than step {last}",
            lambda: (now := int(time.time()) // STEP) > last and now,
            timeout=STEP + 5,
        )
        self.used[email] = step
        return str(pyotp.TOTP(self.secrets[email]).at(step * STEP))


def _sign_in(page: Page, site: Site, email: str, apps: Authenticators, *, shot: str = "") -> None:
    """Email and password, then the code: at the first sign-in from the enrolment
    page (its QR code visible, its secret read from the page)."""
    from playwright.sync_api import expect

    page.goto(f"{site.base}/admin/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Operator sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORDS[email])
    page.get_by_role("button", name="Continue").click()
    heading = page.get_by_role("heading", level=1)
    if email not in apps.secrets:
        expect(heading).to_have_text("Set up your authenticator")
        qr = page.get_by_role("img", name="QR code for your authenticator app")
        expect(qr).to_be_visible()
        assert (qr.get_attribute("src") or "").startswith("data:image/svg+xml")
        box = qr.bounding_box()
        assert box is not None and box["width"] >= 200 and box["height"] >= 200
        secret = "".join(page.locator("#totp-secret").inner_text().split())
        assert len(secret) >= 16 and secret.isalnum(), secret
        apps.secrets[email] = secret
        if shot:
            page.screenshot(path=str(SCREENSHOTS / shot), full_page=True)
        button = "Confirm and sign in"
    else:
        expect(heading).to_have_text("Enter your code")
        expect(page.get_by_role("img", name="QR code for your authenticator app")).to_have_count(0)
        expect(page.locator("#totp-secret")).to_have_count(0)
        button = "Sign in"
    expect(page.locator("main")).to_contain_text(f"Signing in as {email}")
    page.get_by_label("Code").fill(apps.code(email))
    page.get_by_role("button", name=button, exact=True).click()
    expect(heading).to_have_text("Editions")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def _sign_out(page: Page) -> None:
    from playwright.sync_api import expect

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Operator sign-in")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)


@pytest.mark.slow
def test_editor_edits_previews_and_approves_and_a_viewer_cannot(
    tmp_path: Path, page: Page, browser: Browser
) -> None:
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    site = OperatorSite(tmp_path, f"sqlite:///{tmp_path / 'digest.db'}")
    site.write_config()
    site.digest("init")
    site.digest("fetch")
    site.digest("compose")
    site.digest("subscribers", "add", READER, "--name", "Rae", "--category", "Research")
    site.digest("subscribers", "add", OTHER_READER)
    key = _edition(site).key
    _require_approval(site, key)
    for email, role in ((EDITOR, "editor"), (VIEWER, "viewer")):
        added = site.digest_with_input(
            PASSWORDS[email] + "\n", "operators", "add", email, "--role", role, "--password-stdin"
        )
        assert f"Added operator {email} ({role})" in added.stdout
    apps = Authenticators()
    with site.serve():
        # 1. The editor signs in: password, then enrolment from the QR code.
        _sign_in(page, site, EDITOR, apps, shot="editor-enrol.png")
        expect(page.locator(f"#edition-{key}")).to_contain_text("awaiting approval")

        # 2. Finds a reader by part of the address and opens their record.
        page.get_by_role("navigation", name="Desk").get_by_role("link", name="Readers").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Readers")
        page.get_by_label("Address or name").fill("rae.res")
        page.get_by_role("button", name="Search").click()
        table = page.locator("#readers")
        expect(table.get_by_role("link", name=READER)).to_be_visible()
        expect(table).not_to_contain_text(OTHER_READER)
        table.get_by_role("link", name=READER).click()
        expect(page.get_by_role("heading", level=1)).to_contain_text(READER)
        expect(page.locator("#status")).to_have_text("active")
        record = page.locator("#reader")
        expect(record.get_by_role("row", name="categories")).to_contain_text("Research")
        for section, heading in (("#deliveries", "Deliveries"), ("#consent-log", "Consent log")):
            expect(page.locator(section).get_by_role("heading", level=2)).to_have_text(heading)
        expect(page.locator("#deliveries")).to_contain_text("Nothing sent to this reader yet.")
        expect(page.locator("#consent-log tbody")).to_contain_text("subscribed")
        page.screenshot(path=str(SCREENSHOTS / "editor-reader.png"), full_page=True)

        # 3. Edits the edition: leaves one comparison out, writes a Markdown note.
        page.get_by_role("navigation", name="Desk").get_by_role("link", name="Editions").click()
        page.locator(f"#edition-{key}").get_by_role("link", name="Edit", exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_contain_text(f"Edit {key}")
        for title in TITLES.values():
            expect(page.get_by_role("checkbox", name=f"Keep {title}")).to_be_checked()
        page.get_by_role("checkbox", name=f"Keep {LEFT_OUT}").uncheck()
        page.get_by_label("Note", exact=True).fill(NOTE)
        page.get_by_role("button", name=f"Save {key}").click()
        expect(page.get_by_role("status")).to_contain_text("saved")
        expect(page.get_by_role("checkbox", name=f"Keep {LEFT_OUT}")).not_to_be_checked()
        expect(page.locator("#lineup")).to_contain_text(f"{LEFT_OUT} (excluded)")
        expect(page.get_by_label("Note", exact=True)).to_have_value(NOTE)
        expect(page.locator("#edited-by")).to_have_text(EDITOR)
        page.screenshot(path=str(SCREENSHOTS / "editor-saved.png"), full_page=True)

        # 4. Previews at both widths: the note, without the comparison left out.
        page.get_by_role("link", name="Preview", exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_contain_text(f"Preview of {key}")
        for width in (375, 600):
            frame = page.frame_locator(f'iframe[title="Preview at {width} px"]')
            expect(frame.locator("strong", has_text="Bold verdicts").first).to_be_visible()
            link = frame.get_by_role("link", name="how we compare")
            expect(link).to_be_visible()
            expect(link).to_have_attribute("href", "https://verdicts.example.com/method")
            expect(frame.locator("body")).not_to_contain_text("**")
            for title in KEPT:
                expect(frame.get_by_text(title).first).to_be_visible()
            expect(frame.get_by_text(LEFT_OUT)).to_have_count(0)
        expect(page.locator("#in-copy")).not_to_contain_text(LEFT_OUT)
        shots = []
        for width in (375, 600):
            path = SCREENSHOTS / f"editor-preview-{width}.png"
            page.locator(f'iframe[title="Preview at {width} px"]').screenshot(path=str(path))
            shots.append(path)
        page.screenshot(path=str(SCREENSHOTS / "editor-preview-page.png"), full_page=True)
        assert all(p.stat().st_size > 5_000 for p in shots), [p.stat().st_size for p in shots]

        # 5. A viewer, in a browser of their own: can look, cannot approve or edit.
        editor_page = page
        viewer_context = browser.new_context(viewport={"width": 1280, "height": 900})
        viewer_context.set_default_timeout(10_000)
        page = viewer_context.new_page()
        _sign_in(page, site, VIEWER, apps)
        row = page.locator(f"#edition-{key}")
        expect(row).to_contain_text("awaiting approval")
        expect(page.get_by_role("button", name=f"Approve {key}")).to_have_count(0)
        expect(page.get_by_role("button", name="Compose next edition")).to_have_count(0)
        expect(page.get_by_role("navigation", name="Desk")).not_to_contain_text("Operators")
        row.get_by_role("link", name="Edit (view)").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text(f"Edit {key}")
        expect(page.locator("main form")).to_have_count(0)
        expect(page.get_by_role("button", name=f"Save {key}")).to_have_count(0)
        expect(page.get_by_role("checkbox")).to_have_count(0)
        expect(page.locator("pre#note")).to_have_text(NOTE)
        expect(page.locator("#lineup")).to_contain_text("excluded")
        page.screenshot(path=str(SCREENSHOTS / "editor-viewer-edit.png"), full_page=True)
        # With the viewer's own session and a valid CSRF token (the sign-out form's).
        csrf = page.locator('form[action$="/admin/logout"] input[name="csrf"]').get_attribute(
            "value"
        )
        assert csrf
        answer = page.request.post(
            f"{site.base}/admin/editions/{key}/approve", form={"csrf": csrf}, max_redirects=0
        )
        assert answer.status == 403, answer.text()
        assert "needs the editor role" in answer.text()
        edit = page.request.post(
            f"{site.base}/admin/editions/{key}/edit",
            form={"csrf": csrf, "note": "a viewer's note"},
            max_redirects=0,
        )
        assert edit.status == 403, edit.text()
        unapproved = _edition(site)
        assert unapproved.approved_at is None and unapproved.approved_by in (None, "")
        page.reload()  # the session still works after the refusals
        expect(page.locator("pre#note")).to_have_text(NOTE)
        _sign_out(page)
        viewer_context.close()

        # 6. The editor, still signed in in their browser, approves.
        page = editor_page
        page.goto(f"{site.base}/admin/editions")
        expect(page.locator(f"#edition-{key}")).to_contain_text("awaiting approval")
        page.get_by_role("button", name=f"Approve {key}").click()
        expect(page.get_by_role("status")).to_have_text(f"Edition {key} approved.")
        expect(page.locator(f"#edition-{key}")).to_contain_text(f"by {EDITOR}")
        page.screenshot(path=str(SCREENSHOTS / "editor-approved.png"), full_page=True)

    edition = _edition(site)
    assert edition.approved_at is not None
    assert edition.approved_by == EDITOR
    entries = _audit(site, key)
    edits = [e for e in entries if e[2].startswith("edition.") and e[2] != "edition.approve"]
    assert edits, entries
    assert all(actor == EDITOR and via == "desk" for actor, via, _, _ in edits), entries
    details = " ".join(detail for *_, detail in edits)
    assert LEFT_OUT in details or "exclude" in details, entries
    assert "note" in details, entries
    approvals = [e for e in entries if e[2] == "edition.approve"]
    assert len(approvals) == 1, entries
    assert approvals[0][0] == EDITOR and approvals[0][1] == "desk", entries
    assert entries.index(approvals[0]) > entries.index(edits[-1])  # approved after the edit
    assert not any(VIEWER in e[0] for e in entries), entries
    assert "Traceback" not in site.server_log()
