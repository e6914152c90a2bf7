"""The operator desk under /admin: deny by default, CSRF, cookies, preview, test
sends outside the ledger, the approval gate and the pause/resume buttons.

Real app (``create_app``), real database (SQLite; the ledger test on both
backends), the sample feed; the preview is compared byte for byte with a message
the sender really built.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from digest import config as config_mod
from digest import pipeline
from digest.config.runtime import Runtime
from digest.desk import preview as desk
from digest.editions import lifecycle as editions
from digest.store.db import session_scope, upgrade
from digest.store.models import AdminSession, Delivery, Edition
from digest.transports.memory import MemoryTransport
from digest.web.admin import LOGIN_ATTEMPTS_PER_MINUTE, FailedAttempts
from digest.web.admin.auth import sid_hash
from digest.web.app import create_app
from subscribers import repository
from tests.browser_support import html_of
from tests.smtp_sink import SmtpSink
from tests.support import write_config

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # the sample feed's comparisons are fresh
PASSWORD = "correct horse battery staple"
TOKEN = "tok-" + "x" * 30
RESEARCH = "Research"


def open_runtime(
    tmp_path: Path, *, db_url: str | None = None, admin: bool = True, **sections: Any
) -> Runtime:
    sections.setdefault("transport", {"kind": "memory"})
    sections.setdefault("preflight", {"check_links": False})
    path = write_config(tmp_path, **sections)
    env = {"DIGEST_SECRET_KEY": "test-key"}
    if admin:
        env |= {"DIGEST_ADMIN_PASSWORD": PASSWORD, "DIGEST_ADMIN_TOKEN": TOKEN}
    if db_url:
        env["DIGEST_DATABASE_URL"] = db_url
    rt = Runtime.open(config_mod.load(path, environ=env), clock=lambda: NOW)
    upgrade(rt.engine)
    pipeline.fetch(rt)
    return rt


def add_reader(rt: Runtime, email: str, categories: list[str]) -> int:
    with session_scope(rt.engine) as session:
        result = repository.add(session, email=email, categories=categories, now=NOW)
        assert result.subscriber.id is not None
        return result.subscriber.id


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = open_runtime(tmp_path)
    yield runtime
    runtime.close()


@pytest.fixture
def app(rt: Runtime) -> FastAPI:
    return create_app(rt)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as c:
        yield c


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def login(client: TestClient, password: str = PASSWORD) -> Any:
    page = client.get("/admin/login")
    assert page.status_code == 200
    return client.post(
        "/admin/login",
        data={"csrf": csrf_of(page.text), "password": password, "name": "Ada", "next": "/admin"},
    )


def compose(rt: Runtime, *, needs_approval: bool = False) -> str:
    result = pipeline.compose(rt)
    assert result.edition is not None
    if needs_approval:
        with session_scope(rt.engine) as session:
            edition = editions.get(session, key=result.edition.key)
            assert edition is not None
            edition.needs_approval = True
            session.add(edition)
    return result.edition.key


# --- deny by default -------------------------------------------------------------------


def all_routes(routes: Sequence[Any], prefix: str = "") -> Iterator[tuple[str, set[str]]]:
    """(path, methods) of every route, through included routers (FastAPI ≥ 0.116
    keeps them as lazily resolved ``_IncludedRouter`` entries)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            extra = getattr(getattr(route, "include_context", None), "prefix", "")
            yield from all_routes(inner.routes, prefix + extra)
        elif hasattr(route, "path"):
            yield prefix + route.path, set(getattr(route, "methods", None) or ())


