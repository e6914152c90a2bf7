"""The ``http`` feed: poll the comparisons site over HTTP(S).

What it does, per the feed contract (``/work/shared/feed/README.md``):

- conditional GET on the first page only (``If-None-Match`` / ``If-Modified-Since``
  from the cursor, RFC 9110 §13.1); ``304`` → nothing is parsed;
- follows ``next_url`` (absolute http(s) only, no loops, at most ``max_pages``) and
  stops after the first page holding a comparison that is stored and unchanged;
- each GET is bounded in time and size and retried a bounded number of times
  (:mod:`digest.feeds.http_get`);
- the whole fetch, every page, retry, wait and byte included, ends by
  ``deadline_seconds`` (``asyncio.timeout``), or within a fraction of a second of
  the caller's ``stop`` event being set;
- a failure after the first page keeps what the pages before it gave: they are
  returned with :attr:`FetchResult.error` set (and the cursor the caller handed in,
  so the next poll asks for everything again). A failure on the first page raises.

The credential comes from the environment (``DIGEST_FEED_TOKEN``, or
``DIGEST_FEED_USERNAME`` and ``DIGEST_FEED_PASSWORD``), never from the URL, and
goes only to the origin of ``[feed] url``; another origin (a redirect, a
``next_url``) is fetched through the address guard (:mod:`digest.feeds.clients`).
URLs in messages and in :attr:`key` are redacted (:func:`~digest.common.redaction.redact_url`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from digest import __version__
from digest.common import options
from digest.errors import FeedError, FeedUnavailable
from digest.feeds.base import FeedCursor, FeedEntry, FetchResult, IsKnown, Progress
from digest.feeds.clients import open_clients
from digest.feeds.document import parse_document
from digest.feeds.http_get import (
    Getter,
    Limits,
    Page,
    is_absolute_http_url,
    out_of_time,
    retry_after_seconds,
)
from digest.feeds.limits import (
    ENV_PASSWORD,
    ENV_TOKEN,
    ENV_USERNAME,
    Budget,
    Credential,
    redact_url,
)

DEFAULT_USER_AGENT = f"verdicts-digest/{__version__}"
STOP_POLL_SECONDS = 0.2  # how often a running fetch looks at the caller's stop event
T = TypeVar("T")

__all__ = ["DEFAULT_USER_AGENT", "HttpFeed", "is_absolute_http_url", "retry_after_seconds"]


class HttpFeed:
    """Read the feed from ``url``; keyword arguments are the ``[feed]`` table's keys,
    but ``token``, ``username`` and ``password``, which come from the environment."""

    secret_env: ClassVar[Mapping[str, str]] = {
        "token": ENV_TOKEN,
        "username": ENV_USERNAME,
        "password": ENV_PASSWORD,
    }

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_seconds: float = 1.0,
        max_retry_after: float = 120.0,
        max_pages: int = 100,
        user_agent: str = DEFAULT_USER_AGENT,
        deadline_seconds: float = 60.0,
        max_bytes: int = 20_000_000,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        allow_private_addresses: bool = False,
    ) -> None:
        if not isinstance(url, str) or not is_absolute_http_url(url):
            shown = redact_url(url) if isinstance(url, str) else url
            raise ValueError(f"'url' must be an absolute http:// or https:// URL, got {shown!r}")
        if "@" in urlsplit(url).netloc:
            raise ValueError(
                f"key 'url': {redact_url(url)!r} holds a user name or password; remove it "
                f"from the URL and set {ENV_TOKEN} (a bearer token) or {ENV_USERNAME} and "
                f"{ENV_PASSWORD} (HTTP Basic) in the environment instead"
            )
        self.allow_private_addresses = options.flag(
            "allow_private_addresses", allow_private_addresses, show_value=False
        )
        self.url = url
        self.credential = Credential.from_env(url, token, username, password)
        self.limits = Limits(
            timeout=options.number("timeout", timeout, inclusive=False),
            max_attempts=options.count("max_attempts", max_attempts),
            backoff_seconds=options.number("backoff_seconds", backoff_seconds),
            max_retry_after=options.number("max_retry_after", max_retry_after),
            max_bytes=options.count("max_bytes", max_bytes),
        )
        self.max_pages = options.count("max_pages", max_pages)
        self.deadline_seconds = options.number("deadline_seconds", deadline_seconds, minimum=1.0)
        self.user_agent = options.text("user_agent", user_agent, line=True)

    def __repr__(self) -> str:
        how = self.credential.source if self.credential else "no credential"
        return f"HttpFeed({redact_url(self.url)!r}, {how})"

    @property
    def key(self) -> str:
        """The ``feed_state`` key: the URL without secrets (it is shown in status and alerts)."""
        return redact_url(self.url)

    def fetch(
        self,
        cursor: FeedCursor,
        is_known: IsKnown,
        progress: Progress | None = None,
        *,
        stop: threading.Event | None = None,
    ) -> FetchResult:
        """Read new and updated comparisons, newest page first.

        Returns ``not_modified=True`` and no entries on ``304``. When a page after the
        first fails, returns the pages before it with ``error`` set. Raises
        :class:`FeedUnavailable` when the first page cannot be had (bounded retries,
        the deadline, ``stop``) and :class:`FeedDocumentError` (naming the URL) when it
        is not a v1 document.
        """
        budget = Budget(self.deadline_seconds, stop)
        return _run_coroutine(lambda: _Fetch(self, budget).run(cursor, is_known, progress))


class _Fetch:
    """One fetch: the pages read so far, and the URL being read now."""

    def __init__(self, feed: HttpFeed, budget: Budget) -> None:
        self.feed = feed
        self.budget = budget
        self.url = feed.url
        self.result = FetchResult(entries=[], cursor=FeedCursor())

    async def run(
        self, cursor: FeedCursor, is_known: IsKnown, progress: Progress | None
    ) -> FetchResult:
        try:
            await self._bounded(self._read(cursor, is_known, progress))
        except FeedError as exc:
            if self.result.pages == 0:
                raise
            self.result.error = exc
            self.result.cursor = cursor  # incomplete: do not remember page one's validators
        return self.result

    async def _bounded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` until it ends, the deadline passes or ``stop`` is set."""
        task = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(self._watch_stop(task))
        try:
            async with asyncio.timeout(self.budget.seconds):
                await task
        except TimeoutError:
            raise out_of_time(self.url, self.budget, self._after()) from None
        except asyncio.CancelledError:
            if not self.budget.stopped:
                raise
            raise FeedUnavailable(
                f"feed {redact_url(self.url)}: stopped by a signal{self._after()} before the "
                "fetch finished"
            ) from None
        finally:
            watcher.cancel()

    async def _watch_stop(self, task: asyncio.Future[None]) -> None:
        while not self.budget.stopped:
            await asyncio.sleep(STOP_POLL_SECONDS)
        task.cancel()

    def _after(self) -> str:
        pages = self.result.pages
        return f" after {pages} page{'s' * (pages != 1)}" if pages else ""

    async def _read(self, cursor: FeedCursor, is_known: IsKnown, progress: Progress | None) -> None:
        feed, result = self.feed, self.result
        async with AsyncExitStack() as stack:
            clients = await open_clients(
                stack, feed.url, feed.user_agent, allow_private=feed.allow_private_addresses
            )
            getter = Getter(clients, feed.limits, self.budget, feed.credential)
            page = await getter.get(self.url, _conditional_headers(cursor))
            if page.status == 304:
                result.not_modified = True
                result.cursor = _validators(page, cursor)
                return
            result.cursor = _validators(page, FeedCursor())
            seen = {self.url}
            while True:
                document = parse_document(
                    page.body, source=redact_url(self.url), page=result.pages + 1
                )
                result.pages += 1
                result.entries.extend(document.entries)
                if progress is not None:
                    progress(len(result.entries))
                if document.next_url is None or _reached_known(document.entries, is_known):
                    return
                problem = self._cannot_follow(document.next_url, seen)
                if problem:
                    result.problems.append(problem)
                    return
                self.url = document.next_url
                seen.add(self.url)
                page = await getter.get(self.url, {})

    def _cannot_follow(self, next_url: str, seen: set[str]) -> str:
        """Why paging must stop before ``next_url`` ("" when it may be followed)."""
        url, pages, shown = redact_url(self.url), self.result.pages, redact_url(next_url)[:200]
        if not is_absolute_http_url(next_url):
            return f"{url}: next_url {shown!r} is not an absolute http(s) URL; stopped"
        if next_url in seen:
            return f"{url}: next_url {shown!r} was already read (a loop); stopped"
        if pages >= self.feed.max_pages:
            return (
                f"{url}: stopped after {pages} pages ([feed] max_pages); older pages were not "
                "read: raise max_pages to read them"
            )
        return ""


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to the end from synchronous code, even inside a running loop
    (then on a helper thread with its own loop, as a blocking call would)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(asyncio.run(factory()))
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    helper = threading.Thread(target=target, name="digest-feed", daemon=True)
    helper.start()
    helper.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _conditional_headers(cursor: FeedCursor) -> dict[str, str]:
    headers: dict[str, str] = {}
    if cursor.etag:
        headers["If-None-Match"] = cursor.etag
    if cursor.last_modified:
        headers["If-Modified-Since"] = cursor.last_modified
    return headers


def _validators(page: Page, fallback: FeedCursor) -> FeedCursor:
    return FeedCursor(
        etag=page.etag or fallback.etag,
        last_modified=page.last_modified or fallback.last_modified,
    )


def _reached_known(entries: list[FeedEntry], is_known: IsKnown) -> bool:
    """True when a page holds a comparison that is stored and not updated since."""
    for entry in entries:
        raw = entry.raw
        if not isinstance(raw, Mapping):
            continue
        ident, updated = raw.get("id"), raw.get("updated_at")
        if isinstance(ident, str) and isinstance(updated, str | None) and is_known(ident, updated):
            return True
    return False
