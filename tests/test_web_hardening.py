"""Issue 13, from outside: a real ``digest serve`` on a loopback port, spoken to over
HTTP, its database read afterwards.

- sign-ups behind a trusted proxy are limited per real client, whatever the client
  writes at the left of ``X-Forwarded-For``, and the consent log holds that client;
- wrong HTTP Basic passwords meet 429; signing out ends the session on the server;
  changing the password ends every session;
- ``/healthz`` and ``/readyz`` say nothing of a failing feed (whose URL carries a
  key), and ``/readyz`` says 503 when the database is gone;

plus the readiness probe's bounds (one thread, a timeout) with a database that hangs.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from digest.store.db import make_engine
from digest.web.healthz import Probe
from subscribers.models import ConsentEvent
from tests.browser_support import free_port, wait_for
from tests.support import run_digest, write_config

PASSWORD = "hardening-password"
REAL_CLIENT = "203.0.113.7"
FEED_KEY = "SECRET123"
pytestmark = pytest.mark.slow


class Server:
    """``digest serve`` for the config in ``root``; output kept in ``serve-N.log``."""

    def __init__(self, root: Path, db_url: str, **sections: dict[str, Any]) -> None:
        self.root = root
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = write_config(
            root, site={"base_url": self.base, "allow_insecure_base_url": True}, **sections
        )
        self.env = {
            **os.environ,
            "DIGEST_DATABASE_URL": db_url,
            "DIGEST_SECRET_KEY": "hardening-key",
            "DIGEST_ADMIN_PASSWORD": PASSWORD,
        }
        self.logs: list[Path] = []

    def digest(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_digest(self.config, *args, env=self.env, timeout=120)

    @contextmanager
    def serving(self, **env: str) -> Iterator[httpx.Client]:
        """The server running (with ``env`` on top), and a client for it."""
        log_path = self.root / f"serve-{len(self.logs)}.log"
        self.logs.append(log_path)
        command = [sys.executable, "-m", "digest", "--config", str(self.config), "serve"]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(self.port)],
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                with httpx.Client(base_url=self.base, timeout=10) as client:

                    def up() -> bool:
                        assert proc.poll() is None, log_path.read_text(errors="replace")
                        try:
                            return client.get("/healthz").status_code == 200
                        except httpx.TransportError:
                            return False

                    wait_for(f"digest serve on {self.base}", up, timeout=30)
                    yield client
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def output(self) -> str:
        """Everything every run of the server wrote (stdout and stderr)."""
        return "".join(p.read_text(errors="replace") for p in self.logs)


# --- (a) sign-ups behind a trusted proxy --------------------------------------------


def test_forged_forwarded_for_entries_do_not_escape_the_signup_limit(
    tmp_path: Path, sqlite_url: str
) -> None:
    server = Server(
        tmp_path, sqlite_url, web={"trusted_proxies": ["127.0.0.1"], "signups_per_minute": 3}
    )
    assert server.digest("init").returncode == 0
    with server.serving() as client:
        answers = [
            client.post(
                "/subscribe",
                data={"email": f"reader{n}@example.com"},
                headers={"x-forwarded-for": f"198.51.100.{n}, {REAL_CLIENT}"},
            )
            for n in range(1, 7)
        ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429, 429]
    assert int(answers[3].headers["retry-after"]) >= 1
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            ips = list(conn.execute(select(ConsentEvent.ip)).scalars())  # type: ignore[call-overload]
    finally:
        engine.dispose()
    assert len(ips) == 3 and set(ips) == {REAL_CLIENT}


# --- (b) the operator desk ----------------------------------------------------------


def sign_in(client: httpx.Client) -> str:
    """Sign in through the form as a browser would; the session cookie's value."""
    page = client.get("/admin/login")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert page.status_code == 200 and found
    answer = client.post(
        "/admin/login",
        data={"csrf": found.group(1), "password": PASSWORD, "name": "Ada", "next": "/admin"},
        headers=jar(digest_admin_login=page.cookies["digest_admin_login"]),
    )
    assert answer.status_code == 303, answer.text
    return str(answer.cookies["digest_admin"])


