"""Readers' votes: ``/v/{token}/{choice}`` and ``/votes.json``. (issue 16: to be built)"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from digest.config.runtime import Runtime

router = APIRouter(tags=["votes"])


def install(app: FastAPI, runtime: Runtime) -> None:
    app.include_router(router)
