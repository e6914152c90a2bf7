"""Request bodies as plain fields: form-urlencoded, multipart, or JSON.

Routes read bodies themselves (one parser for three encodings) and describe them
to OpenAPI with :func:`openapi_body`, so ``/openapi.json`` still documents every
form endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import UploadFile
from starlette.requests import Request

MAX_BODY = 64 * 1024  # a sign-up or preferences form is a few hundred bytes
MAX_VALUES = 100


class BadBody(ValueError):
    """The body cannot be read (not JSON, wrong shapes, too large); the message says why."""


@dataclass(frozen=True, slots=True)
class Fields:
    values: Mapping[str, Sequence[str]] = field(default_factory=dict)
    is_json: bool = False

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


async def read_fields(request: Request) -> Fields:
    """The submitted fields. Raises :class:`BadBody`."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise BadBody("the request is too large")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
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
