"""Readers' votes (issue 16): the vote links, /votes.json, forgetting a reader, and the
signed outgoing webhook, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from digest import config as config_mod
from digest import pipeline
from digest.common.netguard import AddressPolicy
from digest.config.runtime import Runtime
from digest.desk import readers
from digest.engagement import votes, votes_webhook
from digest.engagement.tokens import EngagementTokens, VoteTarget
from digest.ops import jobs, scheduler
from digest.store.db import session_scope, upgrade
from digest.store.models import ClickEvent, ClickSeen, ReaderVote, VoteChange
from digest.web.app import create_app
from subscribers import lifecycle
from subscribers.consent import Context
from subscribers.models import ConsentSource
from tests.support import write_config
from tests.test_web_support import Clock, Site

SECRET = "votes-hook-secret-5e1"
CID = "claude-4-api-tool-streaming-vs-codestral-2"
TOOL, OTHER_TOOL = "claude-4-api", "codestral-2"
LOOPBACK = AddressPolicy(exempt=frozenset({"127.0.0.1"}))  # the tests' escape hatch


def open_votes_site(tmp_path: Path, db_url: str, **sections: dict[str, Any]) -> Iterator[Site]:
    """A site with the sample feed fetched and the votes webhook's secret set."""
    web = {"signups_per_minute": 1000, **sections.pop("web", {})}
    path = write_config(tmp_path, web=web, **sections)
    environ = {"DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"}
    environ["DIGEST_VOTES_WEBHOOK_SECRET"] = SECRET
    clock = Clock()
    rt = Runtime.open(config_mod.load(path, environ=environ), clock=clock)
    upgrade(rt.engine)
    pipeline.fetch(rt)
    with TestClient(create_app(rt), raise_server_exceptions=False) as client:
        yield Site(rt, client, clock, tmp_path)
    rt.close()


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    yield from open_votes_site(tmp_path, db_url)


def link(site: Site, reader: int, choice: str, cid: str = CID, tool: str = TOOL) -> str:
    return f"/v/{EngagementTokens(site.rt.signer()).vote(reader, cid, tool)}/{choice}"


def tally(site: Site, cid: str = CID) -> dict[str, tuple[int, int]]:
    board = site.client.get(f"/votes/{cid}.json").json()
    return {t["key"]: (t["ship"], t["skip"]) for t in board["tools"]}


def rows(site: Site) -> list[Any]:
    with site.rt.engine.connect() as conn:
        return list(conn.execute(select(ReaderVote.__table__)))  # type: ignore[attr-defined]


def queue(site: Site) -> list[Any]:
    with site.rt.engine.connect() as conn:
        return list(conn.execute(select(VoteChange.__table__)))  # type: ignore[attr-defined]


def test_the_vote_page_asks_and_changes_nothing(site: Site) -> None:
    reader = site.confirmed("get@example.com")
    before = site.client.get("/votes.json")
    for _ in range(3):
        page = site.client.get(link(site, reader, "ship"))
        assert page.status_code == 200, page.text
        assert "Ship it or skip it?" in page.text and "Claude 4 API" in page.text
        assert "Cache up to 2M tokens" in page.text  # the tagline
        assert 'method="post"' in page.text and link(site, reader, "skip") in page.text
    assert site.client.get("/votes.json").content == before.content
    assert rows(site) == [] and queue(site) == []


def test_a_vote_is_recorded_once_and_can_be_changed(site: Site) -> None:
    reader = site.confirmed("one@example.com")
    done = site.client.post(link(site, reader, "ship"))
    assert done.status_code == 200 and "Your vote is in: Ship it for Claude 4 API" in done.text
    assert tally(site)[TOOL] == (1, 0) and tally(site)[OTHER_TOOL] == (0, 0)
    changed = site.client.post(link(site, reader, "skip"))
    assert "Your vote is changed: Skip it for Claude 4 API" in changed.text
    again = site.client.post(link(site, reader, "skip"))
    assert "Your vote is in" in again.text and "already voted this way" in again.text
    assert tally(site)[TOOL] == (0, 1) and len(rows(site)) == 1
    (change,) = queue(site)
    assert change.comparison_id == CID and change.notified_at is None and change.attempts == 0
    assert "Your vote so far: Skip it" in site.client.get(link(site, reader, "ship")).text


