"""The fetch stage: fetch + store in one transaction, cursor and feed health kept."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, select

from digest.comparisons.fetch import fetch_and_store
from digest.errors import FeedDocumentError, FeedError, FeedUnavailable
from digest.feeds.base import FeedCursor, FeedEntry, FetchResult, IsKnown, Progress
from digest.feeds.files import FilesFeed
from digest.store.models import Comparison, FeedState

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MIXED_FEED = Path(__file__).resolve().parent / "data" / "feeds" / "mixed.json"
SAMPLE_FEED = Path(__file__).resolve().parent.parent / "examples" / "feed.json"


@dataclass
class ScriptedFeed:
    """A feed that returns (or raises) what the test says and records what it was given."""

    outcomes: list[FetchResult | FeedError]
    key: str = "scripted"
    cursors: list[FeedCursor] = field(default_factory=list)
    known: list[bool] = field(default_factory=list)

    def fetch(
        self,
        cursor: FeedCursor,
        is_known: IsKnown,
        progress: Progress | None = None,
        *,
        stop: threading.Event | None = None,
    ) -> FetchResult:
        self.cursors.append(cursor)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, FeedError):
            raise outcome
        self.known = [is_known(e.raw["id"], e.raw.get("updated_at")) for e in outcome.entries]
        if progress is not None:
            progress(len(outcome.entries))
        return outcome


def entries_of(path: Path) -> list[FeedEntry]:
    return FilesFeed(path).fetch(FeedCursor(), lambda i, u, /: False).entries


def state_of(engine: Engine, key: str) -> FeedState:
    with Session(engine) as session:
        state = session.get(FeedState, key)
        assert state is not None
        return state


def titles(engine: Engine) -> dict[str, str]:
    with Session(engine) as session:
        return {row.id: row.title for row in session.exec(select(Comparison))}


def test_a_files_feed_is_stored_with_bad_comparisons_reported(engine: Engine) -> None:
    feed = FilesFeed(MIXED_FEED)
    seen: list[int] = []
    report = fetch_and_store(engine, feed, now=NOW, progress=seen.append)
    assert (report.pages, report.entries, report.not_modified, seen) == (1, 4, False, [4])
    assert report.new == ["script-title", "crlf-title", "good-one"]
    assert [str(e) for e in report.invalid] == [
        f"comparison 'bad-pricing' (item 3 of {MIXED_FEED}): tools[1].pricing: "
        "'gratis' is not one of: free, paid, freemium, open-source"
    ]
    assert titles(engine)["script-title"] == "<script>alert(1)</script>"
    assert titles(engine)["crlf-title"] == "First line Second line"
    state = state_of(engine, feed.key)
    assert (state.last_success_at, state.consecutive_failures, state.last_error) == (NOW, 0, "")

    again = fetch_and_store(engine, feed, now=NOW + timedelta(hours=1))
    assert (again.new, again.updated, again.unchanged, len(again.invalid)) == ([], [], 3, 1)


def test_the_cursor_is_kept_between_fetches_and_is_known_asks_the_database(
    engine: Engine,
) -> None:
    entries = entries_of(SAMPLE_FEED)
    feed = ScriptedFeed(
        [
            FetchResult(entries=entries[:2], cursor=FeedCursor('"e1"', "Mon"), pages=1),
            FetchResult(entries=entries, cursor=FeedCursor('"e2"', ""), pages=1),
            FetchResult(entries=[], cursor=FeedCursor('"e2"', ""), not_modified=True),
        ]
    )
    assert len(fetch_and_store(engine, feed, now=NOW).new) == 2
    report = fetch_and_store(engine, feed, now=NOW)
    assert feed.known == [True, True, False]
    assert (len(report.new), report.unchanged) == (1, 2)
    report = fetch_and_store(engine, feed, now=NOW)
    assert report.not_modified and report.entries == 0
    assert feed.cursors == [FeedCursor(), FeedCursor('"e1"', "Mon"), FeedCursor('"e2"', "")]
    state = state_of(engine, "scripted")
    assert (state.etag, state.last_modified) == ('"e2"', "")


def test_failures_are_recorded_and_nothing_stored_is_lost(engine: Engine) -> None:
    ok = FetchResult(entries=entries_of(SAMPLE_FEED), cursor=FeedCursor('"e1"'), pages=1)
    down = FeedUnavailable("feed https://feed.example/v1: gave up after 4 attempts")
    feed = ScriptedFeed([ok, down, FeedDocumentError("https://feed.example/v1: not JSON"), ok])
    fetch_and_store(engine, feed, now=NOW)
    for hours, error in ((1, FeedUnavailable), (2, FeedDocumentError)):
        failed = fetch_and_store(engine, feed, now=NOW + timedelta(hours=hours))
        assert isinstance(failed.error, error) and (failed.pages, failed.new) == (0, [])
    state = state_of(engine, "scripted")
    assert (state.consecutive_failures, state.last_success_at, state.etag) == (2, NOW, '"e1"')
    assert (state.last_error, state.last_attempt_at) == (
        "https://feed.example/v1: not JSON",
        NOW + timedelta(hours=2),
    )
    assert len(titles(engine)) == 3

    fetch_and_store(engine, feed, now=NOW + timedelta(hours=3))
    state = state_of(engine, "scripted")
    assert (state.consecutive_failures, state.last_error) == (0, "")
    assert state.last_success_at == NOW + timedelta(hours=3)


def test_a_first_fetch_that_fails_still_records_the_feed(engine: Engine) -> None:
    feed = ScriptedFeed([FeedUnavailable("down")], key="file:/nowhere")
    assert isinstance(fetch_and_store(engine, feed, now=NOW).error, FeedUnavailable)
    state = state_of(engine, "file:/nowhere")
    assert (state.consecutive_failures, state.last_error) == (1, "down")
    assert state.last_success_at is None


def test_a_fetch_cut_short_stores_its_pages_and_the_next_reads_them_all(engine: Engine) -> None:
    entries = entries_of(SAMPLE_FEED)
    cut = FeedUnavailable("feed https://feed.example/v1?page=2: gave up after 4 attempts")
    feed = ScriptedFeed(
        [
            FetchResult(entries=entries[:1], cursor=FeedCursor('"e1"'), pages=1),
            FetchResult(entries=entries[:2], cursor=FeedCursor('"e1"'), pages=1, error=cut),
            FetchResult(entries=entries, cursor=FeedCursor('"e3"'), pages=2),
        ]
    )
    fetch_and_store(engine, feed, now=NOW)
    report = fetch_and_store(engine, feed, now=NOW + timedelta(hours=1))
    assert report.error is cut and (report.pages, report.new) == (1, [entries[1].raw["id"]])
    state = state_of(engine, "scripted")
    assert (state.consecutive_failures, state.last_success_at, state.etag) == (1, NOW, '"e1"')
    assert "gave up" in state.last_error and len(titles(engine)) == 2

    # After a failure the feed is not told "known" for what it stored: it reads on.
    report = fetch_and_store(engine, feed, now=NOW + timedelta(hours=2))
    assert feed.known == [False, False, False] and report.error is None
    state = state_of(engine, "scripted")
    assert (state.consecutive_failures, state.etag, len(titles(engine))) == (0, '"e3"', 3)


def test_a_files_feed_refuses_a_file_over_max_bytes_before_reading_it(
    engine: Engine, tmp_path: Path
) -> None:
    big = tmp_path / "big.json"
    with big.open("wb") as handle:
        handle.truncate(30_000_000)  # sparse: 30 MB that cost no disk and are never read
    report = fetch_and_store(engine, FilesFeed(big), now=NOW)
    assert isinstance(report.error, FeedDocumentError)
    assert str(report.error) == (
        f"feed file {big} is 30,000,000 bytes, larger than [feed] max_bytes = 20,000,000; "
        "it was not read: raise max_bytes if the feed really is this large"
    )
    (tmp_path / "ok.json").write_bytes(SAMPLE_FEED.read_bytes())
    folder = fetch_and_store(engine, FilesFeed(tmp_path, max_bytes=1_000_000), now=NOW)
    assert len(folder.new) == 3 and folder.error is None
    assert folder.problems == [
        f"skipped feed file {big} is 30,000,000 bytes, larger than "
        "[feed] max_bytes = 1,000,000; it was not read: raise max_bytes "
        "if the feed really is this large"
    ]
