"""The http feed against a real HTTP server on 127.0.0.1 whose answers a test scripts."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from digest.comparisons.fetch import fetch_and_store
from digest.errors import FeedDocumentError, FeedUnavailable
from digest.feeds import http_get
from digest.feeds.base import FeedCursor
from digest.feeds.http import HttpFeed, retry_after_seconds
from digest.store.models import Comparison, FeedState
from tests.feed_servers import page

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MIXED_FEED = Path(__file__).resolve().parent / "data" / "feeds" / "mixed.json"


@dataclass
class Reply:
    status: int = 200
    body: Any = b""  # bytes, str, or a dict sent as JSON
    headers: dict[str, str] = field(default_factory=dict)
    etag: str = ""  # when set: answer 304 to a matching If-None-Match
    delay: float = 0.0


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    at: float  # time.monotonic() when the request arrived


class FeedServer(ThreadingHTTPServer):
    """Answers each path from a script: replies in order, the last one repeated."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: dict[str, list[Reply]] = {}
        self.seen: list[Seen] = []
        self.bodies_sent = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def on(self, path: str, *replies: Reply) -> str:
        self.script[path] = list(replies)
        return self.url(path)

    def hits(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def next_reply(self, path: str) -> Reply:
        replies = self.script.get(path) or [Reply(404, "no such page")]
        return replies.pop(0) if len(replies) > 1 else replies[0]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected here


class _Handler(BaseHTTPRequestHandler):
    server: FeedServer

    def do_GET(self) -> None:
        self.server.seen.append(Seen(self.path, dict(self.headers), time.monotonic()))
        reply = self.server.next_reply(self.path)
        time.sleep(reply.delay)
        if reply.etag and self.headers.get("If-None-Match") == reply.etag:
            self.send_response(304)
            self.send_header("ETag", reply.etag)
            self.end_headers()
            return
        body = reply.body
        if isinstance(body, dict):
            body = json.dumps(body)
        data = body.encode() if isinstance(body, str) else body
        self.send_response(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers}
        if reply.etag:
            headers["ETag"] = reply.etag
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.server.bodies_sent += 1

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[FeedServer]:
    srv = FeedServer()
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def never_known(comparison_id: str, updated_at: str | None, /) -> bool:
    return False


def ids(result: Any) -> list[str]:
    return [e.raw["id"] for e in result.entries]


def stored(engine: Engine) -> dict[str, Comparison]:
    with Session(engine) as session:
        return {row.id: row for row in session.exec(select(Comparison))}


def feed_state(engine: Engine, key: str) -> FeedState:
    with Session(engine) as session:
        state = session.get(FeedState, key)
        assert state is not None
        return state


# --- conditional GET -------------------------------------------------------------


def test_second_poll_gets_304_and_parses_nothing(server: FeedServer, engine: Engine) -> None:
    modified = "Mon, 23 Nov 2026 08:00:00 GMT"
    reply = Reply(body=page("a", "b"), etag='"v1"', headers={"Last-Modified": modified})
    feed = HttpFeed(server.on("/feed", reply))
    first = fetch_and_store(engine, feed, now=NOW)
    assert (first.new, first.pages, first.not_modified) == (["a", "b"], 1, False)
    state = feed_state(engine, feed.key)
    assert (state.etag, state.last_modified) == ('"v1"', modified)

    second = fetch_and_store(engine, feed, now=NOW + timedelta(hours=1))
    assert (second.not_modified, second.pages, second.entries) == (True, 0, 0)
    assert (second.new, second.updated, second.unchanged) == ([], [], 0)
    assert server.bodies_sent == 1  # the document was served (and parsed) once
    asked = server.seen[1].headers
    assert (asked["If-None-Match"], asked["If-Modified-Since"]) == ('"v1"', modified)
    assert set(stored(engine)) == {"a", "b"}
    assert feed_state(engine, feed.key).last_success_at == NOW + timedelta(hours=1)


def test_headers_and_redirects(server: FeedServer) -> None:
    url = server.on("/old", Reply(301, headers={"Location": server.url("/new")}))
    server.on("/new", Reply(body=page("a")))
    result = HttpFeed(url, user_agent="test-agent/1").fetch(FeedCursor(), never_known)
    assert ids(result) == ["a"] and result.cursor == FeedCursor()
    assert server.seen[1].headers["User-Agent"] == "test-agent/1"
    assert server.seen[1].headers["Accept"] == "application/json"
    assert "If-None-Match" not in server.seen[0].headers


# --- retries ---------------------------------------------------------------------


def test_503_with_retry_after_is_waited_out(server: FeedServer) -> None:
    busy = Reply(503, "busy", headers={"Retry-After": "1"})
    url = server.on("/feed", busy, busy, Reply(body=page("a")))
    result = HttpFeed(url, backoff_seconds=0.01).fetch(FeedCursor(), never_known)
    assert ids(result) == ["a"]
    times = [s.at for s in server.hits("/feed")]
    assert len(times) == 3
    assert times[1] - times[0] >= 1.0 and times[2] - times[1] >= 1.0


def test_retry_after_values() -> None:
    assert retry_after_seconds("120", NOW) == 120
    assert retry_after_seconds(format_datetime(NOW + timedelta(seconds=30), usegmt=True), NOW) == 30
    assert retry_after_seconds("Sun, 06 Nov 1994 08:49:37 GMT", NOW) == 0
    assert retry_after_seconds("soon", NOW) is None
    assert retry_after_seconds("1.5", NOW) is None


def test_a_retry_after_beyond_the_cap_fails_at_once(server: FeedServer) -> None:
    url = server.on("/feed", Reply(429, "slow down", headers={"Retry-After": "3600"}))
    with pytest.raises(FeedUnavailable, match="max_retry_after") as caught:
        HttpFeed(url, max_retry_after=5).fetch(FeedCursor(), never_known)
    assert url in str(caught.value) and "3600 s" in str(caught.value)
    assert len(server.seen) == 1


def test_server_errors_back_off_exponentially_with_jitter(
    server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(http_get, "sleep", no_wait)
    url = server.on("/feed", Reply(500), Reply(502), Reply(429), Reply(body=page("a")))
    result = HttpFeed(url, backoff_seconds=0.5).fetch(FeedCursor(), never_known)
    assert ids(result) == ["a"] and len(server.seen) == 4
    assert len(waits) == 3
    assert all(0 <= w <= 0.5 * 2**i for i, w in enumerate(waits))


def test_a_failing_server_fails_the_fetch_clearly(server: FeedServer) -> None:
    url = server.on("/feed", Reply(500, "oops"))
    feed = HttpFeed(url, max_attempts=3, backoff_seconds=0.001)
    with pytest.raises(FeedUnavailable) as caught:
        feed.fetch(FeedCursor(), never_known)
    message = str(caught.value)
    assert url in message and "3 attempts" in message and "HTTP 500" in message
    assert "check that the feed server is up" in message
    assert len(server.seen) == 3


def test_client_errors_are_not_retried(server: FeedServer) -> None:
    url = server.on("/feed", Reply(404, "gone"))
    with pytest.raises(FeedUnavailable, match=r"HTTP 404 Not Found; not retried"):
        HttpFeed(url).fetch(FeedCursor(), never_known)
    assert len(server.seen) == 1


def test_connection_refused_and_timeouts_are_retried_then_fail(server: FeedServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    refused = HttpFeed(f"http://127.0.0.1:{port}/feed", max_attempts=2, backoff_seconds=0.001)
    with pytest.raises(FeedUnavailable, match="2 attempts, the last one failed to connect"):
        refused.fetch(FeedCursor(), never_known)

    url = server.on("/slow", Reply(body=page("a"), delay=0.6))
    slow = HttpFeed(url, timeout=0.2, max_attempts=2, backoff_seconds=0.001)
    with pytest.raises(FeedUnavailable, match=r"timed out after 0\.2 s"):
        slow.fetch(FeedCursor(), never_known)
    assert len(server.hits("/slow")) == 2


def test_a_page_that_is_not_a_feed_document_names_the_url(server: FeedServer) -> None:
    url = server.on("/feed", Reply(body=page("a", next_url=server.url("/p2"))))
    server.on("/p2", Reply(body="<html>maintenance</html>"))
    result = HttpFeed(url).fetch(FeedCursor(), never_known)  # page 1 is kept
    assert ids(result) == ["a"] and isinstance(result.error, FeedDocumentError)
    assert "/p2: not valid JSON" in str(result.error) and result.cursor == FeedCursor()
    server.on("/feed", Reply(body="<html>maintenance</html>"))
    with pytest.raises(FeedDocumentError, match=r"/feed: not valid JSON"):
        HttpFeed(url).fetch(FeedCursor(), never_known)


# --- paging ----------------------------------------------------------------------


def test_paging_stops_after_the_page_with_a_known_comparison(server: FeedServer) -> None:
    url = server.on("/p1", Reply(body=page("a", "b", next_url=server.url("/p2")), etag='"new"'))
    server.on("/p2", Reply(body=page("c", "known", next_url=server.url("/p3"))))
    server.on("/p3", Reply(body=page("old")))
    counts: list[int] = []

    def known(comparison_id: str, updated_at: str | None, /) -> bool:
        return comparison_id == "known"

    result = HttpFeed(url).fetch(FeedCursor(etag='"old"'), known, counts.append)
    assert ids(result) == ["a", "b", "c", "known"] and result.pages == 2
    assert counts == [2, 4] and result.cursor.etag == '"new"' and not result.problems
    assert server.hits("/p3") == []
    assert "If-None-Match" in server.hits("/p1")[0].headers
    assert "If-None-Match" not in server.hits("/p2")[0].headers

    result = HttpFeed(url).fetch(FeedCursor(), never_known)
    assert ids(result)[-1] == "old" and result.pages == 3


@pytest.mark.parametrize(
    ("next_url", "max_pages", "problem"),
    [("/p1", 10, "a loop"), ("/p3", 2, "[feed] max_pages"), ("relative", 10, "not an absolute")],
)
def test_paging_guards(server: FeedServer, next_url: str, max_pages: int, problem: str) -> None:
    url = server.on("/p1", Reply(body=page("a", next_url=server.url("/p2"))))
    target = server.url(next_url) if next_url.startswith("/") else next_url
    server.on("/p2", Reply(body=page("b", next_url=target)))
    server.on("/p3", Reply(body=page("c")))
    result = HttpFeed(url, max_pages=max_pages).fetch(FeedCursor(), never_known)
    assert ids(result) == ["a", "b"] and result.pages == 2
    assert len(result.problems) == 1 and problem in result.problems[0]
    assert len(server.hits("/p1")) == 1 and server.hits("/p3") == []


def test_paging_against_the_database(server: FeedServer, engine: Engine) -> None:
    url = server.on("/p1", Reply(body=page("c", "b", next_url=server.url("/p2"))))
    server.on("/p2", Reply(body=page("a", next_url=server.url("/p3"))))
    server.on("/p3", Reply(body=page("z")))
    assert fetch_and_store(engine, HttpFeed(url), now=NOW).new == ["c", "b", "a", "z"]

    # The site publishes "d", and "b" is updated: page 1 changes, older pages do not.
    newer = page("d", "b", "c", next_url=server.url("/p2"))
    newer["comparisons"][1]["updated_at"] = "2026-11-22T00:00:00Z"
    newer["comparisons"][1]["title"] = "B, revised"
    server.on("/p1", Reply(body=newer))
    report = fetch_and_store(engine, HttpFeed(url), now=NOW + timedelta(days=1))
    assert (report.new, report.updated, report.unchanged, report.pages) == (["d"], ["b"], 1, 1)
    assert len(server.hits("/p2")) == 1 and len(server.hits("/p3")) == 1
    assert stored(engine)["b"].title == "B, revised"


# --- failures and bad input, stored ----------------------------------------------


def test_a_failing_server_keeps_what_is_stored(server: FeedServer, engine: Engine) -> None:
    url = server.on("/feed", Reply(body=page("a", "b"), etag='"v1"'))
    fetch_and_store(engine, HttpFeed(url), now=NOW)
    server.on("/feed", Reply(503, "down"))
    feed = HttpFeed(url, max_attempts=2, backoff_seconds=0.001)
    failed = fetch_and_store(engine, feed, now=NOW + timedelta(hours=1))
    assert isinstance(failed.error, FeedUnavailable) and "HTTP 503" in str(failed.error)
    assert set(stored(engine)) == {"a", "b"}
    state = feed_state(engine, url)
    assert (state.consecutive_failures, state.etag, state.last_success_at) == (1, '"v1"', NOW)
    assert "HTTP 503" in state.last_error and state.last_attempt_at == NOW + timedelta(hours=1)


def test_malformed_comparisons_are_reported_and_text_stays_plain(
    server: FeedServer, engine: Engine
) -> None:
    url = server.on("/feed", Reply(body=MIXED_FEED.read_bytes()))
    report = fetch_and_store(engine, HttpFeed(url), now=NOW)
    assert report.new == ["script-title", "crlf-title", "good-one"]
    assert [(e.where, e.field) for e in report.invalid] == [
        ("'bad-pricing' (item 3 of page 1)", "tools[1].pricing")
    ]
    rows = stored(engine)
    assert rows["script-title"].title == "<script>alert(1)</script>"
    assert rows["crlf-title"].title == "First line Second line"
    assert rows["good-one"].reviews[0]["quote"] == "Solid.\nWould ship."
