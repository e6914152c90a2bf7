"""Tracked links (``/r/{token}/{ref}``) and the optional open pixel
(``/o/{edition_key}/{ref}.gif``); docs/TRACKING.md says what each counts.

=========  =============================  =========================================
GET, HEAD  /r/{link token}/{message ref}  302 to the stored page the token names
                                          (no-store, no referrer); 400 for a bad or
                                          altered token; 404 for a comparison that
                                          is not stored. Counted as a click or a
                                          scanner's hit (HEAD is always a scanner).
GET        /o/{edition key}/{ref}.gif     a 1×1 transparent GIF, counted as an
                                          ``open``; only with ``[tracking] opens``
                                          (404 otherwise)
=========  =============================  =========================================

The route stays off the database: the link's target comes from
:class:`~digest.engagement.clicks.ClickTracker`'s cache (one read per comparison
and cache lifetime, in a worker thread) and counts go into the
:class:`~digest.engagement.counter.ClickCounter`, which a background thread
writes every ``[tracking] flush_seconds``. :func:`install` wraps the app's
lifespan so that shutting down (uvicorn, or a ``TestClient`` used as a context
manager) writes what is pending; :func:`flush` writes it now (tests).

With ``[tracking] clicks = false`` old links still lead to their pages; nothing
is counted.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from digest.config.runtime import Runtime
from digest.engagement.clicks import ClickTracker, UnknownLink
from digest.engagement.counter import ClickCounter
from digest.web.pages import Problem
from digest.web.state import web_of
from subscribers.tokens import BadToken

router = APIRouter(tags=["tracking"])
# The smallest transparent GIF89a: 1×1, one transparent palette entry (43 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_NO_STORE: Mapping[str, str] = {
    "cache-control": "no-store",  # every follow must reach us; a token is no cache key
    "referrer-policy": "no-referrer",  # the target never learns the token or the ref
}
_LINK: dict[int | str, dict[str, Any]] = {
    302: {"description": "To the stored page the link names"},
    400: {"description": "The generic 'this link does not work' page; nothing counted"},
    404: {"description": "The comparison is no longer stored; nothing counted"},
}
_PIXEL: dict[int | str, dict[str, Any]] = {
    200: {"description": "A 1×1 transparent GIF", "content": {"image/gif": {}}},
    400: {"description": "A bad message ref; nothing counted"},
    404: {"description": "Open tracking is off, or no such edition"},
}


def install(app: FastAPI, runtime: Runtime) -> None:
    """The routes and the click counter (``app.state.clicks``). Touches no database:
    the counter's thread starts at the first count; shutting down writes the rest."""
    tracking = runtime.config.tracking
    counter = ClickCounter(runtime.engine, flush_seconds=tracking.flush_seconds)
    tracker = ClickTracker(
        engine=runtime.engine, signer=runtime.signer, counter=counter, tracking=tracking
    )
    app.state.clicks = tracker
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with inner(app_) as state:
            try:
                yield state
            finally:
                await run_in_threadpool(counter.close)

    app.router.lifespan_context = lifespan
    app.include_router(router)


def tracker_of(app: Any) -> ClickTracker:
    tracker = app.state.clicks
    assert isinstance(tracker, ClickTracker)
    return tracker


def flush(app: Any) -> bool:
    """Write the pending counts now (blocking); False if the write failed."""
    return tracker_of(app).counter.flush()


@router.get(
    "/r/{token}/{ref}",
    status_code=302,
    responses=_LINK,
    response_class=Response,
    summary="Follow a tracked link in an email (counted in aggregate)",
)
async def follow(request: Request, token: str, ref: str) -> Response:
    w = web_of(request)
    tracker = tracker_of(request.app)
    try:
        link, message = tracker.read(token, ref)
    except BadToken:
        return w.pages.problem(request, Problem.invalid_link)
    try:
        url = tracker.cached_url(link)
        if url is None:  # the first click on this comparison in a while: one read
            url = await run_in_threadpool(tracker.url, link)
    except UnknownLink:
        return w.pages.problem(request, Problem.not_found)
    if w.rt.config.tracking.clicks:
        tracker.count_click(
            link,
            message,
            method=request.method,
            user_agent=request.headers.get("user-agent", ""),
            now=w.rt.now(),
        )
    return Response(status_code=302, headers={"location": url, **_NO_STORE})


# HEAD is what link scanners send: answered like GET (and counted as a scanner), but
# kept out of the OpenAPI document, where it would repeat GET's operation id.
router.add_api_route(
    "/r/{token}/{ref}", follow, methods=["HEAD"], status_code=302, include_in_schema=False
)


@router.get(
    "/o/{edition_key}/{ref}.gif",
    responses=_PIXEL,
    response_class=Response,
    summary="The open pixel (only with [tracking] opens = true)",
)
async def pixel(request: Request, edition_key: str, ref: str) -> Response:
    w = web_of(request)
    if not w.rt.config.tracking.opens:
        return w.pages.problem(request, Problem.not_found)
    tracker = tracker_of(request.app)
    try:
        message = tracker.tokens.read_ref(ref)
    except BadToken:
        return w.pages.problem(request, Problem.invalid_link)
    known = tracker.known_edition(edition_key, lookup=False)
    if known is None:
        known = await run_in_threadpool(tracker.known_edition, edition_key)
    if not known:
        return w.pages.problem(request, Problem.not_found)
    tracker.count_open(
        edition_key,
        message,
        method=request.method,
        user_agent=request.headers.get("user-agent", ""),
        now=w.rt.now(),
    )
    return Response(PIXEL, media_type="image/gif", headers=dict(_NO_STORE))
