"""Policy blocks as incidents: ``digest check`` exits 1 and names them, ``digest
status`` shows them, the operators are emailed once.

A policy block (RFC 3463 5.7.x: authentication, DMARC, a spam or reputation block,
"missing Message-ID") is the sender's problem, never the reader's: nobody is
suppressed for it (:mod:`digest.delivery.refusals`, :mod:`digest.delivery.events`), so
nothing would change unless a human looks. Two sources count alike: send-time
refusals (``failed`` rows whose server words carry 5.7.x) and provider webhook
events flagged ``policy``.

One incident per edition, named ``policy:<edition key>`` (``policy:unmatched`` for
webhook blocks that matched no delivery), while the edition's newest block is
younger than :data:`POLICY_WINDOW`. ``digest.ops.alerts`` emails each incident name
once when it opens and once when it resolves, so a block alerts once, and an old
block stops making ``digest check`` fail a week later instead of for ever.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select

from digest.delivery.refusals import PolicyTally, enhanced_status, send_time_blocks
from digest.ops.alerts import Incident
from digest.store.models import Delivery, DeliveryEventRecord, Edition

D = Delivery.__table__  # type: ignore[attr-defined]
E = DeliveryEventRecord.__table__  # type: ignore[attr-defined]
ED = Edition.__table__  # type: ignore[attr-defined]

POLICY_WINDOW = timedelta(days=7)  # an edition's policy incident lasts this long
UNMATCHED = "unmatched"  # the incident key of webhook blocks that matched no delivery


def incidents(conn: Connection, *, now: datetime) -> list[Incident]:
    """One incident per edition with a policy block in the last :data:`POLICY_WINDOW`,
    in edition order, unmatched last (empty: no recent block)."""
    since = now - POLICY_WINDOW
    merged = send_time_blocks(conn, since=since)
    for key, tally in webhook_blocks(conn, since=since).items():
        into = merged.setdefault(key, PolicyTally())
        into.by_webhook += tally.by_webhook
        into.codes |= tally.codes
    keys = sorted(merged, key=lambda k: (k == "", k))  # unmatched last
    return [_incident(key, merged[key]) for key in keys]


def webhook_blocks(conn: Connection, *, since: datetime) -> dict[str, PolicyTally]:
    """Policy events received at or after ``since``, per edition key ("" unmatched)."""
    key = func.coalesce(ED.c.key, "")
    stmt = (
        select(key, E.c.smtp_status)
        .select_from(
            E.outerjoin(D, D.c.id == E.c.delivery_id).outerjoin(ED, ED.c.id == D.c.edition_id)
        )
        .where(E.c.policy.is_(True), E.c.received_at >= since)
    )
    tallies: dict[str, PolicyTally] = {}
    for edition_key, status in conn.execute(stmt):
        tally = tallies.setdefault(str(edition_key), PolicyTally())
        tally.by_webhook += 1
        code = enhanced_status(str(status))
        if code:
            tally.codes.add(code)
    return tallies


def _incident(key: str, tally: PolicyTally) -> Incident:
    # Only our own words, counts and status codes the pattern matched go in the
    # summary: it becomes an email subject, and a server's words are not ours to
    # put in a header. The words stay on the delivery rows and events.
    parts = [
        f"{n} {label}"
        for n, label in ((tally.at_send, "at send time"), (tally.by_webhook, "by webhook"))
        if n
    ]
    codes = f" ({', '.join(sorted(tally.codes))})" if tally.codes else ""
    n = tally.total
    about = f"edition {key}" if key else "mail that matched no delivery"
    return Incident(
        f"policy:{key or UNMATCHED}",
        f"{n} message{'s' * (n != 1)} of {about} refused for policy reasons{codes}, "
        f"{' and '.join(parts)}, in the last {POLICY_WINDOW.days} days; nobody was "
        "suppressed: check SPF/DKIM/DMARC and the message headers (docs/OPERATIONS.md, "
        "'Policy blocks')",
    )
