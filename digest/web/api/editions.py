"""``/api/v1/editions`` and ``/api/v1/status``: read, preview, edit and approve editions.

Edits go through :func:`digest.desk.editing.edit` (the function ``digest edit``
and the desk use): ``409`` once the edition has started sending, is sent or
cancelled; ``400`` for an edit that cannot apply (unknown comparison, a subject
over the limit). Approval runs the pre-flight first
(:func:`digest.desk.preview.approve_edition`); errors refuse it (``409``) unless
``force``. Previews are built by the sender's own code with inert personal links,
for a sample reader of every category or of ``?segment=CATEGORY``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from digest.common.redaction import redact_text
from digest.config.runtime import Runtime
from digest.delivery import ledger
from digest.desk import editing
from digest.desk import preview as desk
from digest.editions import lifecycle as editions
from digest.editions import shaping
from digest.errors import DigestError
from digest.ops import health
from digest.store.db import session_scope
from digest.store.models import Edition
from digest.web.api.auth import ApiError, Caller, needs
from digest.web.api.models import (
    ApproveIn,
    EditionChange,
    EditionDetailOut,
    EditionOut,
    EditorialOut,
    EditResultOut,
    ErrorOut,
    LineupOut,
    StatusOut,
)
from digest.web.state import web_of
from subscribers import repository

Responses = dict[int | str, dict[str, Any]]
router = APIRouter(responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})
Reads = Annotated[Caller, Depends(needs("editions:read"))]
_404: Responses = {404: {"model": ErrorOut, "description": "No such edition"}}
_409: Responses = {409: {"model": ErrorOut, "description": "The edition cannot change (any more)"}}
# The preview's HTML is the email's: no scripts, no forms, no navigation when opened.
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; font-src https: data:; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'; sandbox"
)
STATUS_EDITIONS = 10


class ApprovalDone(BaseModel):
    edition: EditionOut
    forced: bool
    warnings: list[str]


@router.get("/editions", tags=["editions"], summary="Every edition, newest first")
def list_editions(request: Request, caller: Reads) -> list[EditionOut]:
    with session_scope(web_of(request).rt.engine) as session:
        return [_out(session, e) for e in editions.all_editions(session)]


@router.get("/editions/{key}", tags=["editions"], summary="One edition", responses=_404)
def get_edition(key: str, request: Request, caller: Reads) -> EditionDetailOut:
    with session_scope(web_of(request).rt.engine) as session:
        edition = _edition(session, key)
        return EditionDetailOut(
            **_out(session, edition).model_dump(),
            lineup=[LineupOut.of(entry) for entry in shaping.lineup(session, edition)],
            editorial=EditorialOut.of(shaping.editorial_of(session, edition)),
        )


@router.get(
    "/editions/{key}/preview.{part}",
    tags=["editions"],
    summary="The edition as a sample reader gets it: part html or txt",
    responses={200: {"content": {"text/html": {}, "text/plain": {}}}, **_404},
)
async def preview_part(
    key: str, part: str, request: Request, caller: Reads, segment: str = ""
) -> Response:
    if part not in ("html", "txt"):
        raise ApiError(404, "the preview parts are preview.html and preview.txt")
    rt = web_of(request).rt
    try:
        shown = await run_in_threadpool(_preview, rt, key, segment.strip())
    except DigestError as exc:
        raise ApiError(404, str(exc)) from None
    if shown.message is None:
        raise ApiError(404, f"this reader gets no message from {key}: {shown.skipped}")
    if part == "html":
        headers = {"Content-Security-Policy": PREVIEW_CSP}
        return Response(shown.html, media_type="text/html; charset=utf-8", headers=headers)
    return Response(shown.text.encode("utf-8"), media_type="text/plain; charset=utf-8")


@router.patch(
    "/editions/{key}",
    tags=["editions"],
    summary="Edit an edition: note, subject, preheader, sponsor, lineup",
    responses={400: {"model": ErrorOut}, **_404, **_409},
)
def patch_edition(
    key: str,
    body: EditionChange,
    request: Request,
    caller: Annotated[Caller, Depends(needs("editions:write"))],
) -> EditResultOut:
    rt = web_of(request).rt
    try:
        result = editing.edit(rt, key=key, change=body.as_edit(), actor=caller.actor, via="api")
    except shaping.EditRefused as exc:
        raise ApiError(409, str(exc)) from None
    except shaping.EditInvalid as exc:
        raise ApiError(400, str(exc)) from None
    except DigestError as exc:
        raise ApiError(404, str(exc)) from None
    return EditResultOut(
        key=result.key,
        revision=result.revision,
        changes=result.changes,
        approval_withdrawn=result.approval_withdrawn,
    )


@router.post(
    "/editions/{key}/approve",
    tags=["editions"],
    summary="Approve an edition after its pre-flight",
    responses={**_404, **_409},
)
def approve(
    key: str,
    request: Request,
    caller: Annotated[Caller, Depends(needs("editions:approve"))],
    body: ApproveIn | None = None,
) -> ApprovalDone:
    rt = web_of(request).rt
    with session_scope(rt.engine) as session:
        _edition(session, key)
    try:
        done = desk.approve_edition(
            rt, key=key, by=caller.actor, now=rt.now(), force=bool(body and body.force), via="api"
        )
    except DigestError as exc:
        raise ApiError(409, redact_text(str(exc))) from None
    with session_scope(rt.engine) as session:
        edition = _out(session, _edition(session, key))
    warnings = [redact_text(f.describe()) for f in done.report.warnings]
    return ApprovalDone(edition=edition, forced=done.forced, warnings=warnings)


@router.get(
    "/status",
    tags=["status"],
    summary="Incidents, readers per status, the newest editions and their deliveries",
)
def status(request: Request, caller: Annotated[Caller, Depends(needs("status:read"))]) -> StatusOut:
    rt = web_of(request).rt
    now = rt.now()
    found = health.incidents(rt, now=now)
    with session_scope(rt.engine) as session:
        latest = editions.all_editions(session)[:STATUS_EDITIONS]
        return StatusOut(
            ok=not found,
            now=now,
            incidents=[{"name": i.name, "summary": redact_text(i.summary)} for i in found],
            subscribers=repository.count_by_status(session),
            editions=[_out(session, e) for e in latest],
        )


def _edition(session: Session, key: str) -> Edition:
    found = editions.get(session, key=key)
    if found is None:
        raise ApiError(404, f"there is no edition {key}")
    return found


def _out(session: Session, edition: Edition) -> EditionOut:
    assert edition.id is not None
    counts = ledger.counts(session.connection(), edition_id=edition.id)
    return EditionOut.of(edition, counts)


def _preview(rt: Runtime, key: str, segment: str) -> desk.Preview:
    content = desk.edition_content(rt, key)
    viewer = desk.viewer_for(rt, categories=[segment] if segment else [])
    return desk.preview(rt, content, viewer)
