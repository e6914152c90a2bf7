"""(being written)"""

from __future__ import annotations

from fastapi import APIRouter


def register(router: APIRouter) -> None:
    return None
