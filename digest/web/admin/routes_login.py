"""Sign in and out of the operator desk (``/admin/login``, ``/admin/login/code``,
``/admin/logout``).

Once an operator exists (``digest operators add``), signing in takes two steps:
email and password on ``/admin/login``, which leaves a signed cookie good for
:data:`~digest.web.admin.auth.STEP_SECONDS` naming the operator; then a TOTP code on
``/admin/login/code`` (at the first sign-in: enrol the authenticator from the QR
code shown there, confirmed by one code). Only then is a session opened. Before
the first operator, the form asks for the shared ``DIGEST_ADMIN_PASSWORD`` alone.

Both forms are CSRF protected (by the pre-login cookie, then by the step cookie)
and answer a wrong password or code with the same page and nothing more. Wrong
passwords and codes count against the client address's limit
(:data:`~digest.web.admin.LOGIN_ATTEMPTS_PER_MINUTE`, shared with HTTP Basic and
Bearer); past it every sign-in gets 429 until the window passes. Signing out ends
the session on the server, so a kept copy of the cookie is refused too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from digest.config.runtime import Runtime
from digest.desk import operators
from digest.store.db import session_scope
from digest.web.admin.auth import STEP_COOKIE, STEP_SECONDS, NotAuthenticated
from digest.web.admin.deps import CSRF_FIELD, DESK_TAG, PAGE_HEADERS, Authenticated, desk_of, form
from digest.web.forms import openapi_body
from digest.web.ratelimit import client_ip
from digest.web.state import web_of

MAX_NAME = 80
_TEXT = {"type": "string"}
WRONG_CODE = "Wrong code, or a code already used: enter the code your app shows now."


def public_router(*dependencies: Any) -> APIRouter:
    public = APIRouter(prefix="/admin", tags=[DESK_TAG], dependencies=list(dependencies))
    fields = {"name": _TEXT, "email": _TEXT, "password": _TEXT, "next": _TEXT, **CSRF_FIELD}
    for path, page, post, body in (
        ("/login", login_page, login, fields),
        ("/login/code", code_page, code, {"code": _TEXT, **CSRF_FIELD}),
    ):
        public.add_api_route(path, page, methods=["GET"], response_class=HTMLResponse)
        public.add_api_route(
            path,
            post,
            methods=["POST"],
            response_class=HTMLResponse,
            openapi_extra=openapi_body(body),
        )
    return public


def register(router: APIRouter) -> None:
    router.add_api_route(
        "/logout", logout, methods=["POST"], openapi_extra=openapi_body(CSRF_FIELD)
    )
    router.add_api_route("", home, methods=["GET"])


def _next(raw: str) -> str:
    """Where to go after signing in: a desk path on this site (not a sign-in page)."""
    if raw.startswith("/admin") and not raw.startswith(("//", "/admin/login")) and "\\" not in raw:
        return raw
    return "/admin/editions"


def _headers(retry_after: int | None) -> dict[str, str]:
    extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return {**PAGE_HEADERS, **extra}


def _page(
    request: Request,
    *,
    status: int = 200,
    error: str = "",
    name: str = "",
    email: str = "",
    next_url: str = "",
    retry_after: int | None = None,
) -> Response:
    guard = desk_of(request).guard
    sid, cookie = guard.login_sid(request)
    mode = "operator" if guard.operators_exist else "password" if guard.password_works else "token"
    response = web_of(request).pages.page(
        request,
        "admin/login",
        status=status,
        headers=_headers(retry_after),
        title="Operator sign-in",
        csrf=guard.csrf_token(sid),
        next=_next(next_url or request.query_params.get("next", "")),
        error=error,
        operator_name=name,
        email=email,
        mode=mode,
        shared_password_set=bool(guard.credentials.password),
        password_enabled=mode == "password",
    )
    if cookie:
        guard.set_login_cookie(request, response, cookie)
    return response


async def login_page(request: Request) -> Response:
    return _page(request)


def _check_operator(rt: Runtime, email: str, password: str) -> tuple[int, str] | None:
    with session_scope(rt.engine) as session:
        op = operators.verify_password(session, email, password)
        return None if op is None or op.id is None else (op.id, operators.fingerprint(op))


async def login(request: Request) -> Response:
    desk = desk_of(request)
    guard = desk.guard
    fields = await form(request)
    name = fields.first("name").strip()[:MAX_NAME]
    email, password = fields.first("email").strip()[:320], fields.first("password")
    ip = client_ip(request)
    again = partial(_page, request, name=name, email=email, next_url=fields.first("next"))
    found: tuple[int, str] | None = None
    retry_after = desk.attempts.blocked(ip)
    if retry_after is None:
        if not guard.login_csrf_ok(request, fields.first("csrf")):
            return again(status=403, error="The form expired. Please try again.")
        if guard.operators_exist:
            found = await run_in_threadpool(_check_operator, web_of(request).rt, email, password)
            ok = found is not None
        else:
            ok = guard.check_password(password)
        retry_after = desk.attempts.attempt(ip, ok)
        if retry_after is None and not ok:
            wrong = "Wrong email or password." if guard.operators_exist else "Wrong password."
            return again(status=401, error=wrong)
    if retry_after is not None:
        return again(status=429, error="Too many attempts. Wait a minute.", retry_after=retry_after)
    if found is not None:  # half signed in: the code comes next
        state = {"sid": secrets.token_urlsafe(24), "op": found[0], "fp": found[1]}
        state["next"] = _next(fields.first("next"))
        response = RedirectResponse("/admin/login/code", status_code=303)
        guard.set_cookie(request, response, STEP_COOKIE, guard.issue("step", state), STEP_SECONDS)
        return response
    cookie = await run_in_threadpool(guard.open_session, name)
    response = RedirectResponse(_next(fields.first("next")), status_code=303)
    guard.set_session_cookie(request, response, cookie)
    return response


@dataclass(frozen=True, slots=True)
class Step:
    """A half-finished sign-in: the password was right, the code is still to come."""

    sid: str
    operator_id: int
    email: str
    role: str
    secret: str  # only while enrolling (no confirmed TOTP yet), else ""
    next: str


def _prepare(rt: Runtime, state: dict[str, Any]) -> Step | None:
    with session_scope(rt.engine) as session:
        op = operators.by_id(session, int(state.get("op", 0)))
        if op is None or op.disabled_at is not None or operators.fingerprint(op) != state["fp"]:
            return None  # disabled or password reset since the password step
        secret = operators.pending_secret(session, op) if op.totp_confirmed_at is None else ""
        return Step(str(state["sid"]), int(state["op"]), op.email, op.role, secret, state["next"])


async def _step(request: Request) -> Step:
    guard = desk_of(request).guard
    state = guard.load(request, STEP_COOKIE, "step", STEP_SECONDS)
    step = None if state is None else await run_in_threadpool(_prepare, web_of(request).rt, state)
    if step is None:
        raise NotAuthenticated
    return step


def _code_page(
    request: Request, step: Step, *, status: int = 200, error: str = "", retry: int | None = None
) -> Response:
    w = web_of(request)
    extra: dict[str, Any] = {"qr": "", "secret": ""}
    if step.secret:
        uri = operators.provisioning_uri(step.secret, step.email, w.rt.config.site.name)
        spaced = " ".join(step.secret[i : i + 4] for i in range(0, len(step.secret), 4))
        extra = {"qr": operators.qr_data_uri(uri), "secret": spaced}
    title = "Set up your authenticator" if step.secret else "Enter your code"
    csrf = desk_of(request).guard.csrf_token(step.sid)
    return w.pages.page(
        request, "admin/totp", status=status, headers=_headers(retry), title=title,
        csrf=csrf, error=error, email=step.email, enrol=bool(step.secret), **extra,
    )  # fmt: skip


async def code_page(request: Request) -> Response:
    return _code_page(request, await _step(request))


def _accept(rt: Runtime, operator_id: int, given: str) -> bool:
    with session_scope(rt.engine) as session:
        op = operators.by_id(session, operator_id)
        return op is not None and operators.accept_code(session, op, given, now=rt.now())


async def code(request: Request) -> Response:
    desk = desk_of(request)
    fields = await form(request)
    step = await _step(request)
    ip = client_ip(request)
    retry_after = desk.attempts.blocked(ip)
    if retry_after is None:
        if not desk.guard.check_csrf(step.sid, fields.first("csrf")):
            return _code_page(request, step, status=403, error="The form expired. Try again.")
        rt = web_of(request).rt
        ok = await run_in_threadpool(_accept, rt, step.operator_id, fields.first("code"))
        retry_after = desk.attempts.attempt(ip, ok)
        if retry_after is None and not ok:
            return _code_page(request, step, status=401, error=WRONG_CODE)
    if retry_after is not None:
        error = "Too many attempts. Wait a minute."
        return _code_page(request, step, status=429, error=error, retry=retry_after)
    guard = desk.guard
    cookie = await run_in_threadpool(guard.open_session, step.email, step.operator_id, step.role)
    response = RedirectResponse(step.next, status_code=303)
    guard.set_session_cookie(request, response, cookie)
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
