"""``GET /healthz`` (liveness) and ``GET /readyz`` (readiness), for monitors and
load balancers. Both are open without a login, so they say nothing else.

- ``/healthz``: 200 ``{"ok": true}`` whenever this process answers at all. It
  reads nothing (no database, no feed): restart the process when it stops.
- ``/readyz``: 200 ``{"ready": true}`` when the database answers ``SELECT 1``
  within :data:`READY_TIMEOUT_SECONDS`, else 503 ``{"ready": false}``: send no
  readers here until it recovers.

Neither names an incident, a feed, a URL or a run: a feed URL may carry a
credential, and what needs a human is for ``digest check`` (exit code, one email
per incident), ``digest status`` and the operator desk. Both answers carry
``Cache-Control: no-store``.

The probe runs in its own daemon thread, one at a time per app: a request while
one is still out waits for that one (at most the timeout), so a database that
hangs ties up one thread, not one per monitor request.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

from fastapi import APIRouter
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse

from digest.web.state import web_of

READY_TIMEOUT_SECONDS = 3.0
NO_STORE = {"Cache-Control": "no-store"}

router = APIRouter()


@router.get("/healthz", summary="Liveness: the process serves", tags=["health"])
async def healthz() -> JSONResponse:
    return JSONResponse({"ok": True}, headers=NO_STORE)


@router.get("/readyz", summary="Readiness: the database answers", tags=["health"])
async def readyz(request: Request) -> JSONResponse:
    probe = getattr(request.app.state, "readiness", None)
    if not isinstance(probe, Probe):
        probe = request.app.state.readiness = Probe()
    ready = await probe.ready(web_of(request).rt.engine, timeout=READY_TIMEOUT_SECONDS)
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503, headers=NO_STORE)


class Probe:
    """``SELECT 1`` in a daemon thread, at most one in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: Future[None] | None = None

    async def ready(self, engine: Engine, *, timeout: float) -> bool:
        """Whether the database answered within ``timeout`` seconds."""
        outcome = asyncio.wrap_future(self._start(engine))
        try:
            # shield: a timeout leaves the probe running (a thread cannot be stopped);
            # the next request waits for the same one instead of starting another.
            await asyncio.wait_for(asyncio.shield(outcome), timeout)
        except Exception:  # timed out, or the database refused: not ready, either way
            return False
        return True

    def _start(self, engine: Engine) -> Future[None]:
        with self._lock:
            if self._running is None or self._running.done():
                self._running = Future()
                worker = threading.Thread(
                    target=_select_one,
                    args=(engine, self._running),
                    name="digest-readyz",
                    daemon=True,
                )
                worker.start()
            return self._running


def _select_one(engine: Engine, outcome: Future[None]) -> None:
    """A pooled DBAPI connection, not a SQLAlchemy transaction: on SQLite those
    start with ``BEGIN IMMEDIATE`` (:mod:`digest.store.db`), which would wait for a
    writer's lock and call a busy database unready."""
    if not outcome.set_running_or_notify_cancel():
        return
    try:
        conn = engine.raw_connection()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            cursor.close()
        finally:
            conn.close()  # back to the pool (which rolls back)
    except BaseException as exc:  # handed to the waiting request, which says 503
        outcome.set_exception(exc)
    else:
        outcome.set_result(None)
