"""``/subscribe``: the sign-up form and its double opt-in request.

The answer to a sign-up never tells whether the address was known: the same
status and the same body bytes for a new, pending, active or unsubscribed
address (so the answer holds no CSRF token, timestamp or echo of the request), and
the confirmation email goes out in a background task after the response, so the
timing does not tell either. A filled honeypot gets that same answer and nothing
is stored or sent. Only an unusable address gets a different answer (400), and
it names the problem with the address, not the address's state.

Optional checks (``[web]``): ``proof_of_work`` needs a solved, unexpired, unused
ALTCHA challenge in the field ``altcha`` (form or JSON; :mod:`digest.web.proof_of_work`),
checked before anything else about the request; ``block_disposable_domains``
refuses throwaway-mail domains (:mod:`digest.web.disposable`). Either refusal is a
400 with one sentence, and nothing is stored or sent.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, BackgroundTasks
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from digest.store.db import session_scope
from digest.web import catalog, disposable, proof_of_work
from digest.web.forms import BadBody, Fields, openapi_body, read_fields, wants_json
from digest.web.pages import Problem
from digest.web.ratelimit import client_ip
from digest.web.state import Web, web_of
from subscribers import lifecycle
from subscribers.consent import Context
from subscribers.errors import SubscriberInputError
from subscribers.models import ConsentSource

router = APIRouter(tags=["sign-up"])
HONEYPOT = "website"  # a field people never see; bots fill it
_SIGNUP_FIELDS = {
    "email": {"type": "string", "format": "email", "maxLength": 320},
    "name": {"type": "string", "maxLength": 200, "description": "optional"},
    "categories": {
        "type": "array",
        "items": {"type": "string"},
        "description": "feed categories; none = all",
    },
    HONEYPOT: {"type": "string", "description": "honeypot: leave empty"},
    proof_of_work.FIELD: {
        "type": "string",
        "description": "the ALTCHA widget's payload (base64); needed when [web] proof_of_work "
        "is on (challenge: GET /subscribe/challenge)",
    },
}
_EMPTY_FORM = {"email": "", "name": "", "categories": ()}


@router.get("/subscribe", response_class=HTMLResponse, summary="The sign-up form")
async def subscribe_form(request: Request) -> Response:
    w = web_of(request)
    categories = await run_in_threadpool(_categories, w)
    return _form_page(w, request, categories, _EMPTY_FORM, problem="", status=200)


@router.post(
    "/subscribe",
    response_class=HTMLResponse,
    summary="Ask to subscribe (double opt-in: a confirmation email is sent)",
    openapi_extra=openapi_body(_SIGNUP_FIELDS, required=["email"], json_too=True),
    responses={
        200: {"description": '\'Check your inbox\' page, or {"status": "ok"} for JSON'},
        400: {
            "description": "The address (or the body) cannot be used, or the anti-robot check "
            "failed; says why"
        },
        429: {"description": "Too many sign-ups from this client; see Retry-After"},
    },
)
async def subscribe(request: Request, background: BackgroundTasks) -> Response:
    w = web_of(request)
    as_json = wants_json(request)
    ip = client_ip(request)
    retry_after = w.limiter.hit(ip)
    if retry_after is not None:
        headers = {"Retry-After": str(retry_after)}
        if as_json:
            return JSONResponse({"status": "error", "error": "too many requests"}, 429, headers)
        return w.pages.problem(request, Problem.too_many, headers=headers)
    try:
        fields = await read_fields(request)
    except BadBody as exc:
        return await _refuse(w, request, Fields(is_json=as_json), str(exc))
    solved: proof_of_work.Solved | None = None
    pow_ = proof_of_work.of(request)
    if pow_ is not None:
        solved = await run_in_threadpool(pow_.check, fields.first(proof_of_work.FIELD))
        if solved is None:
            return await _refuse(w, request, fields, proof_of_work.FAILED)
    if fields.first(HONEYPOT).strip():
        return _accepted(w, request, as_json)
    email = fields.first("email").strip()
    if not email:
        return await _refuse(w, request, fields, "Please enter your email address.")
    if w.rt.config.web.block_disposable_domains and disposable.is_disposable(email):
        return await _refuse(w, request, fields, disposable.REFUSED)
    context = w.context(request, ConsentSource.form)
    try:
        to_send = await run_in_threadpool(_request, w, fields, context, solved)
    except SubscriberInputError as exc:
        return await _refuse(w, request, fields, f"This address cannot be used: {exc}")
    except proof_of_work.AlreadyUsed:
        return await _refuse(w, request, fields, proof_of_work.FAILED)
    if to_send is not None:
        background.add_task(w.mailer.send_confirmation, *to_send)
    return _accepted(w, request, as_json)


def _request(
    w: Web, fields: Fields, context: Context, solved: proof_of_work.Solved | None
) -> tuple[int, str] | None:
    """Record the request (committed on return) and claim its proof-of-work solution
    in the same transaction. Returns (subscriber id, address) when a confirmation
    email should go out now. Raises SubscriberInputError, proof_of_work.AlreadyUsed."""
    with session_scope(w.rt.engine) as session:
        if solved is not None:
            proof_of_work.claim(session, solved, w.rt.now())
        known = set(catalog.feed_categories(session))
        result = lifecycle.request_subscription(
            session,
            email=fields.first("email"),
            name=fields.first("name"),
            categories=[c for c in fields.all("categories") if c in known],
            context=context,
            now=w.rt.now(),
            resend_after=timedelta(minutes=w.rt.config.web.confirm_resend_minutes),
        )
        if not result.send_confirmation:
            return None
        session.flush()
        subscriber = result.subscriber
        assert subscriber.id is not None
        return subscriber.id, subscriber.email


def _categories(w: Web) -> list[str]:
    with session_scope(w.rt.engine) as session:
        return catalog.feed_categories(session)


def _accepted(w: Web, request: Request, as_json: bool) -> Response:
    if as_json:
        return JSONResponse({"status": "ok"})
    return w.pages.page(request, "check_inbox", title="Check your inbox")


async def _refuse(w: Web, request: Request, fields: Fields, problem: str) -> Response:
    if fields.is_json or wants_json(request):
        return JSONResponse({"status": "error", "error": problem}, status_code=400)
    categories = await run_in_threadpool(_categories, w)
    form = {
        "email": fields.first("email")[:320],
        "name": fields.first("name")[:200],
        "categories": fields.all("categories"),
    }
    return _form_page(w, request, categories, form, problem=problem, status=400)


def _form_page(
    w: Web,
    request: Request,
    categories: list[str],
    form: object,
    *,
    problem: str,
    status: int,
) -> Response:
    widget = proof_of_work.of(request) is not None
    return w.pages.page(
        request,
        "subscribe",
        status=status,
        headers={"Content-Security-Policy": proof_of_work.SIGNUP_CSP} if widget else None,
        proof_of_work=widget,
        title="Subscribe",
        categories=categories,
        form=form,
        problem=problem,
        consent_version=w.rt.config.web.consent_version,
    )