def test_readers_add_up_and_the_json_is_public(site: Site) -> None:
    for n, choice in enumerate(["ship", "ship", "skip"]):
        reader = site.confirmed(f"r{n}@example.com")
        assert site.client.post(link(site, reader, choice)).status_code == 200
    answer = site.client.get(f"/votes/{CID}.json")
    assert answer.headers["cache-control"] == "public, max-age=60"
    assert answer.headers["access-control-allow-origin"] == "*"
    board = answer.json()
    assert board["comparison_id"] == CID and board["generated_at"].startswith("2026-11-23")
    first, second = board["tools"]
    assert first == {"key": TOOL, "name": "Claude 4 API: Tool Use Streaming & Prompt Caching",
                     "ship": 2, "skip": 1, "total": 3, "ship_pct": 67}  # fmt: skip
    assert second["key"] == OTHER_TOOL and second["total"] == 0 and second["ship_pct"] is None
    listed = site.client.get("/votes.json").json()
    assert len(listed["comparisons"]) == 3 and CID in {
        c["comparison_id"] for c in listed["comparisons"]
    }
    missing = site.client.get("/votes/no-such-thing.json")
    assert missing.status_code == 404 and missing.json() == {"error": "no such comparison"}


def test_bad_links_are_refused_and_count_nothing(site: Site) -> None:
    reader = site.confirmed("bad@example.com")
    good = link(site, reader, "ship")
    token = good.split("/")[2]
    altered = [
        good.replace(f"/v/{reader}.", f"/v/{reader + 1}."),
        good.replace(TOOL, OTHER_TOOL),
        f"/v/{token[:-2]}{'AA' if not token.endswith('AA') else 'BB'}/ship",
        "/v/x/ship",
    ]
    for path in altered:
        for method in ("GET", "POST"):
            answer = site.client.request(method, path)
            assert answer.status_code == 400 and "does not work" in answer.text, path
    assert site.client.post(good.replace("/ship", "/maybe")).status_code == 404
    for cid, tool in ((CID, "not-a-tool"), ("gone-comparison", TOOL)):
        gone = site.client.post(link(site, reader, "ship", cid, tool))
        assert gone.status_code == 410 and "Nothing was recorded" in gone.text
    assert rows(site) == [] and queue(site) == []


def test_only_active_readers_vote(site: Site) -> None:
    reader = site.confirmed("leaver@example.com")
    with session_scope(site.rt.engine) as session:
        context = Context(ConsentSource.link)
        lifecycle.unsubscribe(session, subscriber_id=reader, context=context, now=site.clock.now)
    for method in ("GET", "POST"):
        answer = site.client.request(method, link(site, reader, "ship"))
        assert answer.status_code == 403 and "subscription" in answer.text
        assert "leaver@example.com" not in answer.text
    site.signup("waiting@example.com")
    pending = site.subscriber("waiting@example.com")
    assert pending is not None and pending.id is not None
    assert site.client.post(link(site, pending.id, "skip")).status_code == 403
    assert tally(site)[TOOL] == (0, 0) and rows(site) == []


