"""``/api/v1/subscribers``: add a reader, read one, change preferences, unsubscribe, forget.

Adding follows the sign-up form (:mod:`digest.web.routes_subscribe`): double
opt-in by default (a pending reader and a confirmation mail, sent after the
answer; at most one per address per ``[web] confirm_resend_minutes``), the same
refusal of disposable domains, and a suppressed address stays suppressed until
the reader confirms. ``consented: true`` with a ``source`` adds an active reader
at once, as ``digest subscribers import --consented --source`` does, and is
refused for a suppressed address (409). A known address answers 200 with the
reader as it is; a new one 201.

Every change is written to the consent log (source ``api``) and to the audit log
(actor ``api-key:<name>``, via ``api``, target ``reader:<id>``).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import Response

from digest.store import audit
from digest.store.db import session_scope
from digest.web import catalog, disposable
from digest.web.api.auth import ApiError, Caller, needs
from digest.web.api.models import ErrorOut, NewReader, ReaderChange, ReaderOut
from digest.web.api.reader_changes import change_reader, context_of
from digest.web.state import Web, web_of
from subscribers import consent, lifecycle, repository
from subscribers.bounces import is_erased
from subscribers.models import ConsentAction, Subscriber, SubscriberStatus

Responses = dict[int | str, dict[str, Any]]
router = APIRouter(
    tags=["subscribers"], responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}}
)
Reads = Annotated[Caller, Depends(needs("subscribers:read"))]
Writes = Annotated[Caller, Depends(needs("subscribers:write"))]
_404: Responses = {404: {"model": ErrorOut, "description": "No such reader (or forgotten)"}}
_400: Responses = {400: {"model": ErrorOut, "description": "The address or a value cannot be used"}}


@router.post(
    "/subscribers",
    status_code=201,
    summary="Add a reader (double opt-in unless consented)",
    responses={
        200: {"model": ReaderOut, "description": "Known address: the reader, unchanged"},
        **_400,
        409: {"model": ErrorOut, "description": "consented, but the address is suppressed"},
    },
)
def add_reader(
    body: NewReader,
    request: Request,
    response: Response,
    background: BackgroundTasks,
    caller: Writes,
) -> ReaderOut:
    w = web_of(request)
    if body.consented and not body.source.strip():
        raise ApiError(400, "consented needs a source: say where the consent came from")
    if body.source.strip() and not body.consented:
        raise ApiError(400, "source says where consent came from; it goes with consented: true")
    if w.rt.config.web.block_disposable_domains and disposable.is_disposable(body.email):
        raise ApiError(400, disposable.REFUSED)
    with session_scope(w.rt.engine) as session:
        _check_categories(session, body.categories)
        existing = repository.get_by_email(session, email=body.email)
        if body.consented:
            reader = existing or _add_active(w, session, request, body, caller)
            mail = None
        else:
            reader, mail = _request(w, session, request, body, caller, known=existing is not None)
        out = ReaderOut.of(reader)
    if mail is not None:
        background.add_task(w.mailer.send_confirmation, *mail)
    response.status_code = 200 if existing is not None else 201
    return out


def _add_active(
    w: Web, session: Session, request: Request, body: NewReader, caller: Caller
) -> Subscriber:
    now = w.rt.now()
    source = " ".join(body.source.split())
    added = repository.add(
        session,
        email=body.email,
        name=body.name,
        categories=body.categories,
        source=f"api: {source}"[:200],
        now=now,
    )
    reader = added.subscriber
    consent.record(
        session,
        subscriber_id=reader.id,
        email=reader.email,
        action=ConsentAction.subscribed,
        context=context_of(w, request),
        now=now,
        detail=f"added as active over the API ({caller.actor}); consent stated: {source}",
    )
    _audit(session, caller, "reader.add", reader, f"active; consent stated: {source}", w)
    return reader


def _request(
    w: Web, session: Session, request: Request, body: NewReader, caller: Caller, *, known: bool
) -> tuple[Subscriber, tuple[int, str] | None]:
    result = lifecycle.request_subscription(
        session,
        email=body.email,
        name=body.name,
        categories=body.categories,
        context=context_of(w, request),
        now=w.rt.now(),
        resend_after=timedelta(minutes=w.rt.config.web.confirm_resend_minutes),
    )
    reader = result.subscriber
    if not known:
        reader.source = f"api:{caller.name}"[:200]
        session.add(reader)
    session.flush()
    assert reader.id is not None
    if not result.send_confirmation:
        return reader, None
    what = "confirmation mail sent again" if known else "pending; confirmation mail sent"
    _audit(session, caller, "reader.subscribe", reader, what, w)
    return reader, (reader.id, reader.email)


@router.get("/subscribers/{email}", summary="One reader", responses=_404)
def get_reader(email: str, request: Request, caller: Reads) -> ReaderOut:
    with session_scope(web_of(request).rt.engine) as session:
        return ReaderOut.of(_reader(session, email))


@router.patch(
    "/subscribers/{email}",
    summary="Change name, categories, pause or time zone",
    responses={**_400, **_404},
)
def patch_reader(email: str, body: ReaderChange, request: Request, caller: Writes) -> ReaderOut:
    w = web_of(request)
    with session_scope(w.rt.engine) as session:
        reader = _reader(session, email)
        if body.categories is not None:
            _check_categories(session, body.categories)
        changed = change_reader(w, session, reader, body, context_of(w, request))
        if changed:
            _audit(session, caller, "reader.update", reader, json.dumps(changed), w)
        return ReaderOut.of(reader)


@router.post(
    "/subscribers/{email}/unsubscribe",
    summary="Unsubscribe (and suppress) a reader",
    responses=_404,
)
def unsubscribe_reader(email: str, request: Request, caller: Writes) -> ReaderOut:
    w = web_of(request)
    with session_scope(w.rt.engine) as session:
        reader = _reader(session, email)
        was = reader.status
        assert reader.id is not None
        lifecycle.unsubscribe(
            session, subscriber_id=reader.id, context=context_of(w, request), now=w.rt.now()
        )
        if was != SubscriberStatus.unsubscribed:
            _audit(session, caller, "reader.unsubscribe", reader, f"was {was}", w)
        return ReaderOut.of(reader)


@router.delete(
    "/subscribers/{email}",
    status_code=204,
    summary="Forget a reader (erase; the address stays suppressed)",
    responses=_404,
)
def forget_reader(email: str, request: Request, caller: Writes) -> Response:
    w = web_of(request)
    with session_scope(w.rt.engine) as session:
        reader = _reader(session, email)
        lifecycle.forget(
            session, email=reader.email, context=context_of(w, request), now=w.rt.now()
        )
        _audit(session, caller, "reader.forget", reader, "personal data erased", w)
    return Response(status_code=204)


def _reader(session: Session, email: str) -> Subscriber:
    try:
        found = repository.get_by_email(session, email=email)
    except ValueError:  # SubscriberInputError: not an address at all
        found = None
    if found is None or is_erased(found):
        raise ApiError(404, "no reader has this address")
    return found


def _check_categories(session: Session, wanted: list[str]) -> None:
    known = set(catalog.feed_categories(session))
    unknown = sorted({c.strip() for c in wanted} - known - {""})
    if unknown:
        offered = ", ".join(sorted(known)) or "none yet"
        raise ApiError(400, f"unknown categories: {', '.join(unknown)} (the feed has: {offered})")


def _audit(
    session: Session, caller: Caller, action: str, reader: Subscriber, detail: Any, w: Web
) -> None:
    audit.record(
        session, actor=caller.actor, via="api", action=action, target=f"reader:{reader.id}",
        detail=str(detail), now=w.rt.now(),
    )  # fmt: skip
