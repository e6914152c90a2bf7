"""The public web side: sign-up, confirmation, unsubscribe, preferences, archive.

An entry point (like ``cli``): :func:`app_from_env` reads the config named by
``DIGEST_CONFIG``; :func:`create_app` takes a ready :class:`Runtime` (tests,
``digest serve``). The app never starts a scheduler: the weekly job lives in its
own process (``digest schedule`` / cron).

Run it with ``digest serve`` or ``uvicorn --factory digest.web.app:app_from_env``.

Routes (``/openapi.json`` documents them; no interactive docs, which would need
scripts from a CDN):

=======  =====================  ==============================================
GET      /subscribe             the sign-up form
POST     /subscribe             ask to subscribe (form or JSON); same answer for
                                every address; 400 bad address; 429 rate limit
GET      /subscribe/challenge   an ALTCHA challenge; only with [web] proof_of_work
GET      /static/altcha/{file}  the vendored ALTCHA widget; only with proof_of_work
GET      /confirm/{token}       a "Confirm subscription" button (changes nothing)
POST     /confirm/{token}       confirm; welcome email with the latest edition
GET      /u/{token}             an "Unsubscribe" button (changes nothing)
POST     /u/{token}             unsubscribe (RFC 8058 one-click, or the button)
GET      /p/{token}             preferences: categories, pause, time zone, unsubscribe link
POST     /p/{token}             save preferences
GET      /archive               sent editions, newest first
GET      /archive/{key}         the web version of a sent edition
GET      /archive.xml           Atom feed of sent editions
GET      /links                 "use the personal links in your email"
*        /admin/...             the operator desk (digest.web.admin); 404 while no
                                operator exists and no bootstrap credential is set
*        /api/v1/...            the API (digest.web.api), API keys; its own
                                /api/v1/openapi.json
=======  =====================  ==============================================

Errors: a bad token gets one generic 400 page; an unknown path 404; a database
failure a plain 503 page; anything else a plain 500 page, never a traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from digest import config as config_mod
from digest.common import redaction
from digest.config.runtime import Runtime
from digest.render.view import site_view
from digest.web import (
    admin,
    api,
    archive,
    healthz,
    proof_of_work,
    routes_links,
    routes_subscribe,
    routes_track,
    routes_votes,
    webhooks,
)
from digest.web.mailer import Mailer
from digest.web.pages import Pages, Problem
from digest.web.ratelimit import SlidingWindow
from digest.web.security import SECURITY_HEADERS, SecurityHeaders, install_log_redaction
from digest.web.state import Web, web_of

log = logging.getLogger(__name__)


def create_app(runtime: Runtime) -> FastAPI:
    """The ASGI app for ``runtime``. Touches neither the database nor the network."""
    site = runtime.config.site
    app = FastAPI(
        title=f"{site.name}: reader pages",
        summary="Sign-up with double opt-in, one-click unsubscribe, preferences, archive.",
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN; the CSP forbids it
        redoc_url=None,
    )
    app.state.web = Web(
        rt=runtime,
        pages=Pages(
            runtime.templates,
            site_view(name=site.name, base_url=site.base_url, postal_address=site.postal_address),
        ),
        limiter=SlidingWindow(runtime.config.web.signups_per_minute),
        mailer=Mailer(runtime),
    )
    app.include_router(routes_subscribe.router)
    proof_of_work.install(app, runtime)  # /subscribe/challenge, /static/altcha/: only when on
    app.include_router(routes_links.router)
    app.include_router(archive.router)
    app.include_router(healthz.router)
    routes_track.install(app, runtime)  # /r/{token}/{ref}, the open pixel, the click counter
    routes_votes.install(app, runtime)  # /v/{token}/{choice}, /votes.json
    webhooks.install(app, runtime)  # adapters built now (ConfigError); POST /webhooks/{provider}
    admin.install(app, runtime)  # /admin, the operator desk (404 until an operator exists)
    api.install(app, runtime)  # /api/v1 with API keys
    app.add_api_route("/", _home, include_in_schema=False)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _not_found)
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(Exception, _server_error)
    app.add_middleware(SecurityHeaders)
    if runtime.config.web.trusted_proxies:
        # Outermost: every route, rate limit and the consent log see the client
        # address and scheme as the trusted proxy reported them (uvicorn's rules:
        # the right-most X-Forwarded-For entry that is not a trusted proxy).
        app.add_middleware(
            ProxyHeadersMiddleware, trusted_hosts=list(runtime.config.web.trusted_proxies)
        )
    install_log_redaction()
    redaction.install()  # URLs, tokens and Bearer values out of every log line
    return app


def app_from_env() -> FastAPI:
    """The factory for ``uvicorn --factory``: config from ``DIGEST_CONFIG`` (or
    ``./config.toml``), secrets from ``DIGEST_*`` variables. Raises ConfigError."""
    return create_app(Runtime.open(config_mod.load()))


async def _home(request: Request) -> Response:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return RedirectResponse(f"{root}/subscribe", status_code=303)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    if status == 405:
        response = web_of(request).pages.problem(request, Problem.not_found)
        response.status_code = 405
        return response
    return web_of(request).pages.problem(
        request, Problem.not_found if status < 500 else Problem.server_error
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    return web_of(request).pages.problem(request, Problem.not_found)


async def _database_error(request: Request, exc: Exception) -> Response:
    log.error("database error: %s", type(exc).__name__)  # the SQL may hold an address
    return _plain(request, Problem.unavailable)


async def _server_error(request: Request, exc: Exception) -> Response:
    # The traceback goes to the server log (uvicorn logs it); the reader gets a page.
    return _plain(request, Problem.server_error)


def _plain(request: Request, problem: Problem) -> Response:
    """An error page that still works when the templates are what failed. This
    runs outside the middleware for 500s, so it sets the security headers itself."""
    text = problem.value
    try:
        body = web_of(request).pages.html(request, "error", title=text.title, message=text.message)
        media_type = "text/html; charset=utf-8"
    except Exception:  # the templates themselves are broken: plain text then
        body, media_type = f"{text.title}. {text.message}\n", "text/plain; charset=utf-8"
    response = Response(body, status_code=text.status, media_type=media_type)
    response.headers.update(SECURITY_HEADERS)
    return response