def test_every_admin_route_refuses_an_anonymous_request(app: FastAPI, client: TestClient) -> None:
    app.state.admin.attempts = FailedAttempts(10_000)  # refusals here, not the rate limit
    checked = 0
    for path, methods in all_routes(app.routes):
        if not path.startswith("/admin") or path == "/admin/login":
            continue
        url = re.sub(  # every other path parameter (reader ids …) as 1
            r"\{(\w+)\}", lambda m: {"key": "next", "part": "html"}.get(m[1], "1"), path
        )
        for method in sorted(methods):
            for headers in ({}, {"accept": "text/html"}, {"authorization": "Bearer wrong"}):
                answer = client.request(method, url, headers=headers)
                redirected = answer.status_code == 303 and answer.headers["location"].startswith(
                    "/admin/login"
                )
                assert answer.status_code == 401 or redirected, (method, url, headers)
            wrong = base64.b64encode(b"op:not-the-password").decode()
            answer = client.request(method, url, headers={"authorization": f"Basic {wrong}"})
            assert answer.status_code == 401, (method, url)
            checked += 1
    assert checked >= 9  # editions, preview, parts, test-send, approve, pause, resume …


def test_bearer_token_and_basic_password_open_the_desk(client: TestClient) -> None:
    assert client.get("/admin/editions", headers={"authorization": f"Bearer {TOKEN}"}).is_success
    basic = base64.b64encode(f"anyone:{PASSWORD}".encode()).decode()
    assert client.get("/admin/editions", headers={"authorization": f"Basic {basic}"}).is_success


def test_without_a_credential_the_desk_is_off_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = open_runtime(tmp_path, admin=False)
    with caplog.at_level(logging.WARNING):
        app = create_app(runtime)
    assert "while no operator exists it answers 404" in caplog.text
    with TestClient(app) as c:
        assert c.get("/admin/editions").status_code == 404
        assert c.get("/admin/login").status_code == 404
    runtime.close()


def test_login_sets_a_hardened_cookie_and_a_wrong_password_changes_nothing(
    client: TestClient,
) -> None:
    assert login(client, "wrong").status_code == 401
    assert "digest_admin" not in client.cookies
    answer = login(client)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin"
    cookie = next(v for v in answer.headers.get_list("set-cookie") if v.startswith("digest_admin="))
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/admin" in lowered
    assert "secure" not in lowered  # plain http here; https below
    assert client.get("/admin/editions").status_code == 200


def test_cookie_is_secure_over_https(rt: Runtime) -> None:
    with TestClient(create_app(rt), base_url="https://desk.test", follow_redirects=False) as c:
        answer = login(c)
        cookie = next(v for v in answer.headers.get_list("set-cookie") if "digest_admin=" in v)
        assert "secure" in cookie.lower()


def test_a_forged_post_without_the_csrf_token_is_refused(rt: Runtime, client: TestClient) -> None:
    key = compose(rt)
    login(client)
    page = client.get("/admin/editions")
    for forged in ({}, {"csrf": "0" * 64}):
        answer = client.post(f"/admin/editions/{key}/pause", data={"reason": "x", **forged})
        assert answer.status_code == 403
    assert pipeline.find_edition(rt, key).status == "composed"  # type: ignore[union-attr]
    # The login form too: no pre-login cookie token, no sign-in.
    client.cookies.clear()
    assert client.post("/admin/login", data={"password": PASSWORD}).status_code == 403
    login(client)
    page = client.get("/admin/editions")
    answer = client.post(
        f"/admin/editions/{key}/pause", data={"csrf": csrf_of(page.text), "reason": "typo"}
    )
    assert answer.status_code == 303
    edition = pipeline.find_edition(rt, key)
    assert edition is not None and edition.status == "paused" and edition.status_note == "typo"
    page = client.get("/admin/editions")
    assert client.post(
        f"/admin/editions/{key}/resume", data={"csrf": csrf_of(page.text)}
    ).is_redirect
    assert pipeline.find_edition(rt, key).status == "composed"  # type: ignore[union-attr]


# --- pages -----------------------------------------------------------------------------


def test_editions_page_shows_counts_and_why_each_comparison_is_in(
    rt: Runtime, client: TestClient
) -> None:
    add_reader(rt, "ann@example.com", [])
    key = compose(rt)
    asyncio.run(pipeline.send(rt, edition=pipeline.find_edition(rt, key)))  # type: ignore[arg-type]
    login(client)
    page = client.get("/admin/editions").text
    row = page[page.index(f'id="edition-{key}"') :]
    assert re.search(r'<td class="n">1</td>', row)  # one sent
    assert "within the last 14 days; category Research" in page
    assert "Lumen Notebook vs Quill Agents" in page