def test_forget_keeps_the_vote_and_drops_the_reader(site: Site) -> None:
    reader = site.confirmed("forget@example.com")
    assert site.client.post(link(site, reader, "ship")).status_code == 200
    with site.rt.engine.begin() as conn:
        conn.execute(insert(ClickEvent.__table__).values(  # type: ignore[attr-defined]
            edition_key="2026-W48", subscriber_id=reader, comparison_id=CID, link="c",
            scanner=False, at=site.clock.now))  # fmt: skip
        seen = ClickSeen.__table__  # type: ignore[attr-defined]
        conn.execute(
            insert(seen).values(edition_key="2026-W48", ref=f"s{reader}", first_at=site.clock.now)
        )
    readers.forget(site.rt, reader, typed="forget@example.com", actor="test")
    (vote,) = rows(site)
    assert vote.subscriber_id is None and vote.choice == "ship"
    assert tally(site)[TOOL] == (1, 0)
    with site.rt.engine.connect() as conn:
        assert list(conn.execute(select(ClickEvent.__table__))) == []  # type: ignore[attr-defined]
        (mark,) = conn.execute(select(seen.c.ref)).scalars()  # the unique click stays …
    assert mark.startswith("forgotten-")  # … without the reader's id
    assert site.client.post(link(site, reader, "skip")).status_code == 410
    assert tally(site)[TOOL] == (1, 0)


@pytest.mark.slow
def test_the_cli_forget_anonymises_votes_too(site: Site, db_url: str) -> None:
    reader = site.confirmed("cli@example.com")
    assert site.client.post(link(site, reader, "skip")).status_code == 200
    env = {**os.environ, "DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"}
    done = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(site.root / "config.toml"),
         "subscribers", "forget", "cli@example.com"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r.subscriber_id for r in rows(site)] == [None] and tally(site)[TOOL] == (0, 1)


