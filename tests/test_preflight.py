"""Pre-flight checks against real things: a loopback HTTP server answering 200 or
404, the sample feed, the real renderer, and ``digest check-edition`` itself."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from digest import pipeline
from digest.cli import app as cli_app
from digest.common.netguard import AddressPolicy
from digest.desk import preflight, tracked
from digest.desk import preview as desk
from digest.desk.linkcheck import LinkChecker
from digest.desk.preflight import GMAIL_CLIP_BYTES, PreflightReport, run_preflight
from digest.editions.segments import Skip
from digest.render.size import wire_html
from digest.store.models import Comparison
from tests.support import SAMPLE_FEED
from tests.test_admin import open_runtime

BROKEN_TITLE = "Lumen Notebook vs Quill Agents (sample data)"
# These tests' link servers listen on loopback, which the link check refuses by
# default (tests/test_ssrf_guard.py): allowed here.
LOOPBACK_OK = {"allow_private_addresses": True}


class _Handler(BaseHTTPRequestHandler):
    hits: dict[str, int]
    lock = threading.Lock()
    in_flight = 0
    most = 0
    delay = 0.0

    def _answer(self, body: bool) -> None:
        cls = type(self)
        with cls.lock:
            cls.hits[self.path] = cls.hits.get(self.path, 0) + 1
            cls.in_flight += 1
            cls.most = max(cls.most, cls.in_flight)
        time.sleep(cls.delay)
        with cls.lock:
            cls.in_flight -= 1
        status = 404 if self.path.startswith("/missing") else 200
        status = 405 if self.command == "HEAD" and self.path.startswith("/nohead") else status
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        if body:
            self.wfile.write(b"ok")

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_GET(self) -> None:
        self._answer(True)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"hits": {}, "in_flight": 0, "most": 0, "delay": 0.0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def feed_with_links(
    tmp_path: Path, base: str, broken: str, *, published: datetime | None = None
) -> Path:
    """The sample feed, every comparison linking to the loopback server; the one
    titled ``broken`` to a page that answers 404; ``published`` moves them in time."""
    feed = json.loads(SAMPLE_FEED.read_text("utf-8"))
    for c in feed["comparisons"]:
        if published is not None:
            c["published_at"] = published.strftime("%Y-%m-%dT%H:%M:%SZ")
            c.pop("updated_at", None)
        path = "/missing/page" if c["title"] == broken else f"/ok/{c['id']}"
        c["url"] = base + path
    target = tmp_path / "feed.json"
    target.write_text(json.dumps(feed), encoding="utf-8")
    return target


def test_a_link_answering_404_fails_the_preflight_naming_link_and_comparison(
    tmp_path: Path, server: tuple[str, type[_Handler]]
) -> None:
    base, handler = server
    feed = feed_with_links(tmp_path, base, BROKEN_TITLE)
    rt = open_runtime(tmp_path, feed={"kind": "files", "path": str(feed)}, preflight=LOOPBACK_OK)
    try:
        started = time.monotonic()
        report = run_preflight(rt, key=None)
        elapsed = time.monotonic() - started
    finally:
        rt.close()
    (error,) = report.errors
    assert error.check == "links" and error.url == f"{base}/missing/page"
    assert error.comparison == BROKEN_TITLE and "answers 404" in error.message
    assert BROKEN_TITLE in error.describe() and f"{base}/missing/page" in error.describe()
    assert report.links_checked == 3 and elapsed < 5
    # Each link once, though the title and the button both carry it (per-run cache).
    assert len(handler.hits) == 3 and set(handler.hits.values()) == {1}


def test_check_edition_command_exits_1_and_names_the_broken_link(
    tmp_path: Path, server: tuple[str, type[_Handler]]
) -> None:
    base, _ = server
    # The command runs on the real clock: comparisons published an hour ago.
    recent = datetime.now(UTC) - timedelta(hours=1)
    feed = feed_with_links(tmp_path, base, BROKEN_TITLE, published=recent)
    rt = open_runtime(tmp_path, feed={"kind": "files", "path": str(feed)}, preflight=LOOPBACK_OK)
    rt.close()
    env = {"DIGEST_SECRET_KEY": "test-key", "COLUMNS": "300"}
    result = CliRunner().invoke(
        cli_app, ["--config", str(tmp_path / "config.toml"), "check-edition", "next"], env=env
    )
    assert result.exit_code == 1, result.output
    assert f"{base}/missing/page answers 404" in result.output
    assert BROKEN_TITLE in result.output and "1 error(s)" in result.output
    fine = CliRunner().invoke(
        cli_app,
        ["--config", str(tmp_path / "config.toml"), "check-edition", "--no-links"],
        env=env,
    )
    assert fine.exit_code == 0, fine.output


def test_an_oversized_edition_fails_with_its_size(tmp_path: Path) -> None:
    rt = open_runtime(tmp_path, edition={"max_html_bytes": 5000})
    try:
        report = run_preflight(rt, key=None)
    finally:
        rt.close()
    sizes = [f for f in report.errors if f.check == "size"]
    assert sizes and f"{report.html_bytes:,} bytes" in sizes[0].message
    assert "max_html_bytes" in sizes[0].message and report.html_bytes > 5000


def wire(html: str) -> bytes:
    return wire_html((html,), {})


def test_past_gmails_clip_the_size_and_a_late_unsubscribe_link_are_errors() -> None:
    report = PreflightReport("2026-W48")
    unsubscribe = "https://digest.example.com/u/xyz"
    html = "<p>" + "x" * (GMAIL_CLIP_BYTES + 10) + f'</p><a href="{unsubscribe}">u</a>1 Street'
    preflight._check_size(report, wire(html), unsubscribe, "1 Street")
    messages = [f.message for f in report.errors]
    assert any(f"{len(wire(html)):,} bytes on the wire" in m for m in messages)
    assert any("unsubscribe link is at byte" in m for m in messages)
    assert any("postal address is at byte" in m for m in messages)
    small = PreflightReport("2026-W48")
    tiny = f'<a href="{unsubscribe}">u</a>1 Street'
    preflight._check_size(small, wire(tiny), unsubscribe, "1 Street")
    assert small.ok


def test_the_clip_counts_the_quoted_printable_bytes_not_the_decoded_text() -> None:
    """The issue's case: 96,685 decoded bytes passed, 113,661 on the wire were clipped.
    Here ``=`` and non-ASCII text take three bytes each on the wire."""
    unsubscribe = "https://digest.example.com/u/xyz"
    body = "<p>" + "é=" * 24_000 + "</p>" + "<p>plain words</p>\n" * 1_000
    html = f'{body}<a href="{unsubscribe}">unsubscribe</a> 1 Street'
    assert len(html.encode("utf-8")) < GMAIL_CLIP_BYTES < len(wire(html))
    report = PreflightReport("2026-W48")
    preflight._check_size(report, wire(html), unsubscribe, "1 Street")
    assert report.html_bytes == len(wire(html))
    (size, link, postal) = [f.message for f in report.errors]
    assert f"{len(wire(html)):,} bytes on the wire (quoted-printable, as sent" in size
    at = wire(html).find(b"https://digest.example.com/u/xyz")
    assert at > GMAIL_CLIP_BYTES and f"unsubscribe link is at byte {at:,} on the wire" in link
    assert "postal address is at byte" in postal


def test_the_reported_size_is_the_html_part_of_the_built_message(tmp_path: Path) -> None:
    rt = open_runtime(tmp_path)
    try:
        report = run_preflight(rt, key=None)
        content = desk.edition_content(rt, None)
        built = desk.build(rt, content, desk.viewer_for(rt).recipient, now=rt.now())
        assert not isinstance(built, Skip)
        digest = pipeline.render(rt, content.key, content.comparisons)
        urls = tracked.typical_values(rt, digest)
    finally:
        rt.close()
    part = wire_html(digest.html, urls)
    assert report.html_bytes == len(part) > len(digest.html_with(urls).encode("utf-8"))
    inert = {**built.personal.values} if built.personal else {}  # the reader 0 values it carries
    assert inert["unsubscribe_url"] == desk.inert_urls(rt, 0)["unsubscribe_url"]
    assert wire_html(digest.html, inert) in built.data  # the very bytes the message carries


def test_images_without_alt_and_relative_links_are_errors() -> None:
    links = preflight._Links()
    links.feed('<img src="https://x/a.png"><img src="https://x/b.png" alt=""><a href="/rel">r</a>')
    report = PreflightReport("2026-W48")
    preflight._check_images(report, links.images)
    assert [f.url for f in report.errors] == ["https://x/a.png"]  # alt="" is decorative: fine
    targets = preflight._check_link_forms(report, links.hrefs, set(), {})
    assert targets == [] and report.errors[-1].message == "not an absolute http(s) link: /rel"


def test_a_clean_edition_passes_and_headers_are_checked(
    tmp_path: Path, server: tuple[str, type[_Handler]]
) -> None:
    base, _ = server
    feed = feed_with_links(tmp_path, base, broken="none")
    rt = open_runtime(tmp_path, feed={"kind": "files", "path": str(feed)}, preflight=LOOPBACK_OK)
    try:
        report = run_preflight(rt, key=None)
    finally:
        rt.close()
    assert report.ok, [f.describe() for f in report.errors]
    assert report.links_checked == 3 and 10_000 < report.html_bytes < GMAIL_CLIP_BYTES


async def test_link_checker_bounds_concurrency_and_falls_back_to_get(
    server: tuple[str, type[_Handler]],
) -> None:
    base, handler = server
    handler.delay = 0.05
    urls = [f"{base}/ok/{i}" for i in range(8)] + [f"{base}/nohead", f"{base}/ok/0"]
    checker = LinkChecker(timeout=5, concurrency=2, policy=AddressPolicy(allow_private=True))
    results = await checker.check(urls)
    assert handler.most <= 2
    assert all(r.ok for r in results.values()) and len(results) == 9
    assert handler.hits[f"/ok/{0}"] == 1  # asked twice, fetched once
    again = await checker.check([f"{base}/ok/1"])
    assert again[f"{base}/ok/1"].ok and handler.hits["/ok/1"] == 1  # cached for the run


async def test_an_unreachable_link_is_an_error_within_the_timeout() -> None:
    checker = LinkChecker(timeout=0.5, concurrency=1, policy=AddressPolicy(allow_private=True))
    started = time.monotonic()
    results = await checker.check(["http://127.0.0.1:9/"])  # discard port: refused
    assert not results["http://127.0.0.1:9/"].ok and time.monotonic() - started < 3
    assert "unreachable" in results["http://127.0.0.1:9/"].describe()


def test_a_title_over_120_characters_is_a_warning_naming_the_comparison(tmp_path: Path) -> None:
    feed = json.loads(SAMPLE_FEED.read_text("utf-8"))
    first, second, _ = feed["comparisons"]
    first["title"] = "Streaming tool calls, " + "compared at length " * 7 + "end"
    second["title"] = "t" * 120  # at the limit: no warning
    path = tmp_path / "feed.json"
    path.write_text(json.dumps(feed), encoding="utf-8")
    rt = open_runtime(tmp_path, feed={"kind": "files", "path": str(path)})
    try:
        report = run_preflight(rt, key=None)
        content = desk.edition_content(rt, None)
        digest = pipeline.render(rt, content.key, content.comparisons)
    finally:
        rt.close()
    assert report.ok, [f.describe() for f in report.errors]  # a warning never blocks
    (warning,) = [f for f in report.warnings if f.check == "title"]
    prefix = f"comparison {first['id']}: title is 158 characters; the email shows it shortened to "
    assert len(first["title"]) == 158 and warning.message.startswith(prefix)
    shown = warning.message.removeprefix(prefix)
    assert shown.endswith("…") and first["title"].startswith(shown[:-1])
    text = digest.text_with({**tracked.typical_values(rt, digest), **desk.inert_urls(rt, 0)})
    assert " ".join(shown.split()) in " ".join(text.split())
    assert warning.describe() == f"title: {warning.message}"


def test_only_titles_past_120_characters_are_warned_about() -> None:
    def row(cid: str, title: str) -> Comparison:
        url = f"https://x.example/{cid}"
        return Comparison(id=cid, url=url, title=title, category="C", tools=[], reviews=[])

    content = SimpleNamespace(comparisons=(row("ok", "t" * 120), row("long", "word " * 30)))
    report = PreflightReport("2026-W48")
    preflight._check_titles(report, content)  # type: ignore[arg-type]
    (warning,) = report.findings
    assert (warning.level, warning.check, warning.comparison) == ("warning", "title", "")
    assert warning.message.startswith("comparison long: title is 150 characters; the email")