def test_preview_of_the_next_edition_as_a_one_category_reader(
    rt: Runtime, client: TestClient
) -> None:
    add_reader(rt, "rae@example.com", [RESEARCH])
    login(client)
    page = client.get("/admin/editions/next/preview", params={"as": "rae@example.com"})
    assert page.status_code == 200
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    assert 'sandbox=""' in page.text and 'width="375"' in page.text and 'width="600"' in page.text
    listed = re.search(r'<ul id="in-copy">(.*?)</ul>', page.text, re.S)
    assert listed and "(Research)" in listed.group(1) and "Developer Tools" not in listed.group(1)
    frame = client.get("/admin/editions/next/preview.html", params={"as": "rae@example.com"})
    csp = frame.headers["content-security-policy"]
    assert "sandbox" in csp and "script-src" not in csp and "default-src 'none'" in csp
    assert frame.headers["x-frame-options"] == "SAMEORIGIN"
    assert "/u/" in frame.text and desk.INERT_TOKEN in frame.text
    assert "Tern Vector" not in frame.text and "Lumen Notebook" in frame.text


def test_preview_html_is_the_delivered_html_but_for_the_tokens(tmp_path: Path) -> None:
    runtime = open_runtime(tmp_path)
    try:
        reader = add_reader(runtime, "ida@example.com", [RESEARCH])
        key = compose(runtime)
        asyncio.run(pipeline.send(runtime, edition=pipeline.find_edition(runtime, key)))  # type: ignore[arg-type]
        transport = runtime.transport()
        assert isinstance(transport, MemoryTransport)
        (delivered,) = transport.sent
        delivered_html = html_of(desk.parse(delivered.data))
        shown = desk.preview(
            runtime,
            desk.edition_content(runtime, key),
            desk.viewer_for(runtime, email="ida@example.com"),
        )
        preview_html = shown.html.decode("utf-8")
        token = re.compile(rf"/(u|p)/{reader}\.[A-Za-z0-9_-]+")
        assert token.search(delivered_html) and desk.INERT_TOKEN not in delivered_html
        # The preview's click refs and vote tokens are the sample reader 0's (they
        # count nothing): the delivered message carries the reader's own.
        personal = re.compile(r"/r/([^/\"]+)/[^\"]+|/v/[^/\"]+/")
        assert re.search(r"/v/0\.", preview_html) and re.search(rf"/v/{reader}\.", delivered_html)

        def normal(html: str) -> str:
            same = personal.sub(lambda m: f"/r/{m[1]}/REF" if m[1] else "/v/TOKEN/", html)
            return token.sub(r"/\1/TOKEN", same.replace("\r\n", "\n"))

        assert normal(preview_html) == normal(delivered_html)
        with TestClient(create_app(runtime)) as c:
            login(c)
            served = c.get(f"/admin/editions/{key}/preview.html", params={"as": "ida@example.com"})
            assert served.content == shown.html  # the route serves exactly that
    finally:
        runtime.close()


# --- test sends ------------------------------------------------------------------------


