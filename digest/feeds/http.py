"""The ``http`` feed: poll the comparisons site over HTTP(S) with httpx.

What it does, per the feed contract (``/work/shared/feed/README.md``):

- conditional GET on the first page only (``If-None-Match`` / ``If-Modified-Since``
  from the cursor, RFC 9110 §13.1); ``304`` → nothing is parsed;
- follows ``next_url`` (absolute http(s) only, no loops, at most ``max_pages``) and
  stops after the first page holding a comparison that is stored and unchanged;
- ``429``/``503`` with ``Retry-After`` (delta-seconds or HTTP-date, RFC 9110 §10.2.3)
  waits that long, capped by ``max_retry_after`` (a longer wait fails the fetch);
  other ``5xx``, timeouts and connection errors retry with exponential backoff and
  full jitter; at most ``max_attempts`` attempts per page; other ``4xx`` fail at once.

Waits go through the module-level :func:`sleep`, which tests may replace.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from digest import __version__
from digest.errors import FeedUnavailable
from digest.feeds.base import FeedCursor, FeedEntry, FetchResult, IsKnown, Progress
from digest.feeds.document import parse_document

DEFAULT_USER_AGENT = f"verdicts-digest/{__version__}"
_RETRY_AFTER_STATUSES = (429, 503)


def sleep(seconds: float) -> None:
    """Wait between attempts (module-level so tests can replace it)."""
    time.sleep(seconds)


def retry_after_seconds(value: str, now: datetime) -> float | None:
    """Seconds to wait for a ``Retry-After`` value, or None when it is unusable.

    Accepts delta-seconds (``"120"``) and an HTTP-date; a date in the past means 0.
    """
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322 for "UTC, zone unknown"
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def is_absolute_http_url(url: str) -> bool:
    """True for an absolute ``http://`` or ``https://`` URL with a host."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


class _Retry(Exception):
    """One attempt failed in a way worth retrying after ``wait`` seconds."""

    def __init__(self, detail: str, wait: float) -> None:
        super().__init__(detail)
        self.detail = detail
        self.wait = wait


