"""The preview page: an edition as one reader gets it, its pre-flight, and test sends.

``{key}`` is an edition key or ``next`` (this week's, composed or not). The viewer
is ``?as=EMAIL`` (a subscriber: their categories, their links with inert tokens)
or ``?segment=CATEGORY`` (a sample reader of one category), else a sample reader
of every category. The HTML is framed twice (375 px and 600 px) from
``preview.html``, served with a CSP ``sandbox`` and framed with ``sandbox=""``:
no scripts, no forms, no navigation. Everything is built by
:mod:`digest.desk.preview`, with the sending code; nothing here sends but the test send.

The page runs the pre-flight without fetching links: a GET (a prefetch, a link
in a mail) must not make the server request feed-chosen URLs. The "Check links"
button POSTs (with the CSRF token) to ``check-links``, which runs it with links
(through :mod:`digest.common.netguard`) and shows the results; this process keeps the
last check per edition (:data:`KEPT_CHECKS` of them) for the page to show again.
"Check links" and test sends need the editor role (a viewer sees neither button);
a test send is recorded in the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from digest.config.runtime import Runtime
from digest.desk import preview as desk
from digest.desk.preflight import Finding, PreflightReport, run_preflight
from digest.errors import DigestError, TransportError
from digest.store import audit
from digest.store.db import session_scope
from digest.transports.base import Outcome
from digest.web.admin.auth import Operator
from digest.web.admin.deps import (
    CSRF_FIELD,
    PAGE_HEADERS,
    Authenticated,
    Editor,
    allowed,
    desk_of,
    form,
)
from digest.web.forms import openapi_body
from digest.web.state import web_of

FRAME_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
        "font-src https: data:; form-action 'none'; frame-ancestors 'self'; base-uri 'none'; "
        "sandbox"
    ),
    "X-Frame-Options": "SAMEORIGIN",
}
WIDTHS = (375, 600)
_RAW = {"html": "text/html; charset=utf-8", "txt": "text/plain; charset=utf-8"}
KEPT_CHECKS = 20  # editions whose last link check the page can show again


@dataclass(frozen=True, slots=True)
class LinkCheck:
    """The last "Check links" run of an edition, in this process."""

    at: str  # when, for the page
    report: PreflightReport

    @property
    def findings(self) -> list[Finding]:
        return [f for f in self.report.findings if f.check == "links"]


_TEXT = {"type": "string"}


def register(router: APIRouter) -> None:
    router.add_api_route("/editions/{key}/preview", preview_page, methods=["GET"])
    router.add_api_route("/editions/{key}/preview.{part}", preview_part, methods=["GET"])
    viewer = {"as": _TEXT, "segment": _TEXT, **CSRF_FIELD}
    to = {"to": {"type": "array", "items": _TEXT}}
    router.add_api_route(
        "/editions/{key}/test-send",
        test_send,
        methods=["POST"],
        openapi_extra=openapi_body({**viewer, **to}),
    )
    router.add_api_route(
        "/editions/{key}/check-links",
        check_links,
        methods=["POST"],
        openapi_extra=openapi_body(viewer),
    )


def _viewer_query(email: str, segment: str) -> dict[str, str]:
    return {k: v for k, v in (("as", email), ("segment", segment)) if v}


def _build(rt: Runtime, key: str, email: str, segment: str) -> desk.Preview:
    content = desk.edition_content(rt, key)
    viewer = desk.viewer_for(rt, email=email, categories=[segment] if segment else [])
    return desk.preview(rt, content, viewer)


def _checked(rt: Runtime, key: str, links: bool) -> PreflightReport:
    return run_preflight(rt, key=key, check_links=links)


def _checks(request: Request) -> dict[str, LinkCheck]:
    """The last link check per edition key (the app's, in this process)."""
    kept = getattr(request.app.state, "admin_link_checks", None)
    if not isinstance(kept, dict):
        kept = request.app.state.admin_link_checks = {}
    return kept


async def preview_page(request: Request, key: str, who: Authenticated) -> Response:
    params = request.query_params
    return await _render(
        request, who, key, params.get("as", "").strip(), params.get("segment", "").strip()
    )


async def check_links(request: Request, key: str, who: Editor) -> Response:
    """The "Check links" button: the pre-flight with every link fetched (POST only)."""
    fields = await form(request)
    email, segment = fields.first("as").strip(), fields.first("segment").strip()
    return await _render(request, who, key, email, segment, links=True)


async def _render(
    request: Request,
    who: Operator,
    key: str,
    email: str,
    segment: str,
    *,
    notice: str = "",
    problem: str = "",
    status: int = 200,
    links: bool = False,
) -> Response:
    w = web_of(request)
    try:
        shown = await run_in_threadpool(_build, w.rt, key, email, segment)
        report = await run_in_threadpool(_checked, w.rt, key, links)
    except DigestError as exc:
        return w.pages.page(
            request,
            "admin/problem",
            status=404,
            headers=PAGE_HEADERS,
            title="No preview",
            message=str(exc),
            who=who,
            csrf=desk_of(request).guard.csrf_token(who.sid),
        )
    kept = _checks(request)
    if links:
        kept.pop(report.edition_key, None)
        kept[report.edition_key] = LinkCheck(f"{w.rt.now():%Y-%m-%d %H:%M %Z}".strip(), report)
        while len(kept) > KEPT_CHECKS:
            kept.pop(next(iter(kept)))
    query = urlencode(_viewer_query(email, segment))
    context: dict[str, Any] = {
        "key": key,
        "shown": shown,
        "report": report,
        "links_checked": links,
        "last_check": None if links else kept.get(report.edition_key),
        "email": email,
        "segment": segment,
        "widths": WIDTHS,
        "frame_url": f"/admin/editions/{key}/preview.html" + (f"?{query}" if query else ""),
        "query": query,
        "csrf": desk_of(request).guard.csrf_token(who.sid),
        "notice": notice,
        "problem": problem,
        "who": who,
        "can_edit": allowed(who, "editor"),
    }
    title = f"Preview {shown.content.key}"
    return w.pages.page(
        request, "admin/preview", status=status, headers=PAGE_HEADERS, title=title, **context
    )


async def preview_part(request: Request, key: str, part: str, who: Authenticated) -> Response:
    """``preview.html`` (sandboxed, for the frames), ``preview.txt``, ``preview.eml``."""
    if part not in ("html", "txt", "eml"):
        return Response("no such part\n", status_code=404, media_type="text/plain")
    params = request.query_params
    email, segment = params.get("as", "").strip(), params.get("segment", "").strip()
    try:
        shown = await run_in_threadpool(_build, web_of(request).rt, key, email, segment)
    except DigestError as exc:
        return Response(f"{exc}\n", status_code=404, media_type="text/plain; charset=utf-8")
    if shown.message is None:
        body = f"This reader gets no message from {shown.content.key}: {shown.skipped}\n"
        return Response(body, status_code=404, media_type="text/plain; charset=utf-8")
    if part == "html":
        return Response(shown.html, media_type=_RAW["html"], headers=FRAME_HEADERS)
    data = shown.text.encode("utf-8") if part == "txt" else shown.message.data
    return Response(data, media_type=_RAW["txt"])


async def test_send(request: Request, key: str, who: Editor) -> Response:
    fields = await form(request)
    email, segment = fields.first("as").strip(), fields.first("segment").strip()
    addresses = fields.all("to")
    w = web_of(request)
    try:
        results = await _send(w.rt, key, email, segment, addresses, w.mailer)
    except (DigestError, TransportError) as exc:
        return await _render(
            request, who, key, email, segment, problem=f"No test sent: {exc}", status=400
        )
    sent = [r for r, ok in results if ok]
    refused = [r for r, ok in results if not ok]
    if sent:
        await run_in_threadpool(_audit_test, w.rt, who, key, sent)
    notice = f"Test sent to {', '.join(sent)}." if sent else ""
    problem = f"Refused by the transport: {', '.join(refused)}." if refused else ""
    return await _render(request, who, key, email, segment, notice=notice, problem=problem)


def _audit_test(rt: Runtime, who: Operator, key: str, sent: list[str]) -> None:
    edition = desk.edition_content(rt, key).key  # "next" named by its week
    with session_scope(rt.engine) as session:
        audit.record(
            session, actor=who.actor, via="desk", action="edition.test-send",
            target=f"edition:{edition}", detail=f"[TEST] copy to {', '.join(sent)}",
            now=rt.now(),
        )  # fmt: skip


async def _send(
    rt: Runtime, key: str, email: str, segment: str, addresses: list[str], mailer: Any
) -> list[tuple[str, bool]]:
    def build() -> list[Any]:
        content = desk.edition_content(rt, key)
        viewer = desk.viewer_for(rt, email=email, categories=[segment] if segment else [])
        return desk.test_messages(rt, content, viewer, addresses)

    messages = await run_in_threadpool(build)
    # The web side's mailer lock: one user of the shared transport at a time.
    results = await desk.send_tests(rt, messages, guard=mailer._guard())
    return [
        (m.recipient, r.outcome in (Outcome.sent, Outcome.queued))
        for m, r in zip(messages, results, strict=True)
    ]