def test_test_send_reaches_smtp_with_the_prefix_and_stays_out_of_the_ledger(
    tmp_path: Path, db_url: str
) -> None:
    with SmtpSink() as sink:
        transport = {"kind": "smtp", "host": "127.0.0.1", "port": sink.port, "security": "none"}
        runtime = open_runtime(tmp_path, db_url=db_url, transport=transport)
        try:
            add_reader(runtime, "rae@example.com", [RESEARCH])
            key = compose(runtime)
            with TestClient(create_app(runtime), follow_redirects=False) as c:
                login(c)
                page = c.get(f"/admin/editions/{key}/preview", params={"as": "rae@example.com"})
                answer = c.post(
                    f"/admin/editions/{key}/test-send",
                    data={
                        "csrf": csrf_of(page.text),
                        "as": "rae@example.com",
                        "to": "desk@example.com, boss@example.com",
                    },
                )
            assert answer.status_code == 200 and "Test sent to desk@example.com" in answer.text
            assert sorted(sink.handler.per_recipient()) == ["boss@example.com", "desk@example.com"]
            message = sink.handler.messages[0].parsed()
            assert str(message["Subject"]).startswith("[TEST] ")
            assert message["Message-ID"] != f"<{key}.s1.digest@test.example>"
            body = html_of(message)
            assert "Lumen Notebook" in body and "Tern Vector" not in body
            assert desk.INERT_TOKEN in body
            with session_scope(runtime.engine) as session:
                rows = session.execute(select(func.count()).select_from(Delivery)).scalar_one()
                edition = session.execute(select(Edition)).scalar_one()
            assert rows == 0 and edition.planned_count == 0 and edition.status == "composed"
        finally:
            runtime.close()


def test_test_send_refuses_bad_addresses(rt: Runtime, client: TestClient) -> None:
    login(client)
    page = client.get("/admin/editions/next/preview")
    answer = client.post(
        "/admin/editions/next/test-send", data={"csrf": csrf_of(page.text), "to": "not an address"}
    )
    assert answer.status_code == 400 and "No test sent" in answer.text
    assert not rt.transport().handed  # type: ignore[attr-defined]


# --- approval --------------------------------------------------------------------------


def test_approve_button_runs_the_preflight_and_refuses_errors_unless_forced(
    tmp_path: Path,
) -> None:
    runtime = open_runtime(tmp_path, edition={"max_html_bytes": 5000})
    try:
        key = compose(runtime, needs_approval=True)
        with TestClient(create_app(runtime), follow_redirects=False) as c:
            login(c)
            csrf = csrf_of(c.get("/admin/editions").text)
            refused = c.post(f"/admin/editions/{key}/approve", data={"csrf": csrf})
            assert refused.status_code == 409
            assert "fails the pre-flight" in refused.text and "max_html_bytes" in refused.text
            assert pipeline.find_edition(runtime, key).approved_at is None  # type: ignore[union-attr]
            forced = c.post(f"/admin/editions/{key}/approve", data={"csrf": csrf, "force": "1"})
            assert forced.status_code == 303
        edition = pipeline.find_edition(runtime, key)
        assert edition is not None and edition.approved_at == NOW
        assert edition.approved_by == "Ada (bootstrap session)"
    finally:
        runtime.close()


def test_approve_edition_approves_a_clean_edition(rt: Runtime) -> None:
    key = compose(rt, needs_approval=True)
    approval = desk.approve_edition(rt, key=key, by="cli", now=NOW)
    assert approval.report.ok and not approval.forced
    assert approval.edition.approved_by == "cli"


# --- throttling wrong credentials, server-side sessions --------------------------------


