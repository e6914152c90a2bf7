"""``GET /healthz``: what ``digest check`` and ``digest status`` know, as JSON.

200 when nothing needs a human, 503 when something does (a monitor needs only the
status code). Read-only: it never emails the operators (``digest check`` and the
scheduler do, once per incident). Feed errors are left out: they may carry a
feed URL with a credential in it, and this route needs no login.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from digest import health
from digest.web.state import web_of

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz(request: Request) -> JSONResponse:
    rt = web_of(request).rt
    report = await asyncio.to_thread(health.report, rt, now=rt.now())
    public: dict[str, Any] = {
        "ok": report["ok"],
        "now": report["now"],
        "incidents": [i["name"] for i in report["incidents"]],
        "next_fires": report["next_fires"],
        "last_runs": {
            job: {k: run[k] for k in ("started_at", "finished_at", "outcome")}
            for job, run in report["last_runs"].items()
        },
        "feeds": [
            {k: f[k] for k in ("last_success_at", "consecutive_failures")} for f in report["feeds"]
        ],
        "current_edition": report["current_edition"],
    }
    headers = {"Cache-Control": "no-store"}
    return JSONResponse(public, status_code=200 if report["ok"] else 503, headers=headers)
