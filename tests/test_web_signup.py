"""Sign-up and double opt-in through the web app, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from digest.store.models import EditionStatus
from subscribers.models import ConsentAction, ConsentSource, SubscriberStatus
from subscribers.tokens import Purpose
from tests.test_web_support import Site, bodies, confirm_path, open_site

UA = "Mozilla/5.0 (test)"


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    yield from open_site(tmp_path, db_url)


def test_form_has_labels_honeypot_categories_and_consent(site: Site) -> None:
    site.fetch()
    page = site.client.get("/subscribe")
    assert page.status_code == 200
    html = page.text
    assert '<html lang="en">' in html and 'name="viewport"' in html
    assert '<label for="email">' in html and '<label for="name">' in html
    assert 'name="website"' in html and 'aria-hidden="true"' in html
    assert 'autocomplete="off"' in html
    for category in ("Developer Tools", "Infrastructure", "Research"):
        assert f'value="{category}"' in html
    assert html.index("Developer Tools") < html.index("Infrastructure") < html.index("Research")
    assert "one email a week" in html and "1 Test Street, 10115 Berlin" in html
    assert "<script" not in html
    headers = page.headers
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


def test_signup_sends_a_confirmation_without_the_name_then_post_confirms(site: Site) -> None:
    site.fetch()
    response = site.client.post(
        "/subscribe",
        data={"email": "Ada@Example.COM", "name": "Mallory<b>", "categories": ["Research", "Nope"]},
        headers={"user-agent": UA},
    )
    assert response.status_code == 200 and "Check your inbox" in response.text
    assert "set-cookie" not in response.headers
    (message,) = site.mails()
    raw = (site.outbox / "transactional").glob("*.eml").__next__().read_bytes()
    assert b"Mallory" not in raw and "Mallory" not in bodies(message)
    assert message["To"] == "ada@example.com"
    assert message["List-Unsubscribe-Post"] is None and message["List-Unsubscribe"] is None
    assert "72 hours" in bodies(message) and "1 Test Street, 10115 Berlin" in bodies(message)
    assert message["Message-ID"].endswith("@test.example>")
    subscriber = site.subscriber("ada@example.com")
    assert subscriber is not None and subscriber.status == SubscriberStatus.pending
    assert subscriber.categories == ["Research"]  # unknown categories ignored

    path = confirm_path(message)
    before = site.snapshot()
    for _ in range(3):  # mail scanners fetch links: a GET confirms nothing
        page = site.client.get(path)
        assert page.status_code == 200 and "Confirm subscription" in page.text
    assert site.snapshot() == before

    done = site.client.post(path, headers={"user-agent": UA})
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert 'href="/p/' in done.text
    subscriber = site.subscriber("ada@example.com")
    assert subscriber is not None and subscriber.status == SubscriberStatus.active
    actions = [(e.action, e.source) for e in site.events()]
    assert actions == [
        (ConsentAction.subscribed, ConsentSource.form),
        (ConsentAction.confirmed, ConsentSource.link),
    ]
    for event in site.events():
        assert event.ip == "127.0.0.1" and event.user_agent == UA
        assert event.consent_version == "1"


def test_json_signup_and_a_bad_address_is_named_not_enumerated(site: Site) -> None:
    ok = site.client.post("/subscribe", json={"email": "bo@example.com", "categories": []})
    assert ok.status_code == 200 and ok.json() == {"status": "ok"}
    assert len(site.mails()) == 1
    bad = site.client.post("/subscribe", json={"email": "not-an-address"})
    assert bad.status_code == 400 and "not a valid address" in bad.json()["error"]
    page = site.client.post("/subscribe", data={"email": "x@"})
    assert page.status_code == 400 and "cannot be used" in page.text
    empty = site.client.post("/subscribe", data={"email": " "})
    assert empty.status_code == 400 and "enter your email" in empty.text
    assert len(site.mails()) == 1


def test_multipart_signup_is_accepted(site: Site) -> None:
    response = site.client.post("/subscribe", files={"email": (None, "mp@example.com")})
    assert response.status_code == 200
    assert site.subscriber("mp@example.com") is not None


def test_a_thousand_signups_send_one_email_and_answers_never_differ(
    tmp_path: Path, db_url: str
) -> None:
    web = {"signups_per_minute": 5000}
    for opened in open_site(tmp_path, db_url, web=web, transport={"kind": "memory"}):
        transport = opened.rt.transport_adapter
        new = opened.client.post("/subscribe", data={"email": "same@example.com"})
        for _ in range(999):
            again = opened.client.post("/subscribe", data={"email": "same@example.com"})
            assert again.status_code == new.status_code
            assert again.content == new.content
        assert len(transport.sent) == 1  # type: ignore[attr-defined]
        other = opened.client.post("/subscribe", data={"email": "fresh@example.com"})
        assert other.content == new.content and other.headers == new.headers
        subscribed = [e for e in opened.events() if e.action == ConsentAction.subscribed]
        assert len(subscribed) == 2
        json_new = opened.client.post("/subscribe", json={"email": "j@example.com"})
        json_known = opened.client.post("/subscribe", json={"email": "same@example.com"})
        assert json_new.content == json_known.content


def test_the_honeypot_stores_and_sends_nothing(site: Site) -> None:
    trapped = site.client.post("/subscribe", data={"email": "bot@example.com", "website": "x"})
    real = site.client.post("/subscribe", data={"email": "human@example.com"})
    assert trapped.status_code == 200 and trapped.content == real.content
    assert site.subscriber("bot@example.com") is None
    assert [m["To"] for m in site.mails()] == ["human@example.com"]


@pytest.fixture
def limited(tmp_path: Path, db_url: str) -> Iterator[Site]:
    yield from open_site(tmp_path, db_url, web={"signups_per_minute": 3})


def test_the_rate_limit_answers_429_with_retry_after(limited: Site) -> None:
    for n in range(3):
        assert limited.client.post("/subscribe", data={"email": f"r{n}@example.com"}).is_success
    refused = limited.client.post("/subscribe", data={"email": "r9@example.com"})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert limited.subscriber("r9@example.com") is None


def test_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path: Path, db_url: str) -> None:
    # The peer (127.0.0.1) is a trusted proxy, and so is 10.0.0.0/8 behind it: the
    # client is the right-most address that is neither; what it wrote before is noise.
    web = {"signups_per_minute": 1, "trusted_proxies": ["127.0.0.1", "10.0.0.0/8"]}
    for opened in open_site(tmp_path, db_url, web=web):
        first = {"x-forwarded-for": "198.51.100.1, 203.0.113.5, 10.0.0.1"}
        forged = {"x-forwarded-for": "198.51.100.99, 203.0.113.5"}
        second = {"x-forwarded-for": "203.0.113.6"}
        assert opened.client.post("/subscribe", data={"email": "a@x.com"}, headers=first).is_success
        assert opened.client.post(
            "/subscribe", data={"email": "b@x.com"}, headers=second
        ).is_success
        again = opened.client.post("/subscribe", data={"email": "c@x.com"}, headers=forged)
        assert again.status_code == 429
        (event, *_) = opened.events()
        assert event.ip == "203.0.113.5"


def test_forwarded_for_is_ignored_without_trusted_proxies(limited: Site) -> None:
    for n in range(3):
        forged = {"x-forwarded-for": f"198.51.100.{n}"}
        assert limited.client.post(
            "/subscribe", data={"email": f"f{n}@example.com"}, headers=forged
        ).is_success
    forged = {"x-forwarded-for": "198.51.100.77"}
    refused = limited.client.post("/subscribe", data={"email": "f9@example.com"}, headers=forged)
    assert refused.status_code == 429
    assert {e.ip for e in limited.events()} == {"127.0.0.1"}


def test_confirm_links_that_are_bad_all_look_alike_and_change_nothing(site: Site) -> None:
    path = site.signup("eve@example.com")
    subscriber = site.subscriber("eve@example.com")
    assert subscriber is not None and subscriber.id is not None
    signer = site.rt.signer()
    wrong_purpose = f"/confirm/{signer.sign(Purpose.unsubscribe, subscriber.id)}"
    tampered = path[:-3] + ("aaa" if not path.endswith("aaa") else "bbb")
    before = site.snapshot()
    answers = set()
    for bad in (tampered, wrong_purpose, "/confirm/x"):
        for method in ("GET", "POST"):
            response = site.client.request(method, bad)
            assert response.status_code == 400
            answers.add(response.content)
    site.clock.advance(hours=73)  # expired by the runtime clock
    for method in ("GET", "POST"):
        response = site.client.request(method, path)
        assert response.status_code == 400
        answers.add(response.content)
    assert len(answers) == 1 and b"does not work" in answers.pop()
    assert site.snapshot() == before


def test_a_newly_confirmed_reader_gets_the_latest_sent_edition(site: Site) -> None:
    site.fetch()
    site.edition("2026-W47", ["tern-vector-vs-heron-search"], EditionStatus.sent)
    site.edition("2026-W48", ["claude-4-api-tool-streaming-vs-codestral-2"], EditionStatus.sent)
    site.edition("2026-W49", ["lumen-notebook-vs-quill-agents"], EditionStatus.composed)
    site.confirmed("new@example.com")
    (welcome,) = site.mails("welcome")
    assert welcome["To"].addresses[0].addr_spec == "new@example.com"
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/u/" in welcome["List-Unsubscribe"]
    assert welcome["Subject"].startswith("Welcome to Test Weekly")
    text = bodies(welcome)
    assert "Codestral" in text and "Lumen" not in text and "Tern" not in text
    confirmations = [m["Message-ID"] for m in site.mails()]
    assert site.client.post("/subscribe", data={"email": "new@example.com"}).is_success
    assert [m["Message-ID"] for m in site.mails()] == confirmations  # active: no new mail
    assert len(site.mails("welcome")) == 1


def test_no_sent_edition_means_no_welcome(site: Site) -> None:
    site.confirmed("early@example.com")
    assert site.mails("welcome") == []


def test_confirmation_and_welcome_come_from_transactional_from(tmp_path: Path, db_url: str) -> None:
    own = "Test Weekly Accounts <hello@accounts.test.example>"
    for site in open_site(tmp_path, db_url, email={"transactional_from": own}):
        site.fetch()
        site.edition("2026-W48", ["claude-4-api-tool-streaming-vs-codestral-2"], EditionStatus.sent)
        site.confirmed("new@example.com")
        (confirmation,) = site.mails()
        (welcome,) = site.mails("welcome")
        for message in (confirmation, welcome):
            assert message["From"].addresses[0].addr_spec == "hello@accounts.test.example"
            assert message["Message-ID"].endswith("@accounts.test.example>")
        assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert site.rt.config.email.from_ == "Test Weekly <digest@test.example>"


def test_without_transactional_from_they_come_from_from(site: Site) -> None:
    site.fetch()
    site.edition("2026-W48", ["claude-4-api-tool-streaming-vs-codestral-2"], EditionStatus.sent)
    site.confirmed("new@example.com")
    for message in (*site.mails(), *site.mails("welcome")):
        assert message["From"].addresses[0].addr_spec == "digest@test.example"
