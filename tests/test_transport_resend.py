"""The Resend transport against a loopback fake of Resend's batch API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.errors import TransportUnavailable
from digest.transports import TRANSPORTS
from digest.transports.base import Outcome, SendResult
from digest.transports.resend import ResendTransport
from tests.provider_fakes import Recorder, digest_message, resend_app, send_edition, serve
from tests.provider_fakes import send_once as send

KEY = "re_test"


@pytest.fixture
def fake() -> Iterator[tuple[Recorder, str]]:
    rec = Recorder(token=KEY)
    with serve(resend_app(rec)) as url:
        yield rec, url


def transport(url: str, **keys: object) -> ResendTransport:
    options: dict[str, object] = {
        "base_url": url,
        "api_key": KEY,
        "backoff_seconds": 0.01,
        "requests_per_second": 0,
    }
    options.update(keys)
    return ResendTransport(**options)  # type: ignore[arg-type]


def test_request_has_the_documented_shape(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    messages = [digest_message(i) for i in range(1, 4)]
    results = asyncio.run(send(transport(url), messages))

    assert [r.outcome for r in results] == [Outcome.queued] * 3
    (request,) = rec.requests  # no probe: sending-only keys cannot read anything
    assert (request.method, request.path) == ("POST", "/emails/batch")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-batch-validation"] == "permissive"
    key = request.headers["idempotency-key"]
    assert key.startswith("digest-batch/") and len(key) <= 256
    body = request.json()
    assert isinstance(body, list) and len(body) == 3
    first = body[0]
    assert set(first) == {"from", "to", "subject", "html", "text", "reply_to", "headers", "tags"}
    assert first["from"] == "Test Weekly <digest@test.example>"
    assert first["to"] == ["Reader 1 <reader1@example.org>"]
    assert first["reply_to"] == ["editor@test.example"]
    assert first["subject"] == "Test Weekly: 3 new verdicts"
    assert 'href="https://digest.test.example/u/t1"' in first["html"]
    assert "Unsubscribe: https://digest.test.example/u/t1" in first["text"]
    assert first["headers"] == {
        "List-Unsubscribe": "<https://digest.test.example/u/t1>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": "Test Weekly <weekly.test.example>",
        "X-Entity-Ref-ID": "<2026-W48.s1.digest@test.example>",
    }
    assert first["tags"] == [
        {"name": "delivery_id", "value": "1"},
        {"name": "edition", "value": "2026-W48"},
    ]
    assert results[0].provider_id and results[0].provider_id in results[0].detail


def test_idempotency_key_depends_only_on_the_batch() -> None:
    a = [digest_message(i) for i in range(1, 4)]
    assert ResendTransport.batch_key(a) == ResendTransport.batch_key(list(a))
    assert ResendTransport.batch_key(a) != ResendTransport.batch_key(a[:2])


def test_batches_over_100_become_several_requests(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    t = transport(url)
    assert t.max_batch == 100
    results = asyncio.run(send(t, [digest_message(i) for i in range(250)]))
    assert sorted(len(r.json()) for r in rec.posts("/emails/batch")) == [50, 100, 100]
    assert [r.delivery_id for r in results] == list(range(250))
    keys = {r.headers["idempotency-key"] for r in rec.requests}
    assert len(keys) == 3


def test_permissive_errors_reject_only_their_email(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.reject["reader2@example.org"] = "Invalid `to` field."
    results = asyncio.run(send(transport(url), [digest_message(i) for i in range(1, 4)]))
    assert [r.outcome for r in results] == [Outcome.queued, Outcome.rejected, Outcome.queued]
    assert "Invalid `to` field." in results[1].detail and '"index":1' in results[1].detail


def test_a_quoted_display_name_goes_as_an_encoded_word(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    asyncio.run(send(transport(url), [digest_message(1, name="Doe, Jane")]))
    (to,) = rec.requests[0].json()[0]["to"]
    assert to.startswith("=?utf-8?q?") and to.endswith("<reader1@example.org>")


def test_timeout_after_sending_is_retried_with_the_same_key(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.delay = 0.6  # Resend accepts, but answers after our timeout

    async def scenario() -> list[SendResult]:
        t = transport(url, timeout=0.3, max_attempts=3)
        try:
            first = asyncio.create_task(t.send_batch([digest_message(1), digest_message(2)]))
            await asyncio.sleep(0.35)
            rec.delay = 0.0
            return await first
        finally:
            await t.close()

    results = asyncio.run(scenario())
    assert [r.outcome for r in results] == [Outcome.queued, Outcome.queued]
    keys = [r.headers["idempotency-key"] for r in rec.posts("/emails/batch")]
    assert len(keys) == 2 and len(set(keys)) == 1
    assert rec.duplicates == 1
    assert rec.accepted == {"reader1@example.org": 1, "reader2@example.org": 1}


def test_concurrent_idempotent_request_is_deferred(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    body = {"statusCode": 409, "name": "concurrent_idempotent_requests", "message": "busy"}
    rec.script(1, 409, body=body)
    results = asyncio.run(send(transport(url), [digest_message(1)]))
    assert results[0].outcome is Outcome.deferred and results[0].retry_after == 1.0


def test_invalid_key_is_unavailable(fake: tuple[Recorder, str]) -> None:
    _, url = fake
    with pytest.raises(TransportUnavailable, match="DIGEST_RESEND_API_KEY"):
        asyncio.run(send(transport(url, api_key="re_wrong"), [digest_message(1)]))


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(ValueError, match="DIGEST_RESEND_API_KEY"):
        ResendTransport()
    with pytest.raises(ValueError, match="batch_validation"):
        ResendTransport(api_key="k", batch_validation="lenient")


def test_an_edition_of_2500_through_the_pipeline(
    fake: tuple[Recorder, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, url = fake
    monkeypatch.setitem(TRANSPORTS, "resend", ResendTransport)
    readers = [f"reader{i}@example.org" for i in range(2500)]
    refused = set(readers[3::250])
    for address in refused:
        rec.reject[address] = "Invalid `to` field. Please use our testing email address."
    rec.script(4, 429, {"Retry-After": "1"}, {"statusCode": 429, "name": "rate_limit_exceeded"})
    rec.script(9, 500, body={"statusCode": 500, "name": "internal_server_error"})
    table = {
        "kind": "resend",
        "base_url": url,
        "backoff_seconds": 0.01,
        "requests_per_second": 50,
    }
    env = {"DIGEST_RESEND_API_KEY": KEY}
    report, rows = send_edition(tmp_path, transport=table, env=env, readers=readers)

    assert report.finished and not report.error
    accepted = set(readers) - refused
    assert rec.accepted == dict.fromkeys(accepted, 1)
    assert {a for a, (state, _) in rows.items() if state == "sent"} == accepted
    for address in refused:
        state, detail = rows[address]
        assert state == "failed" and "Invalid `to` field" in detail
    throttled = next(r for r in rec.requests if r.status == 429)
    expiry = throttled.answered_at + 1.0
    late = [r for r in rec.requests if throttled.answered_at < r.at < expiry]
    assert len(late) <= 1, [round(r.at - throttled.answered_at, 3) for r in late]
