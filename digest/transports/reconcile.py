"""Asking a provider about messages in doubt: the bounded loop Postmark and Mailgun share.

A message is in doubt (``Outcome.unknown``) when the provider may or may not have
accepted it: an HTTP 5xx or a lost connection after the request was sent (see the
table in :mod:`digest.transports.http_retry`). Before ``[send] unknown_policy`` resends
or skips it, the ledger hands the rows to the transport's ``reconcile`` (the
:class:`~digest.transports.base.Reconciler` protocol), which asks the provider one
search per message, by the ids we sent with it:

==========  =================================================================
Postmark    ``GET /messages/outbound`` ("Outbound message search", Messages
            API) with ``metadata_delivery_id``, ``recipient``, ``tag``,
            ``messagestream``, ``fromdate``; :mod:`digest.transports.postmark`
Mailgun     ``GET /v3/<domain>/events`` (Events API) with ``event=accepted``,
            ``recipient``, ``begin``/``end``, matched on the event's
            ``user-variables.digest_delivery_id``; :mod:`digest.transports.mailgun`
==========  =================================================================

Bounded, so that a slow or failing provider cannot stall a send run: one total
deadline (``reconcile_seconds``, default 60) for all the searches of one call, a
cap on each answer's size and on the pages followed, the send's pacing and
concurrency (:meth:`SearchingTransport.query`). What
the provider confirms comes back ``queued`` with its id; everything else (not found,
an error answer, no answer, the deadline) is left out and stays ``unknown``: never
guessed. Only a refusal of our credentials raises ``TransportUnavailable``.

:class:`SearchingTransport` is the base of the providers that can be asked: its one
``reconcile`` runs the provider's ``_search`` through :func:`reconcile_each`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx

from digest.errors import TransportUnavailable
from digest.transports.api import ApiResponse, QueryFailed, describe, retry_after
from digest.transports.base import InDoubt, SendResult
from digest.transports.http_base import HttpBatchTransport
from digest.transports.http_retry import auth_refused

log = logging.getLogger(__name__)

DEFAULT_DEADLINE = 60.0  # seconds for one reconcile call, every search included
MAX_ANSWER_BYTES = 2_000_000  # one search answer, decompressed
MAX_PAGES = 5  # pages followed for one message

Search = Callable[[InDoubt], Awaitable[SendResult | None]]


async def reconcile_each(
    items: Sequence[InDoubt], search: Search, *, deadline: float, concurrency: int, kind: str
) -> list[SendResult]:
    """Run ``search`` for each item, at most ``concurrency`` at once, all within
    ``deadline`` seconds; return the results it found, in the items' order.

    ``search`` returns a result, or None when the provider does not account for the
    message; it raises :class:`QueryFailed` when it could not ask (the item stays
    undecided) and ``TransportUnavailable`` when the provider refused us (raised
    from here, the other searches cancelled)."""
    found: dict[int, SendResult] = {}
    pending = list(reversed(items))
    failures: list[str] = []

    async def worker() -> None:
        while pending:
            item = pending.pop()
            try:
                result = await search(item)
            except QueryFailed as exc:
                failures.append(str(exc))
                continue
            if result is not None:
                found[item.delivery_id] = result

    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, len(items))))]
    try:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*workers)
    except TimeoutError:
        log.warning(
            "%s: reconciliation stopped after %g s with %d of %d messages not yet asked about",
            kind,
            deadline,
            len(pending),
            len(items),
        )
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    if failures:
        log.warning(
            "%s: %d searches failed (those messages stay unknown), e.g. %s",
            kind,
            len(failures),
            failures[0],
        )
    return [found[i.delivery_id] for i in items if i.delivery_id in found]


class SearchingTransport(HttpBatchTransport):
    """An HTTP transport whose provider can be searched for a message: a
    :class:`~digest.transports.base.Reconciler` (Postmark, Mailgun). A provider sets
    ``reconcile_seconds`` (its ``[transport]`` key, default :data:`DEFAULT_DEADLINE`)
    in ``__init__`` and fills in :meth:`_search`; the others (Resend, SendGrid) stay
    plain :class:`HttpBatchTransport` and have no ``reconcile`` at all."""

    reconcile_seconds: float

    async def reconcile(self, items: Sequence[InDoubt]) -> list[SendResult]:
        """``queued`` + the provider's id for each item :meth:`_search` finds; the others
        are left out (see the provider's module docstring). Raises
        ``TransportUnavailable`` when the provider refuses the credentials."""
        return await reconcile_each(
            items,
            self._search,
            deadline=self.reconcile_seconds,
            concurrency=self.concurrency,
            kind=self.kind,
        )

    async def query(
        self, url: str, params: Mapping[str, str] | None = None, *, max_bytes: int = 2_000_000
    ) -> ApiResponse:
        """One GET for a reconciliation search: ``url`` relative to ``base_url`` (or an
        absolute URL the caller has checked), paced and gated like a send, on the same
        client and credentials. A ``Retry-After`` on 429/503 sets the shared gate.

        Returns the answer (any status but 401/403). Raises ``TransportUnavailable``
        for 401/403, :class:`~digest.transports.api.QueryFailed` when there is no
        answer (network, timeout) or its body is over ``max_bytes`` (decompressed)."""
        client = self._ensure_client()
        try:
            async with self._in_flight:
                await self.gate.wait_turn(0)
                self.sent_requests += 1
                async with client.stream("GET", url, params=params) as answer:
                    body = bytearray()
                    async for chunk in answer.aiter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            raise QueryFailed(f"{self.kind}: answer over {max_bytes} bytes")
        except httpx.HTTPError as exc:
            raise QueryFailed(f"{self.kind}: {describe(exc)}") from exc
        headers = {name.lower(): value for name, value in answer.headers.items()}
        response = ApiResponse(answer.status_code, headers, body.decode("utf-8", "replace"))
        if response.status in (401, 403):
            raise TransportUnavailable(auth_refused(self, response))
        wait = retry_after(headers.get("retry-after"))
        if wait is not None and response.status in (429, 503):
            self.gate.hold(wait)
        return response

    async def search_page(
        self,
        url: str,
        params: Mapping[str, str] | None,
        *,
        key: str,
        label: str,
        max_bytes: int,
    ) -> tuple[dict[str, Any], list[Any]]:
        """One page of a search (:meth:`query`): the answer's JSON
        object and the list under ``key`` in it. Raises ``QueryFailed`` (its message
        starts with ``label``) for an answer other than 200, one that is not a JSON
        object, or one without that list; ``TransportUnavailable`` as ``query`` does."""
        response = await self.query(url, params, max_bytes=max_bytes)
        body = response.json()
        if response.status != 200 or not isinstance(body, dict):
            raise QueryFailed(f"{label} HTTP {response.status}: {response.compact()}")
        found = body.get(key)
        if not isinstance(found, list):
            raise QueryFailed(f"{label}: no {key} list: {response.compact()}")
        return body, found

    async def _search(self, item: InDoubt) -> SendResult | None:
        """One search (a :data:`Search`): the item's result, None when the provider does
        not account for it; raises ``QueryFailed`` when it could not ask."""
        raise NotImplementedError
