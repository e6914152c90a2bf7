"""A loopback fake of the Postmark and SendGrid send APIs that parses every request.

Served by uvicorn (``procs.fake_provider`` starts it in its own process), shaped
like the answers the transports expect (see tests/provider_fakes.py and the
transport modules' docstrings):

- ``GET /server``: Postmark's token check (the transport's probe);
- ``POST /email/batch``: Postmark batch, a JSON array of at most 500 messages,
  each with From, To, Subject and a body; answers one result per message;
- ``POST /v3/mail/send``: SendGrid, at most 1,000 personalizations sharing one
  content; answers 202 with ``X-Message-Id``;
- ``GET /stats``: messages and bytes accepted so far, for the benchmark's check.

Every body is parsed in full (orjson when installed, else json) and every message
checked for its fields, so the fake costs what a real parser costs, no more. It is
a plain ASGI callable: no framework between uvicorn and the parser.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

try:
    import orjson

    loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - the bench extra installs orjson
    loads = json.loads

TOKEN = "bench-token"
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

STATS = {"requests": 0, "messages": 0, "bytes": 0, "refused": 0}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = await _body(receive)
    path, method = scope["path"], scope["method"]
    if method == "GET" and path == "/stats":
        await _answer(send, 200, json.dumps(STATS).encode())
    elif method == "GET" and path == "/server":
        await _answer(send, 200, b'{"ID":1,"Name":"bench"}')
    elif method == "POST" and path == "/email/batch":
        await _postmark(send, body)
    elif method == "POST" and path == "/v3/mail/send":
        await _sendgrid(send, body)
    else:
        await _answer(send, 404, b'{"message":"not found"}')


async def _postmark(send: Send, body: bytes) -> None:
    messages = loads(body)
    if not isinstance(messages, list) or len(messages) > 500:
        STATS["refused"] += 1
        await _answer(send, 422, b'{"ErrorCode":410,"Message":"Too many batch messages."}')
        return
    out = []
    for m in messages:
        ok = m["From"] and m["To"] and m["Subject"] and (m.get("HtmlBody") or m.get("TextBody"))
        if not ok:
            out.append({"ErrorCode": 300, "Message": "Invalid email request"})
            continue
        out.append(
            {
                "ErrorCode": 0,
                "Message": "OK",
                "MessageID": str(uuid.uuid4()),
                "SubmittedAt": "2026-11-23T09:00:00.0000000Z",
                "To": m["To"],
            }
        )
    _count(len(messages), len(body))
    await _answer(send, 200, json.dumps(out).encode())


async def _sendgrid(send: Send, body: bytes) -> None:
    request = loads(body)
    people = request.get("personalizations") if isinstance(request, dict) else None
    content = request.get("content") if isinstance(request, dict) else None
    if not isinstance(people, list) or not 1 <= len(people) <= 1000 or not content:
        STATS["refused"] += 1
        await _answer(send, 400, b'{"errors":[{"message":"bad request","field":null}]}')
        return
    for p in people:
        if not p["to"][0]["email"]:
            raise ValueError("a personalization without an address")
    _count(len(people), len(body))
    await _answer(send, 202, b"", [(b"x-message-id", uuid.uuid4().hex.encode())])


def _count(messages: int, size: int) -> None:
    STATS["requests"] += 1
    STATS["messages"] += messages
    STATS["bytes"] += size


async def _body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        event = await receive()
        chunks.append(event.get("body", b""))
        more = event.get("more_body", False)
    return b"".join(chunks)


async def _answer(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})
