"""One GET of the http feed, bounded in time and size, with bounded retries.

The only module that uses httpx for the feed (DESIGN.md: "httpx behind one client
factory that applies deadlines, size caps …"):

- The clients (:mod:`digest.feeds.clients`) never follow redirects themselves:
  :class:`Getter` follows at most :data:`MAX_REDIRECTS`, to absolute http(s) URLs
  only, each hop on the configured origin's client or, elsewhere, on the guarded
  one (no loopback or private address on behalf of feed content).
- The feed's :class:`Credential` (``Authorization``) goes with a request only when
  its URL has the origin of ``[feed] url`` (scheme, host and port alike): never to
  another host a redirect or a ``next_url`` points at, nor over a downgrade from
  https to http. Redirects are followed here, not by httpx, so this is the rule
  that applies (httpx's own would keep it on an http→https redirect).
- Bodies are streamed into a :class:`~digest.feeds.limits.CappedBody`: past
  ``[feed] max_bytes`` of decoded bytes the page is refused and nothing more is read.
- Each request's timeouts are ``min([feed] timeout, time left)``; the whole fetch
  also runs under ``asyncio.timeout`` (see :mod:`digest.feeds.http`), so a server
  that trickles a byte at a time (which restarts every read timeout) is cut at the
  deadline.
- ``429``/``503`` with ``Retry-After`` (delta-seconds or HTTP-date, RFC 9110
  §10.2.3) waits that long, capped by ``max_retry_after``; other ``5xx``, timeouts
  and connection errors retry with exponential backoff and full jitter; other
  ``4xx`` fail at once. A wait that would end past the deadline fails at once.
  The attempts, the backoff and the waits are :mod:`digest.common.retry`'s
  (``retry``, ``Backoff`` with "full" jitter, ``retry_after`` read strictly).

Waits go through the module-level :func:`sleep`, which tests may replace.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

import httpx

from digest.common import netguard, redaction
from digest.common.retry import Again, Backoff, retry, retry_after
from digest.errors import FeedUnavailable
from digest.feeds.clients import Clients
from digest.feeds.limits import (
    BodyTooLarge,
    Budget,
    CappedBody,
    Credential,
    UnsupportedEncoding,
    origin_of,
    redact_url,
)

MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_RETRY_AFTER_STATUSES = (429, 503)


async def sleep(seconds: float) -> None:
    """Wait between attempts (module-level so tests can replace it)."""
    await asyncio.sleep(seconds)


def retry_after_seconds(value: str, now: datetime) -> float | None:
    """Seconds to wait for a ``Retry-After`` value, or None when it is unusable.

    Accepts delta-seconds (``"120"``, digits only: ``"1.5"`` is unusable) and an
    HTTP-date; a date in the past means 0. Not capped: a wait over ``[feed]
    max_retry_after`` (digits too many for a float are ``inf``) fails the fetch.
    (:func:`digest.common.retry.retry_after`, strict.)
    """
    return retry_after(value, now=now)


def is_absolute_http_url(url: str) -> bool:
    """True for an absolute ``http://`` or ``https://`` URL with a host."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


def out_of_time(url: str, budget: Budget, detail: str = "") -> FeedUnavailable:
    """The error for a fetch past ``[feed] deadline_seconds`` (``url`` as given)."""
    return FeedUnavailable(
        f"feed {redact_url(url)}: gave up{detail}: the whole fetch may take at most "
        f"[feed] deadline_seconds = {budget.seconds:g} s; the comparisons stored before are "
        "kept: check that the feed server answers promptly, or raise deadline_seconds"
    )


@dataclass(frozen=True, slots=True)
class Limits:
    """The ``[feed]`` keys one GET obeys."""

    timeout: float
    max_attempts: int
    backoff_seconds: float
    max_retry_after: float
    max_bytes: int


@dataclass(frozen=True, slots=True)
class Page:
    """A 2xx (or, for a conditional GET, 304) answer with its decoded body."""

    status: int
    etag: str
    last_modified: str
    body: bytes


