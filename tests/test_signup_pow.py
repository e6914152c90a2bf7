"""Issue 13: proof-of-work (self-hosted ALTCHA) and throwaway-domain refusal on sign-up.

The JSON and form tests run the app in-process on SQLite and PostgreSQL, solving
challenges in Python by brute force (SHA-256 of salt + number, as the widget does;
``proof_of_work_max_number`` is kept small). The browser tests run the real
``digest serve`` and Debian's Chromium: the vendored widget loads from our origin,
solves the challenge in its worker, and the form goes through, with no CSP
violation and no request to any other origin. Like tests/test_browser.py they skip
without Chromium or Playwright, and fail instead under ``CI=true``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from digest.web.disposable import is_disposable
from digest.web.proof_of_work import SIGNUP_CSP
from tests import browser_support
from tests.support import REPO, write_config
from tests.test_web_support import Site, open_site

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request

FAILED = "The anti-robot check failed or expired. Please try again."
PERMANENT = "Please use a permanent email address."
MAX_NUMBER = 2000
POW = {"proof_of_work": True, "proof_of_work_max_number": MAX_NUMBER}


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    yield from open_site(tmp_path, db_url, web=POW)


# --- helpers ---------------------------------------------------------------------------


def challenge(site: Site) -> dict[str, Any]:
    response = site.client.get("/subscribe/challenge")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    data: dict[str, Any] = response.json()
    assert data["algorithm"] == "SHA-256" and data["maxNumber"] == MAX_NUMBER
    assert "expires=" in data["salt"]
    return data


def solve(found: dict[str, Any]) -> int:
    """The number the challenge hides, found as a client would."""
    for number in range(MAX_NUMBER + 1):
        digest = hashlib.sha256(f"{found['salt']}{number}".encode()).hexdigest()
        if digest == found["challenge"]:
            return number
    raise AssertionError(f"no solution up to {MAX_NUMBER}")


def encode(payload: Any) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


def payload_for(found: dict[str, Any], number: int, **changes: Any) -> str:
    """The widget's payload (its v1 form: it adds ``took``), with ``changes`` applied."""
    fields = {k: found[k] for k in ("algorithm", "challenge", "salt", "signature")}
    return encode({**fields, "number": number, "took": 12, **changes})


def solution(site: Site) -> str:
    found = challenge(site)
    return payload_for(found, solve(found))


def signup(site: Site, email: str, altcha: str | None) -> Any:
    body = {"email": email} if altcha is None else {"email": email, "altcha": altcha}
    return site.client.post("/subscribe", json=body)


def refused(response: Any, sentence: str = FAILED) -> bool:
    return bool(response.status_code == 400 and response.json()["error"] == sentence)


# --- proof of work: JSON sign-up -------------------------------------------------------


def test_a_solution_is_accepted_once(site: Site) -> None:
    altcha = solution(site)
    first = signup(site, "ada@example.com", altcha)
    assert first.status_code == 200 and first.json() == {"status": "ok"}
    assert [m["To"] for m in site.mails()] == ["ada@example.com"]

    again = signup(site, "bob@example.com", altcha)
    same = signup(site, "ada@example.com", altcha)
    assert refused(again) and refused(same)
    assert site.subscriber("bob@example.com") is None
    assert len(site.mails()) == 1  # no second mail

    fresh = signup(site, "bob@example.com", solution(site))  # a new challenge works
    assert fresh.status_code == 200
    assert [m["To"] for m in site.mails()] == ["ada@example.com", "bob@example.com"]


def test_a_solution_is_accepted_once_across_processes(
    site: Site, tmp_path: Path, db_url: str
) -> None:
    """Another app with its own runtime and engine on the same database (another
    worker process) refuses a solution the first one accepted."""
    altcha = solution(site)
    (tmp_path / "other").mkdir()
    other = open_site(tmp_path / "other", db_url, web=POW)
    second = next(other)
    try:
        assert signup(second, "ada@example.com", altcha).status_code == 200
        assert refused(signup(site, "bob@example.com", altcha))
        assert site.subscriber("bob@example.com") is None
    finally:
        other.close()


