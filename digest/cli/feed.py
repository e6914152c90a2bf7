"""``digest feed-schema`` and ``digest validate-feed``: the feed contract, checked.

``validate-feed`` reads one feed document (a file, or an http(s) URL fetched by the
http feed's own bounded GET: :mod:`digest.feeds.http_get`, with its deadline, size
cap and address guard) and checks it with the code the fetch stage uses:
:func:`digest.feeds.document.parse_document` for the document level and
:func:`digest.comparisons.validation.validate` for each comparison. Every problem is
one line. Exit codes: 0 all valid; 1 any problem; 2 the input could not be read.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import typer

from digest.comparisons.validation import validate
from digest.errors import DigestError, FeedDocumentError, InvalidComparison
from digest.feeds.base import FeedEntry
from digest.feeds.clients import open_clients
from digest.feeds.document import NonFiniteNumber, load_json, parse_document
from digest.feeds.http import HttpFeed
from digest.feeds.http_get import Getter, is_absolute_http_url, out_of_time
from digest.feeds.limits import Budget, redact_url

EXIT_PROBLEMS = 1
EXIT_UNREADABLE = 2
# A well-formed document level, into which one field of the checked document is put
# at a time, so that parse_document (which stops at its first problem) names each.
_GOOD_LEVEL: dict[str, Any] = {
    "version": "1",
    "generated_at": "2000-01-01T00:00:00Z",
    "next_url": None,
    "comparisons": [],
}


def register(app: typer.Typer) -> None:
    app.command("feed-schema")(feed_schema)
    app.command("validate-feed")(validate_feed)


def schema_text() -> str:
    """The packaged v1 feed JSON Schema, as shipped."""
    return files("digest").joinpath("schema", "feed-v1.schema.json").read_text("utf-8")


def feed_schema() -> None:
    """Print the feed's JSON Schema (version 1) shipped with this digest."""
    typer.echo(schema_text().rstrip("\n"))


def validate_feed(
    source: Annotated[str, typer.Argument(metavar="FILE|URL", help="A feed file or URL.")],
    timeout: Annotated[float, typer.Option(help="Whole fetch deadline, seconds.")] = 30.0,
    max_bytes: Annotated[int, typer.Option(help="Largest body read, bytes.")] = 20_000_000,
    allow_private_addresses: Annotated[
        bool,
        typer.Option(help="Let redirects reach loopback or private addresses."),
    ] = False,
) -> None:
    """Check a feed document against the v1 contract; print every problem.

    Exit 0 when it is valid, 1 when anything is wrong, 2 when it cannot be read."""
    try:
        name, data = _read(source, timeout, max_bytes, allow_private_addresses)
        load_json(data)
    except (OSError, ValueError, DigestError) as exc:
        typer.echo(f"cannot read {_shown(source)}: {_one_line(exc)}", err=True)
        raise typer.Exit(EXIT_UNREADABLE) from None
    problems, total, bad = check_document(data, name)
    for line in problems:
        typer.echo(line)
    typer.echo(f"{total} comparison{'s' * (total != 1)}, {total - bad} valid, {bad} with problems")
    if problems:
        raise typer.Exit(EXIT_PROBLEMS)


def check_document(data: bytes, name: str) -> tuple[list[str], int, int]:
    """Every problem line of a JSON document, the number of comparisons and how many
    of them have problems."""
    doc = load_json(data)
    lines = _document_problems(data, doc, name)
    items = doc.get("comparisons") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return lines, 0, 0
    bad = 0
    for position, item in enumerate(items):
        entry = FeedEntry(raw=item, source=name, position=position)
        try:
            validate(entry)
        except InvalidComparison as exc:
            bad += 1
            label = _label(entry)
            lines += [f"{label}: {path}: {reason}" for path, reason in exc.problems]
    return lines, len(items), bad


def _document_problems(data: bytes, doc: Any, name: str) -> list[str]:
    try:
        parse_document(data, source=name)
        return []
    except FeedDocumentError as exc:
        if not isinstance(doc, dict):
            return [f"document: {exc}"]
    found: list[str] = []
    for key in _GOOD_LEVEL:
        probe = dict(_GOOD_LEVEL)
        if key not in doc:
            del probe[key]
        elif key != "comparisons" or not isinstance(doc[key], list):
            probe[key] = doc[key]
        try:
            parse_document(json.dumps(probe, default=_non_finite), source=name)
        except FeedDocumentError as exc:
            found.append(f"document: {exc}")
    return found or ["document: is not a v1 feed document"]


def _non_finite(value: Any) -> float:
    if isinstance(value, NonFiniteNumber):
        return float(value.token)  # written back as NaN / Infinity, read back the same
    raise TypeError(type(value).__name__)


def _label(entry: FeedEntry) -> str:
    raw = entry.raw
    ident = raw.get("id") if isinstance(raw, dict) else None
    item = f"item {entry.position + 1}"
    if isinstance(ident, str) and ident:
        printable = "".join(c if c.isprintable() else "?" for c in ident[:120])
        return f"comparison {printable!r} ({item})"
    return f"comparison {item}"


def _read(source: str, timeout: float, max_bytes: int, allow_private: bool) -> tuple[str, bytes]:
    """(name for messages, body) of a file or an http(s) URL."""
    if is_absolute_http_url(source):
        feed = HttpFeed(
            source,
            timeout=min(10.0, timeout),
            max_attempts=2,
            deadline_seconds=max(1.0, timeout),
            max_bytes=max_bytes,
            allow_private_addresses=allow_private,
        )
        return redact_url(source), asyncio.run(_download(feed))
    if "://" in source:
        raise ValueError("only local files and http(s) URLs can be read")
    path = Path(source)
    if path.stat().st_size > max_bytes:
        raise ValueError(f"larger than --max-bytes = {max_bytes:,} bytes")
    return source, path.read_bytes()


async def _download(feed: HttpFeed) -> bytes:
    """One page, as the http feed GETs it: bounded retries, size cap, guarded clients."""
    budget = Budget(feed.deadline_seconds)
    try:
        async with asyncio.timeout(budget.seconds), AsyncExitStack() as stack:
            clients = await open_clients(
                stack, feed.url, feed.user_agent, allow_private=feed.allow_private_addresses
            )
            page = await Getter(clients, feed.limits, budget, feed.credential).get(feed.url, {})
    except TimeoutError:
        raise out_of_time(feed.url, budget) from None
    return page.body


def _shown(source: str) -> str:
    return redact_url(source) if "://" in source else source


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
