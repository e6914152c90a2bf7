"""The editions page and the Approve / Pause / Resume buttons.

The buttons do what the commands do: Approve runs the pre-flight and approves
(:func:`digest.desk.preview.approve_edition`, refused on errors unless "approve anyway" is
ticked); Pause and Resume call :func:`digest.editions.lifecycle.pause` / ``resume``. Unlike
``digest resume``, the desk does not send the rest itself (a web worker must not
run a send): the scheduler, ``digest worker`` or ``digest send`` picks it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from digest.config.runtime import Runtime
from digest.delivery import ledger as deliveries
from digest.desk import preview as desk
from digest.editions import lifecycle as editions
from digest.errors import DigestError
from digest.store.db import session_scope
from digest.store.models import Edition, EditionStatus
from digest.web.admin.auth import Operator
from digest.web.admin.deps import CSRF_FIELD, PAGE_HEADERS, Authenticated, desk_of, form
from digest.web.admin.selection import Selection, explain
from digest.web.forms import openapi_body
from digest.web.state import web_of

STATES = ("queued", "sending", "sent", "failed", "bounced", "skipped", "unknown")
DONE = {"approve": "approved", "pause": "paused", "resume": "resumed"}
_ACTION_FIELDS = {"reason": {"type": "string"}, "force": {"type": "string", "enum": ["1"]}}


def register(router: APIRouter) -> None:
    router.add_api_route("/editions", editions_page, methods=["GET"])
    for action in ("approve", "pause", "resume"):
        router.add_api_route(
            f"/editions/{{key}}/{action}",
            _ACTIONS[action],
            methods=["POST"],
            openapi_extra=openapi_body({**_ACTION_FIELDS, **CSRF_FIELD}),
        )


@dataclass(frozen=True, slots=True)
class Row:
    edition: Edition
    counts: dict[str, int]

    @property
    def can_pause(self) -> bool:
        return self.edition.status in (EditionStatus.composed, EditionStatus.sending)

    @property
    def can_resume(self) -> bool:
        return self.edition.status == EditionStatus.paused

    @property
    def can_approve(self) -> bool:
        e = self.edition
        live = e.status in (EditionStatus.composed, EditionStatus.sending, EditionStatus.paused)
        return live and editions.awaiting_approval(e)


def overview(rt: Runtime) -> tuple[list[Row], Selection, str]:
    """Every edition with its ledger counts; the current edition's selection; and
    the key of the edition not composed yet that "next" previews ("" when "next" is
    this week's composed edition): this week's when it has no edition, next week's
    once this week's is sent or cancelled (:func:`digest.pipeline.preview_comparisons`)."""
    now = rt.now()
    key = editions.edition_key(now, rt.config.site.tz)
    with session_scope(rt.engine) as session:
        found = editions.all_editions(session)
        conn = session.connection()
        rows = [Row(e, deliveries.counts(conn, edition_id=e.id or 0)) for e in found]
        current = next((e for e in found if e.key == key), None)
        selection = explain(rt, session, key=key, edition=current)
    upcoming = key if current is None else ""
    if current is not None and current.status in (EditionStatus.sent, EditionStatus.cancelled):
        following = editions.edition_key(now + timedelta(days=7), rt.config.site.tz)
        upcoming = "" if any(e.key == following for e in found) else following
    return rows, selection, upcoming


async def editions_page(request: Request, who: Authenticated) -> Response:
    return await _render(request, who)


async def _render(
    request: Request, who: Operator, *, problem: str = "", status: int = 200
) -> Response:
    w = web_of(request)
    rows, selection, upcoming = await run_in_threadpool(overview, w.rt)
    done = request.query_params.get("done", "")
    context: dict[str, Any] = {
        "rows": rows,
        "states": STATES,
        "selection": selection,
        "upcoming": upcoming,
        "notice": f"Edition {request.query_params.get('key', '')} {done}."
        if done in DONE.values()
        else "",
        "problem": problem,
        "csrf": desk_of(request).guard.csrf_token(who.sid),
        "who": who,
    }
    return w.pages.page(
        request, "admin/editions", status=status, headers=PAGE_HEADERS, title="Editions", **context
    )


async def _act(request: Request, who: Operator, key: str, action: str) -> Response:
    rt = web_of(request).rt
    fields = await form(request)
    reason, force = fields.first("reason"), fields.first("force") == "1"
    try:
        await run_in_threadpool(_apply, rt, action, key, who, reason, force)
    except DigestError as exc:
        return await _render(request, who, problem=str(exc), status=409)
    target = f"/admin/editions?done={DONE[action]}&key={quote(key)}"
    return RedirectResponse(target, status_code=303)


def _apply(rt: Runtime, action: str, key: str, who: Operator, reason: str, force: bool) -> None:
    """What the commands do. Raises DigestError (refused, unknown key, wrong state)."""
    now = rt.now()
    if action == "approve":
        desk.approve_edition(rt, key=key, by=who.label, now=now, force=force, via="desk")
        return
    with session_scope(rt.engine) as session:
        if action == "pause":
            note = reason.strip()[:300] or "by the operator (desk)"
            editions.pause(session, key=key, note=note, now=now)
        else:
            editions.resume(session, key=key)


async def approve(request: Request, key: str, who: Authenticated) -> Response:
    return await _act(request, who, key, "approve")


async def pause(request: Request, key: str, who: Authenticated) -> Response:
    return await _act(request, who, key, "pause")


async def resume(request: Request, key: str, who: Authenticated) -> Response:
    return await _act(request, who, key, "resume")


_ACTIONS = {"approve": approve, "pause": pause, "resume": resume}
