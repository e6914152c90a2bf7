"""What the editors see (issue 16): per edition, what went out and what came back.

The rules behind :class:`EditionStats` (for operators: docs/OPERATOR_DESK.md):

- **sent**: ledger rows the transport took, ``sent`` or ``bounced`` (a row the
  receiving server refused while we sent is ``bounced``: it was tried).
- **bounced_hard**: rows in state ``bounced`` (refused while sending, or a provider's
  hard bounce later); **bounced_soft**: other ``sent`` rows with a ``bounced-soft``
  event. **complained**: sent rows with a ``complained`` event. A message counts once.
- **delivered**: the ``sent`` rows with a provider ``delivered`` event (else the
  ``delivered`` engagement counter), at most sent: ``delivered_source`` "provider";
  where no provider reports deliveries, sent − bounced ("estimate").
- **unsubscribed**: readers whose unsubscribe (consent log, any source) came while
  this was the newest edition they had been sent (planned before the unsubscribe).
- **unique_clicks**: messages with a reader's click (``click_seen``); **clicks**,
  **scanner_clicks** (mail scanners, apart), **opens** (pixel + provider; unreliable,
  shown when non-zero): the ``engagement_count`` kinds. **click_rate**: unique
  clicks ÷ delivered, in percent (None when none delivered).
- **votes**: ship / skip on the tools of the edition's comparisons (not those left
  out), cast from this edition's copies or naming no edition (the archive's).

:func:`trends` reads eight grouped queries however many editions; :func:`to_csv`
(per edition) and :func:`links_to_csv` (per link of one) are formula-safe.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import distinct, func, select
from sqlmodel import Session

from digest.errors import DigestError
from digest.store import engagement_models as em
from digest.store import models as m
from subscribers.models import ConsentAction, ConsentEvent


def _t(model: Any) -> Any:
    return model.__table__


ED, D, C, EV = _t(m.Edition), _t(m.Delivery), _t(m.Comparison), _t(m.DeliveryEventRecord)
EC, CS, V = _t(em.EngagementCount), _t(em.ClickSeen), _t(em.ReaderVote)
LINEUP, CE = _t(m.EditionComparison), _t(ConsentEvent)
WENT_OUT = ("sending", "paused", "sent")  # EditionStatus values: the ledger went out
TRENDS = 12
_TOOK = ("sent", "bounced")
_EDITION = (ED.c.id, ED.c.key, ED.c.status, ED.c.planned_at)


class NoSuchEdition(DigestError):
    """No edition has this key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"there is no edition {key[:40]!r}; 'digest status' lists them")


@dataclass(frozen=True, slots=True)
class ToolStats:
    key: str
    name: str
    clicks: int
    ship: int
    skip: int


@dataclass(frozen=True, slots=True)
class ComparisonStats:
    id: str
    title: str
    clicks: int  # on the comparison's own page (link "c")
    tools: tuple[ToolStats, ...]


@dataclass(frozen=True, slots=True)
class EditionStats:
    key: str
    status: str
    planned_at: datetime | None
    sent: int
    delivered: int
    delivered_source: str  # "provider" or "estimate" (sent − bounced)
    bounced_hard: int
    bounced_soft: int
    complained: int
    unsubscribed: int
    unique_clicks: int
    clicks: int
    scanner_clicks: int
    opens: int
    comparisons: tuple[ComparisonStats, ...]

    @property
    def bounced(self) -> int:
        return self.bounced_hard + self.bounced_soft

    @property
    def click_rate(self) -> float | None:
        return 100.0 * self.unique_clicks / self.delivered if self.delivered else None

    @property
    def ship(self) -> int:
        return sum(t.ship for c in self.comparisons for t in c.tools)

    @property
    def skip(self) -> int:
        return sum(t.skip for c in self.comparisons for t in c.tools)


def edition_stats(session: Session, key: str) -> EditionStats:
    """The figures of the edition ``key`` (all zeros before it is planned).
    Raises :class:`NoSuchEdition` for an unknown key."""
    rows = session.execute(select(*_EDITION).where(ED.c.key == key)).all()
    if not rows:
        raise NoSuchEdition(key)
    return _collect(session, rows)[0]


def trends(session: Session, limit: int = TRENDS) -> list[EditionStats]:
    """The newest ``limit`` editions that went out (planned; sending, paused or sent,
    not cancelled), oldest first."""
    stmt = select(*_EDITION).where(ED.c.planned_at.is_not(None), ED.c.status.in_(WENT_OUT))
    rows = session.execute(stmt.order_by(ED.c.key.desc()).limit(limit)).all()
    return _collect(session, list(reversed(rows)))


