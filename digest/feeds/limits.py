"""What bounds one feed fetch: its time, its bytes, where its credential may go.

- :class:`Budget`: the whole fetch's deadline (``[feed] deadline_seconds``, on the
  monotonic clock) and the caller's stop signal (SIGTERM in ``digest run``).
- :class:`CappedBody`: a response body decoded (``Content-Encoding`` gzip or
  deflate) chunk by chunk, never holding more than ``[feed] max_bytes`` of decoded
  bytes: a 0.4 MB gzip bomb that inflates to 400 MB is stopped after ``max_bytes``
  (zlib's ``max_length`` bounds each step, so no single chunk can blow up either).
- :class:`Credential`: the http feed's ``Authorization`` value, built from the
  environment (``DIGEST_FEED_TOKEN``, or ``DIGEST_FEED_USERNAME`` and
  ``DIGEST_FEED_PASSWORD``), and the one origin it may be sent to: that of
  ``[feed] url``, compared on httpx's own parse of each request's URL (the parser
  that decides where the request goes).
- :func:`redact_url` (from :mod:`digest.common.redaction`): a URL without its user-info and
  secret-looking query values, for every message, log line and ``feed_state`` key.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import re
import threading
import time
import zlib
from dataclasses import dataclass, field

import httpx

# Kept importable from here (the feed modules and their tests use this name); the
# implementation lives in digest.common.redaction, which the logging filter shares.
from digest.common.redaction import REDACTED as REDACTED
from digest.common.redaction import redact_url as redact_url

_STEP = 1 << 20  # decoded bytes per zlib call
ENV_TOKEN = "DIGEST_FEED_TOKEN"  # noqa: S105  (variable names, not secrets)
ENV_USERNAME = "DIGEST_FEED_USERNAME"
ENV_PASSWORD = "DIGEST_FEED_PASSWORD"  # noqa: S105
_HEADER_SAFE = re.compile(r"[!-~]+")  # visible ASCII: what a bearer token may hold
log = logging.getLogger(__name__)


def origin_of(url: str | httpx.URL) -> str:
    """``scheme://host:port`` of an absolute URL as httpx parses it, the port always
    written out; "" when ``url`` is not absolute."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return ""
    if not parsed.host:
        return ""
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme, 0)
    return f"{parsed.scheme}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class Credential:
    """The feed's ``Authorization`` value and the one origin it may be sent to."""

    origin: str  # origin_of([feed] url)
    authorization: str = field(repr=False)
    source: str  # the environment variables it came from, for messages

    def allows(self, url: str | httpx.URL) -> bool:
        """True when a request to ``url`` may carry the credential (same origin)."""
        return bool(self.origin) and origin_of(url) == self.origin

    @classmethod
    def from_env(
        cls, url: str, token: str | None, username: str | None, password: str | None
    ) -> Credential | None:
        """The credential the environment's variables give (None: none set). Raises
        ``ValueError`` naming the variables, never their values."""
        if token and (username or password):
            raise ValueError(
                f"both {ENV_TOKEN} and {ENV_USERNAME} / {ENV_PASSWORD} are set: set only "
                "one (a bearer token, or HTTP Basic)"
            )
        if token:
            if not _HEADER_SAFE.fullmatch(token):
                raise ValueError(
                    f"{ENV_TOKEN} holds a space, a line break or a character that cannot go "
                    "in an HTTP header (its value is not shown)"
                )
            credential = cls(origin_of(url), f"Bearer {token}", ENV_TOKEN)
        elif username or password:
            if not (username and password):
                missing = ENV_PASSWORD if username else ENV_USERNAME
                raise ValueError(
                    f"{missing} is not set: HTTP Basic needs {ENV_USERNAME} and {ENV_PASSWORD}"
                )
            if ":" in username or not (username.isprintable() and password.isprintable()):
                raise ValueError(
                    f"{ENV_USERNAME} may not hold ':' (RFC 7617), and neither it nor "
                    f"{ENV_PASSWORD} a control character (values not shown)"
                )
            basic = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            credential = cls(origin_of(url), f"Basic {basic}", f"{ENV_USERNAME} / {ENV_PASSWORD}")
        else:
            return None
        parsed = httpx.URL(url)
        if parsed.scheme == "http" and not _loopback(parsed.host):
            log.warning(
                "the feed credential (%s) goes over plain http to %s, readable on the way: "
                "use an https [feed] url",
                credential.source,
                parsed.host,
            )
        return credential


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Budget:
    """The time left for a whole fetch, and whether the caller asked it to stop."""

    def __init__(self, seconds: float, stop: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.stop = stop
        self._ends = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left before the deadline (never below 0)."""
        return max(0.0, self._ends - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    @property
    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()


class BodyTooLarge(Exception):
    """The decoded body passed the cap; ``size`` is how far it got."""

    def __init__(self, size: int) -> None:
        super().__init__(f"more than {size:,} bytes")
        self.size = size


class UnsupportedEncoding(Exception):
    """A ``Content-Encoding`` this client did not ask for and cannot decode."""


class CappedBody:
    """Collects a body, decoding ``content_encoding`` as it comes, up to ``limit`` bytes.

    Raises :class:`BodyTooLarge` from :meth:`add` as soon as the decoded size passes
    ``limit``, :class:`UnsupportedEncoding` from the constructor for a coding other
    than identity, gzip or deflate, and ``zlib.error`` for a corrupt stream.
    """

    def __init__(self, content_encoding: str, limit: int) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise UnsupportedEncoding(content_encoding)
        self.coding = codings[0] if codings else ""
        self.limit = limit
        self._data = bytearray()
        self._inflater = self._new_inflater()
        self._first = True

    def _new_inflater(self) -> zlib._Decompress | None:
        if self.coding in ("gzip", "x-gzip"):
            return zlib.decompressobj(zlib.MAX_WBITS | 16)
        if self.coding == "deflate":
            return zlib.decompressobj()
        return None

    def add(self, chunk: bytes) -> None:
        """Decode and keep one chunk of the body as received."""
        if self._inflater is None:
            self._keep(chunk)
            return
        if self._first and self.coding == "deflate":
            self._first = False
            try:  # "deflate" is meant to be zlib (RFC 9110 §8.4.1.2); some servers send raw
                zlib.decompressobj().decompress(chunk[:64], 1)
            except zlib.error:
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._inflate(chunk)

    def _inflate(self, data: bytes) -> None:
        inflater = self._inflater
        assert inflater is not None
        while True:
            # max_length: at most 1 MB per step, and never more than one byte past the
            # cap; a full step may leave output inside zlib, so step again to drain it.
            room = min(_STEP, self.limit - len(self._data) + 1)
            out = inflater.decompress(data, room)
            self._keep(out)
            data = inflater.unconsumed_tail
            if inflater.eof:
                if not inflater.unused_data or self.coding == "deflate":
                    return
                data = inflater.unused_data  # the next member of a multi-member gzip
                inflater = self._inflater = self._new_inflater()
                assert inflater is not None
            elif not data and len(out) < room:
                return

    def _keep(self, data: bytes) -> None:
        if len(self._data) + len(data) > self.limit:
            raise BodyTooLarge(self.limit)
        self._data += data

    def bytes(self) -> bytes:
        """The decoded body so far."""
        return bytes(self._data)
