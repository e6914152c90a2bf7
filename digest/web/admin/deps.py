"""What every operator-desk route depends on (:mod:`digest.web.admin`): the router-wide
:func:`operator` guard (credential, then CSRF for state changes), the posted form read
once per request, the desk's per-app state, and the headers and OpenAPI bits its
pages share. The route modules import these from here, never from the package.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from digest.web.admin.auth import (
    SAFE_METHODS,
    CsrfRefused,
    Guard,
    NotAuthenticated,
    Operator,
    TooManyAttempts,
)
from digest.web.forms import BadBody, Fields, read_fields
from digest.web.ratelimit import FailedAttempts, client_ip

DESK_TAG = "operator desk"
CSRF_FIELD = {"csrf": {"type": "string", "description": "the form's CSRF token (not with Bearer)"}}
# The desk's pages: no scripts; the previews are framed from this origin only.
ADMIN_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data: https:; "
    "frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {"Content-Security-Policy": ADMIN_CSP}


@dataclass
class Desk:
    guard: Guard
    attempts: FailedAttempts  # wrong credentials, every way of presenting one


def desk_of(request: Request) -> Desk:
    desk = request.app.state.admin
    assert isinstance(desk, Desk)
    return desk


async def operator(request: Request) -> Operator:
    """The router-wide guard: authenticated, and CSRF-checked for state changes.
    Raises NotAuthenticated / CsrfRefused / TooManyAttempts (answered by the handlers
    :func:`digest.web.admin.install` adds).

    A Basic or Bearer credential is checked in memory and counted when wrong; with
    none, the session cookie is looked up in the database (in a worker thread)."""
    desk = desk_of(request)
    guard = desk.guard
    given = guard.presented(request)
    if given is None:
        found = await run_in_threadpool(guard.session_of, request)
    else:
        found = guard.check(*given)
        retry_after = desk.attempts.attempt(client_ip(request), found is not None)
        if retry_after is not None:
            raise TooManyAttempts(retry_after)
    if found is None:
        raise NotAuthenticated
    if request.method not in SAFE_METHODS and found.via != "token":
        fields = await form(request)
        unreadable = getattr(request.state, "admin_body_error", "")
        if unreadable:  # say so, rather than blame the (unread) CSRF token
            status = 413 if "large" in unreadable else 400
            raise HTTPException(status, f"{unreadable}; nothing was changed")
        if not guard.check_csrf(found.sid, fields.first("csrf")):
            raise CsrfRefused
    return found


Authenticated = Annotated[Operator, Depends(operator)]


def utc_minute(at: datetime | None) -> str:
    """A stored time as the desk's tables show it (``""`` for none)."""
    return at.strftime("%Y-%m-%d %H:%M UTC") if at is not None else ""


ROLE_RANK = {"viewer": 0, "editor": 1, "admin": 2}


class Forbidden(Exception):
    """Signed in, but the role does not allow this: 403, nothing changed."""


def require(role: str) -> Callable[[Operator], Coroutine[Any, Any, Operator]]:
    """A dependency that lets through operators of ``role`` or above (viewer < editor
    < admin) and raises :class:`Forbidden` for the rest."""
    wanted = ROLE_RANK[role]

    async def check(found: Authenticated) -> Operator:
        if ROLE_RANK.get(found.role, -1) < wanted:
            raise Forbidden(role)
        return found

    return check


def allowed(found: Operator, role: str) -> bool:
    """For templates: show a button only to those who may press it."""
    return ROLE_RANK.get(found.role, -1) >= ROLE_RANK[role]


# A row id in a desk path: in range for every database's INTEGER, so a huge number
# is a 422 and never an overflow deep in the driver.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Editor = Annotated[Operator, Depends(require("editor"))]
Admin = Annotated[Operator, Depends(require("admin"))]


async def form(request: Request) -> Fields:
    """The posted fields (read once per request, then kept)."""
    cached = getattr(request.state, "admin_fields", None)
    if isinstance(cached, Fields):
        return cached
    try:
        fields = await read_fields(request)
    except BadBody as exc:
        fields = Fields()
        request.state.admin_body_error = str(exc)
    request.state.admin_fields = fields
    return fields