class Getter:
    """GETs pages with ``client`` within ``limits`` and the fetch's ``budget``, adding
    ``credential`` to the requests whose URL has its origin."""

    def __init__(
        self,
        clients: Clients,
        limits: Limits,
        budget: Budget,
        credential: Credential | None = None,
    ) -> None:
        self.clients = clients
        self.limits = limits
        self.budget = budget
        self.credential = credential
        # Exponential backoff with full jitter: spreads many clients' retries over the window.
        self.backoff = Backoff(limits.backoff_seconds, jitter="full")

    async def get(self, url: str, headers: Mapping[str, str]) -> Page:
        """GET ``url`` with bounded retries. Raises :class:`FeedUnavailable`."""
        attempts = self.limits.max_attempts

        def late(last: Again) -> NoReturn:
            raise out_of_time(url, self.budget, f" ({last.detail}; no time left to retry)")

        def exhausted(last: Again) -> NoReturn:
            raise FeedUnavailable(
                f"feed {redact_url(url)}: gave up after {attempts} attempts, the last one "
                f"{last.detail}; the stored comparisons are kept: check that the feed server "
                "is up, then fetch again (or raise [feed] max_attempts / timeout)"
            )

        return await retry(
            lambda _: self._attempt(url, headers),
            attempts=attempts,
            backoff=self.backoff,
            sleep=sleep,  # looked up now: tests replace this module's sleep
            exhausted=exhausted,
            time_left=self.budget.remaining,
            late=late,
        )

    async def _attempt(self, url: str, headers: Mapping[str, str]) -> Page:
        """One GET (redirects followed); :class:`Again` when it is worth retrying."""
        seconds = max(0.001, min(self.limits.timeout, self.budget.remaining()))
        try:
            return await self._follow(url, headers, httpx.Timeout(seconds))
        except httpx.TimeoutException as exc:
            raise Again(f"timed out after {seconds:g} s") from exc
        except netguard.Refused as exc:  # feed content pointed inward: never retried
            raise FeedUnavailable(f"feed {redact_url(url)}: {exc}") from exc
        except httpx.TransportError as exc:
            detail = (
                f"failed to connect ({exc.__class__.__name__}: {redaction.redact_text(str(exc))})"
            )
            raise Again(detail) from exc
        except httpx.HTTPError as exc:  # anything else httpx refuses
            detail = f"{exc.__class__.__name__}: {redaction.redact_text(str(exc))}"
            raise FeedUnavailable(f"feed {redact_url(url)}: {detail}") from exc

    async def _follow(self, url: str, headers: Mapping[str, str], timeout: httpx.Timeout) -> Page:
        for _ in range(MAX_REDIRECTS + 1):
            client = self.clients.for_url(url)
            request = client.build_request("GET", url, headers=dict(headers), timeout=timeout)
            if self.credential is not None and self.credential.allows(request.url):
                request.headers["Authorization"] = self.credential.authorization
            response = await client.send(request, stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code not in _REDIRECTS or not location:
                    return await self._answer(url, response, bool(headers))
                target = str(response.url.join(location))
            finally:
                await response.aclose()
            if not is_absolute_http_url(target):
                raise FeedUnavailable(
                    f"feed {redact_url(url)}: redirected to {redact_url(target)[:200]!r}, "
                    "which is not an absolute http(s) URL"
                )
            url = target
        raise FeedUnavailable(
            f"feed {redact_url(url)}: more than {MAX_REDIRECTS} redirects; check [feed] url"
        )

    async def _answer(self, url: str, response: httpx.Response, conditional: bool) -> Page:
        status = response.status_code
        # Only the first page is asked conditionally, so only it may answer 304.
        if 200 <= status < 300 or (status == 304 and conditional):
            body = b"" if status == 304 else await self._body(url, response)
            etag = response.headers.get("etag", "")
            return Page(status, etag, response.headers.get("last-modified", ""), body)
        detail = f"got HTTP {status} {response.reason_phrase}".rstrip()
        if status in _RETRY_AFTER_STATUSES:
            raise Again(detail, self._server_wait(url, response))
        if status >= 500:
            raise Again(detail)
        if status in (401, 403):
            raise FeedUnavailable(
                f"feed {redact_url(url)}: {detail}; not retried: {self._denied(url)}"
            )
        raise FeedUnavailable(
            f"feed {redact_url(url)}: {detail}; not retried: check [feed] url and the server's "
            "access rules"
        )

    async def _body(self, url: str, response: httpx.Response) -> bytes:
        shown, cap = redact_url(url), self.limits.max_bytes
        encoding = response.headers.get("content-encoding", "")
        try:
            body = CappedBody(encoding, cap)
        except UnsupportedEncoding:
            raise FeedUnavailable(
                f"feed page {shown} came with Content-Encoding {encoding[:40]!r}, which was "
                "not asked for and cannot be read (gzip and deflate can)"
            ) from None
        too_large = FeedUnavailable(
            f"feed page {shown} is larger than [feed] max_bytes = {cap:,} bytes"
            f"{' once decompressed' if body.coding else ''}; it was not read: raise "
            "max_bytes if the feed really is this large"
        )
        length = response.headers.get("content-length", "")
        if not body.coding and length.isdigit() and int(length) > cap:
            raise too_large
        try:
            async for chunk in response.aiter_raw():
                body.add(chunk)
        except BodyTooLarge:
            raise too_large from None
        except zlib.error as exc:
            raise FeedUnavailable(
                f"feed page {shown}: corrupt {body.coding} body ({exc})"
            ) from None
        return body.bytes()

    def _server_wait(self, url: str, response: httpx.Response) -> float | None:
        """The server's ``Retry-After`` (None: none usable, back off instead)."""
        header = response.headers.get("retry-after")
        wait = retry_after_seconds(header, datetime.now(UTC)) if header else None
        if wait is None:
            return None
        if wait > self.limits.max_retry_after:
            raise FeedUnavailable(
                f"feed {redact_url(url)}: HTTP {response.status_code} asks to retry after "
                f"{wait:.0f} s, more than [feed] max_retry_after "
                f"({self.limits.max_retry_after:g} s); fetch again later"
            )
        return wait

    def _denied(self, url: str) -> str:
        """What to check after a 401 or 403."""
        credential = self.credential
        if credential is None:
            return (
                "if the feed needs a credential, set DIGEST_FEED_TOKEN (a bearer token) or "
                "DIGEST_FEED_USERNAME and DIGEST_FEED_PASSWORD (HTTP Basic)"
            )
        if origin_of(url) != credential.origin:
            return (
                f"the credential ({credential.source}) is sent only to {credential.origin}, "
                "the origin of [feed] url, and this page was elsewhere (a redirect or "
                "next_url): point [feed] url at the server that serves the feed"
            )
        return f"check the credential in {credential.source} and the server's access rules"