def test_an_expired_solution_is_refused(site: Site) -> None:
    early, late = solution(site), solution(site)
    site.clock.advance(minutes=9)
    assert signup(site, "early@example.com", early).status_code == 200
    site.clock.advance(minutes=2)  # 11 minutes: past [web] proof_of_work_minutes = 10
    before = site.snapshot()
    assert refused(signup(site, "late@example.com", late))
    assert site.snapshot() == before
    assert [m["To"] for m in site.mails()] == ["early@example.com"]


@pytest.mark.parametrize(
    "altcha",
    [None, "", "   ", "not base64!", encode([1, 2]), encode("x"), encode({"number": 1})],
    ids=["absent", "empty", "blank", "not-base64", "a-list", "a-string", "no-fields"],
)
def test_a_missing_or_malformed_solution_is_refused(site: Site, altcha: str | None) -> None:
    before = site.snapshot()
    assert refused(signup(site, "ada@example.com", altcha))
    assert site.snapshot() == before and site.mails() == []


def _forged(found: dict[str, Any], number: int) -> str:
    """A challenge with a longer expiry, signed with a key that is not this server's."""
    salt = re.sub(r"expires=\d+", "expires=4102444800", found["salt"])
    hidden = hashlib.sha256(f"{salt}{number}".encode()).hexdigest()
    signature = hmac.new(b"guessed key", hidden.encode(), hashlib.sha256).hexdigest()
    return payload_for(found, number, salt=salt, challenge=hidden, signature=signature)


ALTERATIONS = {
    "wrong-number": lambda f, n: payload_for(f, n + 1),
    "number-as-text": lambda f, n: payload_for(f, str(n)),
    "longer-expiry": lambda f, n: payload_for(
        f, n, salt=re.sub(r"expires=\d+", "expires=4102444800", f["salt"])
    ),
    "no-expiry": lambda f, n: payload_for(f, n, salt=f["salt"].partition("?")[0]),
    "other-challenge": lambda f, n: payload_for(f, n, challenge="0" * 64),
    "other-signature": lambda f, n: payload_for(f, n, signature="0" * 64),
    "other-algorithm": lambda f, n: payload_for(f, n, algorithm="SHA-1"),
    "forged-key": _forged,
}


@pytest.mark.parametrize("alter", ALTERATIONS.values(), ids=ALTERATIONS.keys())
def test_an_altered_or_wrong_solution_is_refused(site: Site, alter: Any) -> None:
    found = challenge(site)
    before = site.snapshot()
    assert refused(signup(site, "ada@example.com", alter(found, solve(found))))
    assert site.snapshot() == before and site.mails() == []


def test_a_refused_address_does_not_use_up_the_solution(site: Site) -> None:
    """The claim is rolled back with a sign-up refused for its address, so the
    reader can correct a typo with the same solution; it is then used up."""
    altcha = solution(site)
    bad = signup(site, "ada@", altcha)
    assert bad.status_code == 400 and "cannot be used" in bad.json()["error"]
    assert signup(site, "ada@example.com", altcha).status_code == 200
    assert refused(signup(site, "ada@example.org", altcha))


def test_the_honeypot_still_answers_alike_and_stores_nothing(site: Site) -> None:
    body = {"email": "bot@example.com", "website": "x", "altcha": solution(site)}
    trapped = site.client.post("/subscribe", json=body)
    assert trapped.status_code == 200 and trapped.json() == {"status": "ok"}
    assert site.subscriber("bot@example.com") is None and site.mails() == []


