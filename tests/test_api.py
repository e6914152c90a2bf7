"""``/api/v1`` with API keys, ``digest api-keys`` and CORS on the sign-up, end to end:
the real app on a real SQLite database, mail to the outbox transport."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from sqlalchemy import select

from digest import config as config_mod
from digest import pipeline
from digest.delivery import ledger
from digest.desk import api_keys
from digest.errors import ConfigError
from digest.store.db import session_scope
from digest.store.desk_models import ApiKey, AuditEvent
from subscribers.models import ConsentAction, ConsentSource, SubscriberStatus
from tests.support import write_config
from tests.test_web_support import Site, bodies, confirm_path, open_site

ORIGIN = "https://verdicts.example.com"
ALL = ",".join(api_keys.SCOPES)


@pytest.fixture
def site(tmp_path: Path, sqlite_url: str) -> Iterator[Site]:
    yield from open_site(tmp_path, sqlite_url, web={"allowed_origins": [ORIGIN + "/"]})


def key(site: Site, scopes: str = ALL, name: str = "crm") -> dict[str, str]:
    with session_scope(site.rt.engine) as session:
        made = api_keys.create(
            session, name=name, scopes=scopes, created_by="test", now=site.clock.now
        )
    return {"Authorization": f"Bearer {made.key}"}


def audit_rows(site: Site) -> list[tuple[str, str, str, str]]:
    with session_scope(site.rt.engine) as session:
        rows = session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars()  # type: ignore[arg-type]
        return [(e.actor, e.via, e.action, e.target) for e in rows]


def composed(site: Site) -> str:
    site.fetch()
    result = pipeline.compose(site.rt)
    assert result.edition is not None, result.reason
    return result.edition.key


def test_a_write_key_adds_a_pending_reader_and_the_confirmation_mail_goes_out(site: Site) -> None:
    site.fetch()
    auth = key(site, "subscribers:write,subscribers:read")
    url = "/api/v1/subscribers"
    new = {"email": "Ada@Example.COM", "name": "Ada", "categories": ["Research"]}
    answer = site.client.post(url, json=new, headers=auth)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["email"] == "ada@example.com" and body["status"] == "pending"
    assert body["categories"] == ["Research"] and body["source"] == "api:crm"
    (mail,) = site.mails()
    assert mail["To"] == "ada@example.com" and "72 hours" in bodies(mail)

    again = site.client.post(url, json=new, headers=auth)
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert len(site.mails()) == 1  # the sign-up form's rule: one mail per window

    assert site.client.post(confirm_path(mail)).status_code == 200  # the reader confirms
    shown = site.client.get("/api/v1/subscribers/ada@example.com", headers=auth)
    assert shown.json()["status"] == "active"
    assert ("api-key:crm", "api", "reader.subscribe", f"reader:{body['id']}") in audit_rows(site)

    unknown = site.client.post(url, json={**new, "categories": ["Nope"]}, headers=auth)
    assert unknown.status_code == 400 and "Nope" in unknown.json()["error"]
    bad = site.client.post(url, json={"email": "not-an-address"}, headers=auth)
    assert bad.status_code == 400 and "not a valid address" in bad.json()["error"]


def test_consented_readers_need_a_source_and_are_active_at_once(site: Site) -> None:
    auth = key(site, "subscribers:write")
    url = "/api/v1/subscribers"
    new = {"email": "bo@example.com", "consented": True}
    refused = site.client.post(url, json=new, headers=auth)
    assert refused.status_code == 400 and "source" in refused.json()["error"]
    added = site.client.post(url, json={**new, "source": "booth 2026"}, headers=auth)
    assert added.status_code == 201 and added.json()["status"] == "active"
    assert site.mails() == []
    (event,) = site.events()
    assert event.action == ConsentAction.subscribed and event.source == ConsentSource.api
    assert "booth 2026" in event.detail
    assert "api-key:crm" in event.detail
    typo = site.client.post(url, json={"email": "x@example.com", "emial": "y"}, headers=auth)
    assert typo.status_code == 422 and "emial" in typo.json()["error"]


def test_scopes_revocation_and_wrong_keys(site: Site) -> None:
    reader = key(site, "editions:read", name="reader")
    url, new = "/api/v1/subscribers", {"email": "cy@example.com"}
    forbidden = site.client.post(url, json=new, headers=reader)
    assert forbidden.status_code == 403
    assert forbidden.json() == {"error": "this key lacks the scope subscribers:write"}
    missing = site.client.post(url, json=new)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")

    writer = key(site, "subscribers:write", name="writer")
    with session_scope(site.rt.engine) as session:
        api_keys.revoke(session, name_or_prefix="writer", by="test", now=site.clock.now)
    revoked = site.client.post(url, json=new, headers=writer)
    assert revoked.status_code == 401 and revoked.headers["www-authenticate"].startswith("Bearer")
    assert site.subscriber("cy@example.com") is None and site.mails() == []

    wrong = {"Authorization": reader["Authorization"][:-3] + "xyz"}
    for _ in range(9):  # 1 revoked + 9 wrong = 10 failures in the minute
        assert site.client.get("/api/v1/editions", headers=wrong).status_code == 401
    blocked = site.client.get("/api/v1/editions", headers=reader)  # even the right key
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0


def test_last_used_is_written_at_most_once_a_minute(site: Site) -> None:
    auth = key(site, "status:read")
    start = site.clock.now

    def last_used() -> object:
        with session_scope(site.rt.engine) as session:
            (row,) = session.execute(select(ApiKey)).scalars()
            return row.last_used_at

    assert last_used() is None
    assert site.client.get("/api/v1/status", headers=auth).status_code == 200
    assert last_used() == start
    site.clock.advance(seconds=30)
    site.client.get("/api/v1/status", headers=auth)
    assert last_used() == start  # not a write per request
    site.clock.advance(seconds=31)
    site.client.get("/api/v1/status", headers=auth)
    assert last_used() == site.clock.now


def test_patch_edits_a_draft_then_409_once_it_is_sending(site: Site) -> None:
    edition = composed(site)
    auth = key(site, "editions:read,editions:write")
    url = f"/api/v1/editions/{edition}"
    lineup = site.client.get(url, headers=auth).json()["lineup"]
    first = lineup[0]["id"]
    change = {
        "subject": "Three verdicts",
        "note": "Hello *readers*",
        "sponsor": {"text": "Try Acme", "url": "https://acme.example/"},
        "exclude": [first],
    }
    done = site.client.patch(url, json=change, headers=auth)
    assert done.status_code == 200, done.text
    assert done.json()["revision"] == 1 and "subject: Three verdicts" in done.json()["changes"]
    shown = site.client.get(url, headers=auth).json()
    assert shown["editorial"]["subject"] == "Three verdicts"
    assert shown["editorial"]["sponsor"]["url"] == "https://acme.example/"
    assert [e["excluded"] for e in shown["lineup"] if e["id"] == first] == [True]
    text = site.client.get(f"{url}/preview.txt", headers=auth)
    assert text.status_code == 200 and "Try Acme" in text.text and "Hello" in text.text
    html = site.client.get(f"{url}/preview.html", headers=auth)
    assert "sandbox" in html.headers["content-security-policy"] and b"Try Acme" in html.content

    removed = site.client.patch(url, json={"sponsor": None}, headers=auth)
    assert "sponsor removed" in removed.json()["changes"]
    invalid = site.client.patch(url, json={"include": ["no-such-comparison"]}, headers=auth)
    assert invalid.status_code == 400 and "no-such-comparison" in invalid.json()["error"]

    with session_scope(site.rt.engine) as session:  # the send starts: the ledger is planned
        found = pipeline.find_edition(site.rt, edition)
        assert found is not None and found.id is not None
        ledger.plan(session.connection(), edition_id=found.id, now=site.clock.now)
    late = site.client.patch(url, json={"subject": "Too late"}, headers=auth)
    assert late.status_code == 409 and "started sending" in late.json()["error"]
    assert site.client.get(url, headers=auth).json()["editorial"]["subject"] == "Three verdicts"
    assert site.client.patch("/api/v1/editions/2020-W01", json={}, headers=auth).status_code == 404
    edits = [r for r in audit_rows(site) if r[2] == "edition.edit"]
    assert edits and all(r[:2] == ("api-key:crm", "api") for r in edits)


def test_readers_change_unsubscribe_and_are_forgotten(site: Site) -> None:
    site.fetch()
    auth = key(site, "subscribers:read,subscribers:write")
    site.client.post(
        "/api/v1/subscribers",
        json={"email": "di@example.com", "consented": True, "source": "crm"},
        headers=auth,
    )
    url = "/api/v1/subscribers/di@example.com"
    change = {"categories": ["Research"], "time_zone": "America/New_York", "name": "Di"}
    changed = site.client.patch(url, json=change, headers=auth)
    assert changed.status_code == 200, changed.text
    assert changed.json()["time_zone"] == "America/New_York" and changed.json()["name"] == "Di"
    zone = site.client.patch(url, json={"time_zone": "Mars/Base"}, headers=auth)
    assert zone.status_code == 400 and "Mars/Base" in zone.json()["error"]
    past = site.client.patch(url, json={"paused_until": "2020-01-01T00:00:00Z"}, headers=auth)
    assert past.status_code == 400
    gone = site.client.post(f"{url}/unsubscribe", headers=auth)
    assert gone.json()["status"] == SubscriberStatus.unsubscribed
    assert site.client.delete(url, headers=auth).status_code == 204
    assert site.client.get(url, headers=auth).status_code == 404
    actions = [r[2] for r in audit_rows(site) if r[1] == "api"]
    assert actions == ["reader.add", "reader.update", "reader.unsubscribe", "reader.forget"]


def test_status_and_the_schema(site: Site) -> None:
    edition = composed(site)
    status = site.client.get("/api/v1/status", headers=key(site, "status:read"))
    assert status.status_code == 200
    assert [e["key"] for e in status.json()["editions"]] == [edition]
    schema = site.client.get("/api/v1/openapi.json").json()
    assert {"/subscribers", "/subscribers/{email}", "/editions/{key}", "/status"} <= set(
        schema["paths"]
    )
    assert set(schema["paths"]["/subscribers/{email}"]) == {"get", "patch", "delete"}
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    docs = site.client.get("/api/v1/docs")
    assert docs.status_code == 200 and 'href="/api/v1/openapi.json"' in docs.text
    assert "<script" not in docs.text
    assert "/api/v1/subscribers" not in str(site.client.get("/openapi.json").json()["paths"])


def test_cors_on_the_sign_up_for_allowed_origins_only(site: Site) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    ok = site.client.options("/subscribe", headers={"Origin": ORIGIN, **preflight})
    assert ok.status_code == 204
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert ok.headers["access-control-allow-methods"] == "POST"
    assert ok.headers["access-control-allow-headers"] == "Content-Type"
    assert "access-control-allow-credentials" not in ok.headers
    other = site.client.options(
        "/subscribe", headers={"Origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in other.headers
    posted = site.client.post(
        "/subscribe", json={"email": "fe@example.com"}, headers={"Origin": ORIGIN}
    )
    assert (
        posted.json() == {"status": "ok"}
        and posted.headers["access-control-allow-origin"] == ORIGIN
    )
    evil = site.client.post(
        "/subscribe", json={"email": "ev@example.com"}, headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in evil.headers
    elsewhere = site.client.options("/api/v1/subscribers", headers={"Origin": ORIGIN, **preflight})
    assert "access-control-allow-origin" not in elsewhere.headers
    page = site.client.get("/archive", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in page.headers


def test_allowed_origins_must_be_origins(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, web={"allowed_origins": ["https://ok.example", "https://x.example/page"]}
    )
    with pytest.raises(ConfigError, match=re.escape("'https://x.example/page' is not an origin")):
        config_mod.load(path, environ={"DIGEST_SECRET_KEY": "k"})


def test_cli_creates_lists_and_revokes_keys(tmp_path: Path, sqlite_url: str) -> None:
    config = write_config(tmp_path)
    env = {
        **os.environ,
        "DIGEST_DATABASE_URL": sqlite_url,
        "DIGEST_SECRET_KEY": "k",
        "COLUMNS": "200",
    }

    def digest(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "digest", "--config", str(config), "api-keys", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)

    init = [sys.executable, "-m", "digest", "--config", str(config), "init"]
    assert subprocess.run(init, capture_output=True, env=env, timeout=120).returncode == 0
    made = digest("create", "crm-sync", "--scope", "subscribers:write,editions:read")
    assert made.returncode == 0, made.stderr
    (secret,) = [w for w in made.stdout.split() if w.startswith("dgk_")]
    assert made.stdout.count(secret) == 1 and "not shown again" in made.stderr
    listed = digest("list")
    assert "crm-sync" in listed.stdout and "subscribers:write, editions:read" in listed.stdout
    assert secret not in listed.stdout and secret.split("_")[1] in listed.stdout
    unknown = digest("create", "other", "--scope", "subscribers:delete")
    assert unknown.returncode == 2 and "unknown scope 'subscribers:delete'" in unknown.stderr
    assert digest("revoke", "crm-sync").returncode == 0
    again = digest("revoke", "crm-sync")
    assert again.returncode == 2 and "no current key" in again.stderr
    for opened in open_site(tmp_path, sqlite_url):
        answer = opened.client.get(
            "/api/v1/editions", headers={"Authorization": f"Bearer {secret}"}
        )
        assert answer.status_code == 401


def test_approval_needs_its_scope_and_is_recorded(tmp_path: Path, sqlite_url: str) -> None:
    sections = {"edition": {"require_approval": True}, "preflight": {"check_links": False}}
    for opened in open_site(tmp_path, sqlite_url, **sections):
        edition = composed(opened)
        url = f"/api/v1/editions/{edition}/approve"
        refused = opened.client.post(url, headers=key(opened, "editions:read", name="ro"))
        assert refused.status_code == 403 and "editions:approve" in refused.json()["error"]
        done = opened.client.post(url, json={}, headers=key(opened, "editions:approve"))
        assert done.status_code == 200, done.text
        assert done.json()["edition"]["approval"]["approved_by"] == "api-key:crm"
        assert ("api-key:crm", "api", "edition.approve", f"edition:{edition}") in audit_rows(opened)
        missing = opened.client.post(
            "/api/v1/editions/2020-W01/approve", headers=key(opened, name="x")
        )
        assert missing.status_code == 404


def test_fuzzed_api_answers_no_server_error(site: Site) -> None:
    """schemathesis over /api/v1/openapi.json (the main app's fuzz test does not see
    the sub-application), with a key that has every scope and real keys mixed in."""
    edition = composed(site)
    site.client.post("/api/v1/subscribers", json={"email": "f@example.com"}, headers=key(site))
    auth = key(site, name="fuzz")
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", site.client.app)
    failures: list[str] = []
    for operation in [r.ok() for r in schema.get_all_operations()]:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def call(case: Any) -> None:
            params = case.path_parameters or {}
            if "key" in params and len(str(params["key"])) % 2:
                params["key"] = edition
            if "email" in params and len(str(params["email"])) % 2:
                params["email"] = "f@example.com"
            case.validate_response(case.call(headers=auth), checks=[not_a_server_error])

        try:
            call()
        except Exception as exc:
            failures.append(f"{operation.label}: {str(exc).splitlines()[0][:300]}")
    assert not failures, "\n".join(failures)
