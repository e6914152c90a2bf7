"""A review's optional ``summary`` (feed v1): accepted, cleaned, stored, or refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from digest.comparisons.fetch import fetch_and_store
from digest.comparisons.store import ingest
from digest.comparisons.validation import validate
from digest.feeds.files import FilesFeed
from digest.store.db import session_scope
from digest.store.models import Comparison
from tests.test_comparisons import comparison, entry, refused, tool

MIXED_FEED = Path(__file__).resolve().parent / "data" / "feeds" / "mixed.json"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def reviewed(*reviews: dict[str, Any]) -> dict[str, Any]:
    return comparison(tools=[tool("alpha"), tool("beta")], reviews=list(reviews))


def review(tool_key: str = "alpha", **changes: Any) -> dict[str, Any]:
    base = {"tool": tool_key, "lens": "builder", "verdict": "ship", "quote": "Good. Really."}
    return {**base, **changes}


def test_a_summary_is_kept_one_line_and_a_review_without_one_has_none() -> None:
    valid = validate(
        entry(
            reviewed(
                review(summary="Good,\r\n<b>really</b>\tgood.\u2028 "),
                review("beta", verdict="skip"),
                review("beta", lens="buyer", summary="x" * 300),
            )
        )
    )
    with_summary, without, longest = valid.reviews
    assert with_summary["summary"] == "Good, <b>really</b> good."  # plain text, one line
    assert with_summary["quote"] == "Good. Really."
    assert "summary" not in without  # the email then takes the quote's first sentence
    assert longest["summary"] == "x" * 300


def test_a_summary_blank_once_cleaned_counts_as_missing() -> None:
    (only,) = validate(entry(reviewed(review(summary=" \n\t ")))).reviews
    assert "summary" not in only


@pytest.mark.parametrize(
    ("summary", "reason"),
    [
        (42, "42 is not a string"),
        (None, "null is not a string"),
        (["Good."], "a list of 1 item is not a string"),
        ({"text": "Good."}, "an object is not a string"),
        ("", "is empty"),
        ("y" * 301, "is 301 characters long, more than 300"),
    ],
)
def test_a_bad_summary_is_refused_naming_the_comparison_and_the_field(
    summary: Any, reason: str
) -> None:
    raw = reviewed(review(), review("beta", summary=summary))
    error = refused(raw)
    assert (error.where, error.field) == (
        "'alpha-vs-beta' (item 1 of test.json)",
        "reviews[1].summary",
    )
    assert len(error.problems) == 1 and error.reason.endswith(reason)
    assert str(error) == (
        f"comparison 'alpha-vs-beta' (item 1 of test.json): reviews[1].summary: {error.reason}"
    )


def test_a_summary_survives_into_the_stored_reviews(engine: Engine) -> None:
    raws = [
        comparison("with-summary", reviews=[review(summary="Good, really.")]),
        comparison("bad-summary", reviews=[review(summary=7)]),
        comparison("no-summary", reviews=[review()]),
    ]
    with session_scope(engine) as session:
        report = ingest(session, [entry(r, i) for i, r in enumerate(raws)], now=NOW)
    assert report.new == ["with-summary", "no-summary"]
    assert [(e.where, e.field) for e in report.invalid] == [
        ("'bad-summary' (item 2 of test.json)", "reviews[0].summary")
    ]
    with session_scope(engine) as session:
        rows = {row.id: row.reviews for row in session.exec(select(Comparison))}
    assert rows["with-summary"] == [
        {
            "tool": "alpha",
            "lens": "builder",
            "reviewer": "",
            "verdict": "ship",
            "quote": "Good. Really.",
            "summary": "Good, really.",
        }
    ]
    assert "summary" not in rows["no-summary"][0]


def test_the_sample_feed_with_one_summary_is_fetched_and_stored(engine: Engine) -> None:
    report = fetch_and_store(engine, FilesFeed(MIXED_FEED), now=NOW)
    assert report.new == ["script-title", "crlf-title", "good-one"]
    with session_scope(engine) as session:
        rows = {row.id: row.reviews for row in session.exec(select(Comparison))}
    assert rows["script-title"][0]["summary"] == "Solid: <b>would</b> ship."
    assert "summary" not in rows["crlf-title"][0] and "summary" not in rows["good-one"][0]
