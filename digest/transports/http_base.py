"""The shared base of the provider HTTP transports (Postmark, Resend, SendGrid, Mailgun).

Like django-anymail's ``base_requests``: :class:`HttpBatchTransport` runs the send
(pacing, the "not before" gate, retries, error translation), and each provider
module fills in three small conversion steps. ``httpx`` is imported here and in no
provider module: providers see only :class:`~digest.transports.api.ApiRequest` and
:class:`~digest.transports.api.ApiResponse` (:mod:`digest.transports.api`, with the
small checks and helpers), and build their fields from
:class:`~digest.transports.parts.MessageParts` (:mod:`digest.transports.parts`).

Writing a provider::

    class AcmeTransport(HttpBatchTransport):
        kind = "acme"                                   # the [transport] kind
        secret_env = {"api_key": "DIGEST_ACME_API_KEY"}  # the credential, from env only
        default_base_url = "https://api.acme.example"
        provider_max_batch = 100                        # documented messages per request
        default_requests_per_second = 2.0               # documented limits (0 = none)
        default_messages_per_second = 0.0
        idempotent = False                              # True: honours an idempotency key
        custom_message_id = False                       # True: parts() adds our Message-ID

        def build_request(self, messages):             # -> ApiRequest (path, json|form, headers)
            parts = [self.parts(m) for m in messages]  # MessageParts: from, to, subject, …
        def parse_response(self, messages, response):  # -> one SendResult per message
        def auth_headers(self):                        # -> {"Authorization": "Bearer …"}
        def probe_request(self):                       # optional: a cheap authenticated GET

Extra TOML keys: define ``__init__(self, *, my_key: str = "x", **common: Any)``,
validate, then ``super().__init__(**common)``; the base merges the signatures so the
registry (which reads ``inspect.signature(cls)``) sees every key.

Common ``[transport]`` keys (each checked; ``ValueError`` names the key):
``base_url``, ``timeout`` (s), ``max_attempts`` (per ``send_batch`` call, for 5xx,
timeouts and connection errors), ``backoff_seconds`` (first backoff; doubled each
attempt, jittered, capped at 30 s), ``max_retry_after`` (s: the longest provider
``Retry-After`` waited out inside one call), ``messages_per_second``,
``requests_per_second`` (token buckets; 0 = unlimited), ``batch_size`` (≤ the
provider's maximum; becomes ``max_batch``), ``concurrency`` (requests in flight).
The credential is keyword ``api_key``, filled from ``secret_env`` only; missing, it
is a ``ValueError`` naming the environment variable.

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

Reconciliation (:meth:`HttpBatchTransport.query`): a provider that can be asked
whether it took a message runs its searches through ``query``, which uses the same
client, credentials, pacing, "not before" gate and concurrency as sends, caps the
response body and raises ``TransportUnavailable`` on 401/403 and
:class:`~digest.transports.api.QueryFailed` on anything else that did not answer.

A ``send_batch`` over ``max_batch`` is split into requests of ``max_batch``.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, overload

import httpx
import orjson

from digest.errors import TransportUnavailable
from digest.transports.api import (
    ApiRequest,
    ApiResponse,
    QueryFailed,
    check_int,
    check_number,
    check_str,
    describe,
    retry_after,
)
from digest.transports.base import Outcome, OutgoingMessage, SendResult, batch_key
from digest.transports.pacing import TokenBucket
from digest.transports.parts import DigestCache, JsonPieces, MessageParts, message_parts

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


class HttpBatchTransport:
    """Base of the provider transports; see the module docstring for the contract."""

    kind: ClassVar[str] = ""
    secret_env: ClassVar[Mapping[str, str]] = {}
    default_base_url: ClassVar[str] = ""
    provider_max_batch: ClassVar[int] = 1
    default_requests_per_second: ClassVar[float] = 0.0
    default_messages_per_second: ClassVar[float] = 0.0
    idempotent: ClassVar[bool] = False
    custom_message_id: ClassVar[bool] = False  # the API documents a settable Message-ID

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The registry reads ``inspect.signature(cls)``: show it the subclass's own
        # keywords plus the common ones it passes on through ``**common``.
        super().__init_subclass__(**kwargs)
        keyword = inspect.Parameter.KEYWORD_ONLY
        own = [p for p in inspect.signature(cls.__init__).parameters.values() if p.kind is keyword]
        names = {p.name for p in own}
        common = inspect.signature(HttpBatchTransport.__init__).parameters.values()
        merged = own + [p for p in common if p.kind is keyword and p.name not in names]
        setattr(cls, "__signature__", inspect.Signature(merged))  # noqa: B010

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_attempts: int = 3,
        backoff_seconds: float = 1.0,
        max_retry_after: float = 10.0,
        messages_per_second: float | None = None,
        requests_per_second: float | None = None,
        batch_size: int | None = None,
        concurrency: int = 2,
    ) -> None:
        """Validate the common keywords; ``ValueError`` names the bad key."""
        variable = self.secret_env.get("api_key", "the API key variable")
        if not api_key:
            raise ValueError(f"set the {variable} environment variable ({self.kind} API key)")
        self.api_key = api_key
        self.base_url = base_url if base_url is not None else self.default_base_url
        check_str("base_url", self.base_url)
        if not self.base_url.startswith(("https://", "http://")):
            raise ValueError(f"key 'base_url': expected an http(s) URL, got {self.base_url!r}")
        self.timeout = check_number("timeout", timeout)
        self.max_attempts = check_int("max_attempts", max_attempts, 1, 20)
        self.backoff_seconds = check_number("backoff_seconds", backoff_seconds, allow_zero=True)
        self.max_retry_after = check_number("max_retry_after", max_retry_after, allow_zero=True)
        self._max_batch = check_int(
            "batch_size",
            self.provider_max_batch if batch_size is None else batch_size,
            1,
            self.provider_max_batch,
        )
        self._concurrency = check_int("concurrency", concurrency, 1, 64)
        mps = (
            self.default_messages_per_second if messages_per_second is None else messages_per_second
        )
        rps = (
            self.default_requests_per_second if requests_per_second is None else requests_per_second
        )
        self.messages = TokenBucket(
            check_number("messages_per_second", mps, allow_zero=True), burst=self._max_batch
        )
        self.requests = TokenBucket(check_number("requests_per_second", rps, allow_zero=True))
        self.not_before = 0.0  # time.monotonic() before which nothing is sent
        self.sent_requests = 0  # requests that left (retries included)
        self._client: httpx.AsyncClient | None = None
        self._json_pieces: DigestCache[tuple[JsonPieces, JsonPieces]] = DigestCache()
        self._in_flight = asyncio.Semaphore(self._concurrency)

    # -- the hooks a provider fills in ----------------------------------------------

    def build_request(self, messages: Sequence[OutgoingMessage]) -> ApiRequest:
        """The request that sends ``messages`` (at most ``max_batch``)."""
        raise NotImplementedError

    def parse_response(
        self, messages: Sequence[OutgoingMessage], response: ApiResponse
    ) -> list[SendResult]:
        """One result per message, in order, from a 2xx or a non-retryable 4xx answer.

        May raise ``TransportUnavailable`` (account-level refusal). A ``KeyError``,
        ``TypeError``, ``ValueError`` or ``IndexError`` means an answer it cannot read:
        the base maps it to ``unknown`` (2xx) or ``failed`` (4xx)."""
        raise NotImplementedError

    def auth_headers(self) -> dict[str, str]:
        """Headers sent with every request (authentication)."""
        return {}

    def probe_request(self) -> ApiRequest | None:
        """A cheap authenticated request :meth:`open` makes to fail fast, or None."""
        return None

    # -- the Transport protocol -------------------------------------------------------

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def max_batch(self) -> int:
        return self._max_batch

    async def open(self) -> None:
        """Create the HTTP client; run the probe if any. Raises ``TransportUnavailable``."""
        client = self._ensure_client()
        probe = self.probe_request()
        if probe is None:
            return
        try:
            answer = await client.request(probe.method, probe.path, headers=dict(probe.headers))
        except httpx.HTTPError as exc:
            raise TransportUnavailable(
                f"cannot reach {self.kind} at {self.base_url} ({describe(exc)}): check "
                "[transport] base_url and the network"
            ) from exc
        if answer.status_code in (401, 403):
            raise TransportUnavailable(self._auth_refused(_response(answer)))

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """One result per message, in order; splits batches over ``max_batch``."""
        chunks = [
            messages[i : i + self._max_batch] for i in range(0, len(messages), self._max_batch)
        ]
        answers = await asyncio.gather(*(self._send_chunk(chunk) for chunk in chunks))
        return [result for answer in answers for result in answer]

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- helpers for providers ----------------------------------------------------------

    @overload
    def parts(
        self, message: OutgoingMessage, *, json_bodies: Literal[False] = False
    ) -> MessageParts[str]: ...

    @overload
    def parts(
        self, message: OutgoingMessage, *, json_bodies: Literal[True]
    ) -> MessageParts[str | orjson.Fragment]: ...

    def parts(
        self, message: OutgoingMessage, *, json_bodies: bool = False
    ) -> MessageParts[str] | MessageParts[str | orjson.Fragment]:
        """The message as fields (:func:`~digest.transports.parts.message_parts`): from
        shared/personal content, or (transactional messages) from ``data`` parsed once
        with the email package.

        ``json_bodies``: a digest message's HTML and text come as pre-encoded JSON
        strings (:func:`~digest.transports.parts.json_string`), for a JSON API's
        request body."""
        return message_parts(
            message,
            custom_message_id=self.custom_message_id,
            json_bodies=json_bodies,
            cache=self._json_pieces,
        )

    @staticmethod
    def batch_key(messages: Sequence[OutgoingMessage]) -> str:
        """:func:`digest.transports.base.batch_key`: the same group, the same key."""
        return batch_key(messages)

    # -- the send loop --------------------------------------------------------------

    async def _send_chunk(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        request = self.build_request(messages)
        maybe_sent = False  # some attempt may have been accepted by the provider
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            final = attempt == self.max_attempts
            try:
                response = await self._request(request, len(messages))
            except _NOT_SENT as exc:
                last = f"{self.kind}: {describe(exc)} (nothing was sent)"
            except _MAYBE_SENT as exc:
                last = f"{self.kind}: {describe(exc)} after the request was sent: {_MAYBE}"
                maybe_sent = True
                if not self.idempotent:
                    return _all(messages, Outcome.unknown, last)
            except httpx.HTTPError as exc:  # a bad URL or protocol: nothing will work
                raise TransportUnavailable(
                    f"{self.kind} at {self.base_url}: {describe(exc)}"
                ) from exc
            else:
                status = response.status
                if status in (401, 403):
                    raise TransportUnavailable(self._auth_refused(response))
                if maybe_accepted(status):
                    last = f"{self.kind} HTTP {status}: {_MAYBE}: {response.compact()}"
                    maybe_sent = True
                    if not self.idempotent:
                        return _all(messages, Outcome.unknown, last)
                elif status not in _RETRY_STATUS:
                    return self._parse(messages, response)
                else:
                    last = f"{self.kind} HTTP {status}: {response.compact()}"
                    wait = retry_after(response.headers.get("retry-after"))
                    if wait is None and status == 429:  # throttled without a hint: back off
                        wait = self._backoff(attempt)
                    if wait is not None and status in (429, 503):
                        self.not_before = max(self.not_before, time.monotonic() + wait)
                        if wait > self.max_retry_after or final:
                            outcome = Outcome.unknown if maybe_sent else Outcome.deferred
                            return _all(messages, outcome, last, retry_after=wait)
                        continue  # the gate in _request waits it out
            if not final:
                await asyncio.sleep(self._backoff(attempt))
        return _all(messages, Outcome.unknown if maybe_sent else Outcome.deferred, last)

    async def _request(self, request: ApiRequest, count: int) -> ApiResponse:
        client = self._ensure_client()
        async with self._in_flight:
            await self._wait_turn(count)
            self.sent_requests += 1
            headers = dict(request.headers)
            content = None
            if request.json is not None:
                # orjson: a Postmark batch is 500 full bodies (~20 MB); httpx's stdlib
                # encoder took 62 % of the send run's time on them.
                content = orjson.dumps(request.json)
                headers["Content-Type"] = "application/json"
            answer = await client.request(
                request.method,
                request.path,
                content=content,
                data=request.form,
                files=request.files,
                headers=headers,
            )
        return _response(answer)

    async def _wait_turn(self, count: int) -> None:
        """The "not before" gate and the token buckets, shared by sends and queries."""
        while (delay := self.not_before - time.monotonic()) > 0:  # Retry-After gate
            await asyncio.sleep(delay)
        await self.requests.acquire()
        for _ in range(count):
            await self.messages.acquire()
        while (delay := self.not_before - time.monotonic()) > 0:  # set while pacing
            await asyncio.sleep(delay)

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
                await self._wait_turn(0)
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
            raise TransportUnavailable(self._auth_refused(response))
        wait = retry_after(headers.get("retry-after"))
        if wait is not None and response.status in (429, 503):
            self.not_before = max(self.not_before, time.monotonic() + wait)
        return response

    def _parse(
        self, messages: Sequence[OutgoingMessage], response: ApiResponse
    ) -> list[SendResult]:
        ok = 200 <= response.status < 300
        try:
            results = self.parse_response(messages, response)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            what = "unreadable answer" if ok else "refused"
            detail = f"{self.kind} HTTP {response.status} {what} ({exc!r}): {response.compact()}"
            return _all(messages, Outcome.unknown if ok else Outcome.failed, detail)
        if [r.delivery_id for r in results] != [m.delivery_id for m in messages]:
            detail = f"{self.kind} HTTP {response.status}: answer does not match the batch: "
            return _all(messages, Outcome.unknown, detail + response.compact())
        return results

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF)
        return float(base * (0.5 + random.random() / 2))  # noqa: S311  (jitter, not crypto)

    def _ensure_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self.timeout,
                headers={"Accept": "application/json", **self.auth_headers()},
                limits=httpx.Limits(max_connections=self._concurrency + 1),
            )
        return self._client

    def _auth_refused(self, response: ApiResponse) -> str:
        variable = self.secret_env.get("api_key", "the API key")
        return (
            f"{self.kind} refused the credentials (HTTP {response.status}: "
            f"{response.compact()}): check the {variable} environment variable"
        )


def maybe_accepted(status: int) -> bool:
    """True for an HTTP status after which the provider may have the request's
    messages: 5xx but 501, 503, 505 (see the module docstring's table)."""
    return status >= 500 and status != 503 and status not in _NOT_PROCESSED_5XX


def _all(
    messages: Sequence[OutgoingMessage],
    outcome: Outcome,
    detail: str,
    *,
    retry_after: float | None = None,
) -> list[SendResult]:
    return [
        SendResult(m.delivery_id, outcome, detail=detail, retry_after=retry_after) for m in messages
    ]


def _response(answer: httpx.Response) -> ApiResponse:
    headers = {name.lower(): value for name, value in answer.headers.items()}
    return ApiResponse(answer.status_code, headers, answer.text)
