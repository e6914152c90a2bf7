"""Click tracking (issue 16): ``/r/{token}/{ref}`` through the real app on both backends, the
scanner rules, the open pixel, the batched counter (nothing lost), provider events counted."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.exc import OperationalError

from digest.engagement import counter as counter_mod
from digest.engagement.clicks import machine_agent
from digest.engagement.counter import Batch, ClickCounter, add_counts, write_batch
from digest.engagement.tokens import EngagementTokens
from digest.store.db import session_scope
from digest.store.engagement_models import ClickEvent, ClickSeen, EngagementCount
from digest.store.models import Comparison, EditionStatus
from digest.web import routes_track
from digest.webhooks.postmark import ENV_CREDENTIALS
from tests.support import write_config
from tests.test_web_support import Site, open_site
from tests.webhook_site import ADA, KEY, WebhookSite
from tests.webhook_site import open_site as open_hook_site

EDITION = "2026-W48"
PAGE = "https://verdicts.example/compare/editors"
CURSOR = "https://cursor.example/"
READER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
AGENTS = ("Mozilla/5.0 BingPreview/1.0b", "python-requests/2.32", "(via GoogleImageProxy)", "")


class Track:
    """A site with one sent edition and one comparison with tools, and its tokens."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.tokens = EngagementTokens(site.rt.signer())
        site.edition(EDITION, [], EditionStatus.sent)
        self.comparison("editors", PAGE, [{"key": "cursor", "url": CURSOR}, {"key": "zed"}])

    def comparison(self, ident: str, url: str, tools: list[dict[str, Any]]) -> None:
        now = self.site.clock.now
        with session_scope(self.site.rt.engine) as session:
            session.add(
                Comparison(
                    id=ident, url=url, title=ident, category="Dev", published_at=now,
                    updated_at=now, tools=tools, reviews=[], first_seen_at=now, last_seen_at=now,
                )
            )  # fmt: skip

    def ref(self, subscriber_id: int, *, ago: timedelta = timedelta(days=1), **kw: Any) -> str:
        sent = self.site.clock.now - ago
        return self.tokens.ref(EDITION, subscriber_id, sent, individual=kw.get("individual", False))

    def ident(self, subscriber_id: int) -> str:
        return self.tokens.read_ref(self.ref(subscriber_id)).ident

    def path(self, target: str, ref: str, comparison: str = "editors") -> str:
        return f"/r/{self.tokens.link(EDITION, comparison, target)}/{ref}"

    def get(self, path: str, *, ua: str = READER_UA, method: str = "GET") -> Any:
        client = self.site.client
        return client.request(method, path, headers={"user-agent": ua}, follow_redirects=False)

    def hits(self, ref: str, *targets: str, **kw: Any) -> None:
        for target in targets:
            assert self.get(self.path(target, ref), **kw).status_code == 302

    def counts(self) -> dict[Any, int]:
        assert routes_track.flush(self.site.client.app)
        return read_counts(self.site.rt.engine)

    def rows(self, model: Any) -> list[Any]:
        return rows(self.site.rt.engine, model)


def rows(engine: Engine, model: Any) -> list[Any]:
    with session_scope(engine) as session:
        return list(session.execute(select(model)).scalars())


def read_counts(engine: Engine, edition: str = EDITION) -> dict[Any, int]:
    found = [r for r in rows(engine, EngagementCount) if r.edition_key == edition and r.count]
    return {(r.comparison_id, r.link, r.kind): r.count for r in found}


def counted(*entries: str) -> dict[Any, int]:  # "c click 5" → {("editors", "c", "click"): 5}
    return {("editors", link, kind): int(n) for link, kind, n in map(str.split, entries)}


def track_site(tmp_path: Path, db_url: str, **tracking: Any) -> Iterator[Track]:
    sites = open_site(tmp_path, db_url, tracking={"flush_seconds": 3600, **tracking})
    try:
        yield Track(next(sites))
    finally:
        sites.close()  # leaves the TestClient: the app's lifespan writes what is pending


@pytest.fixture
def track(tmp_path: Path, db_url: str) -> Iterator[Track]:
    yield from track_site(tmp_path, db_url)


def test_links_lead_to_stored_pages_and_count_per_link(track: Track) -> None:
    ref = track.ref(5)
    targets = [("c", PAGE), ("t-cursor", CURSOR), ("t-zed", PAGE), ("t-gone", PAGE), ("c", PAGE)]
    for target, expected in targets:  # a tool without a page of its own: the comparison's
        answer = track.get(track.path(target, ref))
        assert answer.status_code == 302 and answer.headers["location"] == expected, target
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["referrer-policy"] == "no-referrer"
        track.site.clock.advance(minutes=1)  # several links of one message, minutes apart
    # A ref naming its reader (individual tracking was on) is stored under the pseudonym;
    # the web copy counts, with no unique clicker; reader 0 (the desk's sample) never.
    track.hits(track.ref(7, individual=True), "c")
    track.hits("web", "c", "c")
    track.hits("web", "c", ua="curl/8.5")
    track.hits(track.ref(0), "c", "t-cursor", "t-zed", "c")
    track.hits(track.ref(0), "c", method="HEAD")
    expected = counted("c click 5", "c scanner 1", "t-cursor click 1", "t-zed click 1")
    assert track.counts() == expected | counted("t-gone click 1")
    assert {s.ref for s in track.rows(ClickSeen)} == {track.ident(5), track.ident(7)}
    assert track.rows(ClickEvent) == []


