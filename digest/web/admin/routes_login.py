"""Sign in and out of the operator desk (``/admin/login``, ``/admin/logout``).

The login form is the only desk route open without the credential. It is CSRF
protected by a signed pre-login cookie, rate limited per client address
(:data:`~digest.web.admin.LOGIN_ATTEMPTS_PER_MINUTE`), and answers a wrong
password with the same page and nothing more.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from digest.web.admin import PAGE_HEADERS, Authenticated, desk_of, form
from digest.web.ratelimit import client_ip
from digest.web.state import web_of

MAX_NAME = 80


def public_router() -> APIRouter:
    public = APIRouter(prefix="/admin", include_in_schema=False)
    public.add_api_route("/login", login_page, methods=["GET"], response_class=HTMLResponse)
    public.add_api_route("/login", login, methods=["POST"], response_class=HTMLResponse)
    return public


def register(router: APIRouter) -> None:
    router.add_api_route("/logout", logout, methods=["POST"])
    router.add_api_route("", home, methods=["GET"])


def _next(raw: str) -> str:
    """Where to go after signing in: a desk path on this site, nothing else."""
    if raw.startswith("/admin") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/admin/editions"


def _page(
    request: Request, *, status: int = 200, error: str = "", name: str = "", next_url: str = ""
) -> Response:
    guard = desk_of(request).guard
    sid, cookie = guard.login_sid(request)
    response = web_of(request).pages.page(
        request,
        "admin/login",
        status=status,
        headers=PAGE_HEADERS,
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
    if desk.login_limiter.hit(ip) is not None:
        return _page(
            request,
            status=429,
            error="Too many attempts. Wait a minute.",
            name=name,
            next_url=fields.first("next"),
        )
    if not desk.guard.login_csrf_ok(request, fields.first("csrf")):
        return _page(
            request,
            status=403,
            error="The form expired. Please try again.",
            name=name,
            next_url=fields.first("next"),
        )
    if not desk.guard.check_password(fields.first("password")):
        return _page(
            request, status=401, error="Wrong password.", name=name, next_url=fields.first("next")
        )
    target = _next(fields.first("next"))
    response = RedirectResponse(target, status_code=303)
    desk.guard.start_session(request, response, name=name)
    return response


async def logout(request: Request, who: Authenticated) -> Response:
    response = RedirectResponse("/admin/login", status_code=303)
    desk_of(request).guard.end_session(response)
    return response


async def home(request: Request, who: Authenticated) -> Response:
    return RedirectResponse("/admin/editions", status_code=303)
