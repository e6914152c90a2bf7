"""Helpers for the browser tests (no tests here): a real ``digest serve`` subprocess
on a free loopback port, the ``digest`` command, the outbox, the database, and
screenshots at two widths.

The browser itself is Debian's Chromium (``/usr/bin/chromium``) driven by
Playwright's Python package; ``playwright install`` is never needed.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from digest.store.db import make_engine, session_scope
from subscribers.consent import suppression_of
from subscribers.models import Subscriber, Suppression
from tests.support import REPO, write_config

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"
# Root on a machine without outside network: no sandbox, no GPU, and nothing that
# phones home (component updates, sync, QUIC probes).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"  # git-ignored
WIDTHS = (375, 1280)
SECRET_KEY = "browser-test-key"
EDITION_DIR = re.compile(r"^\d{4}-W\d{2}$")


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing: apt-get install chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package 'playwright' is missing: pip install '.[test]'"
    return None


def launched_browser() -> Iterator[Browser]:
    """Headless Debian chromium through Playwright, for a module-scoped fixture.
    Skips where it cannot run, but fails under CI=true: CI must run these."""
    reason = browser_unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the browser tests cannot run: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], Any], *, timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail saying what never came."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Site:
    """A config in ``root`` (outbox transport, a copy of the sample feed) and the
    server serving it once :meth:`serve` runs."""

    root: Path
    db_url: str
    port: int = field(default_factory=free_port)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def feed(self) -> Path:
        return self.root / "feed.json"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DIGEST_DATABASE_URL": self.db_url,
            "DIGEST_SECRET_KEY": SECRET_KEY,
            "COLUMNS": "200",
        }

    def write_config(self) -> None:
        self.feed.write_bytes((REPO / "examples" / "feed.json").read_bytes())
        write_config(
            self.root,
            site={"base_url": self.base, "allow_insecure_base_url": True},
            feed={"kind": "files", "path": str(self.feed)},
        )

    def digest(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real ``digest`` command, as an operator runs it; must exit 0."""
        result = subprocess.run(
            [sys.executable, "-m", "digest", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        assert result.returncode == 0, f"digest {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result

    @contextmanager
    def serve(self) -> Iterator[None]:
        """``digest serve`` in a subprocess until it answers; stopped afterwards."""
        log_path = self.root / "serve.log"
        command = [sys.executable, "-m", "digest", "--config", str(self.config), "serve"]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:

                def answers() -> bool:
                    if proc.poll() is not None:
                        log.flush()
                        raise AssertionError(
                            f"digest serve exited with {proc.returncode}:\n"
                            + log_path.read_text(errors="replace")
                        )
                    try:
                        with urllib.request.urlopen(f"{self.base}/subscribe", timeout=2) as r:
                            return bool(r.status == 200)
                    except (urllib.error.URLError, ConnectionError):
                        return False

                wait_for(f"digest serve on {self.base}", answers, timeout=30)
                yield
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def server_log(self) -> str:
        path = self.root / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- the outbox --------------------------------------------------------------

    def mails(self, folder: str) -> dict[str, EmailMessage]:
        """``{recipient: message}`` of the .eml files in ``outbox/<folder>``."""
        found: dict[str, EmailMessage] = {}
        for path in sorted((self.outbox / folder).glob("*.eml")):
            message = parse(path.read_bytes())
            found[message["To"].addresses[0].addr_spec] = message
        return found

    def edition_folders(self) -> list[str]:
        if not self.outbox.is_dir():
            return []
        return sorted(p.name for p in self.outbox.iterdir() if EDITION_DIR.match(p.name))

    def eml_files(self) -> set[Path]:
        return set(self.outbox.rglob("*.eml")) if self.outbox.is_dir() else set()

    def link(self, message: EmailMessage, route: str) -> str:
        """The ``{base}/{route}/{token}`` link in the message's text part."""
        pattern = re.compile(rf"{re.escape(self.base)}/{route}/[A-Za-z0-9._-]+")
        found = pattern.search(text_of(message))
        assert found is not None, f"no /{route}/ link in:\n{text_of(message)}"
        return found.group(0)

    # --- the database (read only) ------------------------------------------------

    def subscriber(self, email: str) -> Subscriber:
        engine = make_engine(self.db_url)
        try:
            with session_scope(engine) as session:
                stmt = select(Subscriber).where(Subscriber.email == email)  # type: ignore[arg-type]
                found: Subscriber | None = session.execute(stmt).scalar_one_or_none()
                assert found is not None, f"no subscriber {email}"
                return found
        finally:
            engine.dispose()

    def suppression(self, email: str) -> Suppression | None:
        engine = make_engine(self.db_url)
        try:
            with session_scope(engine) as session:
                return suppression_of(session, email=email)
        finally:
            engine.dispose()


def parse(data: bytes) -> EmailMessage:
    return message_from_bytes(data, policy=policy.default)


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "no text/plain part"
    return str(part.get_content())


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None, "no text/html part"
    return str(part.get_content())


class Shooter:
    """Full-page screenshots of the page as it is now, at each width in :data:`WIDTHS`
    (resizing re-lays the page out without reloading it, so the result of a POST
    can be photographed too). ``folder`` None: take none."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.written: list[Path] = []
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, page: Page, step: str) -> None:
        if self.folder is None:
            return
        size = page.viewport_size
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 800})
            path = self.folder / f"{step}-{width}.png"
            page.screenshot(path=str(path), full_page=True)
            self.written.append(path)
        if size is not None:
            page.set_viewport_size(size)
