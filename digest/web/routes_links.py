"""The links in emails: ``/confirm/{token}``, ``/u/{token}``, ``/p/{token}``.

A GET never changes anything: mail scanners and link previewers fetch every
link, so a GET shows a page with a button and only the POST acts. The exception
is built into the standard: RFC 8058's one-click unsubscribe is a POST with body
``List-Unsubscribe=One-Click``, answered 200 with a short page (no redirect, no
cookie). Every bad token (tampered, expired, wrong purpose, unknown reader) gets
the same generic 400 page and changes nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from digest.store.db import session_scope
from digest.web.forms import BadBody, Fields, openapi_body, read_fields
from digest.web.pages import Problem
from digest.web.preferences import preferences_page, save_preferences
from digest.web.state import Web, web_of
from subscribers import lifecycle
from subscribers.consent import Context
from subscribers.models import ConsentSource, Subscriber, SubscriberStatus
from subscribers.tokens import Purpose

router = APIRouter(tags=["links in emails"], default_response_class=HTMLResponse)
_BAD: dict[int | str, dict[str, Any]] = {
    400: {"description": "The generic 'this link does not work' page; nothing changed"}
}
_CONFIRM_BODY = openapi_body({"confirm": {"type": "string", "enum": ["1"]}})
_UNSUB_BODY = openapi_body(
    {
        "List-Unsubscribe": {"type": "string", "enum": ["One-Click"], "description": "RFC 8058"},
        "confirm": {"type": "string", "enum": ["1"], "description": "the page's own button"},
    }
)


@router.get("/confirm/{token}", responses=_BAD, summary="Confirm page (changes nothing)")
async def confirm_page(request: Request, token: str) -> Response:
    w = web_of(request)
    subscriber_id = w.verify(Purpose.confirm, token)
    if subscriber_id is None or not await run_in_threadpool(_confirmable, w, subscriber_id):
        return w.pages.problem(request, Problem.invalid_link)
    return w.pages.page(
        request, "confirm", title="Confirm", action=_path(request, "confirm", token)
    )


@router.post(
    "/confirm/{token}",
    responses=_BAD,
    summary="Confirm the subscription (double opt-in)",
    openapi_extra=_CONFIRM_BODY,
)
async def confirm(request: Request, token: str, background: BackgroundTasks) -> Response:
    w = web_of(request)
    subscriber_id = w.verify(Purpose.confirm, token)
    context = w.context(request, ConsentSource.link)
    newly = (
        None
        if subscriber_id is None
        else await run_in_threadpool(_confirm, w, subscriber_id, context)
    )
    if subscriber_id is None or newly is None:
        return w.pages.problem(request, Problem.invalid_link)
    if newly and w.rt.config.web.welcome_email:
        background.add_task(w.mailer.send_welcome, subscriber_id)
    prefs = w.rt.signer().sign(Purpose.preferences, subscriber_id)
    return w.pages.page(
        request, "confirmed", title="Subscribed", preferences_url=_path(request, "p", prefs)
    )


@router.get("/u/{token}", responses=_BAD, summary="Unsubscribe page (changes nothing)")
async def unsubscribe_page(request: Request, token: str) -> Response:
    w = web_of(request)
    subscriber_id = w.verify(Purpose.unsubscribe, token)
    status = None if subscriber_id is None else await run_in_threadpool(_status, w, subscriber_id)
    if status is None:
        return w.pages.problem(request, Problem.invalid_link)
    return w.pages.page(
        request,
        "unsubscribe",
        title="Unsubscribe",
        action=_path(request, "u", token),
        already=status == SubscriberStatus.unsubscribed,
    )


@router.post(
    "/u/{token}",
    responses=_BAD,
    summary="Unsubscribe: RFC 8058 one-click, or the page's button",
    openapi_extra=_UNSUB_BODY,
)
async def unsubscribe(request: Request, token: str) -> Response:
    w = web_of(request)
    subscriber_id = w.verify(Purpose.unsubscribe, token)
    if subscriber_id is None:
        return w.pages.problem(request, Problem.invalid_link)
    try:
        fields = await read_fields(request)
    except BadBody:
        fields = Fields()  # a POST to this URL is an unsubscribe request either way
    one_click = fields.first("List-Unsubscribe").strip().lower() == "one-click"
    context = w.context(request, ConsentSource.one_click if one_click else ConsentSource.link)
    if not await run_in_threadpool(_unsubscribe, w, subscriber_id, context):
        return w.pages.problem(request, Problem.invalid_link)
    return w.pages.page(request, "unsubscribed", title="Unsubscribed")


@router.get("/p/{token}", responses=_BAD, summary="The reader's preferences page")
async def preferences(request: Request, token: str) -> Response:
    w = web_of(request)
    subscriber_id = w.verify(Purpose.preferences, token)
    if subscriber_id is None:
        return w.pages.problem(request, Problem.invalid_link)
    return await preferences_page(w, request, token, subscriber_id, saved=False)


@router.post(
    "/p/{token}",
    responses=_BAD,
    summary="Save categories, pause and time zone",
    openapi_extra=openapi_body(
        {
            "categories": {"type": "array", "items": {"type": "string"}},
            "pause_weeks": {"type": "string", "enum": ["keep", "0", "1", "2", "4", "8", "12"]},
            "time_zone": {"type": "string", "description": "an IANA zone, or empty: none"},
        }
    ),
)
async def preferences_save(request: Request, token: str) -> Response:
    w = web_of(request)
    subscriber_id = w.verify(Purpose.preferences, token)
    if subscriber_id is None:
        return w.pages.problem(request, Problem.invalid_link)
    try:
        fields = await read_fields(request)
    except BadBody:
        return w.pages.problem(request, Problem.invalid_link)
    context = w.context(request, ConsentSource.link)
    if not await run_in_threadpool(save_preferences, w, subscriber_id, fields, context):
        return w.pages.problem(request, Problem.invalid_link)
    return await preferences_page(w, request, token, subscriber_id, saved=True)


def _path(request: Request, kind: str, token: str) -> str:
    return f"{str(request.scope.get('root_path', '')).rstrip('/')}/{kind}/{token}"


def _confirmable(w: Web, subscriber_id: int) -> bool:
    with session_scope(w.rt.engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        return subscriber is not None and w.confirmation_current(subscriber)


def _confirm(w: Web, subscriber_id: int, context: Context) -> bool | None:
    """Confirm (committed on return). True: newly active; False: was already active;
    None: not confirmable (unknown, erased or expired by the runtime clock)."""
    with session_scope(w.rt.engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None or not w.confirmation_current(subscriber):
            return None
        was_active = subscriber.status == SubscriberStatus.active
        done = lifecycle.confirm(
            session, subscriber_id=subscriber_id, context=context, now=w.rt.now()
        )
        return None if done is None else not was_active


def _status(w: Web, subscriber_id: int) -> SubscriberStatus | None:
    with session_scope(w.rt.engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        if subscriber is None or subscriber.email.endswith("@erased.invalid"):
            return None
        return SubscriberStatus(subscriber.status)


def _unsubscribe(w: Web, subscriber_id: int, context: Context) -> bool:
    with session_scope(w.rt.engine) as session:
        done = lifecycle.unsubscribe(
            session, subscriber_id=subscriber_id, context=context, now=w.rt.now()
        )
        return done is not None
