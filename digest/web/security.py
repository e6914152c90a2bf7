"""Security headers on every response, and no token in any log line.

The headers go on in a small ASGI middleware (not ``BaseHTTPMiddleware``, which
buffers bodies and complicates background tasks); a route may set its own
``Content-Security-Policy`` (the archive's web version does) and the middleware
then leaves it alone.

Tokens travel in URL paths (``/u/…``, ``/p/…``, ``/confirm/…``), so:

- ``Referrer-Policy: no-referrer`` keeps them out of other sites' logs;
- :class:`RedactTokens` rewrites uvicorn's access-log lines, and the app logs
  nothing else about a request's path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No scripts at all; inline styles only; forms post back here; never framed.
DEFAULT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The archive's web version is the email's HTML: still no scripts and no forms,
# but web fonts an instance's template may reference are allowed.
ARCHIVE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https:; "
    "font-src https: data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "content-security-policy": DEFAULT_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",  # tokens are in URLs
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",  # token pages must not sit in shared caches
}


class SecurityHeaders:
    """ASGI middleware: add :data:`SECURITY_HEADERS` unless the response set them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode("latin-1") not in present:
                        headers.append((name.encode("latin-1"), value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# A token segment; a click's message ref (/r/{token}/{ref}, /o/{key}/{ref}.gif) too.
_TOKEN_PATH = re.compile(r"/(u|p|confirm|v|r|o)/[^/?\s\"]+(/(?!ship\b|skip\b)[^/?\s\"]+)?")


def redact(path: str) -> str:
    """``/u/12.abc`` → ``/u/[token]``, ``/r/{token}/{ref}`` → ``/r/[token]/[ref]``:
    what a log line may say about a link (vote tokens name a reader)."""
    return _TOKEN_PATH.sub(lambda m: f"/{m[1]}/[token]" + ("/[ref]" if m[2] else ""), path)


class RedactTokens(logging.Filter):
    """Rewrite uvicorn access-log records (args: client, method, path, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install_log_redaction() -> None:
    """Attach :class:`RedactTokens` to uvicorn's access logger (idempotent)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())
