"""The provider transports' send loop: how each answer becomes an outcome, and when
a request is tried again (:func:`send_chunk`, which
:class:`~digest.transports.http_base.HttpBatchTransport` runs for each request).

How answers become outcomes (the provider's own words always go in ``detail``). The
question for each is whether the provider may already have the messages: if it may,
sending again could give every reader of the request a second copy, so a provider
without an idempotency key gets ``unknown`` at once (the ledger then asks the provider,
see :mod:`digest.transports.reconcile`, or applies ``[send] unknown_policy``), and an
``idempotent`` one (Resend: the same ``Idempotency-Key`` is dropped as a duplicate)
retries with the same key, ending ``unknown`` when attempts run out.

==========================  ==============================  ===========================
answer                      may the provider have it?       outcome
==========================  ==============================  ===========================
2xx / other 4xx             answered: ``parse_response``    per message: ``queued`` +
                            decides                         id, ``rejected``, ``failed``
401, 403                    no (credentials refused)        raises ``TransportUnavailable``
429 (with or without        no: throttled before work       "not before" gate (a backoff
``Retry-After``)            (RFC 6585 4; Postmark, Resend,  when no hint), waited out in
                            Mailgun document 429 as rate    the call if ≤ ``max_retry_after``
                            limiting, SendGrid with         and attempts remain, else
                            ``X-RateLimit-Reset``)          ``deferred`` + ``retry_after``
503 (with or without        no: unavailable, not processed  as 429 with ``Retry-After``;
``Retry-After``)            (RFC 9110 15.6.4: "currently    without it backoff and retry,
                            unable to handle the request";  then ``deferred``
                            Postmark: maintenance/outage)
408                         no: the server gave up waiting  backoff and retry, then
                            for our request (RFC 9110       ``deferred``
                            15.5.9)
500, 502, 504 and every     maybe: the request arrived;     ``unknown`` for every message
other 5xx but 501, 505      an error in or behind the       of the request, never resent
(e.g. a CDN's 520-524)      front end may come after the    (idempotent: retried with the
                            messages were stored. Postmark  same key). Postmark's 500 came
                            documents 500 as "Internal      after the batch was accepted:
                            Server Error" with no promise   20 of 20 readers got two copies
                            that nothing was stored         when it was retried whole
501, 505                    no (method / version unknown)   ``parse_response`` (``failed``)
connect error, connect or   no: nothing left this machine   backoff and retry, then
pool timeout, write error   whole (a body cut short is      ``deferred``
or write timeout            never processed)
read timeout, connection    maybe: the whole request was    ``unknown`` (idempotent:
lost or closed before the   sent                            retried with the same key)
answer
2xx body the provider hook  maybe                           ``unknown``
cannot read
==========================  ==============================  ===========================

Retries go through :func:`digest.common.retry.retry`: at most ``max_attempts``
tries per request; between them a backoff (:func:`backoff`: ``backoff_seconds``
doubled each attempt, capped at :data:`MAX_BACKOFF`, times a random 0.5 to 1) or,
after a 429/503 with a wait, no sleep here: the wait is the transport's "not
before" gate (:class:`~digest.transports.pacing.Gate`), which holds back every
request of the transport, this one's next attempt included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

import httpx

from digest.common.retry import Again, Backoff, retry
from digest.errors import TransportUnavailable
from digest.transports.api import ApiRequest, ApiResponse, describe, retry_after
from digest.transports.base import Outcome, OutgoingMessage, SendResult
from digest.transports.pacing import Gate

MAX_BACKOFF = 30.0  # seconds: the longest backoff between attempts in one call
# Nothing reached the provider whole: a request cut short is never processed.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
)
_MAYBE_SENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_RETRY_STATUS = frozenset({408, 429, 503})  # refused before any work: safe to send again
_NOT_PROCESSED_5XX = frozenset({501, 505})  # method / HTTP version not supported
_MAYBE = "the provider may have accepted it, so it is not sent again"

Post = Callable[[ApiRequest, int], Awaitable[ApiResponse]]


class Sender(Protocol):
    """What the send loop reads of a transport
    (:class:`~digest.transports.http_base.HttpBatchTransport` has it all)."""

    @property
    def kind(self) -> str: ...
    @property
    def secret_env(self) -> Mapping[str, str]: ...
    @property
    def idempotent(self) -> bool: ...
    @property
    def base_url(self) -> str: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def max_retry_after(self) -> float: ...
    @property
    def backoff(self) -> Backoff: ...
    @property
    def gate(self) -> Gate: ...

    def build_request(self, messages: Sequence[OutgoingMessage]) -> ApiRequest: ...

    def parse_response(
        self, messages: Sequence[OutgoingMessage], response: ApiResponse
    ) -> list[SendResult]: ...


def backoff(first: float) -> Backoff:
    """The providers' backoff: ``first`` seconds, doubled each attempt, capped at
    :data:`MAX_BACKOFF`, times a random factor from 0.5 to 1 ("equal" jitter)."""
    return Backoff(first, cap=MAX_BACKOFF, jitter="equal")


def maybe_accepted(status: int) -> bool:
    """True for an HTTP status after which the provider may have the request's
    messages: 5xx but 501, 503, 505 (see the module docstring's table)."""
    return status >= 500 and status != 503 and status not in _NOT_PROCESSED_5XX


async def send_chunk(
    transport: Sender, messages: Sequence[OutgoingMessage], post: Post
) -> list[SendResult]:
    """Send ``messages`` (at most ``max_batch``) as one request, ``post``-ed (paced and
    gated) as often as the table above allows; one result per message, in order."""
    request = transport.build_request(messages)
    kind = transport.kind
    maybe_sent = False  # some attempt may have been accepted by the provider

    async def attempt(number: int) -> list[SendResult]:
        nonlocal maybe_sent
        try:
            response = await post(request, len(messages))
        except _NOT_SENT as exc:
            raise Again(f"{kind}: {describe(exc)} (nothing was sent)") from exc
        except _MAYBE_SENT as exc:
            detail = f"{kind}: {describe(exc)} after the request was sent: {_MAYBE}"
            maybe_sent = True
            if not transport.idempotent:
                return results(messages, Outcome.unknown, detail)
            raise Again(detail) from exc
        except httpx.HTTPError as exc:  # a bad URL or protocol: nothing will work
            raise TransportUnavailable(f"{kind} at {transport.base_url}: {describe(exc)}") from exc
        status = response.status
        if status in (401, 403):
            raise TransportUnavailable(auth_refused(transport, response))
        if maybe_accepted(status):
            detail = f"{kind} HTTP {status}: {_MAYBE}: {response.compact()}"
            maybe_sent = True
            if not transport.idempotent:
                return results(messages, Outcome.unknown, detail)
            raise Again(detail)
        if status not in _RETRY_STATUS:
            return parse(transport, messages, response)
        detail = f"{kind} HTTP {status}: {response.compact()}"
        wait = retry_after(response.headers.get("retry-after"))
        if wait is None and status == 429:  # throttled without a hint: back off
            wait = transport.backoff.delay(number)
        if wait is not None and status in (429, 503):
            transport.gate.hold(wait)
            if wait > transport.max_retry_after or number == transport.max_attempts:
                outcome = Outcome.unknown if maybe_sent else Outcome.deferred
                return results(messages, outcome, detail, retry_after=wait)
            raise Again(detail, held=True)  # the gate waits it out
        raise Again(detail)  # 408, or 503 without a wait: back off

    def exhausted(last: Again) -> list[SendResult]:
        outcome = Outcome.unknown if maybe_sent else Outcome.deferred
        return results(messages, outcome, last.detail)

    return await retry(
        attempt,
        attempts=transport.max_attempts,
        backoff=transport.backoff,
        sleep=asyncio.sleep,
        exhausted=exhausted,
    )


def parse(
    transport: Sender, messages: Sequence[OutgoingMessage], response: ApiResponse
) -> list[SendResult]:
    """The provider hook's results for a 2xx or final 4xx answer, or one outcome for
    all when it cannot read the answer or its results do not match the batch."""
    kind, status, ok = transport.kind, response.status, 200 <= response.status < 300
    try:
        answers = transport.parse_response(messages, response)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        what = "unreadable answer" if ok else "refused"
        detail = f"{kind} HTTP {status} {what} ({exc!r}): {response.compact()}"
        return results(messages, Outcome.unknown if ok else Outcome.failed, detail)
    if [r.delivery_id for r in answers] != [m.delivery_id for m in messages]:
        detail = f"{kind} HTTP {status}: answer does not match the batch: "
        return results(messages, Outcome.unknown, detail + response.compact())
    return answers


def auth_refused(transport: Sender, response: ApiResponse) -> str:
    """The ``TransportUnavailable`` message for a 401/403."""
    variable = transport.secret_env.get("api_key", "the API key")
    return (
        f"{transport.kind} refused the credentials (HTTP {response.status}: "
        f"{response.compact()}): check the {variable} environment variable"
    )


def results(
    messages: Sequence[OutgoingMessage],
    outcome: Outcome,
    detail: str,
    *,
    retry_after: float | None = None,
) -> list[SendResult]:
    """The same outcome for every message of the request."""
    return [
        SendResult(m.delivery_id, outcome, detail=detail, retry_after=retry_after) for m in messages
    ]
