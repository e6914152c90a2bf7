"""The shared test base every feed kind's tests inherit.

On the model of ``tests/webhook_cases.py``: the base holds what must hold for
*every* feed kind (the :class:`~digest.feeds.base.Feed` protocol in
``digest/feeds/base.py`` and the v1 feed contract in ``/work/shared/feed/``); each
kind's test module subclasses it with one small factory that makes a place serving
the given documents. The feed itself is always built the way the app builds it,
through :func:`digest.config.registry.build_feed` from an :class:`AdapterConfig`.

How a new kind's tests use it (``tests/test_feeds_<kind>.py``)::

    from tests.feed_cases import Document, FeedCases, Served

    class TestGopherFeedContract(FeedCases):
        kind = "gopher"                             # its key in FEEDS
        secret_env = {"DIGEST_FEED_TOKEN": "s3cret"}  # optional: env that must not leak

        def serve(self, documents: Sequence[Document]) -> Served:
            # put ``documents`` where a "gopher" feed reads them, in this order; a
            # mapping is a v1 document (link them as the kind pages, if it does), bytes
            # are served verbatim. Return the [feed] table and each document's source.
            ...

``Served.sources`` names each document as the feed does in
:attr:`FeedEntry.source` and in its messages (the file path, the URL without
secrets). A single document must be read as the whole feed (a file, not a folder),
so that an invalid one fails the fetch instead of being skipped.

The class is named ``FeedCases`` (no ``Test`` prefix) so pytest collects only the
subclasses. Kind-specific behaviour (HTTP retries, paging guards, folder problems)
is tested beside the subclass, in the same module.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from digest.config import AdapterConfig
from digest.config.registry import build_feed
from digest.errors import FeedDocumentError, FeedError, FeedUnavailable
from digest.feeds.base import Feed, FeedCursor, FetchResult
from tests.feed_servers import page

Document = Mapping[str, Any] | bytes
CONFIG = Path("/srv/digest/config.toml")
PROMPT_SECONDS = 5.0  # "promptly" for a fetch whose stop event is already set

# Comparison ids per document, for the fetches that must return every comparison.
VALID_FEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "one-document": (("alpha-vs-beta", "gamma-vs-delta", "epsilon-vs-zeta"),),
    "two-documents": (("alpha-vs-beta", "gamma-vs-delta"), ("epsilon-vs-zeta",)),
    "empty-document": ((),),
}

# Documents that are not v1 feed documents (each is served as the only document).
NOT_V1_DOCUMENTS: dict[str, bytes] = {
    "not-json": b"{not json",
    "not-utf8": b"\xff\xfe\x00garbage",
    "json-array": b"[]",
    "json-string": b'"a feed"',
    "wrong-version": json.dumps({**page("alpha-vs-beta"), "version": "2"}).encode(),
    "no-version": json.dumps(
        {k: v for k, v in page("alpha-vs-beta").items() if k != "version"}
    ).encode(),
    "no-comparisons": json.dumps({"version": "1", "generated_at": "2026-11-23T08:00:00Z"}).encode(),
}


@dataclass(frozen=True)
class Served:
    """Where the subclass put the documents: the ``[feed]`` table (without ``kind``)
    that reads them, and how the feed names each one (:attr:`FeedEntry.source`)."""

    options: Mapping[str, Any]
    sources: Sequence[str]


def never_known(comparison_id: str, updated_at: str | None, /) -> bool:
    return False


def ids_of(result: FetchResult) -> list[str]:
    return [entry.raw["id"] for entry in result.entries]


class FeedCases:
    """Tests every feed kind must pass. Subclass, set ``kind`` and implement ``serve``."""

    # -- what the subclass declares -------------------------------------------------
    kind: ClassVar[str]  # the [feed] kind, a key of digest.feeds.FEEDS
    secret_env: ClassVar[Mapping[str, str]] = {}  # secrets the feed takes; must not leak

    # -- the hook the subclass implements --------------------------------------------
    def serve(self, documents: Sequence[Document]) -> Served:
        """Serve ``documents`` in this order as one feed of this kind."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------
    def build(self, served: Served) -> Feed:
        cfg = AdapterConfig("feed", self.kind, dict(served.options), CONFIG)
        return build_feed(cfg, self.secret_env)

    def serve_pages(self, feed_ids: Sequence[Sequence[str]]) -> Served:
        return self.serve([page(*ids) for ids in feed_ids])

    # -- 1. every comparison once ------------------------------------------------------
    @pytest.mark.parametrize("feed_ids", VALID_FEEDS.values(), ids=VALID_FEEDS.keys())
    def test_every_comparison_comes_back_once(self, feed_ids: tuple[tuple[str, ...], ...]) -> None:
        documents = [page(*ids) for ids in feed_ids]
        served = self.serve(documents)
        result = self.build(served).fetch(FeedCursor(), never_known)

        assert result.error is None and not result.not_modified, result
        got = ids_of(result)
        expected = [cid for ids in feed_ids for cid in ids]
        assert len(got) == len(set(got)), f"an entry came back twice: {got}"
        assert sorted(got) == sorted(expected)
        assert result.pages == len(documents)
        where = {
            c["id"]: (c, source, position)
            for doc, source in zip(documents, served.sources, strict=True)
            for position, c in enumerate(doc["comparisons"])
        }
        for entry in result.entries:
            comparison, source, position = where[entry.raw["id"]]
            assert entry.raw == comparison, "raw is the comparison exactly as found"
            assert (entry.source, entry.position) == (source, position), entry

    # -- 2. nothing new on the next poll ---------------------------------------------
    def test_next_fetch_with_every_id_known_brings_nothing_new(self) -> None:
        feed_ids = VALID_FEEDS["two-documents"]
        feed = self.build(self.serve_pages(feed_ids))
        first = feed.fetch(FeedCursor(), never_known)
        assert first.error is None, first.error
        known = set(ids_of(first))
        assert known == {cid for ids in feed_ids for cid in ids}

        def is_known(comparison_id: str, updated_at: str | None, /) -> bool:
            return comparison_id in known

        second = feed.fetch(first.cursor, is_known)
        assert second.error is None, second.error
        if second.not_modified:
            assert second.entries == []
        new = [cid for cid in ids_of(second) if cid not in known]
        assert new == [], f"the second fetch brought new entries: {new}"

    # -- 3. a document that is not v1 --------------------------------------------------
    @pytest.mark.parametrize("body", NOT_V1_DOCUMENTS.values(), ids=NOT_V1_DOCUMENTS.keys())
    def test_a_document_that_is_not_v1_raises_naming_where(self, body: bytes) -> None:
        served = self.serve([body])
        feed = self.build(served)
        try:
            result = feed.fetch(FeedCursor(), never_known)
        except Exception as exc:
            raised: Exception = exc
        else:
            pytest.fail(f"fetch returned {result!r} for a document that is not v1")
        assert isinstance(raised, FeedDocumentError), repr(raised)
        assert served.sources[0] in str(raised), f"{raised} does not name where"

    # -- 4. the key ------------------------------------------------------------------
    def test_key_is_a_stable_string_without_secrets(self) -> None:
        served = self.serve_pages(VALID_FEEDS["one-document"])
        feed = self.build(served)
        key = feed.key
        assert isinstance(key, str) and key.strip() == key != ""
        assert self.build(served).key == key, "the same table must give the same key"
        feed.fetch(FeedCursor(), never_known)
        assert feed.key == key, "fetching must not change the key"
        for variable, secret in self.secret_env.items():
            assert secret not in key, f"the key shows {variable}"

    # -- 5. stop already set -----------------------------------------------------------
    def test_a_stop_already_set_ends_the_fetch_promptly(self) -> None:
        feed_ids = VALID_FEEDS["two-documents"]
        feed = self.build(self.serve_pages(feed_ids))
        stop = threading.Event()
        stop.set()
        started = time.monotonic()
        try:
            result: FetchResult | None = feed.fetch(FeedCursor(), never_known, stop=stop)
        except (FeedUnavailable, FeedDocumentError):  # base.py: nothing could be read
            result = None
        elapsed = time.monotonic() - started
        assert elapsed < PROMPT_SECONDS, f"fetch took {elapsed:.1f} s after stop was set"
        if result is not None:  # it ended early, keeping what was read
            got = ids_of(result)
            assert len(got) == len(set(got))
            assert set(got) <= {cid for ids in feed_ids for cid in ids}
            assert result.error is None or isinstance(result.error, FeedError)
