"""The editions page (the desk's front page) and the Approve / Pause / Resume buttons.

The buttons do what the commands do: Approve runs the pre-flight and approves
(:func:`digest.desk.preview.approve_edition`, refused on errors unless "approve anyway" is
ticked); Pause and Resume call :func:`digest.editions.lifecycle.pause` / ``resume``. Unlike
``digest resume``, the desk does not send the rest itself (a web worker must not
run a send): the scheduler, ``digest worker`` or ``digest send`` picks it up.
The buttons need the editor role (a viewer sees none and gets 403); Pause and
Resume are recorded in the audit log (Approve records itself). The page also
counts readers per status, each count linking to the filtered reader list.
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
from digest.desk import readers
from digest.editions import lifecycle as editions
from digest.editions.shaping import why_not_editable
from digest.errors import DigestError
from digest.store import audit
from digest.store.db import session_scope
from digest.store.models import Edition, EditionStatus
from digest.web.admin.auth import Operator
from digest.web.admin.deps import (
    CSRF_FIELD,
    PAGE_HEADERS,
    Authenticated,
    Editor,
    allowed,
    desk_of,
    form,
)
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
    def editable(self) -> bool:
        return why_not_editable(self.edition) is None

    @property
    def can_approve(self) -> bool:
        e = self.edition
        live = e.status in (EditionStatus.composed, EditionStatus.sending, EditionStatus.paused)
        return live and editions.awaiting_approval(e)


@dataclass(frozen=True, slots=True)
class Overview:
    rows: list[Row]
    selection: Selection
    upcoming: str
    readers: dict[str, int]  # readers per status


def overview(rt: Runtime) -> Overview:
    """Every edition with its ledger counts; the current edition's selection; and
    the key of the edition not composed yet that "next" previews ("" when "next" is
    this week's composed edition): this week's when it has no edition, next week's
    once this week's is sent or cancelled (:func:`digest.editing.preview_comparisons`)."""
    now = rt.now()
    key = editions.edition_key(now, rt.config.site.tz)
    with session_scope(rt.engine) as session:
        found = editions.all_editions(session)
        conn = session.connection()
        rows = [Row(e, deliveries.counts(conn, edition_id=e.id or 0)) for e in found]
        current = next((e for e in found if e.key == key), None)
        selection = explain(rt, session, key=key, edition=current)
        counts = readers.counts(session)
    upcoming = key if current is None else ""
    if current is not None and current.status in (EditionStatus.sent, EditionStatus.cancelled):
        following = editions.edition_key(now + timedelta(days=7), rt.config.site.tz)
        upcoming = "" if any(e.key == following for e in found) else following
    return Overview(rows, selection, upcoming, counts)


async def editions_page(request: Request, who: Authenticated) -> Response:
    return await render(request, who)


async def render(
    request: Request, who: Operator, *, problem: str = "", status: int = 200
) -> Response:
    w = web_of(request)
    seen = await run_in_threadpool(overview, w.rt)
    done = request.query_params.get("done", "")
    context: dict[str, Any] = {
        "rows": seen.rows,
        "states": STATES,
        "selection": seen.selection,
        "upcoming": seen.upcoming,
        "readers": seen.readers,
        "can_edit": allowed(who, "editor"),
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
        return await render(request, who, problem=str(exc), status=409)
    target = f"/admin/editions?done={DONE[action]}&key={quote(key)}"
    return RedirectResponse(target, status_code=303)


def _apply(rt: Runtime, action: str, key: str, who: Operator, reason: str, force: bool) -> None:
    """What the commands do. Raises DigestError (refused, unknown key, wrong state)."""
    now = rt.now()
    if action == "approve":
        desk.approve_edition(rt, key=key, by=who.actor, now=now, force=force, via="desk")
        return
    with session_scope(rt.engine) as session:
        if action == "pause":
            note = reason.strip()[:300] or "by the operator (desk)"
            editions.pause(session, key=key, note=note, now=now)
        else:
            editions.resume(session, key=key)
            note = ""
        audit.record(
            session, actor=who.actor, via="desk", action=f"edition.{action}",
            target=f"edition:{key}", detail=note, now=now,
        )  # fmt: skip


async def approve(request: Request, key: str, who: Editor) -> Response:
    return await _act(request, who, key, "approve")


async def pause(request: Request, key: str, who: Editor) -> Response:
    return await _act(request, who, key, "pause")


async def resume(request: Request, key: str, who: Editor) -> Response:
    return await _act(request, who, key, "resume")


_ACTIONS = {"approve": approve, "pause": pause, "resume": resume}
