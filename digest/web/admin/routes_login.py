"""Sign in and out of the operator desk (``/admin/login``, ``/admin/logout``).

The login form is the only desk route open without the credential. It is CSRF
protected by a signed pre-login cookie and answers a wrong password with the same
page and nothing more. Wrong passwords count against the client address's limit
(:data:`~digest.web.admin.LOGIN_ATTEMPTS_PER_MINUTE`, shared with HTTP Basic and
Bearer); past it every sign-in gets 429 until the window passes.

Signing in stores a session on the server (:meth:`Guard.open_session
<digest.web.admin.auth.Guard.open_session>`); signing out ends it there, so the
cookie is refused from then on even if a copy of it was kept.
"""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from digest.web.admin.deps import CSRF_FIELD, DESK_TAG, PAGE_HEADERS, Authenticated, desk_of, form
from digest.web.forms import openapi_body
from digest.web.ratelimit import client_ip
from digest.web.state import web_of

MAX_NAME = 80
_TEXT = {"type": "string"}


def public_router() -> APIRouter:
    public = APIRouter(prefix="/admin", tags=[DESK_TAG])
    public.add_api_route("/login", login_page, methods=["GET"], response_class=HTMLResponse)
    fields = {"name": _TEXT, "password": _TEXT, "next": _TEXT, **CSRF_FIELD}
    public.add_api_route(
        "/login",
        login,
        methods=["POST"],
        response_class=HTMLResponse,
        openapi_extra=openapi_body(fields),
    )
    return public


def register(router: APIRouter) -> None:
    router.add_api_route(
        "/logout", logout, methods=["POST"], openapi_extra=openapi_body(CSRF_FIELD)
    )
    router.add_api_route("", home, methods=["GET"])


def _next(raw: str) -> str:
    """Where to go after signing in: a desk path on this site, nothing else."""
    if raw.startswith("/admin") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/admin/editions"


def _page(
    request: Request,
    *,
    status: int = 200,
    error: str = "",
    name: str = "",
    next_url: str = "",
    retry_after: int | None = None,
) -> Response:
    guard = desk_of(request).guard
    sid, cookie = guard.login_sid(request)
    headers = dict(PAGE_HEADERS)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    response = web_of(request).pages.page(
        request,
        "admin/login",
        status=status,
        headers=headers,
        title="Operator sign-in",
        csrf=guard.csrf_token(sid),
        next=_next(next_url or request.query_params.get("next", "")),
        error=error,
        operator_name=name,
        password_enabled=bool(guard.credentials.password),
    )
    if cookie:
        guard.set_login_cookie(request, response, cookie)
    return response


async def login_page(request: Request) -> Response:
    return _page(request)


async def login(request: Request) -> Response:
    desk = desk_of(request)
    fields = await form(request)
    name = fields.first("name").strip()[:MAX_NAME]
    ip = client_ip(request)
    again = partial(_page, request, name=name, next_url=fields.first("next"))
    retry_after = desk.attempts.blocked(ip)
    if retry_after is None:
        if not desk.guard.login_csrf_ok(request, fields.first("csrf")):
            return again(status=403, error="The form expired. Please try again.")
        ok = desk.guard.check_password(fields.first("password"))
        retry_after = desk.attempts.attempt(ip, ok)
        if retry_after is None and not ok:
            return again(status=401, error="Wrong password.")
    if retry_after is not None:
        error = "Too many attempts. Wait a minute."
        return again(status=429, error=error, retry_after=retry_after)
    cookie = await run_in_threadpool(desk.guard.open_session, name)
    response = RedirectResponse(_next(fields.first("next")), status_code=303)
    desk.guard.set_session_cookie(request, response, cookie)
    return response


async def logout(request: Request, who: Authenticated) -> Response:
    """Sign out: the session ends on the server and the cookie is dropped."""
    guard = desk_of(request).guard
    await run_in_threadpool(guard.close_session, who.sid)
    response = RedirectResponse("/admin/login", status_code=303)
    guard.clear_session_cookie(response)
    return response


async def home(request: Request, who: Authenticated) -> Response:
    return RedirectResponse("/admin/editions", status_code=303)