def test_bad_links_count_nothing_and_warm_links_read_no_database(track: Track) -> None:
    ref, good = track.ref(5), track.tokens.link(EDITION, "editors", "c")
    forged = track.tokens.link(EDITION, "editors", "t-cursor").replace("t-cursor", "t-zed")
    bad = [f"/r/{good[:-2]}{'AA' if not good.endswith('AA') else 'BB'}/{ref}"]
    bad += [f"/r/{good}/{ref[:-1]}{'A' if not ref.endswith('A') else 'B'}", f"/r/{good}/s0"]
    bad += [f"/r/{forged}/{ref}", f"/r/{good}/{ref.replace('.', '.1', 1)}", f"/r/{ref}/{ref}"]
    bad += ["/r/x/web", f"/r/{good.replace(EDITION, '2026-W49')}/web"]
    answers = [track.get(path) for path in bad]
    assert {a.status_code for a in answers} == {400} and len({a.content for a in answers}) == 1
    track.comparison("scripted", "javascript:alert(1)", [])
    for comparison in ("gone", "scripted"):  # not stored; no http(s) page
        answer = track.get(track.path("c", ref, comparison))
        assert answer.status_code == 404 and "location" not in answer.headers
    assert track.get(f"/o/{EDITION}/{ref}.gif").status_code == 404  # [tracking] opens = false
    assert track.counts() == {} and track.rows(ClickSeen) == []
    track.hits(ref, "c", "t-cursor")  # the targets are cached now
    statements: list[object] = []

    @event.listens_for(track.site.rt.engine, "before_cursor_execute")
    def seen(*args: Any) -> None:
        statements.append(args[2])

    for _ in range(20):
        track.hits(ref, "c", "t-cursor")
    event.remove(track.site.rt.engine, "before_cursor_execute", seen)
    assert statements == []


def test_head_scanner_agents_and_early_clicks_count_apart(track: Track) -> None:
    ref = track.ref(5)
    track.hits(ref, "c", method="HEAD")
    for ua in AGENTS:
        track.hits(ref, "t-cursor", ua=ua)
    track.hits(track.ref(6, ago=timedelta(seconds=4)), "t-zed")  # seconds after sending
    track.hits(track.ref(7, ago=timedelta(seconds=40)), "t-zed")
    expected = counted("c scanner 1", "t-cursor scanner 4", "t-zed scanner 1", "t-zed click 1")
    assert track.counts() == expected
    assert [s.ref for s in track.rows(ClickSeen)] == [track.ident(7)]
    assert machine_agent("Mozilla/5.0 Mimecast") and machine_agent("Go-http-client/2.0")
    assert not machine_agent("(via GoogleImageProxy)", opening=True)
    assert not machine_agent(READER_UA)


def test_three_links_of_one_message_within_seconds_are_a_scanner(track: Track) -> None:
    ref = track.ref(5)
    track.hits(ref, "c")
    track.hits(track.ref(6), "c")
    assert track.counts()[("editors", "c", "click")] == 2  # written: taken back below
    track.site.clock.advance(seconds=3)
    track.hits(ref, "t-cursor")
    track.site.clock.advance(seconds=3)
    track.hits(ref, "t-zed", "c")
    expected = counted("c click 1", "c scanner 2", "t-cursor scanner 1", "t-zed scanner 1")
    assert track.counts() == expected  # the click left is the other reader's
    assert [s.ref for s in track.rows(ClickSeen)] == [track.ident(6)]
    track.site.clock.advance(seconds=60)  # the window has passed: a reader again
    track.hits(ref, "t-cursor")
    assert track.counts()[("editors", "t-cursor", "click")] == 1
    assert len(track.rows(ClickSeen)) == 2


def test_individual_tracking_keeps_each_readers_clicks(tmp_path: Path, db_url: str) -> None:
    for track in track_site(tmp_path, db_url, individual=True):
        named = track.ref(7, individual=True)
        track.hits(named, "c")
        track.site.clock.advance(minutes=2)
        track.hits(named, "t-cursor")
        track.hits(named, "t-cursor", ua="Barracuda Sentinel")
        track.counts()
        found = sorted((e.at, e.scanner, e.subscriber_id, e.link) for e in track.rows(ClickEvent))
        assert [r[1:] for r in found] == [(0, 7, "c"), (0, 7, "t-cursor"), (1, 7, "t-cursor")]
        assert [s.ref for s in track.rows(ClickSeen)] == ["s7"]
        # Later, a burst: the click already written is marked as a scanner's too.
        track.site.clock.advance(minutes=5)
        burst_from = track.site.clock.now
        track.hits(named, "c")
        track.counts()
        for target in ("t-zed", "t-gone"):
            track.site.clock.advance(seconds=2)
            track.hits(named, target)
        track.counts()
        later = [(e.link, e.scanner) for e in track.rows(ClickEvent) if e.at >= burst_from]
        assert sorted(later) == [("c", True), ("t-gone", True), ("t-zed", True)]
        assert [s.ref for s in track.rows(ClickSeen)] == ["s7"]  # the first click stays


