"""Readers' votes: ``/v/{token}/{choice}`` and the public counts ``/votes.json``.

Under each tool the digest links ``{base_url}/v/{vote token}/ship`` and ``…/skip``
(:meth:`digest.engagement.tokens.EngagementTokens.vote`). As with every link in an
email (:mod:`digest.web.routes_links`), the GET only shows the question and a
button: mail scanners fetch every link, so only the POST records. The signed token
is the credential (it names the reader, the comparison and the tool), so the POST
needs no other CSRF token: a forged form can only cast the vote its token names.

- A bad or altered token: the generic 400 page; a choice other than ``ship`` or
  ``skip``: 404. A reader who is not active (pending, unsubscribed, bounced,
  complained) gets 403, one who is gone (forgotten) or a comparison or tool that is
  no longer stored 410: a page that says why without saying who.
- Both are limited per client address (:data:`PER_MINUTE`, 429 with Retry-After).
- ``GET /votes.json`` (every stored comparison with tools) and
  ``GET /votes/{comparison_id}.json``: the counts for the comparison site, public,
  cacheable (``[votes] public_cache_seconds``) and readable from any origin.

With ``[votes] enabled = false`` none of these routes exists (404).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from digest.config.runtime import Runtime
from digest.engagement import votes
from digest.engagement.tokens import EngagementTokens, VoteTarget
from digest.store.db import session_scope
from digest.web.pages import Problem
from digest.web.ratelimit import SlidingWindow, client_ip
from digest.web.state import Web, web_of
from subscribers.tokens import BadToken

router = APIRouter(tags=["votes"])
PER_MINUTE = 60  # vote pages and votes per client address
JSON_PER_MINUTE = 300  # reads of the public counts per client address
Choice = Literal["ship", "skip"]
_PAGES: dict[int | str, dict[str, Any]] = {
    400: {"description": "The generic 'this link does not work' page; nothing changed"},
    403: {"description": "The reader's subscription is not active: nothing recorded"},
    404: {"description": "Not a choice (ship or skip)"},
    410: {"description": "The reader, comparison or tool is gone: nothing recorded"},
    429: {"description": "Too many requests from this address"},
}
_GONE = (votes.Refusal.gone, votes.Refusal.no_comparison, votes.Refusal.no_tool)


def install(app: FastAPI, runtime: Runtime) -> None:
    """The routes, unless ``[votes] enabled = false``. Touches no database."""
    if not runtime.config.votes.enabled:
        return
    app.state.vote_limits = (SlidingWindow(PER_MINUTE), SlidingWindow(JSON_PER_MINUTE))
    app.include_router(router)


@router.get(
    "/v/{token}/{choice}",
    response_class=HTMLResponse,
    responses=_PAGES,
    summary="Vote page: 'Ship it or skip it?' with one button (records nothing)",
)
async def vote_page(request: Request, token: str, choice: Choice) -> Response:
    w = web_of(request)
    target = _gate(request, w, token)
    if isinstance(target, Response):
        return target
    found = await run_in_threadpool(_ballot, w, target)
    if isinstance(found, votes.Refusal):
        return _refused(request, w, found)
    other = _other(choice)
    return w.pages.page(
        request,
        "vote",
        title="Ship it or skip it?",
        ballot=_view(found),
        choice_label=votes.LABELS[choice],
        action=_path(request, token, choice),
        other_label=votes.LABELS[other],
        other_url=_path(request, token, other),
        current_label=votes.LABELS.get(found.current or "", ""),
    )


@router.post(
    "/v/{token}/{choice}",
    response_class=HTMLResponse,
    responses=_PAGES,
    summary="Cast or change the vote the token names (the token is the credential)",
)
async def vote(request: Request, token: str, choice: Choice) -> Response:
    w = web_of(request)
    target = _gate(request, w, token)
    if isinstance(target, Response):
        return target
    outcome, board = await run_in_threadpool(_record, w, target, choice)
    if outcome.refused is not None or outcome.ballot is None:
        return _refused(request, w, outcome.refused or votes.Refusal.gone)
    label, tool = votes.LABELS[choice], outcome.ballot.tool_name
    verb = "is changed" if outcome.changed else "is in"
    other = _other(choice)
    return w.pages.page(
        request,
        "voted",
        title="Your vote " + verb,
        heading=f"Your vote {verb}: {label} for {tool}",
        again=outcome.previous == choice,
        ballot=_view(outcome.ballot),
        tools=_rows(board),
        other_label=votes.LABELS[other],
        other_url=_path(request, token, other),
    )


@router.get("/votes.json", summary="Readers' vote counts for every comparison with tools")
async def all_votes(request: Request) -> Response:
    w = web_of(request)
    if (wait := request.app.state.vote_limits[1].hit(client_ip(request))) is not None:
        return _json({"error": "too many requests"}, 429, {"Retry-After": str(wait)})
    found = await run_in_threadpool(_boards, w, None)
    comparisons = [b.as_json() for b in found]
    return _json({"generated_at": _now(w), "comparisons": comparisons}, 200, _public(w))


@router.get(
    "/votes/{comparison_id}.json",
    summary="Readers' vote counts for one comparison",
    responses={404: {"description": "No stored comparison with tools has this id"}},
)
async def one_comparison(request: Request, comparison_id: str) -> Response:
    w = web_of(request)
    if (wait := request.app.state.vote_limits[1].hit(client_ip(request))) is not None:
        return _json({"error": "too many requests"}, 429, {"Retry-After": str(wait)})
    found = await run_in_threadpool(_boards, w, [comparison_id])
    if not found:
        return _json({"error": "no such comparison"}, 404, {"Access-Control-Allow-Origin": "*"})
    return _json({**found[0].as_json(), "generated_at": _now(w)}, 200, _public(w))


def _gate(request: Request, w: Web, token: str) -> VoteTarget | Response:
    """What the token names, or the answer: the rate limit's, or the bad link page."""
    wait = request.app.state.vote_limits[0].hit(client_ip(request))
    if wait is not None:
        message = "Too many votes from your network. Nothing was recorded; try again shortly."
        headers = {"Retry-After": str(wait)}
        return w.pages.page(
            request,
            "error",
            status=429,
            headers=headers,
            title="Too many requests",
            message=message,
        )
    try:
        return EngagementTokens(w.rt.signer()).read_vote(token)
    except BadToken:
        return w.pages.problem(request, Problem.invalid_link)