def test_challenges_are_rate_limited_per_client(tmp_path: Path, db_url: str) -> None:
    opened = open_site(tmp_path, db_url, web={**POW, "signups_per_minute": 1})
    site = next(opened)
    try:
        answers = [site.client.get("/subscribe/challenge") for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert int(answers[-1].headers["retry-after"]) >= 1
        assert answers[-1].headers["cache-control"] == "no-store"
    finally:
        opened.close()


# --- proof of work: the form page and the widget's files ----------------------------------


def test_the_form_carries_the_widget_under_its_own_csp(site: Site) -> None:
    page = site.client.get("/subscribe")
    assert page.status_code == 200
    html = page.text
    assert '<altcha-widget challenge="/subscribe/challenge" name="altcha"' in html
    assert '<script type="module" src="/static/altcha/setup.js"></script>' in html
    assert "<noscript>" in html and "needs JavaScript" in html
    csp = page.headers["content-security-policy"]
    assert csp == SIGNUP_CSP
    assert "script-src 'self';" in csp and "worker-src 'self';" in csp
    for weaker in ("unsafe-eval", "blob:", "http:", "*"):
        assert weaker not in csp.replace("https:", "")
    assert "'unsafe-inline'" not in csp.partition("style-src")[0]  # scripts: never inline

    missing = site.client.post("/subscribe", data={"email": "ada@example.com"})
    assert missing.status_code == 400 and FAILED in missing.text
    assert 'value="ada@example.com"' in missing.text  # the form comes back filled in
    assert missing.headers["content-security-policy"] == SIGNUP_CSP
    assert site.subscriber("ada@example.com") is None and site.mails() == []

    done = site.client.post(
        "/subscribe", data={"email": "ada@example.com", "altcha": solution(site)}
    )
    assert done.status_code == 200 and "Check your inbox" in done.text
    assert "script-src" not in done.headers["content-security-policy"]  # only the form page


def test_the_widget_is_served_from_our_origin_with_its_license(site: Site) -> None:
    folder = REPO / "digest" / "web" / "static" / "altcha"
    types = {"setup.js": "text/javascript", "altcha.min.js": "text/javascript"}
    types |= {"sha.js": "text/javascript", "altcha.css": "text/css", "LICENSE.txt": "text/plain"}
    for name, media_type in types.items():
        response = site.client.get(f"/static/altcha/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(media_type)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == (folder / name).read_bytes()
        cached = site.client.get(
            f"/static/altcha/{name}", headers={"if-none-match": response.headers["etag"]}
        )
        assert cached.status_code == 304 and cached.content == b""
    widget = site.client.get("/static/altcha/altcha.min.js").text
    assert widget.startswith("/*! ALTCHA widget") and "MIT License" in widget.splitlines()[0]
    assert "Permission is hereby granted" in site.client.get("/static/altcha/LICENSE.txt").text
    for path in ("/static/altcha/README.md", "/static/altcha/../proof_of_work.py", "/static/x"):
        assert site.client.get(path).status_code == 404


def test_off_by_default(tmp_path: Path, db_url: str) -> None:
    opened = open_site(tmp_path, db_url)
    site = next(opened)
    try:
        for path in ("/subscribe/challenge", "/static/altcha/setup.js"):
            assert site.client.get(path).status_code == 404
        page = site.client.get("/subscribe")
        assert "altcha" not in page.text and "<script" not in page.text
        assert "script-src" not in page.headers["content-security-policy"]
        assert signup(site, "ada@example.com", None).status_code == 200
        assert len(site.mails()) == 1
    finally:
        opened.close()


# --- throwaway domains -----------------------------------------------------------------


def test_throwaway_domains_are_refused_when_on(tmp_path: Path, db_url: str) -> None:
    opened = open_site(tmp_path, db_url, web={"block_disposable_domains": True})
    site = next(opened)
    try:
        before = site.snapshot()
        for email in ("someone@mailinator.com", "Someone@Sub.MAILINATOR.com."):
            assert refused(signup(site, email, None), PERMANENT)
        form = site.client.post("/subscribe", data={"email": "someone@mailinator.com"})
        assert form.status_code == 400 and PERMANENT in form.text
        assert site.snapshot() == before and site.mails() == []
        assert signup(site, "someone@example.com", None).status_code == 200
    finally:
        opened.close()


def test_throwaway_domains_are_accepted_when_off(tmp_path: Path, db_url: str) -> None:
    opened = open_site(tmp_path, db_url)
    site = next(opened)
    try:
        assert signup(site, "someone@mailinator.com", None).status_code == 200
        assert [m["To"] for m in site.mails()] == ["someone@mailinator.com"]
    finally:
        opened.close()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("a@mailinator.com", True),
        ("a@x.y.mailinator.com", True),
        ("a@MAILINATOR.COM", True),
        ("a@example.com", False),
        ("a@gmail.com", False),
        ("a@com", False),
        ("a@", False),
        ("a@bücher.example", False),
    ],
)
def test_is_disposable(address: str, expected: bool) -> None:
    assert is_disposable(address) is expected