@dataclass
class _Tallies:
    """What the grouped queries found, keyed by their group columns."""

    ledger: dict[tuple[Any, ...], int]  # (edition id, state)
    events: dict[tuple[Any, ...], int]  # (edition id, event type, row state): messages
    counts: dict[tuple[Any, ...], int]  # (edition key, comparison, link, kind)
    seen: dict[tuple[Any, ...], int]  # (edition key,): unique clicking messages
    lineups: dict[int, list[str]]  # edition id → comparison ids, in display order
    catalog: dict[str, tuple[str, list[tuple[str, str]]]]  # id → title, [(tool, name)]
    votes: dict[tuple[Any, ...], int]  # (comparison, tool, edition key, choice)
    unsubscribed: dict[int, int]  # edition id → readers


def _collect(session: Session, editions: Sequence[Any]) -> list[EditionStats]:
    ids, keys = [int(e.id) for e in editions], [str(e.key) for e in editions]
    if not ids:
        return []
    took = D.c.edition_id.in_(ids) & D.c.state.in_(_TOOK)
    answered = EV.c.type.in_(("delivered", "bounced-soft", "complained"))
    messages = select(D.c.edition_id, EV.c.type, D.c.state, func.count(distinct(EV.c.delivery_id)))
    by_link = (EC.c.edition_key, EC.c.comparison_id, EC.c.link, EC.c.kind)
    counts = _tally(session, select(*by_link, func.sum(EC.c.count)).where(by_link[0].in_(keys)))
    lineups: dict[int, list[str]] = defaultdict(list)
    lineup = select(LINEUP.c.edition_id, LINEUP.c.comparison_id).where(
        LINEUP.c.edition_id.in_(ids), LINEUP.c.excluded.is_(False)
    )
    for eid, cid in session.execute(lineup.order_by(LINEUP.c.edition_id, LINEUP.c.position)):
        lineups[int(eid)].append(str(cid))
    cids = sorted({c for cs in lineups.values() for c in cs} | {str(k[1]) for k in counts})
    found = session.execute(select(C.c.id, C.c.title, C.c.tools).where(C.c.id.in_(cids)))
    catalog = {
        str(cid): (str(title), [(str(t["key"]), str(t.get("name") or t["key"])) for t in tools])
        for cid, title, tools in found
    }
    vote = (V.c.comparison_id, V.c.tool_key, V.c.edition_key, V.c.choice)
    voted = vote[0].in_(cids) & vote[2].in_([*keys, ""])
    tallies = _Tallies(
        _tally(session, select(D.c.edition_id, D.c.state, func.count()).where(took)),
        _tally(session, messages.join(D, D.c.id == EV.c.delivery_id).where(took, answered)),
        counts,
        _tally(session, select(CS.c.edition_key, func.count()).where(CS.c.edition_key.in_(keys))),
        lineups,
        catalog,
        _tally(session, select(*vote, func.count()).where(voted)),
        _unsubscribed(session, ids),
    )
    return [_edition(e, tallies) for e in editions]


def _tally(session: Session, stmt: Any) -> dict[tuple[Any, ...], int]:
    """``{(group…): n}`` of a ``select(group…, aggregate)``, grouped by every group."""
    grouped = stmt.group_by(*list(stmt.selected_columns)[:-1])
    return {tuple(row[:-1]): int(row[-1] or 0) for row in session.execute(grouped)}


def _edition(e: Any, t: _Tallies) -> EditionStats:
    eid, key = int(e.id), str(e.key)
    kinds: dict[str, int] = defaultdict(int)
    for (k, _cid, _link, kind), n in t.counts.items():
        if k == key:
            kinds[str(kind)] += n
    hard = t.ledger.get((eid, "bounced"), 0)
    sent = t.ledger.get((eid, "sent"), 0) + hard
    soft = t.events.get((eid, "bounced-soft", "sent"), 0)
    reported = t.events.get((eid, "delivered", "sent"), 0) or kinds["delivered"]
    return EditionStats(
        key=key, status=str(e.status), planned_at=e.planned_at, sent=sent,
        delivered=min(reported, sent) if reported else max(sent - hard - soft, 0),
        delivered_source="provider" if reported else "estimate",
        bounced_hard=hard, bounced_soft=soft,
        complained=sum(t.events.get((eid, "complained", state), 0) for state in _TOOK),
        unsubscribed=t.unsubscribed.get(eid, 0), unique_clicks=t.seen.get((key,), 0),
        clicks=kinds["click"], scanner_clicks=kinds["scanner"],
        opens=kinds["open"] + kinds["provider_open"],
        comparisons=_comparisons(key, t.lineups[eid], t),
    )  # fmt: skip


