"""The Mailgun transport against a loopback fake of Mailgun's messages API."""

from __future__ import annotations

import asyncio
import base64
import json
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
from digest.transports.mailgun import MailgunTransport
from tests.provider_fakes import Recorder, fake_provider, send_edition
from tests.provider_fakes import send_once as send
from tests.provider_fakes_sendgrid_mailgun import (
    MAILGUN_DOMAIN,
    MAILGUN_PATH,
    mailgun_app,
    mailgun_form,
    mailgun_render,
    message,
    shared,
)
from tests.provider_fakes_sendgrid_mailgun import MAILGUN_KEY as TOKEN
from tests.provider_fakes_sendgrid_mailgun import mailgun_transport as transport

ENV = {"DIGEST_MAILGUN_API_KEY": TOKEN}


@pytest.fixture
def fake() -> Iterator[tuple[Recorder, str]]:
    yield from fake_provider(mailgun_app, TOKEN)


def test_request_has_the_documented_shape(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    messages = [message(i, name="Doe, Jane" if i == 2 else "") for i in range(1, 4)]
    results = asyncio.run(send(transport(url), messages))

    (request,) = rec.requests
    assert (request.method, request.path) == ("POST", MAILGUN_PATH)
    basic = base64.b64encode(f"api:{TOKEN}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {basic}"
    form = mailgun_form(request)  # asserts application/x-www-form-urlencoded
    assert form["from"] == ["Test Weekly <digest@test.example>"]
    assert form["to"] == [
        "Reader 1 <reader1@example.org>",
        '"Doe, Jane" <reader2@example.org>',
        "Reader 3 <reader3@example.org>",
    ]
    assert form["subject"] == ["Test Weekly: 3 new verdicts"]
    assert form["h:Reply-To"] == ["Editor <editor@test.example>"]
    assert form["h:List-Id"] == ["Test Weekly <weekly.test.example>"]
    assert form["h:List-Unsubscribe"] == ["%recipient.list_unsubscribe%"]
    assert form["h:List-Unsubscribe-Post"] == ["List-Unsubscribe=One-Click"]
    assert form["v:digest_message_id"] == ["%recipient.digest_message_id%"]
    assert form["v:digest_delivery_id"] == ["%recipient.digest_delivery_id%"]
    assert form["o:tag"] == ["2026-W48"]
    assert "%recipient.unsubscribe_url_html%" in form["html"][0]
    assert "%recipient.unsubscribe_url%" in form["text"][0]
    variables = json.loads(form["recipient-variables"][0])
    assert variables["reader1@example.org"] == {
        "unsubscribe_url": 'https://digest.test.example/u/t1?a=1&b="x"',
        "unsubscribe_url_html": "https://digest.test.example/u/t1?a=1&amp;b=&quot;x&quot;",
        "preferences_url": "https://digest.test.example/p/t1?x=<1>",
        "preferences_url_html": "https://digest.test.example/p/t1?x=&lt;1&gt;",
        "list_unsubscribe": '<https://digest.test.example/u/t1?a=1&b="x">',
        "digest_message_id": "<2026-W48.s1.digest@test.example>",
        "digest_delivery_id": "1",
    }
    assert [r.outcome for r in results] == [Outcome.queued] * 3
    provider_id = results[0].provider_id
    assert provider_id.endswith(f"@{MAILGUN_DOMAIN}") and not provider_id.startswith("<")
    assert all(r.provider_id == provider_id and "Queued. Thank you." in r.detail for r in results)


def test_recipient_variables_reproduce_each_readers_copy_exactly(
    fake: tuple[Recorder, str],
) -> None:
    rec, url = fake
    messages = [message(i) for i in range(1, 2501)]
    results = asyncio.run(send(transport(url), messages))

    assert all(r.outcome is Outcome.queued for r in results)
    forms = [mailgun_form(r) for r in rec.posts(MAILGUN_PATH)]
    # Requests go out concurrently: the split is the promise, not the arrival order.
    assert sorted((len(f["to"]) for f in forms), reverse=True) == [1000, 1000, 500]
    by_address = {m.recipient: m for m in messages}
    for form in forms:
        assert len(form["html"]) == 1  # one body per request, not per reader
        for address in json.loads(form["recipient-variables"][0]):
            m = by_address[address]
            assert m.personal is not None and m.shared is not None
            values = m.personal.values
            got = mailgun_render(form, address)
            assert got["html"] == m.shared.digest.html_with(values)
            assert got["text"] == m.shared.digest.text_with(values)
            assert got["subject"] == m.shared.digest.subject
            assert got["h:List-Unsubscribe"] == f"<{values['unsubscribe_url']}>"
            assert got["v:digest_message_id"] == m.message_id
            assert got["v:digest_delivery_id"] == str(m.delivery_id)


def test_one_request_per_segment_and_results_in_order(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    other = shared("2026-W48/Research", RenderedDigest("Research only", ("<p>R</p>",), ("R",)))
    messages = [message(i, content=other if i % 2 else None) for i in range(1, 11)]
    results = asyncio.run(send(transport(url), messages))

    assert [r.delivery_id for r in results] == list(range(1, 11))
    forms = [mailgun_form(r) for r in rec.posts(MAILGUN_PATH)]
    assert sorted(len(f["to"]) for f in forms) == [5, 5]
    assert {f["subject"][0] for f in forms} == {"Research only", "Test Weekly: 3 new verdicts"}


def test_a_400_fails_the_whole_request_with_mailguns_words(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    rec.reject["reader2@example.org"] = "bad address"
    results = asyncio.run(send(transport(url), [message(i) for i in range(1, 4)]))

    assert [r.outcome for r in results] == [Outcome.failed] * 3
    assert all("HTTP 400" in r.detail and "not a valid address" in r.detail for r in results)
    assert not rec.accepted


def test_unknown_domain_or_bad_key_is_unavailable(fake: tuple[Recorder, str]) -> None:
    _, url = fake
    with pytest.raises(TransportUnavailable, match="region"):
        asyncio.run(send(transport(url, domain="other.example"), [message(1)]))
    with pytest.raises(TransportUnavailable, match="DIGEST_MAILGUN_API_KEY"):
        asyncio.run(send(transport(url, api_key="wrong"), [message(1)]))


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
    forms = {f["subject"][0]: f for f in map(mailgun_form, rec.posts(MAILGUN_PATH))}
    confirm = forms["Please confirm"]
    assert confirm["to"] == ["New Reader <new@example.org>"]
    assert "recipient-variables" not in confirm
    assert confirm["v:digest_message_id"] == ["<c1@test.example>"]
    assert confirm["text"][0].startswith("Confirm: https://")
    assert "h:Message-ID" not in confirm


def test_variables_that_occur_in_the_edition_are_renamed(fake: tuple[Recorder, str]) -> None:
    rec, url = fake
    tricky = RenderedDigest(
        subject="Weekly",
        html=("<p>%recipient.list_unsubscribe%</p><a href='", Slot("unsubscribe_url"), "'>u</a>"),
        text=("see %recipient.unsubscribe_url% ", Slot("unsubscribe_url"), "\n"),
    )
    m = message(1, content=shared(digest=tricky))
    asyncio.run(send(transport(url), [m]))

    (form,) = map(mailgun_form, rec.posts(MAILGUN_PATH))
    assert "%recipient.unsubscribe_url_1%" in form["text"][0]
    assert m.personal is not None
    got = mailgun_render(form, m.recipient)
    assert got["html"] == tricky.html_with(m.personal.values)
    assert got["text"] == tricky.text_with(m.personal.values)
    assert got["h:List-Unsubscribe"] == f"<{m.personal.values['unsubscribe_url']}>"


def test_registry_keys_region_and_missing_values() -> None:
    def cfg(**options: object) -> AdapterConfig:
        return AdapterConfig(
            section="transport", kind="mailgun", options=MappingProxyType(options), source=Path("c")
        )

    registry = {**TRANSPORTS, "mailgun": MailgunTransport}
    built = build(registry, cfg(domain="mg.example.com", region="eu"), ENV)
    assert isinstance(built, MailgunTransport)
    assert (built.base_url, built.path, built.max_batch) == (
        "https://api.eu.mailgun.net",
        "/v3/mg.example.com/messages",
        1000,
    )
    us = build(registry, cfg(domain="mg.example.com"), ENV)
    assert isinstance(us, MailgunTransport) and us.base_url == "https://api.mailgun.net"
    with pytest.raises(ConfigError, match="DIGEST_MAILGUN_API_KEY"):
        build(registry, cfg(domain="mg.example.com"), {})
    with pytest.raises(ConfigError, match="domain"):
        build(registry, cfg(), ENV)
    with pytest.raises(ConfigError, match="region"):
        build(registry, cfg(domain="mg.example.com", region="asia"), ENV)
    with pytest.raises(ConfigError, match="domain"):
        build(registry, cfg(domain="mg.example.com/x"), ENV)
    with pytest.raises(ValueError, match="domain"):
        MailgunTransport(api_key="k")


def test_an_edition_of_2500_through_the_pipeline(
    fake: tuple[Recorder, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, url = fake
    monkeypatch.setitem(TRANSPORTS, "mailgun", MailgunTransport)
    readers = [f"reader{i}@example.org" for i in range(2500)]
    rec.script(1, 429, {"Retry-After": "1"}, {"message": "Too many requests"})
    rec.script(2, 503, body={"message": "Service Unavailable"})
    rec.script(3, 400, body={"message": "'from' parameter is not a valid address"})
    table = {
        "kind": "mailgun",
        "base_url": url,
        "domain": MAILGUN_DOMAIN,
        "backoff_seconds": 0.01,
        "concurrency": 2,
    }
    report, rows = send_edition(
        tmp_path, transport=table, env=ENV, readers=readers, batch_size=1000
    )

    assert report.finished and not report.error
    refused = mailgun_form(next(r for r in rec.requests if r.status == 400))
    failed = {to.rpartition("<")[2].rstrip(">") for to in refused["to"]}
    accepted = set(readers) - failed
    assert len(failed) in (500, 1000)
    assert rec.accepted == dict.fromkeys(accepted, 1)  # each accepted address exactly once
    assert {a for a, (state, _) in rows.items() if state == "sent"} == accepted
    for address in failed:
        state, detail = rows[address]
        assert state == "failed" and "HTTP 400" in detail and "not a valid address" in detail
    throttled = next(r for r in rec.requests if r.status == 429)
    early = [r for r in rec.requests if throttled.answered_at < r.at < throttled.answered_at + 1.0]
    # Only a request already on its way when the 429 came back may arrive in the window.
    assert len(early) <= 1 and all(r.at - throttled.answered_at < 0.05 for r in early)
    assert sum(1 for r in rec.requests if r.status == 200) == 2
