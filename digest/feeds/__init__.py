"""Feed adapters: where comparisons come from.

``FEEDS`` maps a ``[feed] kind`` to its class; the rest of the ``[feed]`` table
becomes constructor keywords (:func:`digest.config.registry.build_feed`). An
adapter knows no config, no database and no ledger.
"""

from __future__ import annotations

from collections.abc import Mapping

from digest.feeds.base import Feed, FeedCursor, FeedEntry, FetchResult, IsKnown, Progress
from digest.feeds.files import FilesFeed
from digest.feeds.http import HttpFeed

FEEDS: Mapping[str, type[Feed]] = {"http": HttpFeed, "files": FilesFeed}


__all__ = [
    "FEEDS",
    "Feed",
    "FeedCursor",
    "FeedEntry",
    "FetchResult",
    "FilesFeed",
    "HttpFeed",
    "IsKnown",
    "Progress",
]
