"""Shared fixtures: databases (SQLite and PostgreSQL), config files, the browser.

PostgreSQL tests use ``DIGEST_TEST_PG_URL`` (default: the local server on
127.0.0.1:5432, user postgres, database test) and skip with a reason when no server
answers. Each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, create_engine, text

from digest.store.db import make_engine, upgrade
from tests.browser_support import launched_browser
from tests.smtp_sink import SmtpSink

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

PG_URL = os.environ.get("DIGEST_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_reachable() -> str | None:
    try:
        eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
    except Exception as exc:  # any failure means: skip, and say why
        return f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}: {exc}"
    return None


_PG_SKIP: str | bool | None = False  # False = not checked yet


def pg_skip_reason() -> str | None:
    global _PG_SKIP
    if _PG_SKIP is False:
        _PG_SKIP = _pg_reachable()
    return _PG_SKIP  # type: ignore[return-value]


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema."""
    reason = pg_skip_reason()
    if reason:
        if os.environ.get("CI") == "true" and os.environ.get("DIGEST_REQUIRE_PG") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each backend: a fresh SQLite file, or a fresh PG schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'digest.db'}"
    url: str = request.getfixturevalue("pg_schema_url")
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a migrated, empty database (both backends)."""
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'digest.db'}")
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file's URL (tests that run on SQLite only)."""
    return f"sqlite:///{tmp_path / 'digest.db'}"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """An SMTP server on loopback that records what it is sent (a module may define
    its own ``sink``, e.g. one that refuses some recipients)."""
    with SmtpSink() as server:
        yield server


# The browser tests' fixtures (tests/browser_support.py): a module may define its own.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module; skips where it cannot run."""
    yield from launched_browser()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh 1280×900 context and page, with a 10 s default timeout."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A command run in process (CliRunner) configures the root logger for a process
    (digest.cli.console.setup: a handler on the real stderr); put it back after each
    test, so later tests' log lines stay in pytest's capture, not on the terminal."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
