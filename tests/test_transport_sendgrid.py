"""The SendGrid transport against a loopback fake of SendGrid's v3 Mail Send API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from types import MappingProxyType

import pytest

from digest.config import AdapterConfig
from digest.config.registry import build
from digest.errors import ConfigError, TransportUnavailable
from digest.render.base import RenderedDigest, Slot
from digest.transports import TRANSPORTS
from digest.transports.base import Outcome, OutgoingMessage
from digest.transports.sendgrid import SendGridTransport, sendgrid_tag
from digest.transports.substitution import tag_digest
from tests.provider_fakes import Recorder, send_edition, serve
from tests.provider_fakes import send_once as send
from tests.provider_fakes_sendgrid_mailgun import (
    SENDGRID_PATH,
    message,
    sendgrid_app,
    sendgrid_render,
    shared,
)

TOKEN = "test-token"
ENV = {"DIGEST_SENDGRID_API_KEY": TOKEN}


@pytest.fixture
def fake() -> Iterator[tuple[Recorder, str]]:
    rec = Recorder(token=TOKEN)
    with serve(sendgrid_app(rec)) as url:
        yield rec, url


def transport(url: str, **keys: object) -> SendGridTransport:
    options: dict[str, object] = {"base_url": url, "api_key": TOKEN, "backoff_seconds": 0.01}
    options.update(keys)
    return SendGridTransport(**options)  # type: ignore[arg-type]


def test_request_has_the_documented_shape(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    messages = [message(i, name="Doe, Jane" if i == 2 else "") for i in range(1, 4)]
    results = asyncio.run(send(transport(url), messages))

    (request,) = rec.requests
    assert (request.method, request.path) == ("POST", SENDGRID_PATH)
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    assert set(body) == {
        "personalizations",
        "from",
        "reply_to",
        "subject",
        "content",
        "headers",
        "categories",
    }
    assert body["from"] == {"email": "digest@test.example", "name": "Test Weekly"}
    assert body["reply_to"] == {"email": "editor@test.example", "name": "Editor"}
    assert body["subject"] == "Test Weekly: 3 new verdicts"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    html_value = body["content"][1]["value"]
    assert html_value.count("-unsubscribe_url_html-") == 1
    assert "-unsubscribe_url-" in body["content"][0]["value"]
    assert body["headers"] == {
        "List-Id": "Test Weekly <weekly.test.example>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert body["categories"] == ["2026-W48"]
    first, second, _ = body["personalizations"]
    assert first["to"] == [{"email": "reader1@example.org", "name": "Reader 1"}]
    assert second["to"] == [{"email": "reader2@example.org", "name": '"Doe, Jane"'}]
    assert first["headers"] == {"List-Unsubscribe": '<https://digest.test.example/u/t1?a=1&b="x">'}
    assert first["custom_args"] == {
        "digest_message_id": "<2026-W48.s1.digest@test.example>",
        "digest_delivery_id": "1",
    }
    assert first["substitutions"]["-unsubscribe_url_html-"] == (
        "https://digest.test.example/u/t1?a=1&amp;b=&quot;x&quot;"
    )
    provider_id = results[0].provider_id
    assert [r.outcome for r in results] == [Outcome.queued] * 3
    assert provider_id and all(r.provider_id == provider_id for r in results)
    assert all(f"X-Message-Id: {provider_id}" in r.detail for r in results)


def test_substitutions_reproduce_each_readers_copy_exactly(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    messages = [message(i) for i in range(1, 2501)]
    results = asyncio.run(send(transport(url), messages))

    assert all(r.outcome is Outcome.queued for r in results)
    sizes = [len(r.json()["personalizations"]) for r in rec.posts(SENDGRID_PATH)]
    # Requests go out concurrently: the split is the promise, not the arrival order.
    assert sorted(sizes, reverse=True) == [1000, 1000, 500]
    by_id = {m.delivery_id: m for m in messages}
    for request in rec.posts(SENDGRID_PATH):
        body = request.json()
        assert len(body["content"]) == 2  # one body per request, not per reader
        for index, p in enumerate(body["personalizations"]):
            m = by_id[int(p["custom_args"]["digest_delivery_id"])]
            assert m.personal is not None and m.shared is not None
            values = m.personal.values
            assert p["to"][0]["email"] == m.recipient
            assert p["headers"]["List-Unsubscribe"] == f"<{values['unsubscribe_url']}>"
            got = sendgrid_render(body, index)
            assert got["html"] == m.shared.digest.html_with(values)
            assert got["text"] == m.shared.digest.text_with(values)
            assert got["subject"] == m.shared.digest.subject


def test_one_request_per_segment_and_results_in_order(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    other = shared("2026-W48/Research", RenderedDigest("Research only", ("<p>R</p>",), ("R",)))
    messages = [message(i, content=other if i % 2 else None) for i in range(1, 11)]
    results = asyncio.run(send(transport(url), messages))

    assert [r.delivery_id for r in results] == list(range(1, 11))
    bodies = [r.json() for r in rec.posts(SENDGRID_PATH)]
    assert sorted(len(b["personalizations"]) for b in bodies) == [5, 5]
    assert {b["subject"] for b in bodies} == {"Research only", "Test Weekly: 3 new verdicts"}
    plain = next(b for b in bodies if b["subject"] == "Research only")
    assert all("substitutions" not in p for p in plain["personalizations"])  # no slots used


def test_a_400_fails_the_whole_request_with_sendgrids_words(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    error = {
        "message": "The from address does not match a verified Sender Identity.",
        "field": "from",
    }
    rec.script(1, 400, body={"errors": [error]})
    results = asyncio.run(send(transport(url), [message(i) for i in range(1, 4)]))

    assert [r.outcome for r in results] == [Outcome.failed] * 3
    assert all("HTTP 400" in r.detail and "verified Sender Identity" in r.detail for r in results)


def test_an_address_named_by_a_400_is_rejected_the_rest_deferred(
    fake: tuple[Recorder, str],
) -> None:
    rec, url = fake
    rec.reject["reader2@example.org"] = "Does not contain a valid address."
    results = asyncio.run(send(transport(url), [message(i) for i in range(1, 4)]))

    assert [r.outcome for r in results] == [Outcome.deferred, Outcome.rejected, Outcome.deferred]
    assert "personalizations.1.to.0.email" in results[1].detail
    assert "refused other readers" in results[0].detail


def test_a_429_with_rate_limit_reset_holds_requests_back(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    reset = str(int(time.time()) + 2)  # a Unix time, as SendGrid documents it
    rec.script(1, 429, {"X-RateLimit-Reset": reset}, {"errors": [{"message": "too many"}]})
    results = asyncio.run(send(transport(url), [message(1)]))

    assert [r.outcome for r in results] == [Outcome.queued]
    throttled, retried = rec.requests
    assert retried.at - throttled.answered_at >= 0.9  # reset is 1 to 2 s away


def test_a_transactional_message_goes_alone_with_its_own_content(
    fake: tuple[Recorder, str],
) -> None:
    rec, url = fake
    mime = EmailMessage()
    mime["From"] = "Test Weekly <digest@test.example>"
    mime["To"] = "New Reader <new@example.org>"
    mime["Subject"] = "Please confirm"
    mime["Message-ID"] = "<c1@test.example>"
    mime.set_content("Confirm: https://digest.test.example/c/x\n")
    mime.add_alternative("<p>Confirm</p>", subtype="html")
    single = OutgoingMessage(
        7, "digest@test.example", "new@example.org", "<c1@test.example>", mime.as_bytes(), "confirm"
    )
    results = asyncio.run(send(transport(url), [single, message(1)]))

    assert [r.outcome for r in results] == [Outcome.queued] * 2
    bodies = {r.json()["subject"]: r.json() for r in rec.posts(SENDGRID_PATH)}
    confirm = bodies["Please confirm"]
    (p,) = confirm["personalizations"]
    assert p["to"] == [{"email": "new@example.org", "name": "New Reader"}]
    assert p["custom_args"]["digest_message_id"] == "<c1@test.example>"
    assert confirm["content"][0]["value"].startswith("Confirm: https://")
    assert "Message-ID" not in confirm.get("headers", {})


def test_tags_that_occur_in_the_edition_are_replaced_by_others() -> None:
    tricky = RenderedDigest(
        subject="About -unsubscribe_url_html-",
        html=("<p>-unsubscribe_url-</p><a href='", Slot("unsubscribe_url"), "'>u</a>"),
        text=("we write -unsubscribe_url", Slot("unsubscribe_url"), "\n"),
    )
    tagged = tag_digest(tricky, sendgrid_tag)
    assert set(tagged.tags.values()) == {"-unsubscribe_url_1-", "-unsubscribe_url_html_1-"}
    values = {"unsubscribe_url": "https://x.example/u?a&b"}
    subs = tagged.values_for(values)
    body = {
        "subject": tagged.subject,
        "content": [
            {"type": "text/plain", "value": tagged.text},
            {"type": "text/html", "value": tagged.html},
        ],
        "personalizations": [{"substitutions": subs}],
    }
    got = sendgrid_render(body, 0)
    assert (got["html"], got["text"], got["subject"]) == (
        tricky.html_with(values),
        tricky.text_with(values),
        tricky.subject,
    )


def test_bad_key_is_unavailable(fake: tuple[Recorder, str]) -> None:
    _, url = fake
    with pytest.raises(TransportUnavailable, match="DIGEST_SENDGRID_API_KEY"):
        asyncio.run(send(transport(url, api_key="wrong"), [message(1)]))


def test_registry_keys_and_missing_key() -> None:
    def cfg(**options: object) -> AdapterConfig:
        return AdapterConfig(
            section="transport",
            kind="sendgrid",
            options=MappingProxyType(options),
            source=Path("c"),
        )

    registry = {**TRANSPORTS, "sendgrid": SendGridTransport}
    built = build(registry, cfg(batch_size=500), ENV)
    assert isinstance(built, SendGridTransport)
    assert (built.max_batch, built.api_key, built.base_url) == (
        500,
        TOKEN,
        "https://api.sendgrid.com",
    )
    with pytest.raises(ConfigError, match="DIGEST_SENDGRID_API_KEY"):
        build(registry, cfg(), {})
    with pytest.raises(ConfigError, match="batch_size"):
        build(registry, cfg(batch_size=1001), ENV)
    with pytest.raises(ValueError, match="DIGEST_SENDGRID_API_KEY"):
        SendGridTransport()


def test_an_edition_of_2500_through_the_pipeline(
    fake: tuple[Recorder, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, url = fake
    monkeypatch.setitem(TRANSPORTS, "sendgrid", SendGridTransport)
    readers = [f"reader{i}@example.org" for i in range(2500)]
    rec.script(1, 429, {"Retry-After": "1"}, {"errors": [{"message": "too many requests"}]})
    rec.script(2, 503, body={"errors": [{"message": "service unavailable"}]})
    rec.script(3, 400, body={"errors": [{"message": "Invalid batch id", "field": "batch_id"}]})
    table = {"kind": "sendgrid", "base_url": url, "backoff_seconds": 0.01, "concurrency": 2}
    report, rows = send_edition(
        tmp_path, transport=table, env=ENV, readers=readers, batch_size=1000
    )

    assert report.finished and not report.error
    refused = next(r for r in rec.requests if r.status == 400).json()["personalizations"]
    failed = {p["to"][0]["email"] for p in refused}
    accepted = set(readers) - failed
    assert len(failed) in (500, 1000)
    assert rec.accepted == dict.fromkeys(accepted, 1)  # each accepted address exactly once
    assert {a for a, (state, _) in rows.items() if state == "sent"} == accepted
    for address in failed:
        state, detail = rows[address]
        assert state == "failed" and "HTTP 400" in detail and "Invalid batch id" in detail
    throttled = next(r for r in rec.requests if r.status == 429)
    early = [r for r in rec.requests if throttled.answered_at < r.at < throttled.answered_at + 1.0]
    # Only a request already on its way when the 429 came back may arrive in the window.
    assert len(early) <= 1 and all(r.at - throttled.answered_at < 0.05 for r in early)
    assert sum(1 for r in rec.requests if r.status == 202) == 2  # 1,000 readers or more each


def test_measure_throughput(fake: tuple[Recorder, str]) -> None:
    _, url = fake
    messages = [message(i) for i in range(20_000)]
    t = transport(url, concurrency=4)
    started = time.perf_counter()
    results = asyncio.run(send(t, messages))
    elapsed = time.perf_counter() - started
    assert all(r.outcome is Outcome.queued for r in results)
    rate = len(messages) / elapsed
    print(f"\nsendgrid fake: {len(messages)} messages in {elapsed:.2f} s = {rate:,.0f}/s")
