"""Request bodies as plain fields: form-urlencoded, multipart, or JSON.

Routes read bodies themselves (one parser for three encodings) and describe them
to OpenAPI with :func:`openapi_body`, so ``/openapi.json`` still documents every
form endpoint.

File uploads are refused except where a route's endpoint is marked with
:func:`accepts_upload`: there a multipart body may carry one file of up to the
marked size (with a ``Content-Length``, checked before the body is read).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs

from starlette.datastructures import UploadFile
from starlette.requests import Request

MAX_BODY = 64 * 1024  # a sign-up or preferences form is a few hundred bytes
MAX_VALUES = 100
E = TypeVar("E", bound=Callable[..., Any])


class BadBody(ValueError):
    """The body cannot be read (not JSON, wrong shapes, too large); the message says why."""


@dataclass(frozen=True, slots=True)
class Upload:
    filename: str  # as the client named it: not a path to use
    data: bytes


@dataclass(frozen=True, slots=True)
class Fields:
    values: Mapping[str, Sequence[str]] = field(default_factory=dict)
    is_json: bool = False
    files: Mapping[str, Upload] = field(default_factory=dict)

    def first(self, name: str) -> str:
        found = self.values.get(name, ())
        return found[0] if found else ""

    def all(self, name: str) -> list[str]:
        return list(self.values.get(name, ()))[:MAX_VALUES]


def wants_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() in (
        "application/json",
        "text/json",
    )


def accepts_upload(max_bytes: int) -> Callable[[E], E]:
    """Mark a route's endpoint as taking one uploaded file of at most ``max_bytes``."""

    def mark(endpoint: E) -> E:
        endpoint.upload_max_bytes = max_bytes  # type: ignore[attr-defined]
        return endpoint

    return mark


async def read_fields(request: Request) -> Fields:
    """The submitted fields. Raises :class:`BadBody`."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    upload = int(getattr(request.scope.get("endpoint"), "upload_max_bytes", 0))
    if upload and kind == "multipart/form-data":
        return await _with_upload(request, upload)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise BadBody("the request is too large")
    if wants_json(request):
        return _from_json(await request.body())
    if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form(max_files=0, max_fields=MAX_VALUES)
        values: dict[str, list[str]] = {}
        for key, value in form.multi_items():
            if not isinstance(value, UploadFile):
                values.setdefault(key, []).append(value)
        return Fields(values)
    # No or another content type: RFC 8058 senders post "List-Unsubscribe=One-Click";
    # read it as urlencoded rather than refuse an unsubscribe over a header.
    body = await request.body()
    if len(body) > MAX_BODY:
        raise BadBody("the request is too large")
    return Fields(parse_qs(body.decode("utf-8", "replace"), max_num_fields=MAX_VALUES))


async def _with_upload(request: Request, max_bytes: int) -> Fields:
    """A multipart body with at most one file of ``max_bytes``; a field may hold as much
    again in base64 (a file posted back from a preview page)."""
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        raise BadBody("an upload needs a Content-Length")
    if int(length) > 2 * max_bytes + MAX_BODY:
        raise BadBody("the request is too large")
    part = max_bytes * 4 // 3 + 4
    form = await request.form(max_files=1, max_fields=MAX_VALUES, max_part_size=part)
    values: dict[str, list[str]] = {}
    files: dict[str, Upload] = {}
    for key, value in form.multi_items():
        if not isinstance(value, UploadFile):
            values.setdefault(key, []).append(value)
            continue
        data = await value.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise BadBody(f"the file is larger than {max_bytes:,} bytes")
        files[key] = Upload(value.filename or "", data)
    return Fields(values, files=files)


def _from_json(body: bytes) -> Fields:
    if len(body) > MAX_BODY:
        raise BadBody("the request is too large")
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadBody("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadBody("the request body must be a JSON object")
    values: dict[str, list[str]] = {}
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, str):
            values[key] = [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            values[key] = value[:MAX_VALUES]
        elif isinstance(value, int) and not isinstance(value, bool):
            values[key] = [str(value)]
        else:
            raise BadBody(f"field '{key}' must be a string or a list of strings")
    return Fields(values, is_json=True)


def openapi_body(
    properties: Mapping[str, Any], *, required: Sequence[str] = (), json_too: bool = False
) -> dict[str, Any]:
    """``openapi_extra`` describing a form body (and the same fields as JSON)."""
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties)}
    if required:
        schema["required"] = list(required)
    content = {
        "application/x-www-form-urlencoded": {"schema": schema},
        "multipart/form-data": {"schema": schema},
    }
    if json_too:
        content["application/json"] = {"schema": schema}
    return {"requestBody": {"required": bool(required), "content": content}}
