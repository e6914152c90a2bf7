"""Refusals: which ones suppress a reader, and which ones are the sender's problem.

A refusal at send time (an SMTP reply, a provider API's answer) is classified by
its RFC 3463 enhanced status code, the first one in the server's words:

=====================  ==========================================================
5.1.x                  bad destination mailbox or domain: a hard bounce, the
                       reader is suppressed (consent log source ``smtp``)
``bounce="hard"``      the provider says the address must not be mailed again
                       (Postmark's ErrorCode 406 "inactive recipient"): the same
5.7.x                  security or policy status (DMARC/SPF/DKIM, a spam or
                       reputation block, "missing Message-ID"): the sender's
                       problem. The row is ``failed`` with the server's words,
                       nobody is suppressed, and an incident is raised
anything else          the row's state only (``digest.delivery.ledger``)
=====================  ==========================================================

:func:`send_time_blocks` counts the 5.7.x rows per edition from the ledger (no
separate record: the row's ``detail`` keeps the server's words);
:mod:`digest.ops.policy_incidents` turns them, with the webhook policy blocks, into
incidents for ``digest check`` and ``digest status``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, select
from sqlmodel import Session

from digest.delivery.ledger import D, E, Recipient
from digest.store.models import DeliveryState
from digest.transports.base import Outcome, SendResult
from subscribers import lifecycle
from subscribers.models import ConsentSource

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# RFC 3463: 5.1.x is a bad destination address (no such mailbox, bad domain): a
# hard bounce, whoever reports it.
_HARD_BOUNCE = re.compile(r"\b5\.1\.\d{1,3}\b")


def is_hard_bounce(detail: str) -> bool:
    """True when a refusal carries a 5.1.x status (bad mailbox or domain)."""
    return bool(_HARD_BOUNCE.search(detail))


def enhanced_status(detail: str) -> str:
    """The first RFC 3463 enhanced status code in a server's words, or ""."""
    found = _ENHANCED.search(detail)
    return found.group(0) if found else ""


def is_policy_refusal(detail: str) -> bool:
    """True when the server's words carry a 5.7.x status (RFC 3463 §3.8: "security or
    policy status") as their first enhanced code."""
    return enhanced_status(detail).startswith("5.7.")


def suppresses(result: SendResult) -> bool:
    """Whether a send-time answer means the reader must not be mailed again."""
    if result.bounce == "hard":
        return True
    return (
        result.outcome is Outcome.rejected
        and is_hard_bounce(result.detail)
        and not is_policy_refusal(result.detail)
    )


def suppress_refused(
    engine: Engine, results: Sequence[SendResult], chosen: Sequence[Recipient], now: datetime
) -> int:
    """Suppress the readers of the answers that :func:`suppresses` (one transaction);
    a policy refusal suppresses nobody. Returns how many readers changed."""
    readers = {r.delivery_id: r.subscriber_id for r in chosen}
    found = [r for r in results if r.delivery_id in readers and suppresses(r)]
    if not found:
        return 0
    changed = 0
    with Session(engine) as session, session.begin():
        for result in found:
            detail = result.detail or "the provider refuses this address (inactive recipient)"
            changed += lifecycle.record_bounce(
                session,
                subscriber_id=readers[result.delivery_id],
                hard=True,
                detail=detail,
                now=now,
                source=ConsentSource.smtp,
            )
    return changed


@dataclass(slots=True)
class PolicyTally:
    """Policy blocks of one edition: at send time and reported by webhooks."""

    at_send: int = 0
    by_webhook: int = 0
    codes: set[str] = field(default_factory=set)  # the enhanced codes seen, e.g. 5.7.26

    @property
    def total(self) -> int:
        return self.at_send + self.by_webhook


def send_time_blocks(conn: Connection, *, since: datetime | None = None) -> dict[str, PolicyTally]:
    """Failed rows refused with a 5.7.x status, per edition key (only rows last
    changed at or after ``since``, when given)."""
    stmt = (
        select(E.c.key, D.c.detail)
        .select_from(D.join(E, E.c.id == D.c.edition_id))
        .where(D.c.state == DeliveryState.failed.value, D.c.detail.like("%5.7.%"))
    )
    if since is not None:
        stmt = stmt.where(D.c.updated_at >= since)
    tallies: dict[str, PolicyTally] = {}
    for key, detail in conn.execute(stmt):
        if is_policy_refusal(detail):
            tally = tallies.setdefault(str(key), PolicyTally())
            tally.at_send += 1
            tally.codes.add(enhanced_status(detail))
    return tallies
