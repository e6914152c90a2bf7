"""One feed entry → a :class:`ValidComparison`, or every reason it is not one.

:func:`validate` checks one entry against ``$defs/comparison`` of the packaged v1
schema, then what JSON Schema leaves out: real RFC 3339 timestamps with an offset,
absolute http(s) URLs, tool keys unique within a comparison, and each review naming
one of the comparison's tools. It returns cleaned plain text (rules below) and
never HTML-escapes: escaping belongs to rendering.

Text cleaning (every string is plain text, shown as written):

- one-line fields (title, question, category; tool name, vendor, category, tagline;
  review lens, reviewer, summary): each run of control or line-break characters becomes one
  space, ends are trimmed — a title can never become two header lines;
- multi-line fields (tool description, review quote): CR LF / CR become LF, TAB a
  space, other control characters are dropped;
- lone surrogates (possible through ``\\ud800`` escapes, refused by UTF-8 encoders
  and so by PostgreSQL) become U+FFFD in text; URLs holding one are refused;
- a category is cut to 200 characters (its column's size; the schema sets no limit).

Stored shapes: every tool dict holds ``key, name, vendor, category, tagline,
description, url, pricing, panel_ship_pct, community_pct`` (absent strings are ""),
every review dict ``tool, lens, reviewer, verdict, quote``, plus ``summary`` (the
quote's gist in one sentence, shown in its place) only when the feed gives one that is
not blank once cleaned; unknown keys are dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator

from digest.comparisons.problems import (
    PATTERN_WORDS,
    Problem,
    in_document_order,
    json_path,
    schema_problems,
    show,
)
from digest.errors import InvalidComparison
from digest.feeds.base import FeedEntry
from digest.feeds.document import parse_timestamp

CATEGORY_MAX = 200  # comparison.category is VARCHAR(200); the schema sets no limit

# C0, DEL, C1 controls and the Unicode line/paragraph separators, which str.splitlines()
# and so some header and template code treat as line breaks.
_LINE_BREAKING = re.compile(r" *[\x00-\x1f\x7f-\x9f\u2028\u2029]+ *")
_NEWLINES = re.compile(r"\r\n?|[\x85\u2028\u2029]")
_DROPPED = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
# The schema's id/key patterns again, matched whole: jsonschema uses re.search, where
# "$" also matches before a final newline, so "slug\n" would pass the schema.
_ID = re.compile(r"[a-z0-9-]{1,120}")
_KEY = re.compile(r"[a-z0-9-]{1,80}")


@dataclass(frozen=True, slots=True)
class ValidComparison:
    """One comparison that passed :func:`validate`: cleaned text, aware UTC datetimes."""

    id: str
    url: str
    title: str
    question: str
    category: str
    published_at: datetime
    updated_at: datetime
    tools: list[dict[str, Any]]
    reviews: list[dict[str, Any]]


@cache
def _validator() -> Draft202012Validator:
    text = files("digest").joinpath("schema", "feed-v1.schema.json").read_text("utf-8")
    schema = json.loads(text)
    # Validate one comparison at a time against $defs/comparison, keeping the $defs
    # its $refs point into.
    return Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/comparison"})


def validate(entry: FeedEntry) -> ValidComparison:
    """Check one entry against the contract and return it cleaned.

    Raises :class:`InvalidComparison` naming ``entry.where`` and every bad field, each
    with its JSON path (``$`` for the comparison itself, e.g. ``tools[1].pricing``)
    and a reason in plain words (:mod:`digest.comparisons.problems`).
    """
    raw = entry.raw
    problems = schema_problems(_validator().iter_errors(raw))
    if isinstance(raw, Mapping):
        reported = {json_path(path) for path, _ in problems}
        problems += [p for p in _contract_problems(raw) if json_path(p[0]) not in reported]
    if problems:
        raise InvalidComparison(entry.where, in_document_order(problems, raw))
    published = parse_timestamp(raw["published_at"])
    updated = parse_timestamp(raw["updated_at"]) if "updated_at" in raw else published
    category = clean_line(raw["category"])[:CATEGORY_MAX]
    return ValidComparison(
        id=raw["id"],
        url=raw["url"],
        title=clean_line(raw["title"]),
        question=clean_line(raw.get("question", "")),
        category=category,
        published_at=published,
        updated_at=updated,
        tools=[_tool(t, category) for t in raw["tools"]],
        reviews=[_review(r) for r in raw.get("reviews", [])],
    )


def _contract_problems(raw: Mapping[str, Any]) -> list[Problem]:
    """What JSON Schema leaves out: real timestamps, clean URLs, whole-string slugs,
    unique tool keys, reviews of known tools. Looks only at values of the right type
    (the schema reports the others)."""
    found: list[Problem] = []
    for name in ("published_at", "updated_at"):
        if isinstance(raw.get(name), str):
            try:
                parse_timestamp(raw[name])
            except ValueError as exc:
                found.append(([name], str(exc)))
    if isinstance(raw.get("id"), str) and not _ID.fullmatch(raw["id"]):
        found.append((["id"], f"{show(raw['id'])} {PATTERN_WORDS['^[a-z0-9-]{1,120}$']}"))
    if isinstance(raw.get("url"), str) and not is_clean_url(raw["url"]):
        found.append((["url"], f"{show(raw['url'])} is not an absolute http(s) URL"))
    tools = raw.get("tools")
    keys: dict[str, int] = {}
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        if not isinstance(tool, Mapping):
            continue
        if isinstance(tool.get("url"), str) and not is_clean_url(tool["url"]):
            found.append(
                (["tools", i, "url"], f"{show(tool['url'])} is not an absolute http(s) URL")
            )
        key = tool.get("key")
        if not isinstance(key, str):
            continue
        if not _KEY.fullmatch(key):
            found.append((["tools", i, "key"], f"{show(key)} {PATTERN_WORDS['^[a-z0-9-]{1,80}$']}"))
        elif key in keys:
            found.append(
                (["tools", i, "key"], f"{show(key)} is used twice (also tools[{keys[key]}])")
            )
        else:
            keys[key] = i
    reviews = raw.get("reviews")
    for i, review in enumerate(reviews if isinstance(reviews, list) else []):
        tool_key = review.get("tool") if isinstance(review, Mapping) else None
        if isinstance(tool_key, str) and keys and tool_key not in keys:
            known = ", ".join(keys)
            reason = f"{show(tool_key)} is not the key of one of this comparison's tools ({known})"
            found.append((["reviews", i, "tool"], reason))
    return found


def _tool(tool: Mapping[str, Any], category: str) -> dict[str, Any]:
    return {
        "key": tool["key"],
        "name": clean_line(tool["name"]),
        "vendor": clean_line(tool.get("vendor", "")),
        "category": clean_line(tool.get("category", "")) or category,
        "tagline": clean_line(tool.get("tagline", "")),
        "description": clean_paragraph(tool.get("description", "")),
        "url": tool.get("url", ""),
        "pricing": tool["pricing"],
        "panel_ship_pct": tool["panel_ship_pct"],
        "community_pct": tool["community_pct"],
    }


def _review(review: Mapping[str, Any]) -> dict[str, Any]:
    cleaned = {
        "tool": review["tool"],
        "lens": clean_line(review["lens"]),
        "reviewer": clean_line(review.get("reviewer", "")),
        "verdict": review["verdict"],
        "quote": clean_paragraph(review["quote"]),
    }
    summary = clean_line(review.get("summary", ""))
    return {**cleaned, "summary": summary} if summary else cleaned


def clean_line(text: str) -> str:
    """One-line plain text: each run of control characters (with the spaces around
    it) becomes one space; lone surrogates become U+FFFD; outer spaces are trimmed."""
    return _LINE_BREAKING.sub(" ", _SURROGATES.sub("\ufffd", text)).strip(" ")


def clean_paragraph(text: str) -> str:
    """Multi-line plain text: line breaks become LF, TAB a space, other control
    characters are dropped; lone surrogates become U+FFFD."""
    text = _NEWLINES.sub("\n", _SURROGATES.sub("\ufffd", text))
    return _DROPPED.sub("", text.replace("\t", " "))


def is_clean_url(url: str) -> bool:
    """True for an absolute http(s) URL with a host and no spaces or control characters."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return False
