"""What every feed adapter returns, and the protocol it implements.

Adapters import nothing from the pipeline, the database or ``subscribers``: the
caller hands in what the adapter needs (the remembered :class:`FeedCursor`, an
``is_known`` callback) and stores what comes back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from digest.errors import FeedError


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One comparison object exactly as found in a feed document (not yet validated)."""

    raw: Mapping[str, Any] | Any  # a dict for well-formed items; anything for bad ones
    source: str  # the URL (without secrets) or file path of the document it came from
    position: int  # 0-based index in that document's ``comparisons`` array
    page: int = 0  # 1-based page of a paged (http) feed; 0 when ``source`` names the file

    @property
    def where(self) -> str:
        """How to name this entry in a message: its ``id`` when it has a usable one, and
        its place, e.g. ``'a-vs-b' (item 3 of page 1)`` or ``item 2 of /feeds/x.json``."""
        place = f"item {self.position + 1} of " + (
            f"page {self.page}" if self.page else self.source
        )
        ident = self.raw.get("id") if isinstance(self.raw, Mapping) else None
        if isinstance(ident, str) and ident:
            printable = "".join(c if c.isprintable() else "?" for c in ident[:120])
            return f"'{printable}' ({place})"
        return place


@dataclass(frozen=True, slots=True)
class FeedCursor:
    """What a feed remembers between polls: HTTP validators for conditional GETs."""

    etag: str = ""
    last_modified: str = ""


@dataclass(slots=True)
class FetchResult:
    entries: list[FeedEntry]
    cursor: FeedCursor
    not_modified: bool = False  # the server said 304: nothing was (re-)parsed
    pages: int = 0  # documents read
    problems: list[str] = field(default_factory=list)  # documents skipped, with why
    # Set when the fetch failed after some pages: ``entries`` holds what they gave and
    # ``cursor`` is the one handed in (so the next poll reads everything again).
    error: FeedError | None = None


class IsKnown(Protocol):
    def __call__(self, comparison_id: str, updated_at: str | None, /) -> bool:
        """True when this comparison is stored and not updated since (stop paging)."""


Progress = Callable[[int], None]  # called with the number of entries read so far


class Feed(Protocol):
    """A source of comparison entries. ``key`` names it in ``feed_state``."""

    @property
    def key(self) -> str: ...

    def fetch(
        self,
        cursor: FeedCursor,
        is_known: IsKnown,
        progress: Progress | None = None,
        *,
        stop: threading.Event | None = None,
    ) -> FetchResult:
        """Read the feed; end early (soon, keeping what was read) once ``stop`` is set.

        Raises ``FeedUnavailable`` / ``FeedDocumentError`` when nothing could be read;
        a failure after some pages is returned in :attr:`FetchResult.error`.
        """
        ...
