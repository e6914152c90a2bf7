"""What bounds one feed fetch, and how a feed URL is shown.

- :class:`Budget`: the whole fetch's deadline (``[feed] deadline_seconds``, on the
  monotonic clock) and the caller's stop signal (SIGTERM in ``digest run``).
- :class:`CappedBody`: a response body decoded (``Content-Encoding`` gzip or
  deflate) chunk by chunk, never holding more than ``[feed] max_bytes`` of decoded
  bytes: a 0.4 MB gzip bomb that inflates to 400 MB is stopped after ``max_bytes``
  (zlib's ``max_length`` bounds each step, so no single chunk can blow up either).
- :func:`redact_url`: a URL without its user-info and secret-looking query values,
  for every message, log line and ``feed_state`` key.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameter names whose values are secrets (api_key, token, sig, X-Amz-Signature, …).
_SECRET_NAME = re.compile(r"token|key|secret|pass|pwd|sig|auth|session|credential|code", re.I)
REDACTED = "***"
_STEP = 1 << 20  # decoded bytes per zlib call


def redact_url(url: str) -> str:
    """``url`` with user-info and secret-looking query values replaced by ``***``.

    Never raises: a URL that cannot be parsed is cut to its scheme and host, or to "?".
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("://", 1)[0] + "://?" if "://" in url else "?"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, REDACTED if _SECRET_NAME.search(k) and v else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


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