def test_concurrent_votes_of_one_reader_leave_one_row(site: Site) -> None:
    reader = site.confirmed("race@example.com")
    target = VoteTarget(reader, CID, TOOL)

    def cast(choice: str) -> None:
        with session_scope(site.rt.engine) as session:
            assert votes.record_vote(session, target, choice, now=site.clock.now).recorded

    threads = [threading.Thread(target=cast, args=(("ship", "skip")[n % 2],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(rows(site)) == 1 and sum(tally(site)[TOOL]) == 1


OFF = {"enabled": False}


def test_votes_disabled_means_no_routes(tmp_path: Path, sqlite_url: str) -> None:
    with contextlib.contextmanager(open_votes_site)(tmp_path, sqlite_url, votes=OFF) as site:
        reader = site.confirmed("off@example.com")
        assert site.client.get(link(site, reader, "ship")).status_code == 404
        assert site.client.post(link(site, reader, "ship")).status_code == 404
        assert site.client.get("/votes.json").status_code == 404
        assert rows(site) == []


def test_vote_links_are_rate_limited_per_client(site: Site) -> None:
    reader = site.confirmed("busy@example.com")
    answers = [site.client.get(link(site, reader, "ship")).status_code for _ in range(61)]
    assert answers[:60] == [200] * 60 and answers[60] == 429
    limited = site.client.post(link(site, reader, "ship"))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert rows(site) == []


class Receiver:
    """A webhook receiver on 127.0.0.1: records each request, answers ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.seen: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def hooked(tmp_path: Path, db_url: str, receiver: Receiver) -> Iterator[Site]:
    votes_cfg = {"webhook_url": receiver.url, "webhook_attempts": 3}
    yield from open_votes_site(tmp_path, db_url, votes=votes_cfg)


def deliver(site: Site, policy: AddressPolicy | None = LOOPBACK) -> votes_webhook.Summary:
    return asyncio.run(votes_webhook.deliver_pending(site.rt, now=site.clock.now, policy=policy))


def test_the_webhook_posts_a_signed_body(hooked: Site, receiver: Receiver) -> None:
    reader = hooked.confirmed("hook@example.com")
    hooked.client.post(link(hooked, reader, "ship"))
    summary = deliver(hooked)
    assert (summary.due, summary.sent) == (1, 1)
    ((headers, body),) = receiver.seen
    stamp = headers["x-digest-timestamp"]
    assert stamp == str(int(hooked.clock.now.timestamp()))
    expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-digest-signature"], f"sha256={expected}")
    data = json.loads(body)
    assert data["comparison_id"] == CID and data["changed_at"] == "2026-11-23T10:00:00Z"
    assert data["tools"][0] == {"key": TOOL, "ship": 1, "skip": 0, "ship_pct": 100}
    (change,) = queue(hooked)
    assert change.notified_at is not None and change.last_error == ""
    assert deliver(hooked).due == 0 and len(receiver.seen) == 1  # nothing due any more


def test_the_webhook_retries_with_backoff_then_gives_up(hooked: Site, receiver: Receiver) -> None:
    reader = hooked.confirmed("retry@example.com")
    hooked.client.post(link(hooked, reader, "skip"))
    receiver.status = 500
    assert deliver(hooked).retrying == 1
    (change,) = queue(hooked)
    assert change.attempts == 1 and change.notified_at is None
    assert change.next_at == hooked.clock.now + timedelta(seconds=60)
    assert "answered 500" in change.last_error
    assert deliver(hooked).due == 0  # not before next_at
    hooked.clock.advance(seconds=61)
    assert deliver(hooked).retrying == 1
    assert queue(hooked)[0].next_at == hooked.clock.now + timedelta(seconds=120)
    hooked.clock.advance(seconds=121)
    assert deliver(hooked).gave_up == 1  # webhook_attempts = 3
    (change,) = queue(hooked)
    assert (change.attempts, change.next_at, change.notified_at) == (3, None, None)
    assert "answered 500" in change.last_error and len(receiver.seen) == 3
    receiver.status = 204
    hooked.client.post(link(hooked, reader, "ship"))  # a new vote queues it afresh
    assert deliver(hooked).sent == 1 and queue(hooked)[0].notified_at is not None


def test_the_webhook_refuses_loopback_and_unsigned(hooked: Site, receiver: Receiver) -> None:
    reader = hooked.confirmed("guard@example.com")
    hooked.client.post(link(hooked, reader, "ship"))
    assert deliver(hooked, policy=None).gave_up == 1  # the guard: never retried
    (change,) = queue(hooked)
    assert "public addresses only" in change.last_error and receiver.seen == []
    hooked.client.post(link(hooked, reader, "skip"))
    hooked.rt.config = dataclasses.replace(hooked.rt.config, env={})
    summary = deliver(hooked)
    assert "DIGEST_VOTES_WEBHOOK_SECRET is not set" in summary.refused and receiver.seen == []
    assert queue(hooked)[0].attempts == 0


def test_the_scheduler_runs_the_webhook_only_with_a_url(hooked: Site, receiver: Receiver) -> None:
    assert scheduler.VOTES_JOB in scheduler.triggers(hooked.rt.config)
    reader = hooked.confirmed("job@example.com")
    hooked.client.post(link(hooked, reader, "ship"))
    result = asyncio.run(jobs.notify_votes(hooked.rt, trigger="cli"))
    assert result.outcome == jobs.FAILED  # loopback: refused outside the tests' policy
    assert "1 due" in result.detail and receiver.seen == []


def test_no_webhook_job_without_a_url(site: Site) -> None:
    assert scheduler.VOTES_JOB not in scheduler.triggers(site.rt.config)


def test_fuzzing_the_vote_routes_finds_no_server_error(tmp_path: Path, sqlite_url: str) -> None:
    """tests/test_fuzz_openapi.py for these routes, with real vote tokens in the mix."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    with contextlib.contextmanager(open_votes_site)(tmp_path, sqlite_url) as site:
        reader = site.confirmed("fuzz@example.com")
        real = [link(site, reader, "ship").split("/")[2], link(site, reader, "ship", CID, "x")]
        schema = schemathesis.openapi.from_asgi("/openapi.json", site.client.app)
        operations = [r.ok() for r in schema.get_all_operations()]
        mine = [op for op in operations if op.label.split()[1].startswith(("/v/", "/votes"))]
        assert len(mine) == 4, [op.label for op in mine]
        for operation in mine:

            @given(case=operation.as_strategy())
            @settings(max_examples=25, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            def call(case: Any) -> None:
                params = case.path_parameters or {}
                pick = len(str(params.get("token", ""))) % 3
                if "token" in params and pick < 2:  # else the generated one
                    params["token"] = real[pick]
                response = case.call()
                case.validate_response(response, checks=[not_a_server_error])

            call()
