"""The desk's statistics page. (issue 16: to be built)"""

from __future__ import annotations

from fastapi import APIRouter


def register(router: APIRouter) -> None:
    return None
