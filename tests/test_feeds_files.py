"""The files feed, document-level parsing, and building feeds from the config."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from digest.config import AdapterConfig, load
from digest.config.registry import build_feed
from digest.errors import ConfigError, FeedDocumentError, FeedUnavailable
from digest.feeds import FEEDS, FilesFeed, HttpFeed
from digest.feeds.base import FeedCursor
from digest.feeds.document import parse_document, parse_timestamp
from tests.support import write_config

REPO = Path(__file__).resolve().parent.parent
SAMPLE_FEED = REPO / "examples" / "feed.json"
MIXED_FEED = REPO / "tests" / "data" / "feeds" / "mixed.json"
SAMPLE_IDS = [
    "claude-4-api-tool-streaming-vs-codestral-2",
    "lumen-notebook-vs-quill-agents",
    "tern-vector-vs-heron-search",
]


def never_known(comparison_id: str, updated_at: str | None, /) -> bool:
    return False


def document(*comparisons: Any, **fields: Any) -> str:
    doc = {"version": "1", "generated_at": "2026-11-23T08:00:00Z", "comparisons": comparisons}
    return json.dumps({**doc, **fields})


def ids(entries: list[Any]) -> list[str]:
    return [e.raw["id"] for e in entries]


def test_a_single_file() -> None:
    feed = FilesFeed(SAMPLE_FEED)
    seen: list[int] = []
    cursor = FeedCursor(etag='"x"')
    result = feed.fetch(cursor, never_known, seen.append)
    assert ids(result.entries) == SAMPLE_IDS
    assert (result.pages, result.cursor, result.not_modified, result.problems) == (
        1,
        cursor,
        False,
        [],
    )
    assert seen == [3]
    assert feed.key == f"file:{SAMPLE_FEED.resolve()}"
    assert {e.source for e in result.entries} == {str(SAMPLE_FEED)}


def test_a_folder_is_read_in_name_order_and_bad_files_are_reported(tmp_path: Path) -> None:
    sample = json.loads(SAMPLE_FEED.read_text())["comparisons"]
    (tmp_path / "2-older.json").write_text(document(sample[2]))
    (tmp_path / "1-newer.json").write_text(document(sample[0], sample[1]))
    (tmp_path / "0-broken.json").write_text("{not json")
    (tmp_path / "3-wrong.json").write_text(document(version="2"))
    (tmp_path / "notes.txt").write_text("ignored")
    result = FilesFeed(str(tmp_path)).fetch(FeedCursor(), never_known)
    assert ids(result.entries) == SAMPLE_IDS
    assert result.pages == 2
    assert len(result.problems) == 2
    assert "0-broken.json" in result.problems[0] and "not valid JSON" in result.problems[0]
    assert "3-wrong.json" in result.problems[1] and "'version'" in result.problems[1]


def test_an_empty_folder_is_a_problem_not_a_failure(tmp_path: Path) -> None:
    result = FilesFeed(tmp_path).fetch(FeedCursor(), never_known)
    assert result.entries == [] and "no *.json files" in result.problems[0]


def test_a_missing_path_fails_the_fetch_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(FeedUnavailable, match=r"nope\.json does not exist"):
        FilesFeed(missing).fetch(FeedCursor(), never_known)


def test_a_single_bad_file_fails_the_fetch_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "feed.json"
    bad.write_text("[]")
    with pytest.raises(FeedDocumentError, match=r"feed\.json is not a v1 feed document"):
        FilesFeed(bad).fetch(FeedCursor(), never_known)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('"a string"', "must be a JSON object, got string"),
        ('{"generated_at": "2026-11-23T08:00:00Z", "comparisons": []}', "'version' is missing"),
        (document(version=1), "'version' is 1, this digest reads \"1\""),
        (document(generated_at=None), "'generated_at' must be an RFC 3339"),
        (document(generated_at="2026-11-23 08:00"), "'generated_at': '2026-11-23 08:00' is not"),
        (json.dumps({"version": "1", "generated_at": "2026-11-23T08:00:00Z"}), "it is missing"),
        (document(comparisons={}), "'comparisons' must be an array, it is a JSON object"),
        (document(next_url=5), "'next_url' must be a string or null, got number"),
    ],
)
def test_documents_that_break_the_contract_are_refused(text: str | bytes, problem: str) -> None:
    with pytest.raises(FeedDocumentError) as caught:
        parse_document(text, source="https://feed.example/v1")
    assert str(caught.value).startswith("https://feed.example/v1")
    assert problem in str(caught.value)


def test_a_document_with_bom_extra_keys_and_next_url() -> None:
    text = document({"id": "x"}, next_url="https://feed.example/v1?page=2", extra=True)
    parsed = parse_document(b"\xef\xbb\xbf" + text.encode(), source="s")
    assert parsed.next_url == "https://feed.example/v1?page=2"
    assert parsed.generated_at == datetime(2026, 11, 23, 8, tzinfo=UTC)
    assert [(e.raw, e.source, e.position) for e in parsed.entries] == [({"id": "x"}, "s", 0)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T14:00:00Z", datetime(2026, 11, 20, 14, tzinfo=UTC)),
        ("2026-11-20t15:30:00.5+01:30", datetime(2026, 11, 20, 14, 0, 0, 500000, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ],
)
def test_rfc3339_timestamps(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "text",
    ["2026-11-20T14:00:00", "2026-11-20", "2026-13-01T00:00:00Z", "2026-11-20T14:00:00+24:00"],
)
def test_not_rfc3339_timestamps(text: str) -> None:
    with pytest.raises(ValueError, match="date-time"):
        parse_timestamp(text)


def test_feeds_are_built_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "feeds").mkdir()
    config = load(write_config(tmp_path, feed={"kind": "files", "path": "feeds"}), environ={})
    feed = build_feed(config.feed, config.env)
    assert isinstance(feed, FilesFeed) and feed.key == f"file:{tmp_path.resolve() / 'feeds'}"
    http = {"url": "https://feed.example/v1", "max_pages": 3, "timeout": 2}
    feed = build_feed(table("http", **http), {})
    assert isinstance(feed, HttpFeed) and (feed.max_pages, feed.limits.timeout) == (3, 2.0)
    assert (feed.deadline_seconds, feed.limits.max_bytes) == (60.0, 20_000_000)
    assert set(FEEDS) == {"http", "files"}


def table(kind: str, **options: Any) -> AdapterConfig:
    return AdapterConfig("feed", kind, options, Path("/srv/digest/config.toml"))


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (table("gopher"), "unknown kind 'gopher'"),
        (table("files", path="x", paht="y"), "key 'paht' in /srv/digest/config.toml: unknown"),
        (table("http"), "key 'url' in /srv/digest/config.toml: required"),
        (table("http", url="feed.example/v1"), "absolute http:// or https:// URL"),
        (table("http", url="javascript:alert(1)"), "absolute http:// or https:// URL"),
        (table("http", url="https://f.example", max_attempts=0), "'max_attempts' must be"),
        (table("http", url="https://f.example", max_pages=True), "'max_pages' must be"),
        (table("http", url="https://f.example", timeout="soon"), "'timeout' must be a number"),
        (table("http", url="https://f.example", timeout=float("inf")), "'timeout' must be"),
        (table("http", url="https://f.example", backoff_seconds=-1), "'backoff_seconds'"),
        (table("http", url="https://f.example", user_agent="a\r\nX: y"), "'user_agent'"),
        (table("http", url="https://f.example", deadline_seconds=0), "'deadline_seconds' must"),
        (table("http", url="https://f.example", max_bytes=0), "'max_bytes' must be"),
        (table("files", path="x", max_bytes=1.5), "'max_bytes' must be"),
        (table("http", url="https://u:hunter2@f.example"), "holds a user name or password"),
    ],
)
def test_bad_feed_tables_name_the_key(cfg: AdapterConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=r"\[feed\]") as caught:
        build_feed(cfg, {})
    assert message in str(caught.value) and "hunter2" not in str(caught.value)