def _refused(request: Request, w: Web, why: votes.Refusal) -> Response:
    status = 410 if why in _GONE else 403
    message = f"{votes.REASONS[why]} Nothing was recorded."
    title = "This vote was not counted"
    return w.pages.page(request, "error", status=status, title=title, message=message)


def _ballot(w: Web, target: VoteTarget) -> votes.Ballot | votes.Refusal:
    with session_scope(w.rt.engine) as session:
        return votes.ballot(session, target)


def _record(w: Web, target: VoteTarget, choice: str) -> tuple[votes.VoteOutcome, list[votes.Board]]:
    with session_scope(w.rt.engine) as session:
        outcome = votes.record_vote(session, target, choice, now=w.rt.now())
        if outcome.refused is not None:
            return outcome, []
        return outcome, votes.boards(session, [target.comparison_id])


def _boards(w: Web, ids: list[str] | None) -> list[votes.Board]:
    with session_scope(w.rt.engine) as session:
        return votes.boards(session, ids)


def _view(ballot: votes.Ballot) -> dict[str, str]:
    names = ("title", "url", "tool_name", "tagline")
    return {name: str(getattr(ballot, name)) for name in names}


def _rows(found: list[votes.Board]) -> list[dict[str, Any]]:
    return list(found[0].as_json()["tools"]) if found else []


def _other(choice: str) -> str:
    return "skip" if choice == "ship" else "ship"


def _path(request: Request, token: str, choice: str) -> str:
    return f"{str(request.scope.get('root_path', '')).rstrip('/')}/v/{token}/{choice}"


def _now(w: Web) -> str:
    return w.rt.now().isoformat(timespec="seconds").replace("+00:00", "Z")


def _public(w: Web) -> dict[str, str]:
    seconds = w.rt.config.votes.public_cache_seconds
    return {"Cache-Control": f"public, max-age={seconds}", "Access-Control-Allow-Origin": "*"}


def _json(data: dict[str, Any], status: int, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=headers)
