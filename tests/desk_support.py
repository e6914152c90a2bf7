"""Signing in to the desk as an operator, for any test: a runtime with a clock the
test moves, an operator of a given role, and the two sign-in steps (email and
password, then a TOTP code read from the real enrolment page) through a
``fastapi.testclient.TestClient``.

    rt = desk_runtime(tmp_path, clock)
    with TestClient(create_app(rt), follow_redirects=False) as client:
        me = sign_in_as(client, rt, "editor")
        client.post("/admin/editions/2026-W48/approve", data={"csrf": me.csrf})

A code is accepted once per operator: with a clock that stands still, one operator
can sign in three times (the codes of the steps around "now"); move the clock on
(``clock.tick()``) for more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pyotp
from fastapi.testclient import TestClient

from digest import config as config_mod
from digest import pipeline
from digest.config.runtime import Runtime
from digest.desk import operators
from digest.store.db import session_scope, upgrade
from tests.support import write_config

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # the sample feed's comparisons are fresh
SHARED_PASSWORD = "correct horse battery staple"
TOKEN = "tok-" + "y" * 30
OPERATOR_PASSWORD = "a long operator passphrase"


class Clock:
    """The runtime's clock; ``tick`` moves it on by whole TOTP steps."""

    def __init__(self, start: datetime = NOW) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def tick(self, steps: int = 1) -> None:
        self.now += timedelta(seconds=operators.STEP_SECONDS * steps)


def desk_env(*, shared: bool = True) -> dict[str, str]:
    env = {"DIGEST_SECRET_KEY": "test-key"}
    if shared:
        env |= {"DIGEST_ADMIN_PASSWORD": SHARED_PASSWORD, "DIGEST_ADMIN_TOKEN": TOKEN}
    return env


def desk_runtime(
    tmp_path: Path, clock: Clock | None = None, *, shared: bool = True, **sections: Any
) -> Runtime:
    """A migrated SQLite database with the sample feed fetched; the shared password
    and token set unless ``shared=False``."""
    sections.setdefault("transport", {"kind": "memory"})
    sections.setdefault("preflight", {"check_links": False})
    path = write_config(tmp_path, **sections)
    loaded = config_mod.load(path, environ=desk_env(shared=shared))
    rt = Runtime.open(loaded, clock=clock or Clock())
    upgrade(rt.engine)
    pipeline.fetch(rt)
    return rt


def add_operator(rt: Runtime, email: str, role: str, password: str = OPERATOR_PASSWORD) -> int:
    with session_scope(rt.engine) as session:
        op = operators.add(
            session, email=email, role=role, password=password, actor="test", via="cli",
            now=rt.now(),
        )  # fmt: skip
        assert op.id is not None
        return op.id


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def secret_on(html: str) -> str:
    """The TOTP secret as the enrolment page shows it (groups of four)."""
    found = re.search(r'<code id="totp-secret"[^>]*>([^<]+)</code>', html)
    assert found, "no secret on the enrolment page"
    return unescape(found.group(1)).replace(" ", "")


def code_for(rt: Runtime, secret: str, email: str) -> str:
    """The code a phone shows now, or a step later when that one was already used
    (the desk accepts one step either side, each once)."""
    with session_scope(rt.engine) as session:
        last = operators.named(session, email).last_sign_in_at
    used = int(last.timestamp()) // operators.STEP_SECONDS if last else -1
    current = int(rt.now().timestamp()) // operators.STEP_SECONDS
    step = next((s for s in (current - 1, current, current + 1) if s > used), None)
    assert step is not None, "every code around now is used: move the clock on (Clock.tick)"
    return pyotp.TOTP(secret).at(step * operators.STEP_SECONDS)


def password_step(client: TestClient, email: str, password: str = OPERATOR_PASSWORD) -> Any:
    page = client.get("/admin/login")
    assert page.status_code == 200, page.text
    return client.post(
        "/admin/login",
        data={"csrf": csrf_of(page.text), "email": email, "password": password, "next": "/admin"},
    )


@dataclass
class SignedIn:
    email: str
    secret: str  # the authenticator's secret, for signing in again
    csrf: str  # the session's CSRF token for posts


def sign_in(
    client: TestClient, rt: Runtime, email: str, secret: str = "", password: str = OPERATOR_PASSWORD
) -> SignedIn:
    """Both steps; ``secret`` empty: enrol (read it from the page). Returns the CSRF
    token of the new session (from the editions page)."""
    answer = password_step(client, email, password)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/admin/login/code"
    page = client.get("/admin/login/code")
    assert page.status_code == 200, page.text
    secret = secret or secret_on(page.text)
    answer = client.post(
        "/admin/login/code",
        data={"csrf": csrf_of(page.text), "code": code_for(rt, secret, email)},
    )
    assert answer.status_code == 303, answer.text
    editions = client.get("/admin/editions")
    assert editions.status_code == 200, editions.text
    return SignedIn(email, secret, csrf_of(editions.text))


def sign_in_as(client: TestClient, rt: Runtime, role: str, email: str = "") -> SignedIn:
    """A new operator of ``role`` (``<role>@example.com`` unless named), signed in on
    ``client`` with their authenticator enrolled."""
    email = email or f"{role}@example.com"
    add_operator(rt, email, role)
    return sign_in(client, rt, email)
