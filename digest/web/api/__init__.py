"""``/api/v1``: the HTTP API, a FastAPI sub-application with API keys (docs/API.md).

Mounted by :func:`install` at ``/api/v1``; its schema is ``/api/v1/openapi.json``
(not part of the reader pages' ``/openapi.json``). ``/api/v1/docs`` is a plain page
linking to the schema and the endpoints: Swagger UI and ReDoc load scripts from a
CDN, which the app's Content-Security-Policy (:mod:`digest.web.security`, applied
to the sub-application too) rightly forbids.

Every answer is JSON; every error is ``{"error": "…"}``: 401 with
``WWW-Authenticate: Bearer``, 403 naming the scope, 404, 409 (also for a suppressed
address), 400/422 for a body or an address that cannot be used, 429 with
``Retry-After``, 503 when the database is down, 500 otherwise, never a traceback.
Authentication: :mod:`digest.web.api.auth`.

:func:`install` also puts :class:`~digest.web.api.cors.SignupCors` on the main app
when ``[web] allowed_origins`` is set (CORS for ``POST /subscribe`` only).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from digest.config.runtime import Runtime
from digest.desk.api_keys import SCOPES
from digest.web.api import editions, readers
from digest.web.api.auth import FAILED_KEYS_PER_MINUTE, ApiError
from digest.web.api.cors import SignupCors
from digest.web.ratelimit import FailedAttempts
from subscribers.errors import SubscriberInputError
from subscribers.repository import AddressSuppressed

log = logging.getLogger(__name__)
PREFIX = "/api/v1"


def install(app: FastAPI, rt: Runtime) -> FastAPI:
    """Mount ``/api/v1`` on ``app`` (sharing its :class:`~digest.web.state.Web`)."""
    api = FastAPI(
        title=f"{rt.config.site.name}: API",
        version="1",
        summary="Readers, editions and status for scripts, with API keys (Bearer).",
        docs_url=None,  # a CDN script: the CSP forbids it; /docs is a plain page instead
        redoc_url=None,
    )
    api.state.web = app.state.web
    api.state.api_attempts = FailedAttempts(FAILED_KEYS_PER_MINUTE)
    api.include_router(readers.router)
    api.include_router(editions.router)
    api.add_api_route("/docs", _docs, include_in_schema=False)
    api.add_exception_handler(ApiError, _api_error)
    api.add_exception_handler(AddressSuppressed, _suppressed)
    api.add_exception_handler(SubscriberInputError, _bad_input)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(RequestValidationError, _invalid)
    api.add_exception_handler(SQLAlchemyError, _database_error)
    api.add_exception_handler(Exception, _server_error)
    app.mount(PREFIX, api)
    origins = rt.config.web.allowed_origins
    if origins:
        app.add_middleware(SignupCors, origins=origins)
    return api


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.message, exc.headers)


async def _suppressed(request: Request, exc: Exception) -> Response:
    return _error(409, str(exc))


async def _bad_input(request: Request, exc: Exception) -> Response:
    return _error(400, f"this cannot be used: {exc}")


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    words = {404: "no such endpoint: see /api/v1/openapi.json", 405: "method not allowed"}
    return _error(status, words.get(status, "the request cannot be answered"))


async def _invalid(request: Request, exc: Exception) -> Response:
    problems = exc.errors() if isinstance(exc, RequestValidationError) else []
    first = problems[0] if problems else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = str(first.get("msg", "the request is not valid"))
    return _error(422, f"{where}: {message}" if where else message)


async def _database_error(request: Request, exc: Exception) -> Response:
    log.error("api: database error: %s", type(exc).__name__)  # the SQL may hold an address
    return _error(503, "the database is not answering; try again later")


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("api: unexpected %s", type(exc).__name__)  # uvicorn logs the traceback
    return _error(500, "server error")


async def _docs(request: Request) -> Response:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    scopes = "".join(f"<li><code>{s}</code></li>" for s in SCOPES)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>API v1</title></head>'
        "<body><h1>API v1</h1><p>Authenticate with <code>Authorization: Bearer &lt;key&gt;"
        "</code>; an operator creates keys with <code>digest api-keys create NAME --scope "
        '…</code>.</p><p>The schema: <a href="' + root + '/openapi.json">openapi.json</a> '
        "(OpenAPI 3; load it into any OpenAPI viewer). The guide: docs/API.md.</p>"
        f"<h2>Scopes</h2><ul>{scopes}</ul></body></html>"
    )
    return HTMLResponse(body)
