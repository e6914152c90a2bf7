"""Loopback fakes of provider HTTP APIs (FastAPI apps served by uvicorn in a thread).

Generic parts, for any provider's fake (SendGrid and Mailgun fakes may reuse them):

- :func:`serve` runs any ASGI app on a free port of 127.0.0.1 in a background
  thread and yields its base URL; the server stops when the ``with`` block ends.
- :class:`Recorder` keeps every request (arrival time on ``time.monotonic()``,
  method, path, headers, body) and the scripted answers: ``script(n, status,
  headers, body)`` makes the n-th request (1-based, by arrival) get that answer
  instead of being processed; ``reject`` maps an address to a refusal.

Provider fakes: :func:`postmark_app` and :func:`resend_app`, each shaped like the
provider's documented answers (see the transport modules' docstrings).

A maybe-delivered answer: ``rec.accept_then(500)`` makes the fake accept and store a
batch (``rec.accepted``, ``rec.stored``) and then answer 500 anyway, as a provider
whose front end fails after the back end took the messages. The fake Postmark serves
its "Outbound message search" (``GET /messages/outbound``) over ``rec.stored``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select

from digest import config, pipeline
from digest.config.runtime import Runtime
from digest.delivery.sending import SendReport
from digest.render.base import RenderedDigest, Slot
from digest.store.db import session_scope, upgrade
from digest.store.models import Delivery
from digest.transports.base import InDoubt, OutgoingMessage, Personal, SendResult, SharedContent
from digest.transports.postmark import PostmarkTransport
from subscribers import repository
from subscribers.models import Subscriber
from tests.support import write_config

HOST = "127.0.0.1"


@dataclass
class Recorded:
    number: int
    at: float  # time.monotonic() on arrival
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    answered_at: float = 0.0
    query: dict[str, str] = field(default_factory=dict)  # the query string (last of repeats)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Scripted:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


class Recorder:
    """Requests seen, answers scripted, addresses accepted (thread-safe enough: the
    server thread appends, the test reads after the send)."""

    def __init__(self, *, token: str = "test-token") -> None:
        self.token = token
        self.requests: list[Recorded] = []
        self.scripted: dict[int, Scripted] = {}
        self.reject: dict[str, str] = {}  # address (lower case) -> reason
        self.accepted: Counter[str] = Counter()  # address -> times accepted
        self.delay = 0.0  # seconds each answer waits (to provoke timeouts)
        self.hold: dict[int, float] = {}  # request number -> its own answer delay
        self.duplicates = 0  # requests answered from an idempotency key, sending nothing
        self.stored: list[dict[str, Any]] = []  # what the provider keeps of each accepted message
        self.fail_after_accept = 0  # status answered after accepting a batch (0: none)
        self.fail_after_accept_times: int | None = None  # how many batches (None: all)
        self._lock = threading.Lock()

    def accept_then(self, status: int, *, times: int | None = None) -> None:
        """Accept (and store) the next ``times`` batches (all, by default), then answer
        ``status`` for each instead of the provider's success answer."""
        self.fail_after_accept, self.fail_after_accept_times = status, times

    def failure_after_accept(self) -> int:
        """The status to answer for a batch just accepted, or 0 for the usual answer."""
        with self._lock:
            if not self.fail_after_accept or self.fail_after_accept_times == 0:
                return 0
            if self.fail_after_accept_times is not None:
                self.fail_after_accept_times -= 1
            return self.fail_after_accept

    def script(
        self, n: int, status: int, headers: dict[str, str] | None = None, body: Any = None
    ) -> None:
        self.scripted[n] = Scripted(status, headers or {}, body)

    async def record(self, request: Request) -> Recorded:
        arrived = time.monotonic()  # when the headers came in, before the body is read
        body = await request.body()
        with self._lock:
            entry = Recorded(
                len(self.requests) + 1,
                arrived,
                request.method,
                request.url.path,
                {k.lower(): v for k, v in request.headers.items()},
                body,
                query=dict(request.query_params),
            )
            self.requests.append(entry)
        return entry

    def scripted_answer(self, entry: Recorded) -> Response | None:
        answer = self.scripted.get(entry.number)
        if answer is None:
            return None
        body = answer.body if answer.body is not None else {"message": "scripted"}
        return self.answer(entry, JSONResponse(body, answer.status, headers=answer.headers))

    def answer(self, entry: Recorded, response: Response) -> Response:
        entry.status, entry.answered_at = response.status_code, time.monotonic()
        return response

    def posts(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path == path]

    def gets(self, path_prefix: str) -> list[Recorded]:
        """The GET requests whose path starts with ``path_prefix`` (a search and its pages)."""
        return [r for r in self.requests if r.method == "GET" and r.path.startswith(path_prefix)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run the ASGI ``app`` on 127.0.0.1:<free port> in a thread; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host=HOST, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake provider server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def fake_provider(app: Callable[[Recorder], Any], token: str) -> Iterator[tuple[Recorder, str]]:
    """A fixture's body: serve ``app`` over a fresh :class:`Recorder` that accepts
    ``token``; yield the recorder and the base URL (``yield from fake_provider(...)``)."""
    rec = Recorder(token=token)
    with serve(app(rec)) as url:
        yield rec, url


# -- Postmark ------------------------------------------------------------------------


def postmark_app(rec: Recorder) -> FastAPI:
    """``POST /email/batch`` and ``GET /server``, answering like Postmark."""
    app = FastAPI()

    @app.get("/server")
    async def server(request: Request) -> Response:
        entry = await rec.record(request)
        if (refused := _postmark_unauthorized(rec, entry)) is not None:
            return refused
        return rec.answer(entry, JSONResponse({"ID": 1, "Name": "fake"}))

    @app.post("/email/batch")
    async def batch(request: Request) -> Response:
        entry = await rec.record(request)
        if rec.delay:
            await asyncio.sleep(rec.delay)
        if (refused := _postmark_unauthorized(rec, entry)) is not None:
            return refused
        scripted = rec.scripted_answer(entry)
        if scripted is not None:
            return scripted
        messages = entry.json()
        if len(messages) > 500:
            body = {"ErrorCode": 410, "Message": "Too many batch messages."}
            return rec.answer(entry, JSONResponse(body, 422))
        answers = [_postmark_one(rec, m) for m in messages]
        failure = rec.failure_after_accept()
        if failure:
            body = {"ErrorCode": 100, "Message": "Internal Server Error"}
            return rec.answer(entry, JSONResponse(body, failure))
        return rec.answer(entry, JSONResponse(answers))

    @app.get("/messages/outbound")
    async def search(request: Request) -> Response:
        """Postmark's "Outbound message search" (Messages API) over ``rec.stored``."""
        entry = await rec.record(request)
        if (refused := _postmark_unauthorized(rec, entry)) is not None:
            return refused
        scripted = rec.scripted_answer(entry)
        if scripted is not None:
            return scripted
        query = dict(request.query_params)
        try:
            count, offset = int(query.pop("count")), int(query.pop("offset"))
        except (KeyError, ValueError):
            body = {"ErrorCode": 300, "Message": "'count' and 'offset' are required."}
            return rec.answer(entry, JSONResponse(body, 422))
        if not 0 < count <= 500 or offset < 0 or count + offset > 10_000:
            body = {"ErrorCode": 300, "Message": "Count + Offset cannot exceed 10,000 messages."}
            return rec.answer(entry, JSONResponse(body, 422))
        if entry.number in rec.hold:
            await asyncio.sleep(rec.hold[entry.number])
        found = [m for m in reversed(rec.stored) if _postmark_matches(m, query)]
        body = {"TotalCount": len(found), "Messages": found[offset : offset + count]}
        return rec.answer(entry, JSONResponse(body))

    return app


def _postmark_unauthorized(rec: Recorder, entry: Recorded) -> Response | None:
    """Postmark's 401 when the request's server token is not ``rec.token``."""
    if entry.headers.get("x-postmark-server-token") == rec.token:
        return None
    body = {"ErrorCode": 10, "Message": "Bad or missing Server API token."}
    return rec.answer(entry, JSONResponse(body, 401))


def _postmark_one(rec: Recorder, message: dict[str, Any]) -> dict[str, Any]:
    address = parseaddr(message["To"])[1].lower()
    if address in rec.reject:
        return {
            "ErrorCode": 406,
            "Message": "You tried to send to recipient(s) that have been marked as inactive. "
            f"Found inactive addresses: {address}. {rec.reject[address]}",
        }
    message_id = str(uuid.uuid4())
    with rec._lock:
        rec.accepted[address] += 1
        rec.stored.append(
            {
                "Tag": message.get("Tag", ""),
                "MessageID": message_id,
                "MessageStream": message.get("MessageStream", "outbound"),
                "To": [{"Email": address, "Name": parseaddr(message["To"])[0] or None}],
                "Cc": [],
                "Bcc": [],
                "Recipients": [address],
                "ReceivedAt": "2026-11-23T04:00:00.0000000-05:00",
                "From": message["From"],
                "Subject": message["Subject"],
                "Attachments": [],
                "Status": "Sent",
                "TrackOpens": False,
                "TrackLinks": "None",
                "Metadata": message.get("Metadata", {}),
                "Sandboxed": False,
            }
        )
    return {
        "ErrorCode": 0,
        "Message": "OK",
        "MessageID": message_id,
        "SubmittedAt": "2026-11-23T09:00:00.0000000Z",
        "To": message["To"],
    }


def _postmark_matches(message: dict[str, Any], query: dict[str, str]) -> bool:
    """Postmark's filters: recipient, tag, messagestream (default: the transactional
    stream "outbound"), metadata_<key> (one at a time); dates are not checked here."""
    if query.get("messagestream", "outbound") != message["MessageStream"]:
        return False
    if "recipient" in query and query["recipient"].lower() not in message["Recipients"]:
        return False
    if "tag" in query and query["tag"] != message["Tag"]:
        return False
    metadata = [(k[len("metadata_") :], v) for k, v in query.items() if k.startswith("metadata_")]
    return all(message["Metadata"].get(key) == value for key, value in metadata)


# -- Resend ----------------------------------------------------------------------------


def resend_app(rec: Recorder) -> FastAPI:
    """``POST /emails/batch`` answering like Resend: permissive mode lists refused
    emails under ``errors``; a repeated ``Idempotency-Key`` gets the first answer
    again and sends nothing (``rec.duplicates`` counts those), unless the payload
    differs: then 409 ``invalid_idempotent_request``, as Resend documents."""
    app = FastAPI()
    seen: dict[str, Any] = {}
    payloads: dict[str, bytes] = {}

    @app.post("/emails/batch")
    async def batch(request: Request) -> Response:
        entry = await rec.record(request)
        if entry.headers.get("authorization") != f"Bearer {rec.token}":
            body = {"statusCode": 403, "name": "validation_error", "message": "API key is invalid"}
            return rec.answer(entry, JSONResponse(body, 403))
        scripted = rec.scripted_answer(entry)
        if scripted is not None:
            return scripted
        key = entry.headers.get("idempotency-key")
        if key is not None and key in payloads and payloads[key] != entry.body:
            body = {
                "statusCode": 409,
                "name": "invalid_idempotent_request",
                "message": "Same idempotency key used with a different request payload.",
            }
            return rec.answer(entry, JSONResponse(body, 409))
        if key is not None and key in seen:
            rec.duplicates += 1
            return rec.answer(entry, JSONResponse(seen[key]))
        emails = entry.json()
        if len(emails) > 100:
            body = {"statusCode": 422, "name": "validation_error", "message": "max 100 emails"}
            return rec.answer(entry, JSONResponse(body, 422))
        data, errors = [], []
        for index, email in enumerate(emails):
            address = parseaddr(email["to"][0])[1].lower()
            if address in rec.reject:
                errors.append({"index": index, "message": rec.reject[address]})
            else:
                rec.accepted[address] += 1
                data.append({"id": str(uuid.uuid4())})
        if errors and entry.headers.get("x-batch-validation") != "permissive":
            body = {"statusCode": 422, "name": "validation_error", "message": errors[0]["message"]}
            return rec.answer(entry, JSONResponse(body, 422))
        body = {"data": data, "errors": errors} if errors else {"data": data}
        if key is not None:
            seen[key], payloads[key] = body, entry.body
        wait = rec.hold.get(entry.number, rec.delay)
        if wait:
            await asyncio.sleep(wait)  # accepted, but the answer comes late
        return rec.answer(entry, JSONResponse(body))

    return app


# -- messages for the transport tests -------------------------------------------------

SHARED = SharedContent(
    key="2026-W48/all",
    digest=RenderedDigest(
        subject="Test Weekly: 3 new verdicts",
        html=('<p>Hello</p><a href="', Slot("unsubscribe_url"), '">unsubscribe</a>'),
        text=("Hello\nUnsubscribe: ", Slot("unsubscribe_url"), "\n"),
    ),
    from_header="Test Weekly <digest@test.example>",
    reply_to="editor@test.example",
    list_id="Test Weekly <weekly.test.example>",
)


def digest_message(i: int, recipient: str | None = None, name: str = "") -> OutgoingMessage:
    """A digest message with shared and personal content (no MIME parsing needed)."""
    to = recipient or f"reader{i}@example.org"
    urls = {
        "unsubscribe_url": f"https://digest.test.example/u/t{i}",
        "preferences_url": f"https://digest.test.example/p/t{i}",
    }
    return OutgoingMessage(
        delivery_id=i,
        sender="digest@test.example",
        recipient=to,
        message_id=f"<2026-W48.s{i}.digest@test.example>",
        content=b"",
        tag="2026-W48",
        shared=SHARED,
        personal=Personal(name or f"Reader {i}", urls),
    )


# -- transports against the fakes, and their reconcile --------------------------------

POSTMARK_TOKEN = "test-token"


def postmark_transport(url: str, **keys: object) -> PostmarkTransport:
    """A Postmark transport against the fake at ``url`` (``keys`` override options)."""
    options: dict[str, object] = {
        "base_url": url,
        "api_key": POSTMARK_TOKEN,
        "backoff_seconds": 0.01,
    }
    options.update(keys)
    return PostmarkTransport(**options)  # type: ignore[arg-type]


def in_doubt(message: OutgoingMessage, attempted: datetime | None = None) -> InDoubt:
    """``message`` as the ledger hands it to ``reconcile`` (attempted now by default)."""
    at = attempted if attempted is not None else datetime.now(UTC)
    return InDoubt(message.delivery_id, message.recipient, message.message_id, message.tag, at)


async def send_and_reconcile(
    transport: Any,
    messages: list[OutgoingMessage],
    items: list[InDoubt] | None = None,
    *,
    attempted: datetime | None = None,
) -> tuple[list[SendResult], list[SendResult]]:
    """Open ``transport``, send one batch, then reconcile ``items`` (by default every
    message sent, attempted at ``attempted``); close it. Both lists of results."""
    try:
        await transport.open()
        sent = await transport.send_batch(messages)
        found = await transport.reconcile(
            items if items is not None else [in_doubt(m, attempted) for m in messages]
        )
    finally:
        await transport.close()
    return list(sent), list(found)


# -- an edition sent through the pipeline, in process ---------------------------------

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def send_edition(
    tmp_path: Path,
    *,
    transport: dict[str, Any],
    env: dict[str, str],
    readers: list[str],
    batch_size: int = 500,
) -> tuple[SendReport, dict[str, tuple[str, str]]]:
    """Add ``readers``, fetch, compose and send one edition through ``transport`` (a
    ``[transport]`` table) on a fresh SQLite file; return the report and each
    address's delivery row as ``(state, detail)``."""
    # A window wider than the edition: these runs test per-request failures, which
    # would otherwise (rightly) pause the edition (see tests/test_pause.py).
    send = {"batch_size": batch_size, "pause_window": 1_000_000}
    path = write_config(tmp_path, transport=transport, send=send)
    environ = {"DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}", "DIGEST_SECRET_KEY": "k"}
    cfg = config.load(path, environ={**environ, **env})
    rt = Runtime.open(cfg, clock=lambda: NOW)
    try:
        upgrade(rt.engine)
        with session_scope(rt.engine) as session:
            for address in readers:
                repository.add(session, email=address, now=NOW)
        pipeline.fetch(rt)
        edition = pipeline.compose(rt).edition
        assert edition is not None
        report = asyncio.run(pipeline.send(rt, edition=edition))
        with session_scope(rt.engine) as session:
            rows = session.execute(
                select(Subscriber.email, Delivery.state, Delivery.detail).join(  # type: ignore[call-overload]
                    Delivery,
                    Delivery.subscriber_id == Subscriber.id,
                )
            ).all()
    finally:
        rt.close()
    return report, {email: (str(state), str(detail)) for email, state, detail in rows}


async def send_once(transport: Any, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
    """Open ``transport``, send one batch, close it (as one run of the ledger would)."""
    try:
        await transport.open()
        return list(await transport.send_batch(messages))
    finally:
        await transport.close()
