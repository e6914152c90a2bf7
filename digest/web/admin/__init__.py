"""The operator's desk under ``/admin``: editions, preview, pre-flight, test sends, approval.

Deny by default: every route of :data:`router` depends on :func:`operator`, which
refuses a request without the operator credential (a redirect to the login page
for a browser's page request, 401 otherwise) and, for any method but GET/HEAD, a
form without the session's CSRF token (403). Only ``/admin/login`` is outside it.
No credential in the environment: :func:`install` mounts nothing and says so.

Wrong credentials (login form, HTTP Basic, Bearer) count against one limit per
client address, :data:`LOGIN_ATTEMPTS_PER_MINUTE` failures a minute; past it every
credential attempt from that client gets 429 with ``Retry-After``, the right one
too, until the window passes (:class:`FailedAttempts`). Successes and requests
without a credential are not counted.

=======  ========================================  ====================================
GET      /admin/login, POST /admin/login            sign in (password form)
POST     /admin/logout                              sign out
GET      /admin, /admin/editions                    editions, ledger counts, selection
GET      /admin/editions/{key}/preview              preview page (key "next": uncomposed)
GET      /admin/editions/{key}/preview.html|.txt|.eml   the raw parts (sandboxed HTML)
POST     /admin/editions/{key}/test-send            a [TEST] copy to any addresses
POST     /admin/editions/{key}/check-links          pre-flight with every link fetched
POST     /admin/editions/{key}/approve|pause|resume what ``digest approve|pause|resume`` do
=======  ========================================  ====================================
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from digest.config.runtime import Runtime
from digest.web.admin.auth import Credentials, CsrfRefused, Guard, NotAuthenticated, TooManyAttempts
from digest.web.admin.deps import DESK_TAG, Desk, Forbidden, operator
from digest.web.ratelimit import FailedAttempts as FailedAttempts

log = logging.getLogger(__name__)
LOGIN_ATTEMPTS_PER_MINUTE = 10  # wrong credentials per client address, then 429


def install(app: FastAPI, rt: Runtime) -> bool:
    """Mount the desk when an operator credential is set; say at start-up either way."""
    credentials = Credentials.from_env(rt.config.env)
    if not credentials.enabled:
        log.warning(
            "operator desk (/admin) is off: set DIGEST_ADMIN_PASSWORD or DIGEST_ADMIN_TOKEN "
            "in the environment to turn it on"
        )
        return False
    from digest.web.admin import (
        routes_audit,
        routes_edit,
        routes_editions,
        routes_import,
        routes_login,
        routes_operators,
        routes_preview,
        routes_readers,
    )

    app.state.admin = Desk(Guard(rt, credentials), FailedAttempts(LOGIN_ATTEMPTS_PER_MINUTE))
    app.include_router(routes_login.public_router())
    # In /openapi.json (tag "operator desk") so the fuzz test reaches it; every
    # route still refuses a request without the credential.
    router = APIRouter(prefix="/admin", dependencies=[Depends(operator)], tags=[DESK_TAG])
    for module in (
        routes_login,
        routes_editions,
        routes_preview,
        routes_edit,
        routes_readers,
        routes_import,
        routes_operators,
        routes_audit,
    ):
        module.register(router)
    app.include_router(router)
    app.add_exception_handler(NotAuthenticated, _not_authenticated)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(TooManyAttempts, _too_many_attempts)
    app.add_exception_handler(Forbidden, _forbidden)
    ways = " and ".join(
        w for w, on in (("password", credentials.password), ("token", credentials.token)) if on
    )
    log.warning("operator desk on at /admin (sign-in by %s)", ways)
    return True


async def _not_authenticated(request: Request, exc: Exception) -> Response:
    wants_page = request.method in ("GET", "HEAD") and "text/html" in request.headers.get(
        "accept", ""
    )
    if wants_page and not request.headers.get("authorization"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return RedirectResponse(f"{root}/admin/login?next={quote(target)}", status_code=303)
    challenge = 'Basic realm="digest operator desk", charset="UTF-8"'
    return PlainTextResponse(
        "401 Unauthorized: the operator desk needs the operator credential.\n",
        status_code=401,
        headers={"WWW-Authenticate": challenge},
    )


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(
        "403 Forbidden: the form's CSRF token is missing or wrong; nothing was changed. "
        "Reload the page and try again.\n",
        status_code=403,
    )


async def _too_many_attempts(request: Request, exc: Exception) -> Response:
    wait = exc.retry_after if isinstance(exc, TooManyAttempts) else 60
    return PlainTextResponse(
        "429 Too Many Requests: too many wrong credentials from this address. "
        f"Wait {wait} seconds.\n",
        status_code=429,
        headers={"Retry-After": str(wait)},
    )


async def _forbidden(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(
        f"403 Forbidden: this needs the {exc} role on the operator desk; nothing was changed.\n",
        status_code=403,
    )
