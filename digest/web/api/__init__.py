"""``/api/v1`` (being written)."""

from __future__ import annotations

from fastapi import FastAPI

from digest.config.runtime import Runtime


def install(app: FastAPI, rt: Runtime) -> None:
    return None
