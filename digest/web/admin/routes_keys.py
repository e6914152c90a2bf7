"""API keys on the desk (admin role): list, create, revoke; what ``digest api-keys``
does (:mod:`digest.desk.api_keys` does the work and the audit log).

=======  ==========================================  =====================================
GET      /admin/api-keys                              every key (never the key itself)
POST     /admin/api-keys                              create (``name``, ``scope`` repeated):
                                                      the answer page shows the key once
POST     /admin/api-keys/{key_id}/revoke              refused by the API from the next request
=======  ==========================================  =====================================

The new key is on the answer to the POST only (a 200 page with ``Cache-Control:
no-store``, never a redirect, so no URL or history entry holds it); only its hash is
stored. A refused creation (blank or taken name, no scope) shows the page again
with the reason and status 400; nothing is created.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from digest.config.runtime import Runtime
from digest.desk import api_keys
from digest.store.db import session_scope
from digest.web.admin.auth import Operator
from digest.web.admin.deps import CSRF_FIELD, PAGE_HEADERS, Admin, RowId, desk_of, form, utc_minute
from digest.web.forms import openapi_body
from digest.web.state import web_of

_NAME = {"type": "string", "maxLength": api_keys.NAME_LIMIT}
_SCOPE = {"type": "array", "items": {"type": "string", "enum": list(api_keys.SCOPES)}}
NO_STORE = {**PAGE_HEADERS, "Cache-Control": "no-store"}
DONE = {"revoked": "Key revoked: the API refuses it from the next request."}


def register(router: APIRouter) -> None:
    router.add_api_route("/api-keys", keys_page, methods=["GET"])
    body = openapi_body({"name": _NAME, "scope": _SCOPE, **CSRF_FIELD})
    router.add_api_route("/api-keys", create, methods=["POST"], openapi_extra=body)
    router.add_api_route(
        "/api-keys/{key_id}/revoke",
        revoke,
        methods=["POST"],
        openapi_extra=openapi_body(CSRF_FIELD),
    )


def _listing(rt: Runtime) -> list[dict[str, Any]]:
    with session_scope(rt.engine) as session:
        return [
            {
                "id": k.id,
                "name": k.name,
                "prefix": k.prefix,
                "scopes": ", ".join(api_keys.scopes_of(k)),
                "created": utc_minute(k.created_at),
                "created_by": k.created_by,
                "last_used": utc_minute(k.last_used_at),
                "revoked": utc_minute(k.revoked_at),
            }
            for k in api_keys.all_keys(session)
        ]


async def _render(
    request: Request,
    who: Operator,
    *,
    problem: str = "",
    status: int = 200,
    name: str = "",
    chosen: tuple[str, ...] = (),
    created: dict[str, str] | None = None,
) -> Response:
    w = web_of(request)
    rows = await run_in_threadpool(_listing, w.rt)
    return w.pages.page(
        request,
        "admin/api_keys",
        status=status,
        headers=NO_STORE,
        title="API keys",
        rows=rows,
        scopes=api_keys.SCOPES,
        name_limit=api_keys.NAME_LIMIT,
        notice=DONE.get(request.query_params.get("done", ""), ""),
        problem=problem,
        key_name=name,
        chosen=chosen,
        created=created,
        csrf=desk_of(request).guard.csrf_token(who.sid),
        who=who,
    )


async def keys_page(request: Request, who: Admin) -> Response:
    return await _render(request, who)


def _create(rt: Runtime, who: Operator, name: str, scopes: list[str]) -> dict[str, str]:
    with session_scope(rt.engine) as session:
        made = api_keys.create(
            session, name=name, scopes=scopes, created_by=who.actor, now=rt.now(), via="desk"
        )
        return {
            "name": made.row.name,
            "prefix": made.row.prefix,
            "scopes": ", ".join(api_keys.scopes_of(made.row)),
            "key": made.key,
        }


async def create(request: Request, who: Admin) -> Response:
    fields = await form(request)
    name = fields.first("name")[: api_keys.NAME_LIMIT * 2]
    scopes = fields.all("scope")
    chosen = tuple(s for s in api_keys.SCOPES if s in scopes)
    problem = ""
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "a key name cannot hold control characters"
    else:
        try:
            made = await run_in_threadpool(_create, web_of(request).rt, who, name, scopes)
        except api_keys.ApiKeyError as exc:
            problem = str(exc)
    if problem:
        return await _render(
            request, who, problem=f"Not created: {problem}.", status=400, name=name, chosen=chosen
        )
    return await _render(request, who, created=made)


def _revoke(rt: Runtime, who: Operator, key_id: int) -> bool:
    with session_scope(rt.engine) as session:
        row = api_keys.revoke_id(session, key_id=key_id, by=who.actor, now=rt.now(), via="desk")
        return row is not None


async def revoke(request: Request, key_id: RowId, who: Admin) -> Response:
    try:
        found = await run_in_threadpool(_revoke, web_of(request).rt, who, key_id)
    except api_keys.ApiKeyError as exc:
        return await _render(request, who, problem=f"Not revoked: {exc}.", status=400)
    if not found:
        return await _render(request, who, problem="There is no such key.", status=404)
    return RedirectResponse("/admin/api-keys?done=revoked", status_code=303)
