"""Readers on the desk: search, one reader's record, add, unsubscribe, resend the
confirmation, export and forget (:mod:`digest.desk.readers` does the work).

=======  ===========================================  =====================================
GET      /admin/readers?q=&status=&category=&page=    search (address or name), 50 a page
POST     /admin/readers                               add: pending (mail) or consented
GET      /admin/readers/{id}                          deliveries, consent log, suppression
POST     /admin/readers/{id}/unsubscribe              unsubscribe and suppress
POST     /admin/readers/{id}/resend-confirmation      a fresh confirmation (pending only)
GET      /admin/readers/{id}/forget, POST the same    erase, once the address is typed
GET      /admin/readers/{id}/export                   everything held, as JSON
=======  ===========================================  =====================================

Changes need the editor role. A confirmation mail goes out in the request (not in
the background) so the page can say whether the transport took it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from digest.desk import readers
from digest.errors import DigestError
from digest.store.db import session_scope
from digest.web import catalog
from digest.web.admin.auth import Operator
from digest.web.admin.deps import (
    CSRF_FIELD,
    PAGE_HEADERS,
    Authenticated,
    Editor,
    RowId,
    allowed,
    desk_of,
    form,
)
from digest.web.forms import openapi_body
from digest.web.mailer import confirmation_message
from digest.web.state import Web, web_of

log = logging.getLogger(__name__)
_TEXT = {"type": "string"}
_ADD = {"email": _TEXT, "name": _TEXT, "categories": {"type": "array", "items": _TEXT}}
_ADD |= {"consented": {"type": "string", "enum": ["1"]}, "source": _TEXT, **CSRF_FIELD}
DONE = {
    "added": "Added as active.",
    "added-pending": "Added as pending; the confirmation mail went out.",
    "exists": "This address is already a reader: nothing changed.",
    "unsubscribed": "Unsubscribed; the address is suppressed.",
    "already-unsubscribed": "Already unsubscribed: nothing changed.",
    "confirmation-sent": "A fresh confirmation mail went out.",
    "mail-failed": "The confirmation mail could not be sent (see the server log).",
    "forgotten": "The reader was forgotten: only a hash of the address is kept.",
}


def register(router: APIRouter) -> None:
    router.add_api_route("/readers", readers_page, methods=["GET"])
    router.add_api_route("/readers", add, methods=["POST"], openapi_extra=openapi_body(_ADD))
    router.add_api_route("/readers/{reader_id}", reader_page, methods=["GET"])
    router.add_api_route("/readers/{reader_id}/export", export, methods=["GET"])
    router.add_api_route("/readers/{reader_id}/forget", forget_page, methods=["GET"])
    confirm = openapi_body({"address": _TEXT, **CSRF_FIELD})
    router.add_api_route(
        "/readers/{reader_id}/forget", forget, methods=["POST"], openapi_extra=confirm
    )
    plain = openapi_body(CSRF_FIELD)
    for action, endpoint in (("unsubscribe", unsubscribe), ("resend-confirmation", resend)):
        path = f"/readers/{{reader_id}}/{action}"
        router.add_api_route(path, endpoint, methods=["POST"], openapi_extra=plain)


def _page(request: Request, who: Operator, name: str, title: str, **context: Any) -> Response:
    status = context.pop("status", 200)
    return web_of(request).pages.page(
        request, f"admin/{name}", status=status, headers=PAGE_HEADERS, title=title, who=who,
        csrf=desk_of(request).guard.csrf_token(who.sid), can_edit=allowed(who, "editor"),
        **context,
    )  # fmt: skip


def _search(w: Web, q: str, status: str, category: str, page: int) -> dict[str, Any]:
    with session_scope(w.rt.engine) as session:
        found = readers.search(session, q=q, status=status, category=category, page=page)
        return {
            "found": found,
            "counts": readers.counts(session),
            "categories": catalog.feed_categories(session),
        }


async def readers_page(request: Request, who: Authenticated) -> Response:
    return await _readers(request, who)


async def _readers(
    request: Request, who: Operator, problem: str = "", status: int = 200
) -> Response:
    p = request.query_params
    q, wanted, category = p.get("q", "")[:200], p.get("status", ""), p.get("category", "")[:100]
    number = int(p["page"]) if p.get("page", "").isdigit() else 1
    data = await run_in_threadpool(_search, web_of(request), q, wanted, category, number)
    return _page(
        request, who, "readers", "Readers", q=q, status_filter=wanted, category=category,
        statuses=readers.STATUSES, notice=DONE.get(p.get("done", ""), ""), problem=problem,
        status=status, **data,
    )  # fmt: skip


async def add(request: Request, who: Editor) -> Response:
    w, fields = web_of(request), await form(request)
    try:
        added = await run_in_threadpool(
            lambda: readers.add(
                w.rt, email=fields.first("email"), name=fields.first("name"),
                categories=fields.all("categories"), consented=fields.first("consented") == "1",
                stated_source=fields.first("source"), actor=who.actor,
            )
        )  # fmt: skip
    except readers.ReaderRefused as exc:
        return await _readers(request, who, problem=f"Not added: {exc}", status=400)
    done = "exists" if not added.created else "added"
    if added.confirm_to:
        done = (
            "added-pending"
            if await _confirm(w, added.reader_id, added.confirm_to)
            else "mail-failed"
        )
    return RedirectResponse(f"/admin/readers/{added.reader_id}?done={done}", status_code=303)


async def _confirm(w: Web, reader_id: int, address: str) -> bool:
    """Send the confirmation mail now; False (logged, without the address) on failure."""
    try:
        message = await run_in_threadpool(
            lambda: confirmation_message(w.rt, subscriber_id=reader_id, address=address)
        )
        await w.mailer.send(message)
    except (DigestError, OSError) as exc:
        log.error("confirmation mail to reader %s not sent (%s)", reader_id, type(exc).__name__)
        return False
    return True


def _record(w: Web, reader_id: int) -> readers.Record | None:
    with session_scope(w.rt.engine) as session:
        found = readers.record(session, reader_id, now=w.rt.now())
        return found


async def reader_page(request: Request, reader_id: RowId, who: Authenticated) -> Response:
    return await _reader(request, reader_id, who)


async def _reader(
    request: Request, reader_id: int, who: Operator, problem: str = "", status: int = 200
) -> Response:
    w = web_of(request)
    found = await run_in_threadpool(_record, w, reader_id)
    if found is None:
        return _page(
            request, who, "problem", "No such reader", status=404,
            message=f"There is no reader {reader_id}.",
        )  # fmt: skip
    notice = DONE.get(request.query_params.get("done", ""), "")
    return _page(
        request, who, "reader", f"Reader {reader_id}", record=found, notice=notice,
        problem=problem, status=status,
    )  # fmt: skip


async def unsubscribe(request: Request, reader_id: RowId, who: Editor) -> Response:
    rt = web_of(request).rt
    try:
        changed = await run_in_threadpool(
            lambda: readers.unsubscribe(rt, reader_id, actor=who.actor)
        )
    except readers.ReaderRefused as exc:
        return await _reader(request, reader_id, who, problem=str(exc), status=409)
    done = "unsubscribed" if changed else "already-unsubscribed"
    return RedirectResponse(f"/admin/readers/{reader_id}?done={done}", status_code=303)


async def resend(request: Request, reader_id: RowId, who: Editor) -> Response:
    w = web_of(request)
    try:
        address = await run_in_threadpool(
            lambda: readers.resend_confirmation(w.rt, reader_id, actor=who.actor)
        )
    except readers.ReaderRefused as exc:
        return await _reader(request, reader_id, who, problem=f"Not sent: {exc}", status=409)
    done = "confirmation-sent" if await _confirm(w, reader_id, address) else "mail-failed"
    return RedirectResponse(f"/admin/readers/{reader_id}?done={done}", status_code=303)


async def export(request: Request, reader_id: RowId, who: Editor) -> Response:
    rt = web_of(request).rt
    data = await run_in_threadpool(lambda: readers.export(rt, reader_id, actor=who.actor))
    if data is None:
        return Response("no such reader\n", status_code=404, media_type="text/plain")
    body = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    disposition = f'attachment; filename="reader-{reader_id}.json"'
    return Response(
        body, media_type="application/json", headers={"Content-Disposition": disposition}
    )


async def forget_page(request: Request, reader_id: RowId, who: Editor) -> Response:
    return await _forget_page(request, reader_id, who)


async def _forget_page(
    request: Request, reader_id: int, who: Operator, problem: str = "", status: int = 200
) -> Response:
    found = await run_in_threadpool(_record, web_of(request), reader_id)
    if found is None:
        return _page(
            request, who, "problem", "No such reader", status=404,
            message=f"There is no reader {reader_id}.",
        )  # fmt: skip
    return _page(
        request, who, "reader_forget", f"Forget reader {reader_id}", record=found,
        problem=problem, status=status,
    )  # fmt: skip


async def forget(request: Request, reader_id: RowId, who: Editor) -> Response:
    rt, typed = web_of(request).rt, (await form(request)).first("address")
    try:
        await run_in_threadpool(lambda: readers.forget(rt, reader_id, typed=typed, actor=who.actor))
    except readers.ReaderRefused as exc:
        return await _forget_page(request, reader_id, who, problem=str(exc), status=400)
    return RedirectResponse("/admin/readers?done=forgotten", status_code=303)
