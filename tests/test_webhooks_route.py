"""``POST /webhooks/{provider}`` through the real app with the real adapters (both
backends): authentication before any write, a replay answered 200 and applied once,
503 when the database is down, a provider without its secret refuses to start."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from digest import config as config_mod
from digest.config.runtime import Runtime
from digest.errors import ConfigError
from digest.store.db import session_scope
from digest.store.models import Delivery, DeliveryEventRecord, DeliveryState
from digest.web import webhooks as route
from digest.web.app import create_app
from digest.webhooks.postmark import ENV_CREDENTIALS
from digest.webhooks.sendgrid import ENV_PUBLIC_KEY
from digest.webhooks.sns_certs import CertificateCache, string_to_sign
from subscribers.models import SubscriberStatus
from tests.support import write_config
from tests.test_webhooks_postmark import basic
from tests.test_webhooks_postmark import bounce as postmark_bounce
from tests.test_webhooks_sendgrid import OTHER_KEY, SENDGRID_KEY, spki_base64
from tests.test_webhooks_sendgrid import bounce as sendgrid_bounce
from tests.webhook_site import ADA, NOW, WebhookSite, open_site

TOPIC = "arn:aws:sns:eu-west-1:123456789012:digest-ses-events"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"
SUBSCRIBE_URL = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t"
ENV = {
    "DIGEST_SECRET_KEY": "k",
    ENV_CREDENTIALS: "postmark:hook-password",
    ENV_PUBLIC_KEY: spki_base64(SENDGRID_KEY),
}


class Hooks(WebhookSite):
    @property
    def state(self) -> route.Hooks:
        hooks = self.client.app.state.webhooks  # type: ignore[attr-defined]
        assert isinstance(hooks, route.Hooks)
        return hooks

    def postmark(self, payload: dict[str, Any], **headers: str) -> Any:
        return self.client.post(
            "/webhooks/postmark",
            content=json.dumps(payload).encode(),
            headers={"content-type": "application/json", **headers},
        )

    def sendgrid(self, events: list[dict[str, Any]], *, at: datetime = NOW, key: Any = None) -> Any:
        body = json.dumps(events).encode()
        timestamp = str(int(at.timestamp()))
        signature = (key or SENDGRID_KEY).sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {
            "content-type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }
        return self.client.post("/webhooks/sendgrid", content=body, headers=headers)


def open_hooks(
    tmp_path: Path, db_url: str, *, ses: dict[str, Any] | None = None
) -> Iterator[Hooks]:
    path = write_config(
        tmp_path,
        webhooks={"providers": ["postmark", "sendgrid", "ses"]},
        **{"webhooks.ses": {"topics": [TOPIC], **(ses or {})}},
    )
    env = {"DIGEST_DATABASE_URL": db_url, **ENV}
    yield from open_site(Hooks, path, env, provider_id="883953f4-6105-42a2-a16a-77a8eac79483")


@pytest.fixture
def hooks(tmp_path: Path, db_url: str) -> Iterator[Hooks]:
    yield from open_hooks(tmp_path, db_url)


GOOD_AUTH = basic("postmark", "hook-password")


def test_a_signed_hard_bounce_suppresses_the_reader_once(hooks: Hooks) -> None:
    response = hooks.postmark(postmark_bounce(Email=ADA), **GOOD_AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["received"] == 1 and response.json()["changed"] == 1
    assert hooks.status() == SubscriberStatus.bounced
    assert hooks.written()[:3] == (1, 1, 1)
    with session_scope(hooks.rt.engine) as session:
        delivery = session.get(Delivery, hooks.delivery_id)
        assert delivery is not None and delivery.state == DeliveryState.bounced
    # Postmark retries a delivery it thinks failed: the same event changes nothing.
    again = hooks.postmark(postmark_bounce(Email=ADA), **GOOD_AUTH)
    assert again.status_code == 200 and again.json()["duplicates"] == 1
    assert hooks.written()[:3] == (1, 1, 1)


def test_a_postmark_bounce_that_deactivated_the_address_suppresses_the_reader(
    hooks: Hooks,
) -> None:
    # Postmark answers every later send to an inactive address with ErrorCode 406.
    payload = postmark_bounce(Email=ADA, Type="Transient", Details="smtp;452 4.2.2 full")
    assert payload["Inactive"] is True
    response = hooks.postmark(payload, **GOOD_AUTH)
    assert response.status_code == 200 and response.json()["changed"] == 1
    assert hooks.status() == SubscriberStatus.bounced


@pytest.mark.parametrize(
    "headers",
    [{}, basic("postmark", "wrong"), basic("intruder", "hook-password"), {"Authorization": "x"}],
    ids=["missing", "wrong-password", "wrong-user", "garbage"],
)
def test_bad_or_missing_credentials_write_nothing(hooks: Hooks, headers: dict[str, str]) -> None:
    before = hooks.written()
    response = hooks.postmark(postmark_bounce(Email=ADA), **headers)
    assert response.status_code == 401
    assert hooks.written() == before == (0, 0, 0, 0, "active")


def test_a_bad_sendgrid_signature_writes_nothing(hooks: Hooks) -> None:
    response = hooks.sendgrid([sendgrid_bounce(email=ADA)], key=OTHER_KEY)
    assert response.status_code == 401
    assert hooks.written() == (0, 0, 0, 0, "active")


def test_a_malformed_body_is_400_and_writes_nothing(hooks: Hooks) -> None:
    response = hooks.client.post("/webhooks/postmark", content=b"not json", headers=GOOD_AUTH)
    assert response.status_code == 400
    assert hooks.written() == (0, 0, 0, 0, "active")


def test_a_replayed_request_is_answered_200_and_applied_once(hooks: Hooks) -> None:
    events = [sendgrid_bounce(email=ADA)]
    body = json.dumps(events).encode()
    timestamp = str(int(NOW.timestamp()))
    signature = SENDGRID_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }
    first = hooks.client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert hooks.status() == SubscriberStatus.bounced
    written = hooks.written()
    assert written[:4] == (1, 1, 1, 1)
    hooks.clock.advance(seconds=30)
    second = hooks.client.post("/webhooks/sendgrid", content=body, headers=headers)
    # Not 409: SendGrid retries any answer that is not 2xx, for up to 72 hours.
    assert second.status_code == 200, second.text
    assert second.json()["replayed"] is True and second.json()["duplicates"] == 1
    assert hooks.written() == written


def test_a_fresh_signature_over_the_same_event_is_applied_once(hooks: Hooks) -> None:
    assert hooks.sendgrid([sendgrid_bounce(email=ADA)]).status_code == 200
    hooks.clock.advance(seconds=60)
    later = hooks.sendgrid([sendgrid_bounce(email=ADA)], at=hooks.clock.now)
    assert later.status_code == 200 and later.json()["duplicates"] == 1
    assert hooks.written()[:3] == (1, 1, 1)


def test_a_stale_timestamp_is_rejected(hooks: Hooks) -> None:
    response = hooks.sendgrid([sendgrid_bounce(email=ADA)], at=NOW - timedelta(minutes=10))
    assert response.status_code == 401
    assert hooks.written() == (0, 0, 0, 0, "active")


def test_an_sns_certificate_on_another_host_is_refused_without_a_fetch(hooks: Hooks) -> None:
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return b""

    hooks.state.adapters["ses"].certificates = CertificateCache(fetch=fetch)  # type: ignore[attr-defined]
    message = sns_message("Notification", Message="{}")
    message["SigningCertURL"] = "https://evil.example.com/SimpleNotificationService-x.pem"
    response = hooks.client.post("/webhooks/ses", content=json.dumps(message).encode())
    assert response.status_code == 401
    assert fetched == []
    assert hooks.written() == (0, 0, 0, 0, "active")


def test_an_sns_subscription_confirmation_is_kept_for_the_operator(hooks: Hooks) -> None:
    confirmed = install_sns_certificate(hooks)
    message = sns_message("SubscriptionConfirmation", SubscribeURL=SUBSCRIBE_URL, Token="t")
    response = hooks.client.post("/webhooks/ses", content=json.dumps(message).encode())
    assert response.status_code == 200, response.text
    assert response.json()["confirmed"] is False
    assert confirmed == []  # never fetched without auto_confirm
    with session_scope(hooks.rt.engine) as session:
        [row] = session.execute(select(DeliveryEventRecord)).scalars()
    assert SUBSCRIBE_URL in row.outcome and row.outcome.startswith("subscription confirmation")


def test_auto_confirm_fetches_the_subscribe_url_after_verification(
    tmp_path: Path, db_url: str
) -> None:
    for site in open_hooks(tmp_path, db_url, ses={"auto_confirm": True}):
        confirmed = install_sns_certificate(site)
        forged = sns_message("SubscriptionConfirmation", SubscribeURL=SUBSCRIBE_URL, Token="t")
        forged["Signature"] = base64.b64encode(b"x" * 256).decode()
        assert site.client.post("/webhooks/ses", content=json.dumps(forged)).status_code == 401
        assert confirmed == []
        message = sns_message("SubscriptionConfirmation", SubscribeURL=SUBSCRIBE_URL, Token="t")
        response = site.client.post("/webhooks/ses", content=json.dumps(message).encode())
        assert response.status_code == 200 and response.json()["confirmed"] is True
        assert confirmed == [SUBSCRIBE_URL]
        with session_scope(site.rt.engine) as session:
            [row] = session.execute(select(DeliveryEventRecord)).scalars()
        assert row.outcome == "subscription confirmed automatically"


def test_database_unavailable_is_503_so_the_provider_retries(
    hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(engine: Any) -> Any:
        raise OperationalError("connect", {}, Exception("connection refused"))

    monkeypatch.setattr(route, "session_scope", down)
    response = hooks.postmark(postmark_bounce(Email=ADA), **GOOD_AUTH)
    assert response.status_code == 503 and response.headers["retry-after"]
    monkeypatch.undo()
    assert hooks.written() == (0, 0, 0, 0, "active")
    # The retry, once the database is back, is applied.
    assert hooks.postmark(postmark_bounce(Email=ADA), **GOOD_AUTH).status_code == 200
    assert hooks.status() == SubscriberStatus.bounced


def test_a_provider_not_enabled_is_404(hooks: Hooks) -> None:
    assert hooks.client.post("/webhooks/mailgun", content=b"{}").status_code == 404


def test_a_body_over_the_limit_is_413(hooks: Hooks) -> None:
    body = b"x" * (hooks.state.max_body + 1)
    response = hooks.client.post("/webhooks/postmark", content=body, headers=GOOD_AUTH)
    assert response.status_code == 413
    assert hooks.written() == (0, 0, 0, 0, "active")


def test_a_provider_without_its_secret_refuses_to_start(tmp_path: Path) -> None:
    path = write_config(tmp_path, webhooks={"providers": ["postmark"]})
    cfg = config_mod.load(path, environ={"DIGEST_SECRET_KEY": "k"})
    rt = Runtime.open(cfg)
    try:
        with pytest.raises(ConfigError, match=ENV_CREDENTIALS):
            create_app(rt)
    finally:
        rt.close()


def test_no_providers_means_no_webhook_route(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    rt = Runtime.open(config_mod.load(path, environ={"DIGEST_SECRET_KEY": "k"}))
    try:
        app = create_app(rt)
        assert not [r for r in app.routes if "/webhooks/" in getattr(r, "path", "")]
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("webhooks", "fragment"),
    [
        ({"providers": ["nosuch"]}, "unknown provider 'nosuch'"),
        ({"providers": "postmark"}, "expected a list"),
        ({"soft_bounce_limt": 3}, "did you mean 'soft_bounce_limit'"),
    ],
)
def test_bad_webhook_config_is_named(
    tmp_path: Path, webhooks: dict[str, Any], fragment: str
) -> None:
    path = write_config(tmp_path, webhooks=webhooks)

    def start() -> None:
        rt = Runtime.open(config_mod.load(path, environ={"DIGEST_SECRET_KEY": "k"}))
        try:
            create_app(rt)
        finally:
            rt.close()

    with pytest.raises(ConfigError) as info:
        start()
    assert fragment in str(info.value)


def test_a_secret_in_a_provider_table_is_refused(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        webhooks={"providers": ["sendgrid"]},
        **{"webhooks.sendgrid": {"public_key": "abc"}},
    )
    with pytest.raises(ConfigError, match="secrets never go in the config file"):
        config_mod.load(path, environ={})


# -- SNS helpers: a test certificate stands in for Amazon's ---------------------------

SNS_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _certificate_pem() -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(SNS_KEY.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .sign(SNS_KEY, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM)


def install_sns_certificate(hooks: Hooks) -> list[str]:
    """Serve the test certificate for CERT_URL; return the list of confirmed URLs."""
    pem = _certificate_pem()
    hooks.state.adapters["ses"].certificates = CertificateCache(  # type: ignore[attr-defined]
        fetch=lambda url: pem
    )
    confirmed: list[str] = []
    hooks.state.confirm = confirmed.append
    return confirmed


def sns_message(kind: str, **fields: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "Type": kind,
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "Timestamp": NOW.isoformat().replace("+00:00", "Z"),
        "SignatureVersion": "2",
        "SigningCertURL": CERT_URL,
        **fields,
    }
    signature = SNS_KEY.sign(string_to_sign(message), padding.PKCS1v15(), hashes.SHA256())
    message["Signature"] = base64.b64encode(signature).decode()
    return message
