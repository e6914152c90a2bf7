"""CORS for the public sign-up only: ``POST /subscribe`` from ``[web] allowed_origins``.

A page on another origin (the comparison pages, say) may ``fetch()`` the JSON
sign-up. Starlette's ``CORSMiddleware`` would open every route; this one answers
for :data:`PATHS` alone and for the configured origins alone:

- a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
  from an allowed origin gets ``204`` with ``Access-Control-Allow-Origin`` (that
  origin, never ``*``), the path's one method, ``Content-Type`` as the only
  request header, and no ``Access-Control-Allow-Credentials`` (the sign-up needs
  no cookie);
- the request itself from an allowed origin gets ``Access-Control-Allow-Origin``;
- any other origin, path or method goes to the app untouched: no CORS header, so
  the browser keeps the answer from the calling page.

``GET /subscribe/challenge`` is open the same way, so a page can solve the
proof-of-work challenge (``[web] proof_of_work``) before it posts.

Installed by :func:`digest.web.api.install` inside the security headers, so a
preflight answer carries them too. The sign-up's own rules stay as they are: the
same answer for every address, the per-client limit, the honeypot (docs/API.md
has the ``fetch()`` snippet).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PATHS = {"/subscribe": "POST", "/subscribe/challenge": "GET"}
MAX_AGE = "600"  # seconds a browser may keep a preflight answer


class SignupCors:
    """ASGI middleware; ``origins`` as ``[web] allowed_origins`` normalized them."""

    def __init__(self, app: ASGIApp, origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = PATHS.get(_path(scope)) if scope["type"] == "http" else None
        if method is None:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin", "")
        allowed = origin in self.origins
        if allowed and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await _preflight(send, origin, method)
            return
        extra = [(b"vary", b"Origin")]
        if allowed and scope["method"] == method:
            extra.append((b"access-control-allow-origin", origin.encode("latin-1")))

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _preflight(send: Send, origin: str, method: str) -> None:
    headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", method.encode("latin-1")),
        (b"access-control-allow-headers", b"Content-Type"),
        (b"access-control-max-age", MAX_AGE.encode("latin-1")),
        (b"vary", b"Origin"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _path(scope: Scope) -> str:
    """The path inside the app (a proxy's ``root_path`` taken off)."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "")).rstrip("/")
    return path[len(root) :] if root and path.startswith(root + "/") else path
