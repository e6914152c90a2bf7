"""The pre-flight's link check (:mod:`digest.desk.preflight`): fetch each distinct URL
once, at most ``concurrency`` at a time, with a per-run cache.

A link is fine when it answers below 400 after redirects. HEAD first; a server
that refuses HEAD (anything 400 and up but 404 and 410, which mean what they
say) is asked again with GET, and only its status line is read.

Feed content chooses these URLs, so they are fetched through
:func:`digest.common.netguard.guarded_client`: a link (or any redirect hop) to a
loopback, private, link-local or otherwise internal address is *refused*, not
fetched, unless the policy allows it (``[preflight] allow_private_addresses``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from digest.common.netguard import AddressPolicy, Refused, Resolver, guarded_client


@dataclass(frozen=True, slots=True)
class LinkResult:
    url: str
    status: int | None = None  # the final HTTP status after redirects
    error: str = ""  # why there is no status (timeout, connection refused, DNS)
    refused: bool = False  # the guard would not fetch it (``error`` says why)

    @property
    def ok(self) -> bool:
        return self.status is not None and self.status < 400

    def describe(self) -> str:
        if self.status is not None:
            return f"answers {self.status}"
        return self.error if self.refused else f"is unreachable: {self.error}"


class LinkChecker:
    """Fetch links with bounded concurrency and a per-run cache (one answer per URL).

    ``policy``: which addresses may be connected to (default: public ones only);
    ``resolver``: host name to addresses (default: the system's). ``transport``
    replaces the guarded one altogether (tests with a mock transport only)."""

    def __init__(
        self,
        *,
        timeout: float,
        concurrency: int,
        transport: httpx.AsyncBaseTransport | None = None,
        policy: AddressPolicy | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.timeout = timeout
        self.concurrency = concurrency
        self.transport = transport
        self.policy = policy or AddressPolicy()
        self.resolver = resolver
        self.cache: dict[str, LinkResult] = {}

    async def check(self, urls: Iterable[str]) -> dict[str, LinkResult]:
        """The result of each URL (cached ones are not fetched again)."""
        todo = [u for u in dict.fromkeys(urls) if u not in self.cache]
        limit = asyncio.Semaphore(self.concurrency)
        headers = {"User-Agent": "verdicts-digest-preflight/1 (link check)"}
        async with self._client(headers) as client:

            async def one(url: str) -> None:
                async with limit:
                    self.cache[url] = await self._fetch(client, url)

            await asyncio.gather(*(one(u) for u in todo))
        return {u: self.cache[u] for u in dict.fromkeys(urls)}

    def _client(self, headers: dict[str, str]) -> httpx.AsyncClient:
        if self.transport is not None:
            return httpx.AsyncClient(
                transport=self.transport,
                trust_env=False,
                timeout=self.timeout,
                follow_redirects=True,
                headers=headers,
            )
        return guarded_client(
            self.policy,
            resolver=self.resolver,
            timeout=self.timeout,
            follow_redirects=True,
            headers=headers,
        )

    async def _fetch(self, client: httpx.AsyncClient, url: str) -> LinkResult:
        try:
            response = await client.head(url)
            if response.status_code < 400 or response.status_code in (404, 410):
                return LinkResult(url, response.status_code)
            async with client.stream("GET", url) as streamed:  # some servers refuse HEAD
                return LinkResult(url, streamed.status_code)
        except Refused as exc:
            return LinkResult(url, error=str(exc)[:300], refused=True)
        except httpx.HTTPError as exc:
            return LinkResult(url, error=f"{type(exc).__name__} {exc}".strip()[:200])
