"""The public archive: ``/archive``, ``/archive/{key}`` (web version), ``/archive.xml``.

Only *sent* editions are public. The web version is the web copy stored when the
edition started sending (:mod:`digest.engagement.snapshot`: the same templates as
the email, with whole titles and quotes and the readers' vote beside the panel's),
its personal slots pointing at ``/links``, a page that says those links are
personal and live in the email: the web version never holds a token. It is the
target of every email's "View in browser" link (``{base_url}/archive/{key}``).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from digest import pipeline
from digest.editions import lifecycle as editions
from digest.engagement import snapshot
from digest.render.view import week_label
from digest.store.db import session_scope
from digest.store.models import Edition
from digest.web import catalog
from digest.web.atom import FeedEntry, build_feed
from digest.web.pages import Problem
from digest.web.security import ARCHIVE_CSP
from digest.web.state import Web, web_of

router = APIRouter(tags=["archive"])
PUBLIC_CACHE = {"Cache-Control": "public, max-age=300"}


@router.get("/archive", response_class=HTMLResponse, summary="Sent editions, newest first")
async def archive(request: Request) -> Response:
    w = web_of(request)
    sent = await run_in_threadpool(_sent, w)
    root = str(request.scope.get("root_path", "")).rstrip("/")
    items = [
        {
            "key": s.edition.key,
            "url": f"{root}/archive/{s.edition.key}",
            "week_label": week_label(s.edition.key),
            "titles": s.titles,
        }
        for s in sent
    ]
    return w.pages.page(
        request, "archive", title="Past editions", editions=items, headers=PUBLIC_CACHE
    )


@router.get(
    "/archive.xml",
    response_class=Response,
    summary="Atom feed of sent editions",
    responses={200: {"content": {"application/atom+xml": {}}}},
)
async def archive_feed(request: Request) -> Response:
    w = web_of(request)
    sent = await run_in_threadpool(_sent, w)
    base = w.rt.config.site.base_url.rstrip("/")
    entries = [
        FeedEntry(
            key=s.edition.key,
            title=f"{w.rt.config.site.name} · {week_label(s.edition.key)}",
            url=f"{base}/archive/{s.edition.key}",
            updated=_updated(s.edition),
            titles=s.titles,
        )
        for s in sent
    ]
    body = build_feed(
        title=w.rt.config.site.name,
        site_url=f"{base}/archive",
        self_url=f"{base}/archive.xml",
        entries=entries,
        updated=max((e.updated for e in entries), default=w.rt.now()),
    )
    return Response(body, media_type="application/atom+xml", headers=PUBLIC_CACHE)


@router.get(
    "/archive/{key}",
    response_class=HTMLResponse,
    summary="The web version of a sent edition",
    responses={404: {"description": "No sent edition with this key"}},
)
async def archive_edition(request: Request, key: str) -> Response:
    w = web_of(request)
    html = await run_in_threadpool(_web_version, w, key)
    if html is None:
        return w.pages.problem(request, Problem.not_found)
    headers = {**PUBLIC_CACHE, "Content-Security-Policy": ARCHIVE_CSP}
    return HTMLResponse(html, headers=headers)


@router.get("/links", response_class=HTMLResponse, summary="Where the personal links are")
async def personal_links(request: Request) -> Response:
    w = web_of(request)
    return w.pages.page(request, "links", title="Your personal links", headers=PUBLIC_CACHE)


def _sent(w: Web) -> list[catalog.SentEdition]:
    with session_scope(w.rt.engine) as session:
        return catalog.sent_editions(session)


def _web_version(w: Web, key: str) -> str | None:
    """The web copy as it was sent (stored when it started sending); an edition sent
    before web copies were kept is rendered from its stored comparisons. The readers'
    vote beside each tool is as of now."""
    links = f"{w.rt.config.site.base_url.rstrip('/')}/links"
    with session_scope(w.rt.engine) as session:
        edition = catalog.sent_edition(session, key=key)
        if edition is None or edition.id is None:
            return None
        stored = snapshot.load(session, edition.id)
        if stored is not None:
            return stored.html_with(snapshot.web_values(session, stored, links))
        comparisons = editions.comparisons_of(session, edition=edition)
    digest = pipeline.render(w.rt, edition.key, comparisons, web_copy=True, max_html_bytes=1 << 30)
    with session_scope(w.rt.engine) as session:
        return digest.html_with(snapshot.web_values(session, digest, links))


def _updated(edition: Edition) -> datetime:
    return edition.finished_at or edition.planned_at or edition.composed_at
