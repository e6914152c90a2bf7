"""The desk's admin pages (issue 15): API keys (list, create shown once, revoke) and
the effective settings, read-only and without a secret value.

Real app (``create_app``), real SQLite database, operators signed in with real
passwords and TOTP codes (``tests/desk_support.py``); the keys made on the desk are
used against the real ``/api/v1``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
from fastapi.testclient import TestClient

from digest.config import AdapterConfig, DatabaseConfig
from digest.config.runtime import Runtime
from digest.desk import api_keys
from digest.store import audit
from digest.store.db import session_scope
from digest.web.app import create_app
from tests.desk_support import SHARED_PASSWORD, TOKEN, Clock, desk_runtime, sign_in_as

ADMIN = "admin@example.com"
KEY = re.compile(r"dgk_[0-9a-f]{12}_[A-Za-z0-9_-]+")
DB_PASSWORD = "db-pass-s3cret-77"
FEED_TOKEN = "feed-env-secret-99"
FEED_QUERY_TOKEN = "feed-q-secret-42"


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = desk_runtime(tmp_path, Clock())
    yield runtime
    runtime.close()


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt), follow_redirects=False) as c:
        yield c


def create_key(client: TestClient, csrf: str, name: str, *scopes: str) -> tuple[str, str]:
    """Create a key on the desk: (the key as the answer page shows it, the page)."""
    answer = client.post(
        "/admin/api-keys", data={"csrf": csrf, "name": name, "scope": list(scopes)}
    )
    assert answer.status_code == 200, answer.text
    found = KEY.findall(answer.text)
    assert len(set(found)) == 1, "the answer shows exactly one key"
    return found[0], answer.text


def keys(rt: Runtime) -> list[api_keys.ApiKey]:
    with session_scope(rt.engine) as session:
        rows = list(api_keys.all_keys(session))
        session.expunge_all()
        return rows


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_a_key_made_on_the_desk_is_shown_once_works_and_stops_when_revoked(
    rt: Runtime, client: TestClient
) -> None:
    me = sign_in_as(client, rt, "admin")
    page = client.get("/admin/api-keys")
    assert page.status_code == 200 and "No API keys yet" in page.text
    assert 'href="/admin/api-keys"' in page.text and 'href="/admin/settings"' in page.text

    key, answer = create_key(client, me.csrf, "status-bot", "status:read")
    assert "will not be shown again" in answer
    created = client.post(
        "/admin/api-keys", data={"csrf": me.csrf, "name": "other", "scope": "editions:read"}
    )
    assert created.headers["cache-control"] == "no-store"
    other = KEY.search(created.text)
    assert other is not None

    assert client.get("/api/v1/status", headers=bearer(key)).status_code == 200
    refused = client.get("/api/v1/status", headers=bearer(other.group(0)))
    assert refused.status_code == 403 and "status:read" in refused.text

    listing = client.get("/admin/api-keys")
    assert listing.status_code == 200
    assert key not in listing.text and other.group(0) not in listing.text
    assert KEY.search(listing.text) is None
    row = next(k for k in keys(rt) if k.name == "status-bot")
    assert row.prefix in listing.text and "status:read" in listing.text and ADMIN in listing.text
    assert key.split("_", 2)[2] not in listing.text  # not even the secret part

    revoked = client.post(f"/admin/api-keys/{row.id}/revoke", data={"csrf": me.csrf})
    assert revoked.status_code == 303
    assert revoked.headers["location"] == "/admin/api-keys?done=revoked"
    assert client.get("/api/v1/status", headers=bearer(key)).status_code == 401
    again = client.post(f"/admin/api-keys/{row.id}/revoke", data={"csrf": me.csrf})
    assert again.status_code == 400 and "already revoked" in again.text
    missing = client.post("/admin/api-keys/999/revoke", data={"csrf": me.csrf})
    assert missing.status_code == 404

    with session_scope(rt.engine) as session:
        made = audit.recent(session, action="api-key.create")
        gone = audit.recent(session, action="api-key.revoke")
        assert [(e.actor, e.via) for e in made] == [(ADMIN, "desk")] * 2
        assert [(e.actor, e.via, e.target) for e in gone] == [(ADMIN, "desk", f"api-key:{row.id}")]
        assert all(key not in e.detail for e in [*made, *gone])


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"name": "   ", "scope": ["status:read"]}, "needs a name"),
        ({"name": "no-scope"}, "at least one scope"),
        ({"name": "odd", "scope": ["status:read", "root:all"]}, "unknown scope"),
        ({"name": "taken", "scope": ["status:read"]}, "already a key named"),
        ({"name": "bad\x00name", "scope": ["status:read"]}, "control characters"),
    ],
)
def test_bad_input_creates_nothing(
    rt: Runtime, client: TestClient, fields: dict[str, object], reason: str
) -> None:
    me = sign_in_as(client, rt, "admin")
    create_key(client, me.csrf, "taken", "editions:read")
    answer = client.post("/admin/api-keys", data={"csrf": me.csrf, **fields})
    assert answer.status_code == 400 and reason in answer.text
    assert "Not created" in answer.text and KEY.search(answer.text) is None
    assert [k.name for k in keys(rt)] == ["taken"]


@pytest.mark.parametrize("role", ["editor", "viewer"])
def test_editors_and_viewers_get_403_on_both_pages(
    rt: Runtime, client: TestClient, role: str
) -> None:
    with session_scope(rt.engine) as session:
        existing = api_keys.create(
            session, name="kept", scopes="status:read", created_by="test", now=rt.now()
        )
        key_id = existing.row.id
    me = sign_in_as(client, rt, role)
    home = client.get("/admin/editions")
    assert "/admin/api-keys" not in home.text and "/admin/settings" not in home.text
    assert client.get("/admin/api-keys").status_code == 403
    assert client.get("/admin/settings").status_code == 403
    posted = client.post(
        "/admin/api-keys", data={"csrf": me.csrf, "name": "sneaky", "scope": "status:read"}
    )
    assert posted.status_code == 403 and KEY.search(posted.text) is None
    revoke = client.post(f"/admin/api-keys/{key_id}/revoke", data={"csrf": me.csrf})
    assert revoke.status_code == 403
    assert [(k.name, k.revoked_at) for k in keys(rt)] == [("kept", None)]
    assert client.get("/api/v1/status", headers=bearer(existing.key)).status_code == 200


def test_settings_show_the_configuration_but_never_a_secret(rt: Runtime) -> None:
    config = rt.config
    rt.config = dataclasses.replace(
        config,
        site=config.site.model_copy(update={"postal_address": f"1 Road, {SHARED_PASSWORD}"}),
        database=DatabaseConfig(url=f"postgresql+psycopg://dbuser:{DB_PASSWORD}@db.example/dg"),
        feed=AdapterConfig(
            section="feed",
            kind="http",
            options=MappingProxyType(
                {"url": f"https://feed.example/v1.json?token={FEED_QUERY_TOKEN}"}
            ),
            source=config.source,
        ),
        env=MappingProxyType(
            {
                **config.env,
                "DIGEST_DATABASE_URL": f"postgresql+psycopg://dbuser:{DB_PASSWORD}@db.example/dg",
                "DIGEST_FEED_TOKEN": FEED_TOKEN,
                "DIGEST_WEB__SIGNUPS_PER_MINUTE": "10",
            }
        ),
    )
    with TestClient(create_app(rt), follow_redirects=False) as client:
        sign_in_as(client, rt, "admin")
        page = client.get("/admin/settings")
    assert page.status_code == 200
    text = page.text
    assert "take effect when" in text and "restarted" in text
    for section in ("[site]", "[database]", "[feed]", "[edition]", "[schedule]", "[send]"):
        assert section in text
    for section in ("[transport]", "[web]", "[preflight]", "[webhooks]"):
        assert section in text
    assert "https://digest.test.example" in text and "Europe/Berlin" in text
    assert "DIGEST_SECRET_KEY: set" in text and "DIGEST_ADMIN_PASSWORD: set" in text
    assert "DIGEST_FEED_TOKEN: set" in text and "DIGEST_FEED_PASSWORD: not set" in text
    assert "DIGEST_WEB__SIGNUPS_PER_MINUTE" in text
    assert "dbuser:***@db.example/dg" in text and "feed.example/v1.json?token=***" in text
    for secret in ("test-key", SHARED_PASSWORD, TOKEN, DB_PASSWORD, FEED_TOKEN, FEED_QUERY_TOKEN):
        assert secret not in text, secret