def jar(**cookies: str) -> dict[str, str]:
    """A Cookie header: each request says exactly which cookies it carries."""
    return {"cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


def desk(client: httpx.Client, cookie: str, *, page: bool = False) -> httpx.Response:
    headers = jar(digest_admin=cookie) | ({"accept": "text/html"} if page else {})
    return client.get("/admin/editions", headers=headers)


def refused(client: httpx.Client, cookie: str) -> bool:
    to_login = desk(client, cookie, page=True)
    return desk(client, cookie).status_code == 401 and (
        to_login.status_code == 303 and to_login.headers["location"].startswith("/admin/login")
    )


def test_guessing_is_throttled_and_sessions_end_on_the_server(tmp_path: Path, db_url: str) -> None:
    server = Server(tmp_path, db_url, web={"trusted_proxies": ["127.0.0.1"]})
    assert server.digest("init").returncode == 0
    attacker = {"x-forwarded-for": REAL_CLIENT}
    with server.serving() as client:
        statuses = []
        for n in range(20):
            wrong = httpx.BasicAuth("admin", f"guess-{n}")
            statuses.append(client.get("/admin/editions", auth=wrong, headers=attacker).status_code)
        right = client.get("/admin/editions", auth=httpx.BasicAuth("a", PASSWORD), headers=attacker)
        assert 429 in statuses[:11] and set(statuses[statuses.index(429) :]) == {429}, statuses
        assert set(statuses[: statuses.index(429)]) == {401}, statuses
        assert right.status_code == 429 and int(right.headers["retry-after"]) >= 1
        # Another client (the proxy itself here) signs in and out.
        cookie = sign_in(client)
        assert desk(client, cookie).status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', desk(client, cookie).text)
        assert csrf
        out = client.post(
            "/admin/logout", data={"csrf": csrf.group(1)}, headers=jar(digest_admin=cookie)
        )
        assert out.status_code == 303
        assert refused(client, cookie)  # the old cookie, replayed
        kept = sign_in(client)
    with server.serving() as client:  # a restart alone ends no session
        assert desk(client, kept).status_code == 200
    with server.serving(DIGEST_ADMIN_PASSWORD="a-new-password") as client:
        assert refused(client, kept)
    assert PASSWORD not in server.output()


# --- (c) health and readiness -------------------------------------------------------


def closed_port() -> int:
    return free_port()  # bound once, then released: nothing listens there


def test_health_answers_name_no_feed_and_readyz_notices_the_database(
    tmp_path: Path, sqlite_url: str
) -> None:
    feed_port = closed_port()
    feed_url = f"http://127.0.0.1:{feed_port}/feed.json?api_key={FEED_KEY}"
    server = Server(
        tmp_path,
        sqlite_url,
        feed={"kind": "http", "url": feed_url, "max_attempts": 1},
        operators={"feed_failures": 1},
    )
    assert server.digest("init").returncode == 0
    fetched = server.digest("fetch")
    assert fetched.returncode != 0
    check = server.digest("check")
    assert check.returncode == 1 and "feed" in check.stdout, check.stdout  # an incident
    with server.serving() as client:
        live, ready = client.get("/healthz"), client.get("/readyz")
    assert (live.status_code, live.json()) == (200, {"ok": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    for answer in (live, ready):
        assert answer.headers["cache-control"] == "no-store"
        for secret in (FEED_KEY, "feed", str(feed_port), "http"):
            assert secret not in answer.text
    # The database gone: a PostgreSQL URL where nothing listens.
    gone = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/digest"
    with server.serving(DIGEST_DATABASE_URL=gone) as client:
        live, ready = client.get("/healthz"), client.get("/readyz")
    assert (live.status_code, live.json()) == (200, {"ok": True})
    assert (ready.status_code, ready.json()) == (503, {"ready": False})
    assert ready.headers["cache-control"] == "no-store"
    assert FEED_KEY not in server.output()


# --- the readiness probe's bounds ---------------------------------------------------


class HangingEngine:
    """Stands in for an Engine whose database does not answer until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.connects = 0

    def raw_connection(self) -> Any:
        self.connects += 1
        self.release.wait(timeout=30)
        return _Answering()


class _Answering:
    def cursor(self) -> _Answering:
        return self

    def execute(self, sql: str) -> None:
        assert sql == "SELECT 1"

    def fetchall(self) -> list[tuple[int]]:
        return [(1,)]

    def close(self) -> None:
        pass


def test_a_hanging_database_costs_one_thread_and_a_bounded_wait() -> None:
    probe, engine = Probe(), HangingEngine()

    async def three_probes() -> list[bool]:
        return list(
            await asyncio.gather(*(probe.ready(engine, timeout=0.2) for _ in range(3)))  # type: ignore[arg-type]
        )

    assert asyncio.run(three_probes()) == [False, False, False]
    assert asyncio.run(probe.ready(engine, timeout=0.2)) is False  # type: ignore[arg-type]
    assert engine.connects == 1  # every request waited for the one probe still out
    engine.release.set()
    wait_for("the stuck probe to finish", lambda: probe._running and probe._running.done())
    assert asyncio.run(probe.ready(engine, timeout=2)) is True  # type: ignore[arg-type]
    assert engine.connects == 2
