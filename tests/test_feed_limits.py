"""The http feed's bounds (issue 12): a deadline for the whole fetch, a cap on each
body (decompressed size included), a stop signal, and what a later page's failure
keeps. Real servers on 127.0.0.1 (tests/feed_servers.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from digest.comparisons.fetch import fetch_and_store
from digest.errors import FeedUnavailable
from digest.feeds.base import FeedCursor
from digest.feeds.http import HttpFeed
from digest.feeds.limits import CappedBody, redact_url
from digest.store.models import Comparison, FeedState
from tests.feed_servers import (
    MB,
    FeedServer,
    Handler,
    compressed,
    feed_server,
    gzip_bomb,
    json_body,
    page,
    trickle,
    zeros,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with feed_server() as srv:
        yield srv


def never_known(comparison_id: str, updated_at: str | None, /) -> bool:
    return False


def refused(feed: HttpFeed) -> tuple[str, float]:
    """The message a fetch that must fail fails with, and how long it took."""
    started = time.monotonic()
    with pytest.raises(FeedUnavailable) as caught:
        feed.fetch(FeedCursor(), never_known)
    return str(caught.value), time.monotonic() - started


# --- the deadline ------------------------------------------------------------------


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_a_trickling_server_is_cut_at_the_deadline(server: FeedServer, headers_too: bool) -> None:
    url = server.on("/feed", trickle(0.3, headers_too=headers_too))
    message, took = refused(HttpFeed(url, deadline_seconds=1.5, timeout=10))
    assert took < 3.0, took  # each byte restarts the 10 s read timeout; the deadline does not
    assert "deadline_seconds = 1.5 s" in message and url in message


def test_the_deadline_counts_retries_and_waits(server: FeedServer) -> None:
    url = server.on("/feed", json_body({"busy": True}, status=503))
    feed = HttpFeed(url, deadline_seconds=1, backoff_seconds=30, max_attempts=5)
    message, took = refused(feed)
    assert took < 1.0 and "no time left to retry" in message and "HTTP 503" in message


def test_a_page_after_the_first_that_trickles_keeps_the_first(
    server: FeedServer, engine: Engine
) -> None:
    url = server.on("/p1", json_body(page("a", "b", next_url=server.url("/p2"))))
    server.on("/p2", trickle(0.3))
    feed = HttpFeed(url, deadline_seconds=1.5)
    report = fetch_and_store(engine, feed, now=NOW)
    assert (report.new, report.pages) == (["a", "b"], 1)
    assert isinstance(report.error, FeedUnavailable)
    assert "after 1 page" in str(report.error) and "deadline_seconds" in str(report.error)
    with Session(engine) as session:
        assert set(session.exec(select(Comparison.id))) == {"a", "b"}
        state = session.get(FeedState, feed.key)
        assert state is not None and state.consecutive_failures == 1
        assert state.last_success_at is None and "deadline_seconds" in state.last_error


def test_a_later_page_that_fails_keeps_the_earlier_ones_and_is_read_again(
    server: FeedServer, engine: Engine
) -> None:
    url = server.on("/p1", json_body(page("c", "b", next_url=server.url("/p2"))))
    server.on("/p2", json_body(page("a", next_url=server.url("/p3"))))
    server.on("/p3", json_body({"error": "down"}, status=500))
    feed = HttpFeed(url, max_attempts=2, backoff_seconds=0.01)
    report = fetch_and_store(engine, feed, now=NOW)
    assert (report.new, report.pages) == (["c", "b", "a"], 2)
    assert "HTTP 500" in str(report.error) and "/p3" in str(report.error)

    # The next poll does not stop at page 1 (all known now): it reads on to page 3.
    server.on("/p3", json_body(page("z")))
    again = fetch_and_store(engine, feed, now=NOW)
    assert (again.new, again.pages, again.error) == (["z"], 3, None)


def test_the_stop_event_ends_a_fetch_at_once(server: FeedServer) -> None:
    url = server.on("/feed", trickle(0.3))
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with pytest.raises(FeedUnavailable, match="stopped by a signal"):
        HttpFeed(url, deadline_seconds=60).fetch(FeedCursor(), never_known, stop=stop)
    assert time.monotonic() - started < 1.5


# --- the size cap ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "words"),
    [
        (zeros(3 * MB), "max_bytes = 1,000,000 bytes; it was not read"),
        (zeros(3 * MB, content_length=True), "max_bytes = 1,000,000 bytes; it was not read"),
        (zeros(50 * MB, gzip=True), "max_bytes = 1,000,000 bytes once decompressed"),
    ],
    ids=["streamed", "content-length", "gzip-bomb"],
)
def test_a_body_over_max_bytes_is_refused(server: FeedServer, handler: Handler, words: str) -> None:
    url = server.on("/feed", handler)
    message, _ = refused(HttpFeed(url, max_bytes=1_000_000))
    assert f"feed page {url} is larger than [feed] {words}" in message
    assert len(server.requests) == 1  # not retried


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_pages_are_read(server: FeedServer, coding: str) -> None:
    url = server.on("/feed", compressed(page("a", "b"), coding))
    result = HttpFeed(url).fetch(FeedCursor(), never_known)
    assert [e.raw["id"] for e in result.entries] == ["a", "b"]


def test_the_cap_holds_inside_one_chunk() -> None:
    body = CappedBody("gzip", 1000)
    bomb = gzip_bomb(10 * MB)
    with pytest.raises(Exception, match="more than 1,000 bytes"):
        body.add(bomb)  # one 10 KB chunk that inflates to 10 MB
    assert len(body.bytes()) <= 1000


# --- secrets in URLs ---------------------------------------------------------------


def test_urls_are_shown_without_secrets(server: FeedServer) -> None:
    assert redact_url("https://bob:hunter2@feed.example/v1?api_key=s3&page=2&sig=x#f") == (
        "https://***@feed.example/v1?api_key=***&page=2&sig=***"
    )
    assert redact_url("https://feed.example/v1") == "https://feed.example/v1"
    port = server.server_address[1]
    feed = HttpFeed(f"http://127.0.0.1:{port}/missing?token=s3cret&page=2")
    message, _ = refused(feed)
    assert "s3cret" not in message and "s3cret" not in feed.key
    assert f"http://127.0.0.1:{port}/missing?token=***&page=2" in message
    with pytest.raises(ValueError, match="holds a user name or password") as info:
        HttpFeed(f"http://bob:hunter2@127.0.0.1:{port}/missing?token=s3cret")
    assert "hunter2" not in str(info.value) and "s3cret" not in str(info.value)
    with pytest.raises(ValueError, match="absolute http") as caught:
        HttpFeed("ftp://bob:hunter2@feed.example/?token=s3cret")
    assert "hunter2" not in str(caught.value) and "s3cret" not in str(caught.value)
