"""Loopback fakes of SendGrid's v3 Mail Send and Mailgun's messages API.

They reuse :func:`tests.provider_fakes.serve` and :class:`~tests.provider_fakes.Recorder`
(scripted answers by request number, ``reject`` by address, ``accepted`` counts) and
answer as the providers document: SendGrid ``202`` with ``X-Message-Id`` and an
empty body, or ``400 {"errors": [{"message", "field", "help"}]}``; Mailgun ``200
{"id", "message": "Queued. Thank you."}``, ``400 {"message"}``, ``401 Forbidden``,
``404`` for an unknown domain. Both refuse a whole request, never one recipient.

``rec.accept_then(500)`` makes the Mailgun fake accept a request (``rec.accepted``),
record one ``accepted`` event per recipient in ``rec.stored`` (with the
``user-variables`` Mailgun substitutes from ``recipient-variables``) and answer 500.
It serves the Events API (``GET /v3/<domain>/events``: ``begin``, ``end``,
``limit`` ≤ 300, ``event``, ``recipient``; ``paging.next`` URLs) over those events.

:func:`sendgrid_render` and :func:`mailgun_render` perform the provider's
substitution for one recipient, so tests can compare what a reader would get with
``RenderedDigest.html_with`` / ``text_with``.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from digest.render.base import RenderedDigest, Slot
from digest.transports.base import OutgoingMessage, Personal, SharedContent
from digest.transports.mailgun import MailgunTransport
from tests.provider_fakes import Recorded, Recorder

SENDGRID_PATH = "/v3/mail/send"
MAILGUN_DOMAIN = "mg.test.example"
MAILGUN_PATH = f"/v3/{MAILGUN_DOMAIN}/messages"
MAILGUN_KEY = "test-key"
_RECIPIENT_VAR = re.compile(r"%recipient\.([A-Za-z0-9_.:-]+)%")


# -- SendGrid ------------------------------------------------------------------------


def sendgrid_app(rec: Recorder) -> FastAPI:
    """``POST /v3/mail/send`` answering like SendGrid v3."""
    app = FastAPI()

    @app.post(SENDGRID_PATH)
    async def send(request: Request) -> Response:
        entry = await rec.record(request)
        if entry.headers.get("authorization") != f"Bearer {rec.token}":
            error = {"message": "The provided authorization grant is invalid", "field": None}
            return rec.answer(entry, JSONResponse({"errors": [error]}, 401))
        scripted = rec.scripted_answer(entry)
        if scripted is not None:
            return scripted
        errors = _sendgrid_errors(rec, entry)
        if errors:
            return rec.answer(entry, JSONResponse({"errors": errors}, 400))
        for p in entry.json()["personalizations"]:
            rec.accepted[p["to"][0]["email"].lower()] += 1
        message_id = uuid.uuid4().hex[:22]
        return rec.answer(entry, Response(status_code=202, headers={"X-Message-Id": message_id}))

    return app


def _sendgrid_errors(rec: Recorder, entry: Recorded) -> list[dict[str, Any]]:
    if not entry.headers.get("content-type", "").startswith("application/json"):
        return [{"message": "Content-Type should be application/json.", "field": None}]
    body = entry.json()
    personalizations = body.get("personalizations") or []
    if not personalizations:
        return [{"message": "You must have at least one personalization.", "field": None}]
    if len(personalizations) > 1000:
        message = "The personalization block is limited to 1000 personalizations per API request."
        return [{"message": message, "field": "personalizations"}]
    if not body.get("from", {}).get("email"):
        return [{"message": "The from email is required.", "field": "from.email"}]
    types = [c["type"] for c in body.get("content", [])]
    if not types or any(not c["value"] for c in body["content"]):
        return [{"message": "The content value must be a string at least one character in length."}]
    if "text/plain" in types and types.index("text/plain") != 0:
        message = "If present, text/plain and text/html may only be provided in that order."
        return [{"message": message, "field": "content"}]
    errors = []
    for i, p in enumerate(personalizations):
        address = p["to"][0]["email"].lower()
        if address in rec.reject:
            errors.append(
                {"message": rec.reject[address], "field": f"personalizations.{i}.to.0.email"}
            )
        for value in [*p.get("substitutions", {}).values(), *p.get("custom_args", {}).values()]:
            if not isinstance(value, str):
                errors.append({"message": "Bad Request", "field": None})
    return errors


def sendgrid_render(body: dict[str, Any], index: int) -> dict[str, str]:
    """Subject, text and HTML as personalization ``index`` gets them: each
    substitution tag replaced by its value, in all content and the subject."""
    subs: dict[str, str] = body["personalizations"][index].get("substitutions", {})

    def apply(value: str) -> str:
        for tag, replacement in subs.items():
            value = value.replace(tag, replacement)
        return value

    out = {"subject": apply(body["subject"])}
    for part in body["content"]:
        out[part["type"].split("/")[1].replace("plain", "text")] = apply(part["value"])
    return out


# -- Mailgun -------------------------------------------------------------------------


def mailgun_app(rec: Recorder, *, domain: str = MAILGUN_DOMAIN) -> FastAPI:
    """``POST /v3/{domain}/messages`` answering like Mailgun."""
    app = FastAPI()

    @app.post("/v3/{name}/messages")
    async def messages(name: str, request: Request) -> Response:
        entry = await rec.record(request)
        expected = base64.b64encode(f"api:{rec.token}".encode()).decode()
        if entry.headers.get("authorization") != f"Basic {expected}":
            return rec.answer(entry, PlainTextResponse("Forbidden", 401))
        if name != domain:
            body = {"message": f"Domain not found: {name}"}
            return rec.answer(entry, JSONResponse(body, 404))
        scripted = rec.scripted_answer(entry)
        if scripted is not None:
            return scripted
        form = mailgun_form(entry)
        refusal = _mailgun_refusal(rec, form)
        if refusal:
            return rec.answer(entry, JSONResponse({"message": refusal}, 400))
        message_id = f"<{uuid.uuid4().hex}@{domain}>"
        for to in form["to"]:
            rec.accepted[_address(to)] += 1
            rec.stored.append(_accepted_event(form, _address(to), message_id))
        failure = rec.failure_after_accept()
        if failure:
            return rec.answer(entry, JSONResponse({"message": "Internal Server Error"}, failure))
        answer = {"id": message_id, "message": "Queued. Thank you."}
        return rec.answer(entry, JSONResponse(answer))

    pages: dict[str, tuple[dict[str, str], int]] = {}  # page token -> (filters, offset)

    @app.get("/v3/{name}/events")
    async def events(name: str, request: Request) -> Response:
        return await _events_page(rec, request, name, dict(request.query_params), 0)

    @app.get("/v3/{name}/events/{token}")
    async def events_page(name: str, token: str, request: Request) -> Response:
        filters, offset = pages.get(token, ({}, 10**9))
        return await _events_page(rec, request, name, filters, offset)

    async def _events_page(
        rec: Recorder, request: Request, name: str, filters: dict[str, str], offset: int
    ) -> Response:
        entry = await rec.record(request)
        expected = base64.b64encode(f"api:{rec.token}".encode()).decode()
        if entry.headers.get("authorization") != f"Basic {expected}":
            return rec.answer(entry, PlainTextResponse("Forbidden", 401))
        if name != domain:
            return rec.answer(entry, JSONResponse({"message": f"Domain not found: {name}"}, 404))
        scripted = rec.scripted_answer(entry)
        if scripted is not None:
            return scripted
        limit = int(filters.get("limit", "100"))
        if limit > 300:
            return rec.answer(entry, JSONResponse({"message": "limit must be <= 300"}, 400))
        found = [e for e in rec.stored if _event_matches(e, filters)]
        items = found[offset : offset + limit]
        token = uuid.uuid4().hex
        pages[token] = (filters, offset + limit)
        base = str(request.base_url).rstrip("/")
        paging = {
            "next": f"{base}/v3/{name}/events/{token}",
            "previous": f"{base}/v3/{name}/events/{uuid.uuid4().hex}",
        }
        return rec.answer(entry, JSONResponse({"items": items, "paging": paging}))

    return app


def mailgun_transport(url: str, **keys: object) -> MailgunTransport:
    """A Mailgun transport against the fake at ``url`` (``keys`` override options)."""
    options: dict[str, object] = {
        "base_url": url,
        "api_key": MAILGUN_KEY,
        "domain": MAILGUN_DOMAIN,
        "backoff_seconds": 0.01,
    }
    options.update(keys)
    return MailgunTransport(**options)  # type: ignore[arg-type]


def _accepted_event(form: dict[str, list[str]], address: str, message_id: str) -> dict[str, Any]:
    """The ``accepted`` event Mailgun logs for one recipient (Events API "Event
    Structure"): ``v:`` variables with ``%recipient.KEY%`` substituted."""
    per_recipient = json.loads(form.get("recipient-variables", ["{}"])[0]).get(address, {})

    def apply(value: str) -> str:
        return _RECIPIENT_VAR.sub(lambda m: str(per_recipient.get(m.group(1), "")), value)

    variables = {k[2:]: apply(v[0]) for k, v in form.items() if k.startswith("v:")}
    return {
        "event": "accepted",
        "id": uuid.uuid4().hex[:22],
        "timestamp": time.time(),
        "log-level": "info",
        "method": "HTTP",
        "recipient": address,
        "recipient-domain": address.rpartition("@")[2],
        "tags": form.get("o:tag", []),
        "user-variables": variables,
        "flags": {"is-test-mode": False},
        "message": {
            "headers": {
                "message-id": message_id.strip("<>"),
                "from": form["from"][0],
                "to": address,
                "subject": form["subject"][0],
            }
        },
    }


def _event_matches(event: dict[str, Any], filters: dict[str, str]) -> bool:
    if "event" in filters and filters["event"] != event["event"]:
        return False
    if "recipient" in filters and filters["recipient"].lower() != event["recipient"]:
        return False
    begin, end = float(filters.get("begin", "0")), float(filters.get("end", "inf"))
    return min(begin, end) <= event["timestamp"] <= max(begin, end)


def mailgun_form(entry: Recorded) -> dict[str, list[str]]:
    """The urlencoded form fields of a recorded request (repeated fields as lists)."""
    assert entry.headers["content-type"].startswith("application/x-www-form-urlencoded")
    return parse_qs(entry.body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)


def _mailgun_refusal(rec: Recorder, form: dict[str, list[str]]) -> str:
    for required in ("from", "to", "subject"):
        if required not in form:
            return f"'{required}' parameter is missing"
    if len(form["to"]) > 1000:
        return "Too many recipients: the maximum for batch sending is 1000"
    variables = json.loads(form["recipient-variables"][0]) if "recipient-variables" in form else {}
    for to in form["to"]:
        address = _address(to)
        if address in rec.reject:
            return f"'to' parameter is not a valid address ({rec.reject[address]})"
        if len(form["to"]) > 1 and address not in variables:
            return f"recipient-variables has no entry for {address}"
    return ""


def mailgun_render(form: dict[str, list[str]], address: str) -> dict[str, str]:
    """Every single-valued field as ``address`` gets it: ``%recipient.KEY%`` replaced
    by that recipient's variable (unknown keys are left as they are)."""
    variables = json.loads(form["recipient-variables"][0])[address]

    def apply(value: str) -> str:
        return _RECIPIENT_VAR.sub(lambda m: str(variables.get(m.group(1), m.group(0))), value)

    return {k: apply(v[0]) for k, v in form.items() if k not in ("to", "recipient-variables")}


def _address(to: str) -> str:
    match = re.search(r"<([^>]+)>\s*$", to)
    return (match.group(1) if match else to).strip().lower()


# -- messages ------------------------------------------------------------------------

# Feed text is not ours: it may hold the providers' own tag syntax (see test_collision).
DIGEST = RenderedDigest(
    subject="Test Weekly: 3 new verdicts",
    html=(
        '<p>Hello & welcome</p><a href="',
        Slot("unsubscribe_url"),
        '">unsubscribe</a> · <a href="',
        Slot("preferences_url"),
        '">preferences</a>',
    ),
    text=(
        "Hello\nUnsubscribe: ",
        Slot("unsubscribe_url"),
        "\nPreferences: ",
        Slot("preferences_url"),
        "\n",
    ),
)


def shared(key: str = "2026-W48/all", digest: RenderedDigest = DIGEST) -> SharedContent:
    return SharedContent(
        key=key,
        digest=digest,
        from_header="Test Weekly <digest@test.example>",
        reply_to="Editor <editor@test.example>",
        list_id="Test Weekly <weekly.test.example>",
    )


def message(i: int, content: SharedContent | None = None, name: str = "") -> OutgoingMessage:
    """Reader ``i``'s digest; the URLs hold ``&`` and ``"`` so HTML escaping shows."""
    urls = {
        "unsubscribe_url": f'https://digest.test.example/u/t{i}?a=1&b="x"',
        "preferences_url": f"https://digest.test.example/p/t{i}?x=<{i}>",
    }
    return OutgoingMessage(
        delivery_id=i,
        sender="digest@test.example",
        recipient=f"reader{i}@example.org",
        message_id=f"<2026-W48.s{i}.digest@test.example>",
        content=b"",
        tag="2026-W48",
        shared=content or shared(),
        personal=Personal(name or f"Reader {i}", urls),
    )
