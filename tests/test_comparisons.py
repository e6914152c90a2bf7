"""Per-comparison validation, text cleaning, upsert and change detection."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from digest.comparisons.store import ingest, known_checker
from digest.comparisons.validation import validate
from digest.errors import InvalidComparison
from digest.feeds.base import FeedEntry
from digest.feeds.document import parse_document
from digest.store.db import session_scope
from digest.store.models import Comparison

SAMPLE_FEED = Path(__file__).resolve().parent.parent / "examples" / "feed.json"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
Raw = dict[str, Any]


def tool(key: str, **changes: Any) -> Raw:
    base: Raw = {
        "key": key,
        "name": key.capitalize(),
        "pricing": "free",
        "panel_ship_pct": 50,
        "community_pct": None,
    }
    return {**base, **changes}


def comparison(cid: str = "alpha-vs-beta", **changes: Any) -> Raw:
    base: Raw = {
        "id": cid,
        "url": f"https://verdicts.example.com/compare/{cid}",
        "title": "Alpha vs Beta",
        "category": "Developer Tools",
        "published_at": "2026-11-20T14:00:00Z",
        "tools": [tool("alpha"), tool("beta")],
        "reviews": [{"tool": "alpha", "lens": "builder", "verdict": "ship", "quote": "Good."}],
    }
    return {**base, **changes}


def entry(raw: Any, position: int = 0) -> FeedEntry:
    return FeedEntry(raw=raw, source="test.json", position=position)


def refused(raw: Any) -> InvalidComparison:
    with pytest.raises(InvalidComparison) as caught:
        validate(entry(raw))
    return caught.value


def test_the_sample_feed_is_valid() -> None:
    document = parse_document(SAMPLE_FEED.read_bytes(), source=str(SAMPLE_FEED))
    assert [validate(e).id for e in document.entries] == [
        "claude-4-api-tool-streaming-vs-codestral-2",
        "lumen-notebook-vs-quill-agents",
        "tern-vector-vs-heron-search",
    ]


def _set(path: str, value: Any) -> Callable[[Raw], None]:
    """A mutator setting ``tools.1.pricing``-style paths (``-`` value deletes)."""

    def mutate(raw: Raw) -> None:
        *parents, last = path.split(".")
        target: Any = raw
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        key: Any = int(last) if last.isdigit() else last
        if value == "-":
            del target[key]
        else:
            target[key] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (_set("tools.1.pricing", "gratis"), "tools[1].pricing", "'gratis' is not one of: free,"),
        (_set("title", "-"), "title", "is missing"),
        (_set("tools.0.panel_ship_pct", "-"), "tools[0].panel_ship_pct", "is missing"),
        (_set("tools.0.panel_ship_pct", 101), "tools[0].panel_ship_pct", "101 is more than 100"),
        (_set("tools", [tool("alpha")]), "tools", "has 1 item, at least 2 are needed"),
        (_set("id", "Not A Slug"), "id", "'Not A Slug' is not an id"),
        (_set("id", "slug\n"), "id", "'slug\\n' is not an id"),
        (_set("tools.1.key", "beta\n"), "tools[1].key", "is not a tool key"),
        (_set("title", ""), "title", "is empty"),
        (_set("title", "x" * 301), "title", "is 301 characters long, more than 300"),
        (_set("url", "ftp://files.example.com/x"), "url", "not an absolute http(s) URL"),
        (_set("url", "https://exa mple.com/x"), "url", "not an absolute http(s) URL"),
        (_set("tools.0.url", "http://"), "tools[0].url", "not an absolute http(s) URL"),
        (_set("published_at", "2026-11-20T14:00:00"), "published_at", "with an offset"),
        (_set("published_at", "2026-02-30T00:00:00Z"), "published_at", "not a valid date"),
        (_set("updated_at", "yesterday"), "updated_at", "not an RFC 3339"),
        (_set("tools.1.key", "alpha"), "tools[1].key", "'alpha' is used twice (also tools[0])"),
        (_set("reviews.0.tool", "gamma"), "reviews[0].tool", "'gamma' is not the key of one"),
        (_set("reviews.0.verdict", "maybe"), "reviews[0].verdict", "is not one of: ship, skip"),
        (_set("reviews.0.quote", 42), "reviews[0].quote", "42 is not a string"),
    ],
)
def test_a_bad_comparison_names_its_id_and_the_field(
    mutate: Callable[[Raw], None], field: str, reason: str
) -> None:
    raw = copy.deepcopy(comparison())
    mutate(raw)
    error = refused(raw)
    assert (error.where, error.field) == (entry(raw).where, field)
    assert len(error.problems) == 1 and reason in error.reason
    assert str(error) == f"comparison {error.where}: {field}: {error.reason}"


def test_a_comparison_without_usable_id_is_named_by_position() -> None:
    error = refused(["not", "an", "object"])
    assert (error.where, error.field) == ("item 1 of test.json", "$")
    assert error.reason == "a list of 3 items is not an object"
    assert refused(comparison(id=7)).where == "item 1 of test.json"
    paged = FeedEntry(raw=comparison(), source="https://feed.example/v1", position=2, page=4)
    assert paged.where == "'alpha-vs-beta' (item 3 of page 4)"


def test_non_finite_numbers_refuse_only_that_comparison() -> None:
    items = [json.dumps(comparison(name)) for name in ("good", "nan", "huge")]
    items[1] = items[1].replace('"panel_ship_pct": 50', '"panel_ship_pct": NaN', 1)
    items[2] = items[2].replace('"panel_ship_pct": 50', '"panel_ship_pct": 1e999', 1)
    doc = '{"version": "1", "generated_at": "2026-11-23T08:00:00Z", "comparisons": [%s]}'
    good, nan, huge = parse_document(doc % ", ".join(items), source="t").entries
    assert validate(good).id == "good"
    for bad in (nan, huge):
        with pytest.raises(
            InvalidComparison, match=r"tools\[0\]\.panel_ship_pct: \S+ is not a number"
        ):
            validate(bad)


def test_defaults_and_timestamps() -> None:
    raw = comparison(published_at="2026-11-20t16:00:00.123456789+02:00")
    del raw["reviews"]
    valid = validate(entry(raw))
    assert valid.published_at == datetime(2026, 11, 20, 14, 0, 0, 123456, tzinfo=UTC)
    assert valid.updated_at == valid.published_at
    assert valid.question == "" and valid.reviews == []
    assert valid.tools[0]["category"] == "Developer Tools"  # the comparison's
    assert valid.tools[0]["vendor"] == "" and valid.tools[0]["url"] == ""
    later = validate(entry(comparison(updated_at="2026-11-21T00:00:00-00:00")))
    assert later.updated_at == datetime(2026, 11, 21, tzinfo=UTC)


def test_text_is_plain_text_kept_verbatim_and_one_line_where_it_must_be() -> None:
    raw = comparison(
        title='<script>alert(1)</script> & "friends"',
        question="Which\r\none?\t",
        category="Dev\u2028Tools",
        tools=[
            tool("alpha", name="Al\npha", description="Line one.\r\nLine\ttwo.\x00\x1b[31m"),
            tool("beta", category="Other", tagline="a\ud800b"),
        ],
        reviews=[{"tool": "beta", "lens": "buy\ter", "verdict": "skip", "quote": "A.\rB."}],
    )
    valid = validate(entry(raw))
    assert valid.title == '<script>alert(1)</script> & "friends"'
    assert valid.question == "Which one?"
    assert valid.category == "Dev Tools"
    alpha, beta = valid.tools
    assert alpha["name"] == "Al pha"
    assert alpha["description"] == "Line one.\nLine two.[31m"
    assert beta["category"] == "Other" and beta["tagline"] == "a\ufffdb"
    assert valid.reviews == [
        {"tool": "beta", "lens": "buy er", "reviewer": "", "verdict": "skip", "quote": "A.\nB."}
    ]


def test_overlong_category_is_cut_to_the_column_size() -> None:
    assert len(validate(entry(comparison(category="c" * 250))).category) == 200


def _stored(engine: Engine) -> dict[str, Comparison]:
    with session_scope(engine) as session:
        return {row.id: row for row in session.exec(select(Comparison))}


def _ingest(engine: Engine, raws: list[Any], now: datetime = NOW) -> Any:
    with session_scope(engine) as session:
        return ingest(session, [entry(r, i) for i, r in enumerate(raws)], now=now)


def test_good_comparisons_are_stored_and_bad_ones_reported(engine: Engine) -> None:
    bad = comparison("broken", tools=[tool("alpha"), tool("beta", pricing="gratis")])
    report = _ingest(engine, [comparison("one"), bad, comparison("two"), "junk"])
    assert report.new == ["one", "two"] and report.updated == [] and report.unchanged == 0
    assert [(e.where, e.field) for e in report.invalid] == [
        ("'broken' (item 2 of test.json)", "tools[1].pricing"),
        ("item 4 of test.json", "$"),
    ]
    stored = _stored(engine)
    assert set(stored) == {"one", "two"}
    assert stored["one"].first_seen_at == NOW == stored["one"].last_seen_at
    assert stored["one"].published_at == datetime(2026, 11, 20, 14, tzinfo=UTC)


def test_script_and_newlines_in_titles_survive_the_database(engine: Engine) -> None:
    title = "<script>alert(1)</script>\r\nsecond line"
    _ingest(engine, [comparison(title=title)])
    assert _stored(engine)["alpha-vs-beta"].title == "<script>alert(1)</script> second line"


def test_later_updated_at_updates_in_place_older_is_unchanged(engine: Engine) -> None:
    _ingest(engine, [comparison(title="v1", updated_at="2026-11-21T00:00:00Z")])
    later = NOW + timedelta(hours=1)
    newer = comparison(title="v2", updated_at="2026-11-22T00:00:00Z")
    assert _ingest(engine, [newer], now=later).updated == ["alpha-vs-beta"]
    row = _stored(engine)["alpha-vs-beta"]
    assert (row.title, row.first_seen_at, row.last_seen_at) == ("v2", NOW, later)

    even_later = later + timedelta(hours=1)
    older = comparison(title="v0", updated_at="2026-11-20T00:00:00Z")
    same = comparison(title="v2 again", updated_at="2026-11-22T00:00:00Z")
    for raw in (older, same):
        report = _ingest(engine, [raw], now=even_later)
        assert (report.new, report.updated, report.unchanged) == ([], [], 1)
    row = _stored(engine)["alpha-vs-beta"]
    assert (row.title, row.last_seen_at) == ("v2", even_later)


def test_a_bad_update_never_overwrites_a_good_row(engine: Engine) -> None:
    _ingest(engine, [comparison(title="good")])
    bad = comparison(title="bad", updated_at="2026-12-01T00:00:00Z", tools=[tool("alpha")])
    report = _ingest(engine, [bad])
    assert report.updated == [] and report.invalid[0].field == "tools"
    assert _stored(engine)["alpha-vs-beta"].title == "good"


def test_the_same_id_twice_in_one_fetch_keeps_the_newest(engine: Engine) -> None:
    old = comparison(title="old", updated_at="2026-11-21T00:00:00Z")
    new = comparison(title="new", updated_at="2026-11-22T00:00:00Z")
    report = _ingest(engine, [old, new, old])
    assert report.new == ["alpha-vs-beta"] and report.invalid == []
    assert _stored(engine)["alpha-vs-beta"].title == "new"


def test_known_checker(engine: Engine) -> None:
    _ingest(engine, [comparison(updated_at="2026-11-21T00:00:00Z")])
    with session_scope(engine) as session:
        known = known_checker(session)
        assert not known("never-seen", None)
        assert known("alpha-vs-beta", None)
        assert known("alpha-vs-beta", "2026-11-21T01:00:00+01:00")  # the same instant
        assert known("alpha-vs-beta", "2026-11-20T00:00:00Z")
        assert not known("alpha-vs-beta", "2026-11-21T00:00:01Z")
        assert not known("alpha-vs-beta", "not a date")


def test_every_bad_field_is_reported_in_plain_words() -> None:
    raw = comparison("Bad Id", url="https://verdicts.example.com/x", published_at="yesterday")
    raw["tools"][0].update(pricing="cheap", panel_ship_pct=140)
    raw["tools"][1]["community_pct"] = "lots"
    error = refused(raw)
    assert error.where == "'Bad Id' (item 1 of test.json)"
    assert error.problems == [
        ("id", "'Bad Id' is not an id: use 1 to 120 lower-case letters, digits and '-'"),
        (
            "published_at",
            "'yesterday' is not an RFC 3339 date-time with an offset (e.g. 2026-11-20T14:00:00Z)",
        ),
        ("tools[0].pricing", "'cheap' is not one of: free, paid, freemium, open-source"),
        ("tools[0].panel_ship_pct", "140 is more than 100"),
        ("tools[1].community_pct", "'lots' is not a number or null"),
    ]
    message = str(error)
    assert message.startswith("comparison 'Bad Id' (item 1 of test.json): id: 'Bad Id' is")
    assert "tools[0].panel_ship_pct: 140 is more than 100; tools[1].community_pct:" in message
    for dump in ("{", "ValidationError", "['free'", "Failed validating"):
        assert dump not in message


def test_long_and_hostile_values_are_shown_short_and_printable() -> None:
    raw = comparison(title="\x1b[31m" + "x" * 5000, question=["a", "list"])
    error = refused(raw)
    assert error.problems == [
        ("title", f"'\\x1b[31m{'x' * 32}...' is 5005 characters long, more than 300"),
        ("question", "a list of 2 items is not a string"),
    ]
    assert "\x1b" not in str(error)
    raw["tools"] = [tool(f"t{i}", pricing=None) for i in range(60)]
    error = refused(raw)
    assert len(error.problems) == 51 and error.problems[1][0] == "tools[0].pricing"
    assert error.problems[1][1] == "null is not one of: free, paid, freemium, open-source"
    assert error.problems[-1] == ("...", "13 more problems not listed")  # + reviews[0].tool
