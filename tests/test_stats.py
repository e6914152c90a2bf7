"""The editors' statistics (issue 16): the figures of an edition and the trends, from
hand-written rows on SQLite and PostgreSQL; the CSV; the SVG charts; ``digest stats``
in process. The desk's pages: tests/test_browser_stats.py.

The rows are written here, not by the click and webhook code (others fill those
tables): each figure's rule is in :mod:`digest.engagement.stats`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session
from typer.testing import CliRunner, Result

from digest.engagement import charts, stats
from digest.store.db import session_scope
from digest.store.engagement_models import ClickSeen, EngagementCount, ReaderVote
from digest.store.models import (
    Comparison,
    Delivery,
    DeliveryEventRecord,
    Edition,
    EditionComparison,
)
from subscribers.models import ConsentEvent, Subscriber
from tests.support import write_config

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # Monday of 2026-W45
TITLE_A = "Agents & <Co>"
FORMULA = '=HYPERLINK("https://evil.example","x")'
SVG = "{http://www.w3.org/2000/svg}"


def comparison(s: Session, cid: str, title: str, tools: list[tuple[str, str]]) -> None:
    s.add(Comparison(
        id=cid, url=f"https://verdicts.example/{cid}", title=title, category="Agents",
        published_at=T0, updated_at=T0, first_seen_at=T0, last_seen_at=T0, reviews=[],
        tools=[{"key": key, "name": name} for key, name in tools],
    ))  # fmt: skip


def edition(
    s: Session, key: str, planned: datetime | None, lineup: list[str], status: str = "sent"
) -> int:
    row = Edition(key=key, status=status, cutoff=T0, composed_at=T0, planned_at=planned)
    s.add(row)
    s.flush()
    assert row.id is not None
    for position, cid in enumerate(lineup):
        out = cid.startswith("out-")  # left out by an editor
        s.add(
            EditionComparison(edition_id=row.id, comparison_id=cid, position=position, excluded=out)
        )
    return row.id


def readers(s: Session, n: int, start: int = 1) -> list[int]:
    rows = [Subscriber(email=f"r{i}@example.com") for i in range(start, start + n)]
    s.add_all(rows)
    s.flush()
    return [r.id or 0 for r in rows]


def deliveries(s: Session, edition_id: int, **states: list[int]) -> dict[int, int]:
    """``{reader: delivery id}``; ``states``: state → readers."""
    rows = [
        Delivery(edition_id=edition_id, subscriber_id=reader, state=state, updated_at=T0)
        for state, who in states.items()
        for reader in who
    ]
    s.add_all(rows)
    s.flush()
    return {row.subscriber_id: row.id or 0 for row in rows}


def provider_event(s: Session, delivery_id: int | None, kind: str) -> None:
    s.add(DeliveryEventRecord(
        provider="postmark", event_id=uuid.uuid4().hex,
        type=kind, delivery_id=delivery_id, raw={}, received_at=T0,
    ))  # fmt: skip
    s.flush()


def counts(s: Session, key: str, table: dict[tuple[str, str, str], int]) -> None:
    for (cid, link, kind), n in table.items():
        s.add(EngagementCount(edition_key=key, comparison_id=cid, link=link, kind=kind, count=n))


def seen(s: Session, key: str, n: int) -> None:
    s.add_all(ClickSeen(edition_key=key, ref=f"p{key}{i}", first_at=T0) for i in range(n))


def vote(s: Session, cid: str, tool: str, choice: str, key: str, reader: int | None) -> None:
    s.add(ReaderVote(
        comparison_id=cid, tool_key=tool, subscriber_id=reader, choice=choice, edition_key=key,
        created_at=T0, updated_at=T0,
    ))  # fmt: skip


def unsubscribe(s: Session, reader: int, at: datetime) -> None:
    s.add(ConsentEvent(
        subscriber_id=reader, email_hash="h", action="unsubscribed", source="link", created_at=at
    ))  # fmt: skip


def scenario(engine: Engine) -> None:
    """Two editions sent a week apart, one composed, one cancelled (see the tests)."""
    with session_scope(engine) as s:
        comparison(s, "cmp-a", TITLE_A, [("alpha", "Alpha"), ("beta", FORMULA)])
        comparison(s, "cmp-b", "Browsers", [("bravo", "Bravo")])
        comparison(s, "out-x", "Left out", [])
        r = readers(s, 6)
        w45 = edition(s, "2026-W45", T0, ["cmp-a"])
        w46 = edition(s, "2026-W46", T0 + timedelta(days=7), ["cmp-b", "out-x"])
        edition(s, "2026-W47", None, ["cmp-b"], status="composed")
        edition(s, "2026-W44", T0 - timedelta(days=7), [], status="cancelled")
        d = deliveries(s, w45, sent=r[:5], bounced=r[5:])
        for reader in r[:4]:
            provider_event(s, d[reader], "delivered")
        provider_event(s, d[r[0]], "delivered")  # twice for one message: counted once
        provider_event(s, None, "delivered")  # matched to nothing: not this edition's
        provider_event(s, d[r[3]], "bounced-soft")
        provider_event(s, d[r[3]], "bounced-soft")
        provider_event(s, d[r[4]], "complained")
        provider_event(s, d[r[5]], "bounced-hard")  # already counted by its state
        deliveries(s, w46, sent=r[:3], failed=r[3:4], skipped=r[4:5])
        counts(s, "2026-W45", {
            ("cmp-a", "c", "click"): 7, ("cmp-a", "t-alpha", "click"): 3,
            ("cmp-a", "t-beta", "click"): 1, ("cmp-a", "c", "scanner"): 4,
            ("", "", "open"): 10, ("", "", "provider_open"): 2,
        })  # fmt: skip
        counts(s, "2026-W46", {
            ("cmp-b", "c", "click"): 2, ("cmp-b", "t-bravo", "click"): 1,
            ("cmp-b", "t-gone", "click"): 1, ("out-x", "c", "click"): 1,
        })  # fmt: skip
        seen(s, "2026-W45", 3)
        seen(s, "2026-W46", 2)
        vote(s, "cmp-a", "alpha", "ship", "2026-W45", r[0])
        vote(s, "cmp-a", "alpha", "ship", "2026-W45", r[1])
        vote(s, "cmp-a", "alpha", "skip", "", r[2])  # from the archive: no edition
        vote(s, "cmp-a", "beta", "skip", "2026-W45", r[0])
        vote(s, "cmp-a", "alpha", "ship", "2026-W99", r[3])  # another edition's copy
        unsubscribe(s, r[0], T0 - timedelta(days=1))  # before anything was sent
        unsubscribe(s, r[4], T0 + timedelta(days=1))  # after W45: W45's
        unsubscribe(s, r[5], T0 + timedelta(days=2))  # bounced, never sent one: nobody's
        unsubscribe(s, r[1], T0 + timedelta(days=8))  # after W46: W46's
        unsubscribe(s, r[2], T0 + timedelta(days=8))
        unsubscribe(s, r[2], T0 + timedelta(days=9))  # twice: one reader


def test_the_figures_of_each_edition(engine: Engine) -> None:
    scenario(engine)
    with Session(engine) as s:
        w45, w46 = stats.trends(s)
        assert stats.edition_stats(s, "2026-W45") == w45
        composed = stats.edition_stats(s, "2026-W47")
    assert (w45.key, w45.sent, w45.bounced_hard, w45.bounced_soft) == ("2026-W45", 6, 1, 1)
    assert (w45.bounced, w45.delivered, w45.delivered_source) == (2, 4, "provider")
    assert (w45.complained, w45.unsubscribed) == (1, 1)
    assert (w45.unique_clicks, w45.clicks, w45.scanner_clicks, w45.opens) == (3, 11, 4, 12)
    assert w45.click_rate == 75.0 and (w45.ship, w45.skip) == (2, 2)
    (a,) = w45.comparisons
    assert (a.id, a.title, a.clicks) == ("cmp-a", TITLE_A, 7)
    tools = [(t.key, t.name, t.clicks, t.ship, t.skip) for t in a.tools]
    assert tools == [("alpha", "Alpha", 3, 2, 1), ("beta", FORMULA, 1, 0, 1)]
    assert (w46.sent, w46.delivered, w46.delivered_source, w46.bounced) == (3, 3, "estimate", 0)
    assert (w46.unsubscribed, w46.unique_clicks, w46.clicks, w46.opens) == (2, 2, 5, 0)
    b, x = w46.comparisons  # the left-out comparison still shows its clicks
    tools = [(t.key, t.name, t.clicks, t.ship, t.skip) for t in b.tools]
    assert tools == [("bravo", "Bravo", 1, 0, 0), ("gone", "gone", 1, 0, 0)]  # gone from the feed
    assert (x.id, x.title, x.clicks, x.tools) == ("out-x", "Left out", 1, ())
    assert (composed.status, composed.sent, composed.click_rate) == ("composed", 0, None)
    assert [c.id for c in composed.comparisons] == ["cmp-b"]


def test_an_unknown_edition_is_a_clear_error(engine: Engine) -> None:
    with Session(engine) as s, pytest.raises(stats.NoSuchEdition, match="no edition '2026-W01'"):
        stats.edition_stats(s, "2026-W01")
    with Session(engine) as s:
        assert stats.trends(s) == []


def history(engine: Engine, weeks: int) -> None:
    """``weeks`` sent editions (2026-W30 on), each with more readers and clicks."""
    with session_scope(engine) as s:
        comparison(s, "cmp-h", "History", [("tool", "Tool")])
        people = readers(s, weeks + 10, start=100)
        for week in range(weeks):
            key = f"2026-W{30 + week:02d}"
            eid = edition(s, key, T0 - timedelta(weeks=20 - week), ["cmp-h"])
            deliveries(s, eid, sent=people[: 10 + week])
            seen(s, key, 2 + week % 5)
            counts(s, key, {("cmp-h", "c", "click"): 3 + week})
            vote(s, "cmp-h", "tool", "ship" if week % 3 else "skip", key, people[week])


def test_trends_take_the_last_twelve_in_a_fixed_number_of_queries(engine: Engine) -> None:
    issued: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: issued.append(a[2][:60]))
    scenario(engine)
    with Session(engine) as s:
        issued.clear()
        assert [e.key for e in stats.trends(s)] == ["2026-W45", "2026-W46"]
        few = sum(q.startswith("SELECT") for q in issued)
    history(engine, 14)
    with Session(engine) as s:
        issued.clear()
        found = stats.trends(s)
        many = sum(q.startswith("SELECT") for q in issued)
    assert [e.key for e in found] == [f"2026-W{w}" for w in (*range(34, 44), 45, 46)]
    assert many == few == 9, issued  # the editions, then eight grouped queries
    assert [(e.sent, e.unique_clicks) for e in found[:2]] == [(14, 6), (15, 2)]


def test_csv_one_row_per_edition_and_per_link_formula_safe(engine: Engine) -> None:
    scenario(engine)
    with Session(engine) as s:
        found = stats.trends(s)
    rows = list(csv.reader(io.StringIO(stats.to_csv(found))))
    assert rows[0][:4] == ["edition", "status", "planned_at", "sent"]
    assert "click_rate_pct" in rows[0] and "votes_ship" in rows[0]
    w45 = dict(zip(rows[0], rows[1], strict=True))
    assert w45 | {"planned_at": "-"} == w45 | {
        "edition": "2026-W45", "planned_at": "-", "sent": "6", "delivered": "4",
        "delivered_source": "provider", "bounced": "2", "unique_clicks": "3",
        "click_rate_pct": "75.0", "scanner_clicks": "4", "votes_ship": "2", "votes_skip": "2",
    }  # fmt: skip
    assert w45["planned_at"].startswith("2026-11-02T08:00:00")
    links = list(csv.reader(io.StringIO(stats.links_to_csv(found[0]))))
    assert links[0] == list(stats.LINK_FIELDS)
    assert links[1] == ["2026-W45", "cmp-a", TITLE_A, "c", "", "", "7", "", ""]
    assert links[3][3:] == ["t-beta", "beta", "'" + FORMULA, "1", "0", "1"]


@pytest.fixture
def digest(tmp_path: Path, sqlite_engine: Engine) -> Callable[..., Result]:
    """``digest --config … ARGS`` in this process (Typer's runner), never crashing."""
    from digest.cli import app

    config = write_config(tmp_path)
    env = {"DIGEST_DATABASE_URL": str(sqlite_engine.url), "DIGEST_SECRET_KEY": "k"}

    def run(*args: str) -> Result:
        result = CliRunner().invoke(app, ["--config", str(config), *args], env=env)
        assert isinstance(result.exception, SystemExit | None), repr(result.exception)
        return result

    return run


def test_digest_stats_the_table_one_edition_and_csv(
    digest: Callable[..., Result], sqlite_engine: Engine, tmp_path: Path
) -> None:
    assert "No edition has gone out yet" in digest("stats").stdout
    scenario(sqlite_engine)
    table = digest("stats")
    assert table.exit_code == 0, table.stderr
    assert "2026-W45" in table.stdout and "75.0%" in table.stdout and "W47" not in table.stdout
    one = digest("stats", "2026-W45")
    assert one.exit_code == 0, one.stderr
    for text in ("Edition 2026-W45 (sent", "Click rate:", "75.0%", TITLE_A, "Alpha", FORMULA):
        assert text in one.stdout
    trends = list(csv.reader(io.StringIO(digest("stats", "--csv", "-").stdout)))
    assert [row[0] for row in trends] == ["edition", "2026-W45", "2026-W46"]
    path = tmp_path / "links.csv"
    assert "Wrote the links of 2026-W45" in digest("stats", "2026-W45", "--csv", str(path)).stdout
    with Session(sqlite_engine) as s:
        assert path.read_bytes().decode() == stats.links_to_csv(stats.edition_stats(s, "2026-W45"))
    missing = digest("stats", "2026-W01")
    assert missing.exit_code == 2 and "there is no edition '2026-W01'" in missing.stderr
    assert "Traceback" not in missing.stdout + missing.stderr


def test_charts_are_escaped_accessible_svg() -> None:
    odd = stats.EditionStats("<b>&</b>", "sent", T0, 9, 4, "provider", 0, 0, 0, 0, 1, 2, 0, 0, ())
    none = dataclasses.replace(odd, key="2026-W02", sent=0, delivered=0, unique_clicks=0)
    for draw in (charts.sent_and_clicks, charts.click_rate, charts.votes):
        svg = ET.fromstring(draw([odd, none]))
        assert (svg.get("role"), svg.get("aria-label")) == ("img", svg.findtext(f"{SVG}title"))
        assert svg.find(f".//{SVG}b") is None and "<b>&</b>" in svg.findtext(f"{SVG}desc", "")
        assert ET.fromstring(draw([])).findtext(f"{SVG}desc") == "No edition has gone out yet."
    titles = [t.text for t in ET.fromstring(charts.click_rate([odd, none])).iter(f"{SVG}title")]
    assert "<b>&</b>: click rate 25.0%" in titles and not any("2026-W02:" in t for t in titles)