class HttpFeed:
    """Read the feed from ``url``; keyword arguments are the ``[feed]`` table's keys."""

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_seconds: float = 1.0,
        max_retry_after: float = 120.0,
        max_pages: int = 100,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        if not isinstance(url, str) or not is_absolute_http_url(url):
            raise ValueError(f"'url' must be an absolute http:// or https:// URL, got {url!r}")
        self.url = url
        self.timeout = _number("timeout", timeout, minimum=0.0, inclusive=False)
        self.max_attempts = _count("max_attempts", max_attempts)
        self.backoff_seconds = _number("backoff_seconds", backoff_seconds)
        self.max_retry_after = _number("max_retry_after", max_retry_after)
        self.max_pages = _count("max_pages", max_pages)
        if not (isinstance(user_agent, str) and user_agent.strip() and user_agent.isprintable()):
            raise ValueError(f"'user_agent' must be a non-empty line of text, got {user_agent!r}")
        self.user_agent = user_agent

    @property
    def key(self) -> str:
        return self.url

    def fetch(
        self, cursor: FeedCursor, is_known: IsKnown, progress: Progress | None = None
    ) -> FetchResult:
        """Read new and updated comparisons, newest page first.

        Returns ``not_modified=True`` and no entries on ``304``. Raises
        :class:`FeedUnavailable` when a page cannot be had after bounded retries and
        :class:`FeedDocumentError` (naming the URL) when a page is not a v1 document.
        """
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        with httpx.Client(timeout=self.timeout, headers=headers, follow_redirects=True) as client:
            first = self._get(client, self.url, _conditional_headers(cursor))
            if first.status_code == 304:
                return FetchResult(entries=[], cursor=_validators(first, cursor), not_modified=True)
            result = FetchResult(entries=[], cursor=_validators(first, FeedCursor()))
            self._read_pages(client, first, result, is_known, progress)
        return result

    def _read_pages(
        self,
        client: httpx.Client,
        response: httpx.Response,
        result: FetchResult,
        is_known: IsKnown,
        progress: Progress | None,
    ) -> None:
        url, seen = self.url, {self.url}
        while True:
            document = parse_document(response.content, source=url)
            result.pages += 1
            result.entries.extend(document.entries)
            if progress is not None:
                progress(len(result.entries))
            if document.next_url is None or _reached_known(document.entries, is_known):
                return
            problem = self._cannot_follow(document.next_url, url, seen, result.pages)
            if problem:
                result.problems.append(problem)
                return
            url = document.next_url
            seen.add(url)
            response = self._get(client, url, {})

    def _cannot_follow(self, next_url: str, url: str, seen: set[str], pages: int) -> str:
        """Why paging must stop before ``next_url`` ("" when it may be followed)."""
        if not is_absolute_http_url(next_url):
            return f"{url}: next_url {next_url[:200]!r} is not an absolute http(s) URL; stopped"
        if next_url in seen:
            return f"{url}: next_url {next_url[:200]!r} was already read (a loop); stopped"
        if pages >= self.max_pages:
            return (
                f"{url}: stopped after {pages} pages ([feed] max_pages); older pages were not "
                "read: raise max_pages to read them"
            )
        return ""

    def _get(self, client: httpx.Client, url: str, headers: Mapping[str, str]) -> httpx.Response:
        """GET ``url`` with bounded retries; returns a 2xx (or, for page one, 304) answer."""
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._attempt(client, url, headers, attempt)
            except _Retry as retry:
                last = retry.detail
                if attempt < self.max_attempts:
                    sleep(retry.wait)
        raise FeedUnavailable(
            f"feed {url}: gave up after {self.max_attempts} attempts, the last one {last}; "
            "the stored comparisons are kept: check that the feed server is up, then fetch "
            "again (or raise [feed] max_attempts / timeout)"
        )

    def _attempt(
        self, client: httpx.Client, url: str, headers: Mapping[str, str], attempt: int
    ) -> httpx.Response:
        try:
            response = client.get(url, headers=dict(headers))
        except httpx.TimeoutException as exc:
            raise _Retry(f"timed out after {self.timeout:g} s", self._backoff(attempt)) from exc
        except httpx.TransportError as exc:
            detail = f"failed to connect ({exc.__class__.__name__}: {exc})"
            raise _Retry(detail, self._backoff(attempt)) from exc
        except httpx.HTTPError as exc:  # too many redirects, undecodable body, …
            raise FeedUnavailable(f"feed {url}: {exc.__class__.__name__}: {exc}") from exc
        status = response.status_code
        # Only the first page is asked conditionally, so only it may answer 304.
        if 200 <= status < 300 or (status == 304 and headers):
            return response
        detail = f"got HTTP {status} {response.reason_phrase}".rstrip()
        if status in _RETRY_AFTER_STATUSES:
            raise _Retry(detail, self._server_wait(url, response, attempt))
        if status >= 500:
            raise _Retry(detail, self._backoff(attempt))
        raise FeedUnavailable(
            f"feed {url}: {detail}; not retried: check [feed] url and the server's access rules"
        )

    def _server_wait(self, url: str, response: httpx.Response, attempt: int) -> float:
        header = response.headers.get("retry-after")
        wait = retry_after_seconds(header, datetime.now(UTC)) if header else None
        if wait is None:
            return self._backoff(attempt)
        if wait > self.max_retry_after:
            raise FeedUnavailable(
                f"feed {url}: HTTP {response.status_code} asks to retry after {wait:.0f} s, more "
                f"than [feed] max_retry_after ({self.max_retry_after:g} s); fetch again later"
            )
        return wait

    def _backoff(self, attempt: int) -> float:
        # Exponential backoff with full jitter (AWS Architecture Blog, "Exponential
        # Backoff and Jitter"): spreads retries of many clients over the window.
        return random.uniform(0, self.backoff_seconds * 2 ** (attempt - 1))  # noqa: S311


def _conditional_headers(cursor: FeedCursor) -> dict[str, str]:
    headers: dict[str, str] = {}
    if cursor.etag:
        headers["If-None-Match"] = cursor.etag
    if cursor.last_modified:
        headers["If-Modified-Since"] = cursor.last_modified
    return headers


def _validators(response: httpx.Response, fallback: FeedCursor) -> FeedCursor:
    return FeedCursor(
        etag=response.headers.get("etag", fallback.etag),
        last_modified=response.headers.get("last-modified", fallback.last_modified),
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


def _number(name: str, value: Any, *, minimum: float = 0.0, inclusive: bool = True) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value >= minimum if inclusive else value > minimum):
        return float(value)
    relation = "at least" if inclusive else "greater than"
    raise ValueError(f"'{name}' must be a number {relation} {minimum:g}, got {value!r}")


def _count(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"'{name}' must be a whole number of at least 1, got {value!r}")
