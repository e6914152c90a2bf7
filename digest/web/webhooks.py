"""``POST /webhooks/{provider}``: delivery events from the email provider.

:func:`install` (called by :func:`digest.web.app.create_app`) builds one adapter per
``[webhooks] providers`` entry — a provider without its secret raises ConfigError
there, so the app refuses to start — and adds the route. Per request:

1. not an enabled provider → 404; a body over ``max_body_bytes`` → 413;
2. ``verify`` (in a worker thread: SNS may fetch a certificate) and ``parse``; a
   :class:`WebhookRejected` → its status (401/403/400) and nothing is written;
3. one transaction: the replay key (``webhook_replay``), then
   :func:`digest.delivery.events.apply`. A replay key seen before and not expired
   means this very request was processed already: 200 with ``"replayed": true``
   and nothing applied. Not 409: providers retry any answer that is not 2xx, and
   some disable an endpoint that keeps refusing (docs/WEBHOOKS.md, "Answers");
4. the database unreachable → 503 (``Retry-After``): the provider retries later,
   and since the replay key was rolled back with the events, the retry is accepted;
5. 200 with a small JSON summary (an event already stored counts as a duplicate
   and is not applied again).

An SNS ``SubscriptionConfirmation`` (``Verified.confirm_url``) is stored as a notice
(``digest status`` shows it) and logged at WARNING; the URL is fetched only with
``[webhooks.<name>] auto_confirm = true``, and only after verification passed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from sqlalchemy.exc import OperationalError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from digest.config.registry import build_webhooks
from digest.config.runtime import Runtime
from digest.delivery.event_report import PENDING_NOTICE
from digest.delivery.event_store import store_notice, update_notice
from digest.delivery.events import BouncePolicy, apply
from digest.store.db import session_scope
from digest.web import once
from digest.web.ratelimit import client_ip
from digest.webhooks.base import DeliveryEvent, Verified, Webhook, WebhookRejected, WebhookRequest

log = logging.getLogger(__name__)
router = APIRouter()
DEFAULT_REPLAY_TTL = timedelta(days=1)  # when an adapter gives a key but no lifetime
RETRY_AFTER_SECONDS = 60
CONFIRM_TIMEOUT_SECONDS = 10.0


def confirm_subscription(url: str) -> None:
    """GET an SNS ``SubscribeURL`` (already checked by the adapter to be SNS's own,
    https). Raises ``httpx.HTTPError`` on failure."""
    with httpx.Client(timeout=CONFIRM_TIMEOUT_SECONDS, follow_redirects=False) as client:
        client.get(url).raise_for_status()


@dataclass
class Hooks:
    """What the route needs, kept on ``app.state.webhooks``."""

    rt: Runtime
    adapters: Mapping[str, Webhook]
    policy: BouncePolicy
    max_body: int
    auto_confirm: frozenset[str] = frozenset()
    confirm: Callable[[str], None] = field(default=confirm_subscription)


def install(app: FastAPI, runtime: Runtime) -> None:
    """Build the enabled adapters (ConfigError: refuse to start) and add the route."""
    cfg = runtime.config.webhooks
    app.state.webhooks = Hooks(
        rt=runtime,
        adapters=build_webhooks(cfg, runtime.config.env),
        policy=BouncePolicy.of(cfg),
        max_body=cfg.max_body_bytes,
        auto_confirm=cfg.auto_confirm,
    )
    if cfg.providers:
        app.include_router(router)


def hooks_of(request: Request) -> Hooks:
    hooks = request.app.state.webhooks
    assert isinstance(hooks, Hooks)
    return hooks


class _Replayed(Exception):
    """The replay key was seen before: roll back, answer 200 with nothing applied."""


@router.post(
    "/webhooks/{provider}",
    summary="Delivery events from the email provider",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": ["object", "array"]}}},
        }
    },
)
async def receive(provider: str, request: Request) -> Response:
    hooks = hooks_of(request)
    adapter = hooks.adapters.get(provider)
    if adapter is None:
        return _answer(404, error="no such webhook")
    body = await _read_body(request, hooks.max_body)
    if body is None:
        return _answer(413, error="body too large")
    incoming = WebhookRequest(
        method=request.method,
        url=str(request.url),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        remote_addr=client_ip(request),
    )
    now = hooks.rt.now()
    try:
        verified, events = await run_in_threadpool(_verify, adapter, incoming, now)
    except WebhookRejected as exc:
        log.warning(
            "webhook %s from %s rejected (%s): %s", provider, incoming.remote_addr, exc.status, exc
        )
        return _answer(exc.status, error="rejected")
    try:
        result = await run_in_threadpool(_record, hooks, provider, verified, events, now)
    except _Replayed:
        log.info(
            "webhook %s from %s: request already processed; answered 200, applied nothing",
            provider,
            incoming.remote_addr,
        )
        return _answer(200, ok=True, replayed=True, received=len(events), duplicates=len(events))
    except OperationalError as exc:
        log.error(
            "webhook %s: database unavailable (%s); asking to retry", provider, type(exc).__name__
        )
        response = _answer(503, error="temporarily unavailable")
        response.headers["retry-after"] = str(RETRY_AFTER_SECONDS)
        return response
    if verified.confirm_url:
        result["confirmed"] = await _handle_confirmation(hooks, provider, verified.confirm_url)
    return _answer(200, ok=True, **result)


def _verify(
    adapter: Webhook, incoming: WebhookRequest, now: datetime
) -> tuple[Verified, Sequence[DeliveryEvent]]:
    verified = adapter.verify(incoming, now=now)
    events = () if verified.confirm_url else adapter.parse(incoming)
    return verified, events


def _record(
    hooks: Hooks,
    provider: str,
    verified: Verified,
    events: Sequence[DeliveryEvent],
    now: datetime,
) -> dict[str, Any]:
    """The replay key and the events, in one transaction. Raises _Replayed."""
    with session_scope(hooks.rt.engine) as session:
        if verified.replay_key and not _claim_replay_key(session, provider, verified, now):
            raise _Replayed
        if verified.confirm_url:
            _store_confirmation(session, provider, verified.confirm_url, now)
        summary = apply(session, events, now=now, policy=hooks.policy)
    return summary.as_dict()


def _claim_replay_key(session: Session, provider: str, verified: Verified, now: datetime) -> bool:
    """Record the key; False when it is already recorded and not expired."""
    ttl = timedelta(seconds=verified.replay_ttl_seconds) or DEFAULT_REPLAY_TTL
    return once.claim(session, provider, verified.replay_key, now + ttl, now)


def _store_confirmation(session: Session, provider: str, url: str, now: datetime) -> None:
    log.warning(
        "webhook %s: subscription confirmation received; open this URL to confirm it "
        "(or set [webhooks.%s] auto_confirm = true): %s",
        provider,
        provider,
        url,
    )
    store_notice(
        session,
        provider=provider,
        key=_notice_key(url),
        description=f"{PENDING_NOTICE}: open {url}",
        raw={"confirm_url": url},
        now=now,
    )


async def _handle_confirmation(hooks: Hooks, provider: str, url: str) -> bool:
    """With ``auto_confirm``: GET the URL (verification already passed) and note it."""
    if provider not in hooks.auto_confirm or not url.startswith("https://"):
        return False
    try:
        await run_in_threadpool(hooks.confirm, url)
    except httpx.HTTPError as exc:
        log.error("webhook %s: confirming the subscription failed: %s", provider, exc)
        return False
    log.warning("webhook %s: subscription confirmed automatically", provider)
    outcome = "subscription confirmed automatically"
    try:
        with session_scope(hooks.rt.engine) as session:
            update_notice(session, provider=provider, key=_notice_key(url), outcome=outcome)
    except OperationalError:  # confirmed all the same; only the notice stays pending
        log.error("webhook %s: could not note the confirmation in the database", provider)
    return True


def _notice_key(url: str) -> str:
    return "confirm:" + hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The raw body, or None when it is over ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(status: int, **content: Any) -> JSONResponse:
    return JSONResponse(content, status_code=status)
