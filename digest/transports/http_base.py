"""The shared base of the provider HTTP transports (Postmark, Resend, SendGrid, Mailgun).

Like django-anymail's ``base_requests``: :class:`HttpBatchTransport` runs the send
(pacing, the "not before" gate, retries, error translation), and each provider
module fills in three small conversion steps. ``httpx`` is imported here, in
:mod:`~digest.transports.http_retry` (the send loop) and in
:mod:`~digest.transports.reconcile` (searches), in no provider module: providers
see only :class:`~digest.transports.api.ApiRequest` and
:class:`~digest.transports.api.ApiResponse` (:mod:`digest.transports.api`, with
the small helpers), and build their fields from
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

Common ``[transport]`` keys (each checked with :mod:`digest.common.options`;
``ValueError`` names the key):
``base_url``, ``timeout`` (s), ``max_attempts`` (per ``send_batch`` call, for 5xx,
timeouts and connection errors), ``backoff_seconds`` (first backoff; doubled each
attempt, jittered, capped at 30 s), ``max_retry_after`` (s: the longest provider
``Retry-After`` waited out inside one call), ``messages_per_second``,
``requests_per_second`` (token buckets; 0 = unlimited), ``batch_size`` (≤ the
provider's maximum; becomes ``max_batch``), ``concurrency`` (requests in flight).
The credential is keyword ``api_key``, filled from ``secret_env`` only; missing, it
is a ``ValueError`` naming the environment variable.

A ``send_batch`` over ``max_batch`` is split into requests of ``max_batch``. How
each answer becomes an outcome, the reason for each status, and when a request is
tried again: the table in :mod:`digest.transports.http_retry` (the send loop).
Pacing (the "not before" gate a ``Retry-After`` sets, the token buckets) is
:class:`~digest.transports.pacing.Gate`. A provider that can be asked whether it
took a message is a :class:`~digest.transports.reconcile.SearchingTransport`, whose
``query`` shares the client, credentials, pacing and concurrency of sends.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, overload

import httpx
import orjson

from digest.common import options
from digest.common.options import KEY
from digest.errors import TransportUnavailable
from digest.transports import http_retry
from digest.transports.api import ApiRequest, ApiResponse, describe
from digest.transports.base import OutgoingMessage, SendResult, batch_key
from digest.transports.http_retry import MAX_BACKOFF, auth_refused, maybe_accepted
from digest.transports.pacing import Gate
from digest.transports.parts import DigestCache, JsonPieces, MessageParts, message_parts

__all__ = ["MAX_BACKOFF", "HttpBatchTransport", "maybe_accepted"]


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
        options.text("base_url", self.base_url, style=KEY)
        if not self.base_url.startswith(("https://", "http://")):
            raise ValueError(f"key 'base_url': expected an http(s) URL, got {self.base_url!r}")
        # The transports' numbers have always let inf and nan through: finite=False.
        self.timeout = options.number("timeout", timeout, inclusive=False, finite=False, style=KEY)
        self.max_attempts = options.count("max_attempts", max_attempts, maximum=20, style=KEY)
        self.backoff_seconds = options.number(
            "backoff_seconds", backoff_seconds, finite=False, style=KEY
        )
        self.max_retry_after = options.number(
            "max_retry_after", max_retry_after, finite=False, style=KEY
        )
        self.backoff = http_retry.backoff(self.backoff_seconds)
        most = self.provider_max_batch
        batch = most if batch_size is None else batch_size
        self._max_batch = options.count("batch_size", batch, maximum=most, style=KEY)
        self._concurrency = options.count("concurrency", concurrency, maximum=64, style=KEY)
        mps = (
            self.default_messages_per_second if messages_per_second is None else messages_per_second
        )
        rps = (
            self.default_requests_per_second if requests_per_second is None else requests_per_second
        )
        self.gate = Gate(
            messages_per_second=options.number("messages_per_second", mps, finite=False, style=KEY),
            requests_per_second=options.number("requests_per_second", rps, finite=False, style=KEY),
            burst=self._max_batch,
        )
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
            raise TransportUnavailable(auth_refused(self, _response(answer)))

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

    # -- sending: the loop is digest.transports.http_retry's ------------------------

    async def _send_chunk(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """One request for ``messages`` (at most ``max_batch``), retried as allowed."""
        return await http_retry.send_chunk(self, messages, self._request)

    @property
    def not_before(self) -> float:
        """``time.monotonic()`` before which nothing is sent (:class:`Gate`)."""
        return self.gate.not_before

    async def _request(self, request: ApiRequest, count: int) -> ApiResponse:
        client = self._ensure_client()
        async with self._in_flight:
            await self.gate.wait_turn(count)
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

    def _ensure_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self.timeout,
                headers={"Accept": "application/json", **self.auth_headers()},
                limits=httpx.Limits(max_connections=self._concurrency + 1),
            )
        return self._client


def _response(answer: httpx.Response) -> ApiResponse:
    headers = {name.lower(): value for name, value in answer.headers.items()}
    return ApiResponse(answer.status_code, headers, answer.text)
