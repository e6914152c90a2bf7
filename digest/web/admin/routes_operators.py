"""Operators on the desk (admin role): list, add, change role, disable, enable, reset
the authenticator (:mod:`digest.desk.operators` does the work and the audit log).

=======  ===============================================  ================================
GET      /admin/operators                                  every operator, the add form
POST     /admin/operators                                  add (email, role, first password)
POST     /admin/operators/{operator_id}/role               change the role (field ``role``)
POST     /admin/operators/{operator_id}/disable|enable     sessions end at once on disable
POST     /admin/operators/{operator_id}/reset-totp         they enrol again at next sign-in
=======  ===============================================  ================================

A refused change (a bad address, a short password, the last enabled admin) shows
the page again with the reason and status 400; nothing is changed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from fastapi import APIRouter
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from digest.config.runtime import Runtime
from digest.desk import operators
from digest.store.db import session_scope
from digest.web.admin.auth import Operator
from digest.web.admin.deps import CSRF_FIELD, PAGE_HEADERS, Admin, RowId, desk_of, form, utc_minute
from digest.web.forms import openapi_body
from digest.web.state import web_of

_TEXT = {"type": "string"}
_ROLE = {"type": "string", "enum": list(operators.ROLES)}
DONE = {
    "added": "Operator added. They set up their authenticator at their first sign-in.",
    "role": "Role changed; it applies from their next request.",
    "disable": "Operator disabled; their sessions have ended.",
    "enable": "Operator enabled.",
    "reset-totp": "Authenticator reset: they set up a new one at their next sign-in.",
}
Change = Callable[[Session, Any], None]


def register(router: APIRouter) -> None:
    router.add_api_route("/operators", operators_page, methods=["GET"])
    body = openapi_body({"email": _TEXT, "role": _ROLE, "password": _TEXT, **CSRF_FIELD})
    router.add_api_route("/operators", add, methods=["POST"], openapi_extra=body)
    router.add_api_route(
        "/operators/{operator_id}/role",
        change_role,
        methods=["POST"],
        openapi_extra=openapi_body({"role": _ROLE, **CSRF_FIELD}),
    )
    for action in ("disable", "enable", "reset-totp"):
        router.add_api_route(
            f"/operators/{{operator_id}}/{action}",
            _ACTIONS[action],
            methods=["POST"],
            openapi_extra=openapi_body(CSRF_FIELD),
        )


def _listing(rt: Runtime) -> list[dict[str, Any]]:
    with session_scope(rt.engine) as session:
        return [
            {
                "id": op.id,
                "email": op.email,
                "role": op.role,
                "totp": op.totp_confirmed_at is not None,
                "last_sign_in": utc_minute(op.last_sign_in_at),
                "disabled": utc_minute(op.disabled_at),
            }
            for op in operators.all_operators(session)
        ]


async def _render(
    request: Request, who: Operator, *, problem: str = "", status: int = 200, email: str = ""
) -> Response:
    w = web_of(request)
    rows = await run_in_threadpool(_listing, w.rt)
    done = DONE.get(request.query_params.get("done", ""), "")
    return w.pages.page(
        request,
        "admin/operators",
        status=status,
        headers=PAGE_HEADERS,
        title="Operators",
        rows=rows,
        roles=operators.ROLES,
        min_password=operators.MIN_PASSWORD,
        notice=done,
        problem=problem,
        email=email,
        csrf=desk_of(request).guard.csrf_token(who.sid),
        who=who,
    )


async def operators_page(request: Request, who: Admin) -> Response:
    return await _render(request, who)


def _add(rt: Runtime, who: Operator, email: str, role: str, password: str) -> None:
    with session_scope(rt.engine) as session:
        operators.add(
            session, email=email, role=role, password=password,
            actor=who.actor, via="desk", now=rt.now(),
        )  # fmt: skip


async def add(request: Request, who: Admin) -> Response:
    fields = await form(request)
    email = fields.first("email").strip()[:320]
    rt = web_of(request).rt
    try:
        await run_in_threadpool(
            _add, rt, who, email, fields.first("role"), fields.first("password")
        )
    except operators.OperatorError as exc:
        return await _render(request, who, problem=str(exc), status=400, email=email)
    return RedirectResponse("/admin/operators?done=added", status_code=303)


def _change(rt: Runtime, operator_id: int, change: Change) -> bool:
    with session_scope(rt.engine) as session:
        op = operators.by_id(session, operator_id)
        if op is None:
            return False
        change(session, op)
        return True


async def _act(request: Request, who: Operator, operator_id: int, action: str) -> Response:
    rt = web_of(request).rt
    fields = await form(request)
    how: dict[str, Any] = {"actor": who.actor, "via": "desk", "now": rt.now()}
    changes: dict[str, Change] = {
        "role": lambda s, op: operators.set_role(s, op, fields.first("role"), **how),
        "disable": partial(operators.disable, **how),
        "enable": partial(operators.enable, **how),
        "reset-totp": partial(operators.reset_totp, **how),
    }
    try:
        found = await run_in_threadpool(_change, rt, operator_id, changes[action])
    except operators.OperatorError as exc:
        return await _render(request, who, problem=str(exc), status=400)
    if not found:
        return await _render(request, who, problem="There is no such operator.", status=404)
    return RedirectResponse(f"/admin/operators?done={action}", status_code=303)


async def change_role(request: Request, operator_id: RowId, who: Admin) -> Response:
    return await _act(request, who, operator_id, "role")


async def disable(request: Request, operator_id: RowId, who: Admin) -> Response:
    return await _act(request, who, operator_id, "disable")


async def enable(request: Request, operator_id: RowId, who: Admin) -> Response:
    return await _act(request, who, operator_id, "enable")


async def reset_totp(request: Request, operator_id: RowId, who: Admin) -> Response:
    return await _act(request, who, operator_id, "reset-totp")


_ACTIONS = {"disable": disable, "enable": enable, "reset-totp": reset_totp}
