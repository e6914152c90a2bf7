"""The edition editing page: the lineup (exclude, include, order), the note, the
subject and preheader, the sponsor block; and "Compose next edition".

=======  =====================================  ========================================
GET      /admin/editions/{key}/edit              the edition as the editor shapes it
POST     /admin/editions/{key}/edit              apply the form (editor role)
POST     /admin/editions/next/compose            compose the next edition, then edit it
=======  =====================================  ========================================

The form is one ``<form>``: a row per comparison with a "keep" checkbox and a
position, and Up / Down buttons that submit the form with ``move=up:<id>``. The
fields become one :class:`~digest.editions.shaping.Edit` applied by
:func:`digest.desk.editing.edit` (all or nothing; each change audited). Refused
(sending started, cancelled): 409 saying why. Invalid: 400 with the message, and
nothing changed. Saved: 303 back here with ``?saved=N``, the page then naming the
newest N entries of the edition's history (never text taken from the URL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from digest.config.runtime import Runtime
from digest.desk import editing
from digest.editions import lifecycle as editions
from digest.editions import shaping
from digest.editions.shaping import Edit, EditInvalid, EditRefused, LineupEntry, Sponsor
from digest.errors import DigestError
from digest.store import audit
from digest.store.db import session_scope
from digest.store.models import AuditEvent, Edition, EditionEditorial
from digest.web.admin import routes_editions
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
from digest.web.forms import Fields, openapi_body
from digest.web.state import web_of

TEXT_FIELDS = ("note", "subject", "preheader")
SPONSOR_FIELDS = ("sponsor_text", "sponsor_url", "sponsor_label")
_S = {"type": "string"}
_FORM: dict[str, Any] = {f: _S for f in (*TEXT_FIELDS, *SPONSOR_FIELDS, "remove_sponsor", "move")}
_FORM |= {"lineup": {"type": "array", "items": _S}, "keep": {"type": "array", "items": _S}}


def register(router: APIRouter) -> None:
    router.add_api_route(
        "/editions/next/compose", compose, methods=["POST"], openapi_extra=openapi_body(CSRF_FIELD)
    )
    router.add_api_route("/editions/{key}/edit", edit_page, methods=["GET"])
    router.add_api_route(
        "/editions/{key}/edit",
        save,
        methods=["POST"],
        openapi_extra=openapi_body({**_FORM, **CSRF_FIELD}),
    )


@dataclass(frozen=True, slots=True)
class Shaped:
    edition: Edition
    lineup: list[LineupEntry]
    editorial: EditionEditorial | None
    refused: str  # why the edition can no longer change, or ""
    history: list[AuditEvent]


def _load(rt: Runtime, key: str) -> Shaped | None:
    with session_scope(rt.engine) as session:
        edition = editions.get(session, key=key)
        if edition is None:
            return None
        return Shaped(
            edition,
            shaping.lineup(session, edition),
            shaping.editorial_of(session, edition),
            shaping.why_not_editable(edition) or "",
            list(audit.recent(session, target=f"edition:{key}", limit=100)),
        )


def change_of(fields: Fields) -> Edit:
    """The posted form as one Edit (a field left out of the form changes nothing)."""
    given = fields.values
    text: dict[str, Any] = {f: fields.first(f) for f in TEXT_FIELDS if f in given}
    sponsor_text, url, label = (fields.first(f).strip() for f in SPONSOR_FIELDS)
    if fields.first("remove_sponsor") == "1" or (
        "sponsor_text" in given and not sponsor_text and not url
    ):
        text["clear_sponsor"] = True
    elif sponsor_text or url:
        text["sponsor"] = Sponsor(sponsor_text, url, label or shaping.SPONSOR_LABEL)
    lineup = list(dict.fromkeys(fields.all("lineup")))
    if not lineup:
        return Edit(**text)
    kept = set(fields.all("keep"))

    def rank(i: int) -> tuple[int, int]:
        value = fields.first(f"position-{lineup[i]}").strip()
        return (int(value) if value.isdigit() else i + 1, i)

    order = [lineup[i] for i in sorted(range(len(lineup)), key=rank)]
    direction, _, moved = fields.first("move").partition(":")
    if moved in order and direction in ("up", "down"):
        i = order.index(moved)
        j = i - 1 if direction == "up" else i + 1
        if 0 <= j < len(order):
            order[i], order[j] = order[j], order[i]
    return Edit(
        exclude=tuple(c for c in lineup if c not in kept),
        include=tuple(c for c in lineup if c in kept),
        order=tuple(order),
        **text,
    )


async def edit_page(request: Request, key: str, who: Authenticated) -> Response:
    saved = request.query_params.get("saved", "")
    return await _render(request, who, key, saved=int(saved) if saved.isdigit() else None)


async def _render(
    request: Request,
    who: Operator,
    key: str,
    *,
    saved: int | None = None,
    problem: str = "",
    status: int = 200,
    typed: Fields | None = None,
) -> Response:
    w = web_of(request)
    shaped = await run_in_threadpool(_load, w.rt, key)
    headers, csrf = PAGE_HEADERS, desk_of(request).guard.csrf_token(who.sid)
    if shaped is None:
        message = f"There is no edition {key}. Compose the next edition from the editions page."
        return w.pages.page(
            request, "admin/problem", status=404, headers=headers, title="No such edition",
            message=message, who=who, csrf=csrf,
        )  # fmt: skip
    notice = ""
    if saved is not None:
        done = [e.detail for e in shaped.history[: min(saved, 20)]]
        notice = "saved: " + "; ".join(reversed(done)) if done else "saved: nothing changed"
    stored = shaped.editorial or EditionEditorial(edition_id=shaped.edition.id or 0)
    values = {f: getattr(stored, f) for f in (*TEXT_FIELDS, *SPONSOR_FIELDS)}
    if typed is not None:  # a refused form: show what was typed, not what is stored
        values |= {f: typed.first(f) for f in (*TEXT_FIELDS, *SPONSOR_FIELDS) if f in typed.values}
    return w.pages.page(
        request, "admin/edit", status=status, headers=headers, title=f"Edit {key}",
        key=key, shaped=shaped, values=values, notice=notice, problem=problem, csrf=csrf,
        who=who, can_edit=allowed(who, "editor") and not shaped.refused,
        limits={"note": shaping.NOTE_LIMIT, "subject": shaping.SUBJECT_LIMIT,
                "preheader": shaping.PREHEADER_LIMIT, "sponsor_text": shaping.SPONSOR_TEXT_LIMIT},
    )  # fmt: skip


async def save(request: Request, key: str, who: Editor) -> Response:
    rt, fields = web_of(request).rt, await form(request)
    change = change_of(fields)
    try:
        result = await run_in_threadpool(
            lambda: editing.edit(rt, key=key, change=change, actor=who.actor, via="desk")
        )
    except EditRefused as exc:
        return await _render(request, who, key, problem=f"Not saved: {exc}", status=409)
    except EditInvalid as exc:
        problem = f"Not saved, nothing changed: {exc}"
        return await _render(request, who, key, problem=problem, status=400, typed=fields)
    except DigestError as exc:
        return await _render(request, who, key, problem=str(exc), status=404)
    target = f"/admin/editions/{result.key}/edit?saved={len(result.changes)}"
    return RedirectResponse(target, status_code=303)


async def compose(request: Request, who: Editor) -> Response:
    """Compose the next edition now (idempotent) and open it for editing."""
    rt = web_of(request).rt
    try:
        result = await run_in_threadpool(
            lambda: editing.compose_next(rt, actor=who.actor, via="desk")
        )
    except DigestError as exc:
        problem = f"Nothing composed: {exc}"
        return await routes_editions.render(request, who, problem=problem, status=409)
    if result.edition is None:
        problem = f"Nothing to compose: {result.reason}"
        return await routes_editions.render(request, who, problem=problem, status=409)
    return RedirectResponse(f"/admin/editions/{result.edition.key}/edit", status_code=303)
