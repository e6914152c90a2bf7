"""The editors' statistics on the desk (issue 16), for any signed-in operator.

=======  ==========================  ==============================================
GET      /admin/stats                the last :data:`~digest.engagement.stats.TRENDS`
                                     editions as charts and a table, then the latest
                                     edition's figures, links and votes
GET      /admin/stats/{key}          one edition's figures, links and votes
GET      /admin/stats.csv            the trends, one row per edition
GET      /admin/stats/{key}.csv      one edition, one row per link
=======  ==========================  ==============================================

The figures and their rules are :mod:`digest.engagement.stats`'s; the charts are
server-rendered SVG (:mod:`digest.engagement.charts`, escaped as they are built),
so the page needs no script (the desk's CSP allows none). An unknown key is a 404
page (or a one-line 404 for the CSV), never a traceback.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from digest.config.runtime import Runtime
from digest.engagement import charts, stats
from digest.web.admin.auth import Operator
from digest.web.admin.deps import PAGE_HEADERS, Authenticated, desk_of, utc_minute
from digest.web.state import web_of

MAX_KEY = 16  # longer than any edition key (or unprintable): refused unasked


def register(router: APIRouter) -> None:
    router.add_api_route("/stats", stats_page, methods=["GET"])
    router.add_api_route("/stats.csv", trends_csv, methods=["GET"])
    # The CSV route first: "/stats/{key}" would take "2026-W48.csv" as a key.
    router.add_api_route("/stats/{key}.csv", edition_csv, methods=["GET"])
    router.add_api_route("/stats/{key}", edition_page, methods=["GET"])


def _trends(rt: Runtime) -> list[stats.EditionStats]:
    with Session(rt.engine) as session:
        return stats.trends(session)


def _one(rt: Runtime, key: str) -> stats.EditionStats:
    if len(key) > MAX_KEY or not key.isprintable():  # PostgreSQL refuses a NUL
        raise stats.NoSuchEdition(key)
    with Session(rt.engine) as session:
        return stats.edition_stats(session, key)


def _page(request: Request, who: Operator, title: str, **context: Any) -> Response:
    status = context.pop("status", 200)
    return web_of(request).pages.page(
        request, "admin/stats", status=status, headers=PAGE_HEADERS, title=title, who=who,
        csrf=desk_of(request).guard.csrf_token(who.sid), **context,
    )  # fmt: skip


def _edition_view(found: stats.EditionStats) -> dict[str, Any]:
    """What the template shows of one edition (numbers as the table prints them)."""
    return {
        "stats": found,
        "sent_at": utc_minute(found.planned_at) or "not sent yet",
        "click_rate": _rate(found.click_rate),
    }


def _rate(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.1f}%"


async def stats_page(request: Request, who: Authenticated) -> Response:
    found = await run_in_threadpool(_trends, web_of(request).rt)
    rows = [_edition_view(s) for s in found]
    return _page(
        request,
        who,
        "Statistics",
        trends=rows,
        any_opens=any(s.opens for s in found),
        charts=[charts.sent_and_clicks(found), charts.click_rate(found), charts.votes(found)],
        edition=_edition_view(found[-1]) if found else None,
        problem="",
    )


async def edition_page(request: Request, key: str, who: Authenticated) -> Response:
    try:
        found = await run_in_threadpool(_one, web_of(request).rt, key)
    except stats.NoSuchEdition as exc:
        return _page(
            request, who, "No such edition", trends=None, any_opens=False, charts=[],
            edition=None, problem=str(exc), status=404,
        )  # fmt: skip
    return _page(
        request,
        who,
        f"Statistics of {found.key}",
        trends=None,
        any_opens=False,
        charts=[],
        edition=_edition_view(found),
        problem="",
    )


def _csv(body: str, name: str) -> Response:
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


async def trends_csv(request: Request, who: Authenticated) -> Response:
    found = await run_in_threadpool(_trends, web_of(request).rt)
    return _csv(stats.to_csv(found), "stats.csv")


async def edition_csv(request: Request, key: str, who: Authenticated) -> Response:
    try:
        found = await run_in_threadpool(_one, web_of(request).rt, key)
    except stats.NoSuchEdition as exc:
        return Response(f"{exc}\n", status_code=404, media_type="text/plain; charset=utf-8")
    name = re.sub(r"[^A-Za-z0-9-]", "_", found.key)  # a key is 2026-W48; be sure anyway
    return _csv(stats.links_to_csv(found), f"stats-{name}.csv")
