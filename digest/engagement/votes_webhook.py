"""The outgoing votes webhook: tell ``[votes] webhook_url`` when a comparison's counts
change (docs/VOTES.md has the receiver's side).

A vote that changes counts queues its comparison in ``vote_change``
(:func:`digest.engagement.votes.mark_changed`); :func:`deliver_pending` (the
scheduler's ``votes`` job, every minute while a URL is set) POSTs each due one:

- The body is JSON, ``{"comparison_id", "tools": [{"key", "ship", "skip",
  "ship_pct"}], "changed_at"}``, with the counts as they are when it is sent.
- ``X-Digest-Timestamp`` is the Unix time in seconds and ``X-Digest-Signature`` is
  ``sha256=`` and the hex HMAC-SHA256, keyed by ``DIGEST_VOTES_WEBHOOK_SECRET``, of
  ``"{timestamp}.{body}"`` (:func:`signature`). Without the secret nothing is sent
  (one log line a run says so): an unsigned body could be forged by anyone.
- Through the outbound address guard (:mod:`digest.common.netguard`): a URL on a
  loopback, private or link-local address is refused, never retried. Redirects are
  not followed. Each POST runs under one total deadline (``webhook_timeout_seconds``)
  and at most :data:`MAX_RESPONSE_BYTES` of the answer are read.
- A 2xx answer marks the row notified. Anything else is retried with exponential
  backoff (1 min, 2, 4 … capped at 6 h, in ``next_at``) until
  ``webhook_attempts`` attempts, then given up with ``last_error`` kept. A new vote
  queues the comparison afresh (attempts from 0). A row is marked only if no vote
  came in while it was being sent (``changed_at`` unchanged), so none is lost.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, select, update

from digest.common.netguard import AddressPolicy, Refused, Resolver, guarded_client
from digest.common.redaction import guard, redact_text
from digest.common.retry import Backoff
from digest.config import VotesConfig
from digest.config.runtime import Runtime
from digest.engagement.votes import Board, boards
from digest.store.db import session_scope
from digest.store.models import VoteChange

log = logging.getLogger(__name__)

Q = VoteChange.__table__  # type: ignore[attr-defined]
SECRET_ENV = "DIGEST_VOTES_WEBHOOK_SECRET"  # noqa: S105  (a variable name)
MAX_RESPONSE_BYTES = 16_384
BATCH = 50  # rows per run; the rest wait for the next minute
BACKOFF = Backoff(base=60.0, cap=6 * 3600.0)  # the ceiling is used: no jitter, one sender
USER_AGENT = "verdicts-digest-votes/1"


@dataclass(slots=True)
class Summary:
    due: int = 0
    sent: int = 0
    retrying: int = 0
    gave_up: int = 0
    refused: str = ""  # why nothing was sent at all

    def describe(self) -> str:
        if self.refused:
            return self.refused
        return (
            f"{self.due} due: {self.sent} sent, {self.retrying} to retry, {self.gave_up} given up"
        )


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 keyed by ``secret`` over ``{timestamp}.{body}``."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, "sha256")
    return "sha256=" + mac.hexdigest()


def body_of(board: Board, changed_at: datetime) -> bytes:
    tools = [
        {"key": tool.get("key"), "ship": n.ship, "skip": n.skip, "ship_pct": n.ship_pct}
        for tool, n in board.tools
    ]
    data = {"comparison_id": board.comparison_id, "tools": tools, "changed_at": _iso(changed_at)}
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


async def deliver_pending(
    rt: Runtime,
    *,
    now: datetime,
    policy: AddressPolicy | None = None,
    resolver: Resolver | None = None,
) -> Summary:
    """POST every due comparison's counts. ``policy``: which addresses may be
    reached (default: public ones only; tests pass one that lets a loopback server
    through). Never raises for an answer or a network failure."""
    cfg = rt.config.votes
    if not cfg.webhook_url:
        return Summary()  # nowhere to send: the changes wait in the queue
    secret = rt.config.env.get(SECRET_ENV, "")
    if not secret:
        log.error(
            "votes webhook: %s is not set; nothing sent (the body must be signed)", SECRET_ENV
        )
        return Summary(refused=f"{SECRET_ENV} is not set: nothing sent")
    with session_scope(rt.engine) as session:
        rows = session.execute(
            select(Q.c.comparison_id, Q.c.changed_at, Q.c.attempts)
            .where(Q.c.notified_at.is_(None), Q.c.next_at.is_not(None), Q.c.next_at <= now)
            .where(Q.c.attempts < cfg.webhook_attempts)
            .order_by(Q.c.next_at)
            .limit(BATCH)
        ).all()
        found = {b.comparison_id: b for b in boards(session, [r.comparison_id for r in rows])}
    summary = Summary(due=len(rows))
    if not rows:
        return summary
    policy = policy or AddressPolicy()
    guard("httpx")  # httpx logs each request's URL at INFO: redacted, whoever set logging up
    options: dict[str, Any] = {"timeout": cfg.webhook_timeout_seconds, "follow_redirects": False}
    async with guarded_client(policy, resolver=resolver, **options) as client:
        for row in rows:
            board = found.get(row.comparison_id)
            if board is None:  # deleted, or its tools are gone: nothing to tell
                gone = "the comparison is no longer stored (or has no tools): nothing to send"
                _settle(rt.engine, row, now, gone, final=True, limit=cfg.webhook_attempts)
                summary.gave_up += 1
                continue
            stamp = str(int(now.timestamp()))
            body = body_of(board, row.changed_at)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "X-Digest-Timestamp": stamp,
                "X-Digest-Signature": signature(secret, stamp, body),
            }
            error, final = await _post(client, cfg.webhook_url, headers, body, cfg)
            state = _settle(rt.engine, row, now, error, final=final, limit=cfg.webhook_attempts)
            setattr(summary, state, getattr(summary, state) + 1)
    return summary


async def _post(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], body: bytes, cfg: VotesConfig
) -> tuple[str | None, bool]:
    """(None, _) for a 2xx answer, else (why, whether retrying is pointless)."""
    deadline = float(cfg.webhook_timeout_seconds)
    try:
        async with asyncio.timeout(deadline):
            async with client.stream("POST", url, content=body, headers=headers) as response:
                head = await _read_capped(response)
    except Refused as exc:
        why = str(exc).split("; set ", 1)[0]
        return f"{why}; the votes webhook posts to public addresses only", True
    except TimeoutError:
        return f"no complete answer within {deadline:g} s (webhook_timeout_seconds)", False
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return redact_text(f"{type(exc).__name__}: {exc}".strip())[:300], False
    if 200 <= response.status_code < 300:
        return None, False
    snippet = " ".join(head.decode("utf-8", "replace").split())[:200]
    return redact_text(f"answered {response.status_code}: {snippet}".rstrip(": ")), False


async def _read_capped(response: httpx.Response) -> bytes:
    """At most :data:`MAX_RESPONSE_BYTES` of the (undecoded) answer; the rest is dropped."""
    head = bytearray()
    async for chunk in response.aiter_raw():
        head += chunk[: MAX_RESPONSE_BYTES - len(head)]
        if len(head) >= MAX_RESPONSE_BYTES:
            break
    return bytes(head)


def _settle(
    engine: Engine, row: Any, now: datetime, error: str | None, *, final: bool, limit: int
) -> str:
    """Record one attempt; returns the :class:`Summary` field it counts in."""
    attempts = int(row.attempts) + 1
    values: dict[str, Any] = {"attempts": attempts, "next_at": None, "last_error": error or ""}
    if error is None:
        state, values["notified_at"] = "sent", now
    elif final or attempts >= limit:
        state = "gave_up"
        log.error(
            "votes webhook: gave up on %s after %d attempt(s): %s",
            row.comparison_id,
            attempts,
            error,
        )
    else:
        state = "retrying"
        values["next_at"] = now + timedelta(seconds=BACKOFF.ceiling(attempts))
        log.warning(
            "votes webhook: %s for %s (attempt %d of %d), next at %s",
            error,
            row.comparison_id,
            attempts,
            limit,
            _iso(values["next_at"]),
        )
    with engine.begin() as conn:  # only if no vote came in meanwhile (that one is due now)
        conn.execute(
            update(Q)
            .where(Q.c.comparison_id == row.comparison_id, Q.c.changed_at == row.changed_at)
            .values(**values)
        )
    return state


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")
