"""The audit log on the desk, for any signed-in operator (viewers included).

=======  =============================================  ===================================
GET      /admin/audit?target=&action=&before=           newest first, :data:`PAGE` a page
GET      /admin/audit.csv?target=&action=               the same entries as CSV (newest
                                                        first, at most :data:`CSV_LIMIT`)
=======  =============================================  ===================================

Filters are exact (``target=edition:2026-W48``, ``action=operator.role``);
``before`` is the id of the last entry of the previous page. The CSV is made by
:func:`digest.store.audit.to_csv` (cells a spreadsheet would run are made inert).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from digest.config.runtime import Runtime
from digest.store import audit
from digest.web.admin.deps import PAGE_HEADERS, Authenticated, desk_of
from digest.web.state import web_of

PAGE = 50
CSV_LIMIT = 50_000


def register(router: APIRouter) -> None:
    router.add_api_route("/audit", audit_page, methods=["GET"])
    router.add_api_route("/audit.csv", audit_csv, methods=["GET"])


@dataclass(frozen=True, slots=True)
class Filters:
    target: str
    action: str
    before: int | None

    @classmethod
    def of(cls, request: Request) -> Filters:
        q = request.query_params
        raw = q.get("before", "").strip()
        before = int(raw) if raw.isdigit() and len(raw) < 18 else None
        return cls(q.get("target", "").strip()[:200], q.get("action", "").strip()[:60], before)

    def query(self, **more: Any) -> str:
        values = {"target": self.target, "action": self.action, **more}
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


def _entries(rt: Runtime, f: Filters, limit: int) -> list[dict[str, Any]]:
    with Session(rt.engine) as session:
        found = audit.recent(
            session, limit=limit, target=f.target, action=f.action, before_id=f.before
        )
        return [
            {
                "id": e.id,
                "at": e.at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                "actor": e.actor,
                "via": e.via,
                "action": e.action,
                "target": e.target,
                "detail": e.detail,
            }
            for e in found
        ]


async def audit_page(request: Request, who: Authenticated) -> Response:
    w = web_of(request)
    f = Filters.of(request)
    rows = await run_in_threadpool(_entries, w.rt, f, PAGE + 1)
    more, rows = len(rows) > PAGE, rows[:PAGE]
    return w.pages.page(
        request,
        "admin/audit",
        headers=PAGE_HEADERS,
        title="Audit log",
        rows=rows,
        target=f.target,
        action=f.action,
        paged=f.before is not None,
        first_page=f.query(),
        older=f.query(before=rows[-1]["id"]) if more and rows else "",
        csv_query=f.query(),
        csrf=desk_of(request).guard.csrf_token(who.sid),
        who=who,
    )


def _csv(rt: Runtime, f: Filters) -> str:
    with Session(rt.engine) as session:
        found = audit.recent(
            session, limit=CSV_LIMIT, target=f.target, action=f.action, before_id=f.before
        )
        return audit.to_csv(found)


async def audit_csv(request: Request, who: Authenticated) -> Response:
    body = await run_in_threadpool(_csv, web_of(request).rt, Filters.of(request))
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="audit.csv"',
            "Cache-Control": "no-store",
        },
    )
