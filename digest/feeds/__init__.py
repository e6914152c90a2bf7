"""Feed adapters: where comparisons come from.

``FEEDS`` maps a ``[feed] kind`` to its class; the rest of the ``[feed]`` table
becomes constructor keywords (see :func:`digest.registry.build`).
"""

from __future__ import annotations

from collections.abc import Mapping

from digest.config import AdapterConfig
from digest.feeds.base import Feed, FeedCursor, FeedEntry, FetchResult, IsKnown, Progress
from digest.feeds.files import FilesFeed
from digest.feeds.http import HttpFeed
from digest.registry import build

FEEDS: Mapping[str, type[Feed]] = {"http": HttpFeed, "files": FilesFeed}


def build_feed(cfg: AdapterConfig, env: Mapping[str, str]) -> Feed:
    """Build the feed named by ``cfg.kind``.

    Raises :class:`~digest.errors.ConfigError` naming the key and the file for an
    unknown kind, an unknown or missing key, or a value the feed refuses.
    """
    return build(FEEDS, cfg, env)


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
    "build_feed",
]