def _comparisons(key: str, lineup: list[str], t: _Tallies) -> tuple[ComparisonStats, ...]:
    """The edition's comparisons in display order, then any other clicked one (left
    out after its links went out); tools in feed order, then other clicked or voted."""
    clicks = {(c, ln): n for (k, c, ln, kind), n in t.counts.items() if (k, kind) == (key, "click")}
    votes: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # ship, skip
    for (c, tool, k, choice), n in t.votes.items():
        if k in (key, "") and choice in ("ship", "skip"):
            votes[(c, tool)][choice == "skip"] += n
    found = []
    for cid in [*lineup, *sorted({c for c, _ in clicks if c and c not in lineup})]:
        title, tools = t.catalog.get(cid, (cid, []))
        names = dict(tools)
        others = [ln[2:] for c, ln in clicks if c == cid and ln.startswith("t-")]
        for tool in [*others, *(tool for c, tool in list(votes) if c == cid)]:
            names.setdefault(tool, tool)
        per_tool = tuple(
            ToolStats(tool, name, clicks.get((cid, f"t-{tool}"), 0), *votes[(cid, tool)])
            for tool, name in names.items()
        )
        found.append(ComparisonStats(cid, title, clicks.get((cid, "c"), 0), per_tool))
    return tuple(found)


def _unsubscribed(session: Session, ids: list[int]) -> dict[int, int]:
    """``{edition id: readers}``: each unsubscribe goes to the newest edition the reader
    had been sent (a ``sent`` row) among those planned before it."""
    recipients = select(D.c.subscriber_id).where(D.c.edition_id.in_(ids), D.c.state == "sent")
    got = D.alias("got")
    stmt = (
        select(CE.c.id, CE.c.subscriber_id, got.c.edition_id, ED.c.planned_at)
        .select_from(CE)
        .join(got, (got.c.subscriber_id == CE.c.subscriber_id) & (got.c.state == "sent"))
        .join(ED, (ED.c.id == got.c.edition_id) & (ED.c.planned_at <= CE.c.created_at))
        .where(CE.c.action == ConsentAction.unsubscribed.value, CE.c.subscriber_id.in_(recipients))
    )
    latest: dict[int, tuple[datetime, int, int]] = {}
    for event, reader, eid, planned in session.execute(stmt):
        if event not in latest or planned > latest[event][0]:
            latest[event] = (planned, int(eid), int(reader))
    once = {(eid, reader) for _planned, eid, reader in latest.values()}
    return dict(Counter(eid for eid, _reader in once))


# Columns of the per-edition CSV: EditionStats attributes, and their CSV names.
EDITION_FIELDS = (
    "key", "status", "planned_at", "sent", "delivered", "delivered_source", "bounced",
    "bounced_hard", "bounced_soft", "complained", "unsubscribed", "unique_clicks",
    "click_rate", "clicks", "scanner_clicks", "opens", "ship", "skip",
)  # fmt: skip
_RENAMED = {"key": "edition", "click_rate": "click_rate_pct", "ship": "votes_ship"}
_RENAMED |= {"skip": "votes_skip"}
LINK_FIELDS = (
    "edition", "comparison_id", "comparison", "link", "tool_key", "tool", "clicks", "ship", "skip",
)  # fmt: skip


def to_csv(stats_list: Sequence[EditionStats]) -> str:
    """One row per edition (UTC ISO times, the click rate to one decimal), formula-safe."""
    rows = [[getattr(s, name) for name in EDITION_FIELDS] for s in stats_list]
    return _csv([_RENAMED.get(name, name) for name in EDITION_FIELDS], rows)


def links_to_csv(stats: EditionStats) -> str:
    """One row per link of one edition: each comparison's page (``c``), then its tools
    (``t-<key>``) with their votes; formula-safe."""
    rows: list[list[object]] = []
    for c in stats.comparisons:
        head = [stats.key, c.id, c.title]
        rows.append([*head, "c", "", "", c.clicks, "", ""])
        rows += [[*head, f"t-{t.key}", t.key, t.name, t.clicks, t.ship, t.skip] for t in c.tools]
    return _csv(LINK_FIELDS, rows)


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([_cell(value) for value in row] for row in rows)
    return buffer.getvalue()


def _cell(value: object) -> str:
    """A value as CSV text; one a spreadsheet would run as a formula (``=``, ``+``,
    ``-``, ``@``…) gets a leading apostrophe, as :func:`digest.store.audit.to_csv` does."""
    text = value.isoformat() if isinstance(value, datetime) else "" if value is None else str(value)
    text = f"{value:.1f}" if isinstance(value, float) else text
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
