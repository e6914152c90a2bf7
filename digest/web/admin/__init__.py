"""The operator's desk under ``/admin``: editions, preview, pre-flight, test sends, approval.

Deny by default: every route of :data:`router` depends on :func:`operator`, which
refuses a request without the operator credential (a redirect to the login page
for a browser's page request, 401 otherwise) and, for any method but GET/HEAD, a
form without the session's CSRF token (403). Only the sign-in pages are outside it.
The desk answers only when a shared credential is set in the environment or an
operator exists in the database (:meth:`Guard.refresh
<digest.web.admin.auth.Guard.refresh>`, checked per request until the first
operator appears, so ``create_app`` never touches the database); otherwise every
``/admin`` path is a 404. Roles: :mod:`digest.web.admin.deps`.

Wrong credentials (login form, HTTP Basic, Bearer) count against one limit per
client address, :data:`LOGIN_ATTEMPTS_PER_MINUTE` failures a minute; past it every
credential attempt from that client gets 429 with ``Retry-After``, the right one
too, until the window passes (:class:`FailedAttempts`). Successes and requests
without a credential are not counted.

=======  ========================================  ====================================
GET      /admin/login, POST /admin/login            sign in (email + password, or the
                                                    shared password before any operator)
GET      /admin/login/code, POST /admin/login/code  the TOTP step (enrolment the first time)
POST     /admin/logout                              sign out
GET      /admin, /admin/editions                    editions, ledger counts, selection
GET      /admin/editions/{key}/preview              preview page (key "next": uncomposed)
GET      /admin/editions/{key}/preview.html|.txt|.eml   the raw parts (sandboxed HTML)
POST     /admin/editions/{key}/test-send            a [TEST] copy to any addresses
POST     /admin/editions/{key}/check-links          pre-flight with every link fetched
POST     /admin/editions/{key}/approve|pause|resume what ``digest approve|pause|resume`` do
GET      /admin/operators, POST /admin/operators    operators (admin): list, add
POST     /admin/operators/{key}/role|disable|enable|reset-totp   change one (admin)
GET      /admin/api-keys, POST /admin/api-keys      API keys (admin): list, create (shown once)
POST     /admin/api-keys/{key_id}/revoke            revoke one (admin)
GET      /admin/settings                            the effective configuration, read-only (admin)
GET      /admin/audit, /admin/audit.csv             the audit log (any operator)
GET      /admin/stats[/{key}][.csv]                 statistics: clicks, votes, trends (any operator)
=======  ========================================  ====================================
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from digest.config.runtime import Runtime
from digest.web.admin.auth import Credentials, CsrfRefused, Guard, NotAuthenticated, TooManyAttempts
from digest.web.admin.deps import DESK_TAG, Desk, Forbidden, desk_of, operator
from digest.web.ratelimit import FailedAttempts as FailedAttempts

log = logging.getLogger(__name__)
LOGIN_ATTEMPTS_PER_MINUTE = 10  # wrong credentials per client address, then 429


def install(app: FastAPI, rt: Runtime) -> bool:
    """Mount the desk; it answers when a shared credential is set or an operator
    exists (else 404, see :func:`desk_on`). Says at start-up which."""
    credentials = Credentials.from_env(rt.config.env)
    from digest.web.admin import (
        routes_audit,
        routes_edit,
        routes_editions,
        routes_import,
        routes_keys,
        routes_login,
        routes_operators,
        routes_preview,
        routes_readers,
        routes_settings,
        routes_stats,
    )

    app.state.admin = Desk(Guard(rt, credentials), FailedAttempts(LOGIN_ATTEMPTS_PER_MINUTE))
    app.include_router(routes_login.public_router(Depends(desk_on)))
    # In /openapi.json (tag "operator desk") so the fuzz test reaches it; every
    # route still refuses a request without the credential.
    guards = [Depends(desk_on), Depends(operator)]  # in this order
    router = APIRouter(prefix="/admin", dependencies=guards, tags=[DESK_TAG])
    for module in (
        routes_login,
        routes_editions,
        routes_preview,
        routes_edit,
        routes_readers,
        routes_import,
        routes_operators,
        routes_keys,
        routes_settings,
        routes_audit,
        routes_stats,
    ):
        module.register(router)
    app.include_router(router)
    app.add_exception_handler(NotAuthenticated, _not_authenticated)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(TooManyAttempts, _too_many_attempts)
    app.add_exception_handler(Forbidden, _forbidden)
    if not credentials.enabled:
        log.warning(
            "operator desk at /admin: operators sign in with email, password and code; "
            "while no operator exists it answers 404 (add one with 'digest operators add "
            "EMAIL --role admin', or set DIGEST_ADMIN_PASSWORD for a bootstrap sign-in)"
        )
        return True
    ways = " and ".join(
        w for w, on in (("password", credentials.password), ("token", credentials.token)) if on
    )
    log.warning(
        "operator desk on at /admin (sign-in by operators' email, password and code; by the "
        "shared %s until the first operator exists%s)",
        ways,
        ", the token after that too" if credentials.token else "",
    )
    return True


def desk_on(request: Request) -> None:
    """Every desk route's first dependency (a worker thread: it may read the
    database): 404 while no credential is set and no operator exists."""
    if not desk_of(request).guard.refresh():
        raise HTTPException(404)


async def _not_authenticated(request: Request, exc: Exception) -> Response:
    wants_page = request.method in ("GET", "HEAD") and "text/html" in request.headers.get(
        "accept", ""
    )
    if wants_page and not request.headers.get("authorization"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return RedirectResponse(f"{root}/admin/login?next={quote(target)}", status_code=303)
    challenge = 'Basic realm="digest operator desk", charset="UTF-8"'
    how = (
        " Operators sign in at /admin/login with email, password and code; the shared "
        "password no longer works."
        if desk_of(request).guard.operators_exist
        else ""
    )
    return PlainTextResponse(
        f"401 Unauthorized: the operator desk needs the operator credential.{how}\n",
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
