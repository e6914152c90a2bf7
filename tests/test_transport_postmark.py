"""The Postmark transport against a loopback fake of Postmark's batch API."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import orjson
import pytest

from digest.config import AdapterConfig
from digest.config.registry import build
from digest.errors import ConfigError, TransportUnavailable
from digest.render.base import RenderedDigest, Slot
from digest.transports import TRANSPORTS
from digest.transports.base import Outcome, Personal, Transport
from digest.transports.postmark import PostmarkTransport
from tests.provider_fakes import POSTMARK_TOKEN as TOKEN
from tests.provider_fakes import Recorder, digest_message, fake_provider, postmark_app, send_edition
from tests.provider_fakes import postmark_transport as transport
from tests.provider_fakes import send_once as send


@pytest.fixture
def fake() -> Iterator[tuple[Recorder, str]]:
    yield from fake_provider(postmark_app, TOKEN)


def test_request_has_the_documented_shape(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    messages = [digest_message(i) for i in range(1, 4)]
    results = asyncio.run(send(transport(url), messages))

    assert [r.outcome for r in results] == [Outcome.queued] * 3
    assert all(r.provider_id and '"ErrorCode":0' in r.detail for r in results)
    (probe, request) = rec.requests
    assert (probe.method, probe.path) == ("GET", "/server")
    assert (request.method, request.path) == ("POST", "/email/batch")
    assert request.headers["x-postmark-server-token"] == TOKEN
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    body = request.json()
    assert isinstance(body, list) and len(body) == 3
    first = body[0]
    assert set(first) == {
        "From",
        "To",
        "Subject",
        "HtmlBody",
        "TextBody",
        "ReplyTo",
        "Headers",
        "MessageStream",
        "Tag",
        "Metadata",
    }
    assert first["From"] == "Test Weekly <digest@test.example>"
    assert first["To"] == "Reader 1 <reader1@example.org>"
    assert first["Subject"] == "Test Weekly: 3 new verdicts"
    assert 'href="https://digest.test.example/u/t1"' in first["HtmlBody"]
    assert "Unsubscribe: https://digest.test.example/u/t1" in first["TextBody"]
    assert first["ReplyTo"] == "editor@test.example"
    assert first["MessageStream"] == "broadcast"
    assert first["Tag"] == "2026-W48"
    assert first["Metadata"] == {
        "delivery_id": "1",
        "message_id": "<2026-W48.s1.digest@test.example>",
    }
    headers = {h["Name"]: h["Value"] for h in first["Headers"]}
    assert headers == {
        "List-Unsubscribe": "<https://digest.test.example/u/t1>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": "Test Weekly <weekly.test.example>",
    }
    assert all(
        isinstance(v, str) for m in body for k, v in m.items() if k not in ("Headers", "Metadata")
    )


def test_a_name_cannot_inject_headers(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    message = digest_message(1, name="Eve\r\nBcc: all@example.org")
    asyncio.run(send(transport(url), [message]))
    to = rec.posts("/email/batch")[0].json()[0]["To"]
    assert to == '"EveBcc: all@example.org" <reader1@example.org>'


def test_batches_over_500_become_several_requests(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    t = transport(url, requests_per_second=0)
    assert t.max_batch == 500
    results = asyncio.run(send(t, [digest_message(i) for i in range(1200)]))
    sizes = sorted(len(r.json()) for r in rec.posts("/email/batch"))
    assert sizes == [200, 500, 500]
    assert [r.delivery_id for r in results] == list(range(1200))
    assert sum(rec.accepted.values()) == 1200


def test_partly_refused_batch_gives_per_message_results(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.reject["reader2@example.org"] = "Inactive recipients are ones that have bounced."
    results = asyncio.run(send(transport(url), [digest_message(i) for i in range(1, 4)]))
    assert [r.outcome for r in results] == [Outcome.queued, Outcome.rejected, Outcome.queued]
    assert results[1].detail.startswith("Postmark 406: You tried to send")
    assert '"ErrorCode":406' in results[1].detail  # the raw answer is kept
    assert not results[1].provider_id


def test_retry_after_holds_every_request_back(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.script(2, 429, {"Retry-After": "1"}, {"ErrorCode": 429, "Message": "Rate limit exceeded"})
    rec.script(3, 503, body={"ErrorCode": 100, "Message": "Maintenance"})  # not accepted
    results = asyncio.run(send(transport(url), [digest_message(i) for i in range(1, 4)]))
    assert [r.outcome for r in results] == [Outcome.queued] * 3
    throttled, failed, ok = rec.posts("/email/batch")
    assert failed.at >= throttled.answered_at + 1.0
    assert ok.status == 200 and sum(rec.accepted.values()) == 3


def test_a_long_retry_after_defers_the_batch(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.script(2, 429, {"Retry-After": "120"})
    t = transport(url)
    results = asyncio.run(send(t, [digest_message(1)]))
    assert results[0].outcome is Outcome.deferred
    assert results[0].retry_after == pytest.approx(120)
    assert t.not_before > time.monotonic() + 100  # nothing leaves before it


def test_timeout_after_sending_is_unknown_and_not_resent(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.delay = 1.0
    results = asyncio.run(send(transport(url, timeout=0.3), [digest_message(1)]))
    assert results[0].outcome is Outcome.unknown  # Postmark has no idempotency key
    assert len(rec.posts("/email/batch")) == 1


def test_unavailable_ends_deferred_after_bounded_attempts(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    for n in (2, 3, 4):
        rec.script(n, 503)
    results = asyncio.run(send(transport(url, max_attempts=3), [digest_message(1)]))
    assert results[0].outcome is Outcome.deferred and "HTTP 503" in results[0].detail
    assert len(rec.posts("/email/batch")) == 3


def test_bad_token_is_unavailable(fake: tuple[Recorder, str]) -> None:
    _, url = fake
    with pytest.raises(TransportUnavailable, match="DIGEST_POSTMARK_SERVER_TOKEN"):
        asyncio.run(send(transport(url, api_key="wrong"), [digest_message(1)]))


def test_registry_keys_and_missing_token() -> None:
    def cfg(**options: object) -> AdapterConfig:
        return AdapterConfig(
            section="transport",
            kind="postmark",
            options=MappingProxyType(options),
            source=Path("c"),
        )

    registry: dict[str, type[Transport]] = {**TRANSPORTS, "postmark": PostmarkTransport}
    built = build(
        registry,
        cfg(message_stream="digest", batch_size=100),
        {"DIGEST_POSTMARK_SERVER_TOKEN": "t"},
    )
    assert isinstance(built, PostmarkTransport)
    assert (built.max_batch, built.message_stream, built.api_key) == (100, "digest", "t")
    with pytest.raises(ConfigError, match="DIGEST_POSTMARK_SERVER_TOKEN"):
        build(registry, cfg(), {})
    with pytest.raises(ConfigError, match="batch_size"):
        build(registry, cfg(batch_size=501), {"DIGEST_POSTMARK_SERVER_TOKEN": "t"})
    with pytest.raises(ConfigError, match="api_key"):  # secrets never come from the file
        build(registry, cfg(api_key="in-the-file"), {"DIGEST_POSTMARK_SERVER_TOKEN": "t"})


def test_an_edition_of_2500_through_the_pipeline(
    fake: tuple[Recorder, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, url = fake
    monkeypatch.setitem(TRANSPORTS, "postmark", PostmarkTransport)
    readers = [f"reader{i}@example.org" for i in range(2500)]
    refused = set(readers[7::250])  # 10 inactive recipients
    for address in refused:
        rec.reject[address] = "Inactive recipients are ones that have bounced."
    rec.script(3, 429, {"Retry-After": "1"}, {"ErrorCode": 429, "Message": "Rate limit exceeded"})
    rec.script(6, 503, body={"ErrorCode": 100, "Message": "Maintenance"})
    table = {
        "kind": "postmark",
        "base_url": url,
        "batch_size": 250,
        "backoff_seconds": 0.01,
        "requests_per_second": 50,
    }
    env = {"DIGEST_POSTMARK_SERVER_TOKEN": TOKEN}
    report, rows = send_edition(tmp_path, transport=table, env=env, readers=readers)

    assert report.finished and not report.error
    accepted = set(readers) - refused
    assert rec.accepted == dict.fromkeys(accepted, 1)  # each accepted address exactly once
    assert {a for a, (state, _) in rows.items() if state == "sent"} == accepted
    for address in refused:
        state, detail = rows[address]
        assert state == "bounced" and "Postmark 406" in detail and address in detail
    # Postmark's 406 "inactive recipient": the reader is suppressed, never mailed again.
    with sqlite3.connect(tmp_path / "d.db") as db:
        statuses = dict(db.execute("SELECT email, status FROM subscriber").fetchall())
    assert {a for a, s in statuses.items() if s != "active"} == refused
    throttled = next(r for r in rec.requests if r.status == 429)
    expiry = throttled.answered_at + 1.0
    late = [r for r in rec.requests if throttled.answered_at < r.at < expiry]
    # concurrency is 2: one request may already have been on its way when the 429 came
    # back (its upload overlaps the answer); any other would have broken the hold.
    assert len(late) <= 1, [round(r.at - throttled.answered_at, 3) for r in late]
    assert any(r.at >= expiry for r in rec.requests)


def test_measure_throughput(fake: tuple[Recorder, str]) -> None:
    _, url = fake
    messages = [digest_message(i) for i in range(5000)]
    t = transport(url, requests_per_second=0, concurrency=4)
    started = time.perf_counter()
    results = asyncio.run(send(t, messages))
    elapsed = time.perf_counter() - started
    assert all(r.outcome is Outcome.queued for r in results)
    rate = len(messages) / elapsed
    print(f"\npostmark fake: {len(messages)} messages in {elapsed:.2f} s = {rate:,.0f}/s")


NASTY = (
    'He said "ship it" \\ then </script> & <b>bold</b>\t\u2028\u2029 caf\u00e9 \U0001f680 '
    "\x00\x1f\x7f line\r\nbreak"
)


def test_pre_encoded_json_bodies_decode_to_the_plain_bodies() -> None:
    """The JSON of each body is built from pieces encoded once per segment; decoded, it
    must equal the plain body for every character a feed can carry, and the values
    must be HTML-escaped in the HTML part exactly as fill() does."""
    digest = RenderedDigest(
        subject="s",
        html=(f'<p>{NASTY}</p><a href="', Slot("unsubscribe_url"), '">x</a>', NASTY),
        text=(NASTY, Slot("preferences_url"), "\n", Slot("unsubscribe_url")),
    )
    base = digest_message(1)
    assert base.shared is not None
    message = replace(
        base,
        shared=replace(base.shared, digest=digest),
        personal=Personal(
            "R",
            {
                "unsubscribe_url": 'https://x.test/u/a"b&c<',
                "preferences_url": "https://x.test/p/\u00e9",
            },
        ),
    )
    t = transport("http://127.0.0.1:9")
    plain = t.parts(message)
    encoded = t.parts(message, json_bodies=True)
    assert isinstance(encoded.html, orjson.Fragment) and isinstance(encoded.text, orjson.Fragment)
    assert orjson.loads(orjson.dumps({"h": encoded.html}))["h"] == plain.html
    assert orjson.loads(orjson.dumps({"t": encoded.text}))["t"] == plain.text
    assert "https://x.test/u/a&quot;b&amp;c&lt;" in str(plain.html)
