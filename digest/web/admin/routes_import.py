"""Importing readers from the desk: upload, preview (format or column mapping), import.

``GET /admin/import`` is the upload form. ``POST /admin/import/preview`` (editor)
reads the file as ``digest subscribers import`` would, writing nothing: the format it
recognised (:mod:`subscribers.csvformats`) or, for any other CSV, a column mapping
(a select per field, listing the file's headers), and the first rows as they would
import. ``POST /admin/import`` (editor) imports and shows the summary with every
row's error; it is audited (``subscribers.import``, ``import:<file>``, via desk).

Between the two steps the file travels with the form, base64 in a hidden field:
nothing is kept on the server, and the second post is read and checked from
scratch like the first (size cap, UTF-8, every row), so it trusts the client with
nothing the upload itself did not.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from digest.config.runtime import Runtime
from digest.store import audit
from digest.store.db import session_scope
from digest.web.admin.auth import Operator
from digest.web.admin.deps import CSRF_FIELD, PAGE_HEADERS, Authenticated, Editor, desk_of, form
from digest.web.forms import Fields, accepts_upload, openapi_body
from digest.web.state import web_of
from subscribers import csvformats, csvio
from subscribers.errors import SubscriberInputError

MAX_UPLOAD = 8 * 1024 * 1024  # bigger lists: ``digest subscribers import``
MAPPED = ("email", "name", "categories", "created_at")  # the fields the form maps
PREVIEW_ROWS = 5
_FIELDS = {
    "file": {"type": "string", "format": "binary"},
    "content": {"type": "string", "description": "the file, base64 (from the preview)"},
    "filename": {"type": "string"},
    "format": {"type": "string", "enum": ["", *csvformats.FORMATS]},
    "consent": {"type": "string", "description": "where the list's consent came from"},
    **{f"map_{name}": {"type": "string"} for name in MAPPED},
    **CSRF_FIELD,
}


def register(router: APIRouter) -> None:
    router.add_api_route("/import", import_page, methods=["GET"])
    extra = openapi_body(_FIELDS)
    router.add_api_route("/import/preview", preview, methods=["POST"], openapi_extra=extra)
    router.add_api_route("/import", do_import, methods=["POST"], openapi_extra=extra)


@dataclass(slots=True)
class Choice:
    """The file and what the operator chose for it."""

    name: str
    data: bytes
    forced: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    consent: str = ""

    @property
    def content(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


def _choice(fields: Fields) -> Choice:
    """Raises ValueError with what is missing or wrong."""
    upload = fields.files.get("file")
    if upload is not None and (upload.data or upload.filename):
        name, data = upload.filename, upload.data
    else:
        name = fields.first("filename")
        try:
            data = base64.b64decode(fields.first("content"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the file did not come through; choose it again") from None
    if not data:
        raise ValueError("choose a CSV file to import (it is empty or missing)")
    if len(data) > MAX_UPLOAD:
        raise ValueError(f"the file is larger than {MAX_UPLOAD // 2**20} MiB")
    forced = fields.first("format") or None
    mapping = {f: c for f in MAPPED if (c := fields.first(f"map_{f}"))}
    name = PurePath(name.replace("\\", "/")).name[:120] or "upload.csv"
    return Choice(name, data, forced, mapping, fields.first("consent").strip()[:200])


async def import_page(request: Request, who: Authenticated) -> Response:
    return _page(request, who, stage="upload")


@accepts_upload(MAX_UPLOAD)
async def preview(request: Request, who: Editor) -> Response:
    try:
        choice = _choice(await form(request))
    except ValueError as exc:
        return _page(request, who, stage="upload", problem=str(exc), status=400)
    found = await run_in_threadpool(_preview, web_of(request).rt, choice)
    return _page(request, who, stage="preview", choice=choice, **found)


@accepts_upload(MAX_UPLOAD)
async def do_import(request: Request, who: Editor) -> Response:
    try:
        choice = _choice(await form(request))
    except ValueError as exc:
        return _page(request, who, stage="upload", problem=str(exc), status=400)
    rt = web_of(request).rt
    try:
        report = await run_in_threadpool(_import, rt, who, choice)
    except SubscriberInputError:  # the preview says why, and offers the mapping
        found = await run_in_threadpool(_preview, rt, choice)
        return _page(request, who, stage="preview", choice=choice, status=400, **found)
    return _page(request, who, stage="done", choice=choice, report=report, problem="")


def _preview(rt: Runtime, choice: Choice) -> dict[str, Any]:
    """What the preview page shows: the format or the headers to map, the first rows."""
    found: dict[str, Any] = {"columns": [], "rows": [], "report": None, "problem": ""}
    try:
        report, rows = csvio.preview_csv(
            stream=io.BytesIO(choice.data),
            now=rt.now(),
            file_name=choice.name,
            forced=choice.forced,
            mapping=choice.mapping,
            consent_source=choice.consent or None,
            max_bytes=MAX_UPLOAD,
            limit=PREVIEW_ROWS,
        )
    except csvformats.UnknownFormat as exc:
        found |= {"columns": exc.headers, "problem": "Not a recognised export: say which "
                  "column is which, then preview again."}  # fmt: skip
        return found
    except csvio.CsvFileError as exc:
        return found | {"problem": exc.about(choice.name)}
    except SubscriberInputError as exc:
        return found | {"columns": _headers(choice.data), "problem": str(exc)}
    return found | {"columns": report.headers, "rows": rows, "report": report}


def _headers(data: bytes) -> list[str]:
    """The header row, for the mapping form after a refused mapping."""
    first = data.decode("utf-8", "replace").lstrip("\ufeff").splitlines()[:1]
    return [h.strip() for h in next(csv.reader(first), [])]


def _import(rt: Runtime, who: Operator, choice: Choice) -> csvio.ImportReport:
    with session_scope(rt.engine) as session:
        report = csvio.import_csv(
            session,
            stream=io.BytesIO(choice.data),
            source=f"import:{choice.name}",
            now=rt.now(),
            consent_source=choice.consent or None,
            max_bytes=MAX_UPLOAD,
            file_name=choice.name,
            forced=choice.forced,
            mapping=choice.mapping,
        )
        audit.record(
            session,
            actor=who.actor,
            via="desk",
            action="subscribers.import",
            target=f"import:{choice.name}",
            detail=report.summary(),
            now=rt.now(),
        )
    return report


def _page(
    request: Request, who: Operator, *, stage: str, status: int = 200, **context: Any
) -> Response:
    context.setdefault("problem", "")
    context |= {
        "stage": stage,
        "formats": list(csvformats.FORMATS),
        "mapped": MAPPED,
        "max_mib": MAX_UPLOAD // 2**20,
        "csrf": desk_of(request).guard.csrf_token(who.sid),
        "who": who,
    }
    return web_of(request).pages.page(
        request, "admin/import", status=status, headers=PAGE_HEADERS, title="Import", **context
    )