# --- in a real browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from browser_support.launched_browser()


@pytest.fixture
def served(tmp_path: Path, db_url: str) -> Iterator[browser_support.Site]:
    site = browser_support.Site(tmp_path, db_url)
    site.feed.write_bytes((REPO / "examples" / "feed.json").read_bytes())
    write_config(
        site.root,
        site={"base_url": site.base, "allow_insecure_base_url": True},
        feed={"kind": "files", "path": str(site.feed)},
        web={"proof_of_work": True, "proof_of_work_max_number": 20_000},
    )
    site.digest("init")
    with site.serve():
        yield site


class Watch:
    """Console errors, page errors and every request a page makes."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("request", self._request)

    def _console(self, message: ConsoleMessage) -> None:
        if str(message.location.get("url", "")).endswith("/favicon.ico"):
            return  # Chromium asks every site for one; the app has none (404)
        if message.type in ("error", "warning") or "Content Security Policy" in message.text:
            self.errors.append(f"{message.type}: {message.text}")

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)


@pytest.mark.slow
def test_the_widget_solves_in_the_browser_and_the_form_goes_through(
    browser: Browser, served: browser_support.Site, db_url: str
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    try:
        page = context.new_page()
        watch = Watch(page)
        shoot = browser_support.Shooter(
            browser_support.SCREENSHOTS if db_url.startswith("sqlite") else None
        )
        page.goto(f"{served.base}/subscribe")
        widget = page.locator("altcha-widget")
        expect(widget).to_be_visible()
        page.get_by_label("Email address").fill("ada@example.com")  # focus starts the check
        expect(page.locator('input[name="altcha"]')).to_have_value(
            re.compile(r"^[A-Za-z0-9+/=]{40,}$")
        )
        shoot(page, "pow-01-subscribe-verified")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
        mail = browser_support.wait_for(
            "the confirmation email", lambda: served.mails("transactional").get("ada@example.com")
        )
        assert mail is not None
        assert watch.errors == [], watch.errors
        assert all(url.startswith(served.base + "/") for url in watch.requests), watch.requests
        loaded = {url.removeprefix(served.base) for url in watch.requests}
        widget_files = {f"/static/altcha/{n}" for n in ("setup.js", "altcha.min.js", "sha.js")}
        assert widget_files | {"/subscribe/challenge"} <= loaded, loaded
    finally:
        context.close()


@pytest.mark.slow
def test_without_javascript_the_form_says_so_and_is_refused(
    browser: Browser, served: browser_support.Site
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(java_script_enabled=False)
    context.set_default_timeout(20_000)
    try:
        page = context.new_page()
        page.goto(f"{served.base}/subscribe")
        # A CSS locator: Playwright's text engine skips <noscript> content.
        notice = page.locator("noscript .problem")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text("anti-robot check that needs JavaScript")
        page.get_by_label("Email address").fill("ada@example.com")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("alert")).to_have_text(FAILED)
        assert served.mails("transactional") == {}
    finally:
        context.close()