class Ticks:
    """A monotonic clock for :class:`FailedAttempts` that tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def basic(password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"op:{password}".encode()).decode()}


BEARER = {"authorization": f"Bearer {TOKEN}"}


def test_wrong_basic_bearer_and_form_credentials_share_one_limit(
    app: FastAPI, client: TestClient
) -> None:
    ticks = Ticks()
    app.state.admin.attempts = FailedAttempts(LOGIN_ATTEMPTS_PER_MINUTE, clock=ticks)
    assert login(client).status_code == 303  # a session from before the attack
    for _ in range(50):  # right credentials never count
        assert client.get("/admin/editions", headers=BEARER).status_code == 200
    for i in range(LOGIN_ATTEMPTS_PER_MINUTE):
        wrong = basic("guess") if i % 3 == 0 else {"authorization": "Bearer guess"}
        if i % 3 == 2:
            assert login(client, "guess").status_code == 401
        else:
            assert client.get("/admin/editions", headers=wrong).status_code == 401
    for right in (BEARER, basic(PASSWORD), basic("guess")):  # now even the right one waits
        refused = client.get("/admin/editions", headers=right)
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    form = login(client)
    assert form.status_code == 429 and form.headers["retry-after"]
    stale = client.post("/admin/login", data={"password": PASSWORD, "csrf": "stale"})
    assert stale.status_code == 429  # nothing is checked while the client waits
    # No credential at all: neither counted nor refused (the session cookie still works,
    # a browser without one is still sent to the login page).
    assert client.get("/admin/editions").status_code == 200
    client.cookies.clear()
    page = client.get("/admin/editions", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"].startswith("/admin/login")
    ticks.now += 61  # the window has passed
    assert client.get("/admin/editions", headers=BEARER).status_code == 200
    assert login(client).status_code == 303


def test_the_limit_is_per_client_address(rt: Runtime) -> None:
    app = create_app(rt)
    with (
        TestClient(app, client=("203.0.113.7", 1)) as attacker,
        TestClient(app, client=("198.51.100.1", 1)) as operator,
    ):
        for _ in range(LOGIN_ATTEMPTS_PER_MINUTE):
            assert attacker.get("/admin/editions", headers=basic("guess")).status_code == 401
        assert attacker.get("/admin/editions", headers=BEARER).status_code == 429
        assert operator.get("/admin/editions", headers=BEARER).status_code == 200


def stored_sessions(rt: Runtime) -> list[Any]:
    with rt.engine.connect() as conn:
        return list(conn.execute(select(AdminSession.__table__)))  # type: ignore[attr-defined]


def test_logout_ends_the_session_on_the_server(rt: Runtime, client: TestClient) -> None:
    login(client)
    cookie = client.cookies["digest_admin"]
    sid = client.app.state.admin.guard._serializer("session").loads(cookie)["sid"]  # type: ignore[attr-defined]
    (row,) = stored_sessions(rt)
    assert row.sid_hash == sid_hash(sid) and sid not in row  # the id itself is not stored
    assert row.name == "Ada" and row.ended_at is None
    csrf = csrf_of(client.get("/admin/editions").text)
    out = client.post("/admin/logout", data={"csrf": csrf})
    assert out.status_code == 303 and "digest_admin" not in client.cookies
    (row,) = stored_sessions(rt)
    assert row.ended_at == NOW
    client.cookies.set("digest_admin", cookie, path="/admin")  # a copy kept by someone
    assert client.get("/admin/editions").status_code == 401
    page = client.get("/admin/editions", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"].startswith("/admin/login")
    # The next sign-in prunes ended (and expired) sessions.
    login(client)
    assert [r.ended_at for r in stored_sessions(rt)] == [None]


def test_an_expired_session_is_refused(rt: Runtime, client: TestClient) -> None:
    login(client)
    assert client.get("/admin/editions").status_code == 200
    with rt.engine.begin() as conn:
        table = AdminSession.__table__  # type: ignore[attr-defined]
        conn.execute(table.update().values(expires_at=NOW))
    assert client.get("/admin/editions").status_code == 401


@pytest.mark.parametrize(
    "changed", [{"DIGEST_ADMIN_PASSWORD": "a new password"}, {"DIGEST_ADMIN_TOKEN": "tok-new"}]
)
def test_changing_the_password_or_token_ends_every_session(
    rt: Runtime, client: TestClient, changed: dict[str, str]
) -> None:
    login(client)
    cookie = client.cookies["digest_admin"]

    def desk_with(env: dict[str, str]) -> FastAPI:
        config = dataclasses.replace(rt.config, env={**rt.config.env, **env})
        return create_app(
            Runtime(config, rt.engine, rt.feed_adapter, rt.transport_adapter, rt.clock)
        )

    for env, allowed in (({}, True), (changed, False)):  # the same stored session both times
        with TestClient(desk_with(env), follow_redirects=False) as other:
            other.cookies.set("digest_admin", cookie, path="/admin")
            assert (other.get("/admin/editions").status_code == 200) is allowed, env
    assert [r.ended_at for r in stored_sessions(rt)] == [None]  # refused by the key alone
