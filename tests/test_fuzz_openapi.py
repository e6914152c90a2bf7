"""Fuzz every route of ``/openapi.json`` with schemathesis: no 500, no echoed secret.

The app runs with the desk on (a Bearer token), every webhook provider on, and
secrets planted in its environment. Each operation is called with generated path
parameters, queries and bodies (form, multipart and JSON, as the schema
documents them), once anonymously and once with the operator token; the check is
what a user would see: never a server error, and never one of the planted
secrets in a status line, header or body. Bounded: ``EXAMPLES`` cases per
operation and way of calling (about a minute in all).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from digest import config as config_mod
from digest.config.runtime import Runtime
from digest.engagement.tokens import EngagementTokens
from digest.store.db import upgrade
from digest.store.models import EditionStatus
from digest.web.app import create_app
from subscribers.tokens import Purpose
from tests.support import write_config
from tests.test_web_support import Clock, Site

EXAMPLES = 25
SECRETS = {
    "DIGEST_SECRET_KEY": "fuzz-secret-key-3b1f9c",
    "DIGEST_ADMIN_TOKEN": "fuzz-admin-token-8d2e41",
    "DIGEST_ADMIN_PASSWORD": "fuzz-admin-password-5a7c03",
    "DIGEST_WEBHOOK_POSTMARK_CREDENTIALS": "hook:fuzz-postmark-pass-c4e2",
    "DIGEST_WEBHOOK_MAILGUN_SIGNING_KEY": "fuzz-mailgun-key-91b0d7",
    "DIGEST_WEBHOOK_RESEND_SECRET": "whsec_" + base64.b64encode(b"fuzz-resend-secret-6f").decode(),
    "DIGEST_FEED_TOKEN": "fuzz-feed-token-0e93aa",
}
# What must never come back: each secret, and its password part.
NEEDLES = [v.split(":")[-1] for v in SECRETS.values()]


@dataclass
class Target:
    """The app's schema, and real values for path parameters: a random edition key
    or token only ever meets a 404 or 400, a real one lets the bodies reach the
    code behind them."""

    schema: Any
    real: dict[str, list[str]]

    def aim(self, case: Any, label: str) -> None:
        """Replace some generated path parameters with real ones (hypothesis picks)."""
        params = case.path_parameters or {}
        if "key" in params:
            params["key"] = self.real["key"][len(str(params["key"])) % 2]
        if "token" in params:
            purpose = label.split()[1].split("/")[1]  # confirm, u, p, v (votes) or r (clicks)
            params["token"] = self.real[purpose][len(str(params["token"])) % 2]
        if "ref" in params:
            params["ref"] = self.real["ref"][len(str(params["ref"])) % 3]
        if "provider" in params:
            params["provider"] = self.real["provider"][len(str(params["provider"])) % 3]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    path = write_config(
        root,
        feed={"kind": "http", "url": "http://127.0.0.1:9/feed.json?api_key=fuzz-feed-key-77"},
        webhooks={"providers": ["postmark", "mailgun", "resend"]},
        web={"signups_per_minute": 100_000},
        preflight={"check_links": False},
    )
    environ = {"DIGEST_DATABASE_URL": f"sqlite:///{root}/fuzz.db", **SECRETS}
    clock = Clock()
    rt = Runtime.open(config_mod.load(path, environ=environ), clock=clock)
    upgrade(rt.engine)
    app = create_app(rt)
    with TestClient(app, raise_server_exceptions=False, client=("127.0.0.1", 1)) as client:
        site = Site(rt, client, clock, root)
        for ident in ("c1", "c2"):
            site.comparison(ident, title=f"Comparison {ident}")
        site.edition("2026-W47", ["c1", "c2"], EditionStatus.composed)
        site.edition("2026-W46", ["c1"], EditionStatus.sent)
        reader = site.confirmed("reader@example.com")
        signer = rt.signer()
        tokens = EngagementTokens(signer)
        real = {
            "key": ["2026-W47", "2026-W46"],
            "confirm": [site.signup("new@example.com").rsplit("/", 1)[1], "x"],
            "u": [signer.sign(Purpose.unsubscribe, reader), "1.x"],
            "p": [signer.sign(Purpose.preferences, reader), "1.x"],
            "provider": ["postmark", "mailgun", "resend"],
            "v": [tokens.vote(reader, "c1", "tool-a"), "1.c1.tool-a.x"],
            "r": [tokens.link("2026-W46", "c1", "c"), "2026-W46.c1.c.x"],
            "ref": [tokens.ref("2026-W46", reader, clock.now, individual=False), "web", "s1.0.x"],
        }
    yield Target(schemathesis.openapi.from_asgi("/openapi.json", app), real)
    rt.close()


def _operations(target: Target) -> list[Any]:
    return [result.ok() for result in target.schema.get_all_operations()]


def test_the_schema_covers_public_webhook_and_desk_routes(target: Target) -> None:
    labels = {op.label for op in _operations(target)}
    for expected in (
        "POST /subscribe",
        "POST /u/{token}",
        "GET /archive/{key}",
        "POST /webhooks/{provider}",
        "POST /admin/editions/{key}/approve",
        "POST /admin/editions/{key}/test-send",
        "POST /admin/login",
        "GET /readyz",
    ):
        assert expected in labels, sorted(labels)


@pytest.mark.parametrize("who", ["anonymous", "operator"])
def test_no_route_answers_500_or_echoes_a_secret(target: Target, who: str) -> None:
    headers = {"Authorization": f"Bearer {SECRETS['DIGEST_ADMIN_TOKEN']}"}
    failures: list[str] = []
    for operation in _operations(target):
        label = operation.label

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            target.aim(case, label)  # noqa: B023  (called at once, in this iteration)
            response = case.call(headers=headers if who == "operator" else None)
            case.validate_response(response, checks=[not_a_server_error])
            seen = " ".join([response.text, *(f"{k}: {v}" for k, v in response.headers.items())])
            leaked = [n for n in NEEDLES if n in seen]
            assert not leaked, f"{label} answered a secret: {leaked}"  # noqa: B023

        try:
            call()
        except Exception as exc:  # collect every failing operation, then fail once
            failures.append(f"{operation.label}: {str(exc).splitlines()[0][:300]}")
    assert not failures, "\n".join(failures)