def test_no_count_is_lost_when_the_app_shuts_down(tmp_path: Path, db_url: str) -> None:
    opened = track_site(tmp_path, db_url)
    track = next(opened)  # its counter never writes by itself (flush_seconds = 3600)
    refs = [track.ref(n) for n in range(1, 6)]
    for n in range(200):
        track.hits(refs[n % 5], "c" if n % 2 else "t-cursor")
    assert track.site.client.app.state.clicks.counter.pending() > 0  # type: ignore[attr-defined]
    opened.close()  # the app shuts down
    assert read_counts(track.site.rt.engine) == counted("c click 100", "t-cursor click 100")


def test_the_open_pixel_counts_opens_per_edition(tmp_path: Path, db_url: str) -> None:
    for track in track_site(tmp_path, db_url, opens=True):
        answer = track.get(f"/o/{EDITION}/{track.ref(5)}.gif")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/gif"
        assert answer.content[:6] == b"GIF89a" and answer.headers["cache-control"] == "no-store"
        track.get(f"/o/{EDITION}/{track.ref(6)}.gif", ua="Mozilla/5.0 (via GoogleImageProxy)")
        track.get(f"/o/{EDITION}/{track.ref(7, ago=timedelta(seconds=2))}.gif")
        track.get(f"/o/{EDITION}/{track.ref(0)}.gif")
        assert track.get(f"/o/{EDITION}/{track.ref(5)[:-1]}x.gif").status_code == 400
        assert track.get(f"/o/2026-W01/{track.ref(5)}.gif").status_code == 404
        assert track.get(f"/o/nonsense/{track.ref(5)}.gif").status_code == 404
        assert track.counts() == {("", "", "open"): 2}  # a machine's open is not counted


def test_the_counter_keeps_a_failed_batch_and_loses_no_note_from_threads(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    counter, real, failures = ClickCounter(engine, flush_seconds=0.02), write_batch, iter([True])

    def flaky(conn: Any, batch: Batch) -> None:
        if next(failures, False):
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        real(conn, batch)

    monkeypatch.setattr(counter_mod, "write_batch", flaky)
    links = ["c", "t-a", "t-b", "t-c"]

    def hammer(n: int) -> None:
        for i in range(500):
            with counter.buffer() as batch:
                batch.count((EDITION, "editors", links[(n + i) % 4], "click"))
                batch.see(EDITION, f"p{n}", datetime(2026, 11, 23, tzinfo=UTC))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(hammer, range(8)))
    deadline = time.monotonic() + 10
    while sum(read_counts(engine).values()) < 4000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counter.close()
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert logged[0].startswith("engagement counts not written (OperationalError); ")
    assert read_counts(engine) == counted(*(f"{link} click 1000" for link in links))
    assert len(rows(engine, ClickSeen)) == 8
    with engine.begin() as conn:  # a negative delta (click → scanner) on a written row
        add_counts(conn, {(EDITION, "editors", "c", "click"): -1, (EDITION, "x", "c", "open"): 0})
    assert read_counts(engine)[("editors", "c", "click")] == 999


class Hooks(WebhookSite):
    def postmark(self, record: str, at: str, **fields: Any) -> Any:
        payload = {"RecordType": record, "MessageID": "pm-1", "Recipient": ADA}
        payload |= {"ReceivedAt": f"2026-11-30T{at}Z", "Metadata": {"message_id": self.message_id}}
        auth = ("postmark", "hook-password")
        answer = self.client.post("/webhooks/postmark", json=payload | fields, auth=auth)
        assert answer.status_code == 200, answer.text
        return answer.json()


def test_provider_events_count_per_edition(tmp_path: Path, db_url: str) -> None:
    path = write_config(tmp_path, webhooks={"providers": ["postmark"]})
    env = {"DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"}
    env[ENV_CREDENTIALS] = "postmark:hook-password"
    for hooks in open_hook_site(Hooks, path, env, provider_id="pm-1"):
        hooks.postmark("Delivery", "08:00:00", DeliveredAt="2026-11-30T08:00:00Z")
        hooks.postmark("Open", "08:01:00", FirstOpen=True)
        click = {"OriginalLink": "https://x.example", "ClickLocation": "HTML"}
        assert hooks.postmark("Click", "08:02:00", **click)["duplicates"] == 0
        assert hooks.postmark("Click", "08:02:00", **click)["duplicates"] == 1  # applied once
        hooks.postmark("Open", "08:03:00", Metadata={}, MessageID="someone-else")  # no delivery
        kinds = ("delivered", "provider_open", "provider_click")
        assert read_counts(hooks.rt.engine, KEY) == {("", "", kind): 1 for kind in kinds}
