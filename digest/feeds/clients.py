"""The feed's HTTP clients: one for ``[feed] url``'s own origin, one for elsewhere.

The configured origin is the operator's choice and may be on loopback or the
LAN. Any other origin reached through a redirect or a page's ``next_url`` was
chosen by feed content, so it goes through :mod:`digest.common.netguard`: its name is
resolved first and a loopback, private, link-local or CGNAT address is refused
(on every hop) unless ``[feed] allow_private_addresses = true``.

Both clients ask for ``gzip, deflate`` only (what
:class:`~digest.feeds.limits.CappedBody` can decode) and never follow redirects
themselves: httpx would read a redirect's whole body into memory, so
:class:`~digest.feeds.http_get.Getter` follows them, bounded.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx

from digest.common import netguard, redaction
from digest.feeds.limits import origin_of

GUARD_SETTING = "[feed] allow_private_addresses"


def _headers(user_agent: str) -> dict[str, str]:
    return {
        "User-Agent": user_agent,
        "Accept": "application/json",
        "Accept-Encoding": "gzip, deflate",
    }


def open_client(user_agent: str) -> httpx.AsyncClient:
    """A plain client for the configured origin. httpx logs each request's full URL
    at INFO: its logger gets the redaction filter whoever set logging up."""
    redaction.guard("httpx")
    return httpx.AsyncClient(headers=_headers(user_agent), follow_redirects=False)


@dataclass(frozen=True, slots=True)
class Clients:
    """Which client fetches a URL: ``home`` for the origin of ``[feed] url``,
    ``elsewhere`` (guarded) for any other."""

    home: httpx.AsyncClient
    elsewhere: httpx.AsyncClient
    origin: str

    def for_url(self, url: str | httpx.URL) -> httpx.AsyncClient:
        return self.home if origin_of(url) == self.origin else self.elsewhere


async def open_clients(
    stack: AsyncExitStack, url: str, user_agent: str, *, allow_private: bool
) -> Clients:
    """Both clients for a fetch of ``url``, closed with ``stack``."""
    home = await stack.enter_async_context(open_client(user_agent))
    policy = netguard.AddressPolicy(allow_private=allow_private, setting=GUARD_SETTING)
    guarded = netguard.guarded_client(policy, headers=_headers(user_agent), follow_redirects=False)
    elsewhere = await stack.enter_async_context(guarded)
    return Clients(home, elsewhere, origin_of(url))
