"""The shared test base every provider webhook adapter's tests inherit.

Modelled on django-anymail's ``tests/webhook_cases.py``: the base holds the tests
that must hold for *every* provider (authentication, replay keys, malformed
bodies, unknown kinds, the missing-secret refusal); each provider's test module
subclasses it and fills in the hooks that build requests the way that provider
would. Provider-specific behaviour (mapping tables, odd fields) is tested beside
the subclass, in the same module.

How a new provider's tests use it (``tests/test_webhooks_<provider>.py``)::

    from tests.webhook_cases import NOW, WebhookCases, json_body, make_request

    class TestAcmeWebhook(WebhookCases):
        adapter_class = AcmeWebhook            # has name, secret_env, verify, parse
        good_env = {"DIGEST_WEBHOOK_ACME_SECRET": "s3cret"}
        required_env = ("DIGEST_WEBHOOK_ACME_SECRET",)
        has_replay_key = True                  # False when the provider sends no token

        def signed_request(self, payload, *, now): ...       # as Acme would send it
        def signed_raw_request(self, body, *, now): ...      # any bytes, signed if possible
        def unsigned_request(self, payload, *, now): ...     # no signature / no auth
        def badly_signed_request(self, payload, *, now): ... # wrong key or tampered
        def stale_request(self, payload, *, now): ...        # or return None: no timestamp

        def sample_hard_bounce(self): ...      # one event, in the provider's shape
        def sample_complaint(self): ...
        def sample_policy_block(self): ...     # a 5.7.x / "blocked" bounce
        def sample_unknown_kind(self): ...     # an event kind we do not map
        expected_hard_bounce = {"type": EventType.bounced_hard, "recipient": ..., ...}
        expected_complaint = {...}
        expected_policy_block = {"type": ..., "policy": True, ...}

A "payload" is whatever the provider's sample methods return (one event, as the
provider's docs show it); ``signed_request`` wraps it in the provider's envelope
(a JSON array for SendGrid, ``{"signature", "event-data"}`` for Mailgun …) and
authenticates it. ``expected_*`` maps :class:`DeliveryEvent` field names to the
values the adapter must produce; fields not named are not checked.

The class is named ``WebhookCases`` (no ``Test`` prefix) so pytest collects only
the subclasses. Route-level behaviour (replay refused, nothing written on a bad
signature) is tested with the route, not here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from digest.config import AdapterConfig
from digest.config.registry import build
from digest.errors import ConfigError
from digest.webhooks.base import (
    DeliveryEvent,
    EventType,
    Verified,
    Webhook,
    WebhookRejected,
    WebhookRequest,
)

NOW = datetime(2025, 3, 4, 12, 0, 0, tzinfo=UTC)
STALE_SECONDS = 10 * 60  # older than every adapter's default tolerance (5 minutes)

# Bodies that are no provider's format. Each provider may add its own.
MALFORMED_BODIES: tuple[bytes, ...] = (
    b"",
    b"not json at all",
    b'{"truncated": ',
    b'"just a string"',
    b"42",
    b"null",
    b"\xff\xfe\x00garbage",
)


def json_body(obj: Any) -> bytes:
    """Serialize ``obj`` the way providers do (compact UTF-8 JSON)."""
    return json.dumps(obj, separators=(",", ":")).encode()


def make_request(
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    url: str = "https://digest.example.com/webhooks/test",
    method: str = "POST",
) -> WebhookRequest:
    """A :class:`WebhookRequest` with lower-cased header names, as the route builds it."""
    lowered = {"content-type": "application/json"}
    lowered.update({k.lower(): v for k, v in (headers or {}).items()})
    return WebhookRequest(method=method, url=url, headers=lowered, body=body)


class WebhookCases:
    """Tests every provider adapter must pass. Subclass and fill in the hooks."""

    # -- what the subclass declares -------------------------------------------------
    adapter_class: ClassVar[type[Any]]
    good_env: ClassVar[Mapping[str, str]]  # env that makes a working adapter
    required_env: ClassVar[Sequence[str]]  # variables without which it refuses to start
    has_replay_key: ClassVar[bool] = True
    extra_malformed_bodies: ClassVar[Sequence[bytes]] = ()
    expected_hard_bounce: ClassVar[Mapping[str, Any]]
    expected_complaint: ClassVar[Mapping[str, Any]]
    expected_policy_block: ClassVar[Mapping[str, Any]]

    # -- hooks the subclass implements -----------------------------------------------
    def signed_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        raise NotImplementedError

    def signed_raw_request(self, body: bytes, *, now: datetime) -> WebhookRequest:
        """``body`` verbatim, authenticated where the provider's scheme allows it."""
        raise NotImplementedError

    def unsigned_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        raise NotImplementedError

    def badly_signed_request(self, payload: Any, *, now: datetime) -> WebhookRequest:
        raise NotImplementedError

    def stale_request(self, payload: Any, *, now: datetime) -> WebhookRequest | None:
        """Signed correctly but ``STALE_SECONDS`` before ``now``; None: no timestamp."""
        raise NotImplementedError

    def sample_hard_bounce(self) -> Any:
        raise NotImplementedError

    def sample_complaint(self) -> Any:
        raise NotImplementedError

    def sample_policy_block(self) -> Any:
        raise NotImplementedError

    def sample_unknown_kind(self) -> Any:
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------
    def make_adapter(self, env: Mapping[str, str]) -> Webhook:
        """Build the adapter the way ``digest.config.registry.build`` passes secrets."""
        secret_env: Mapping[str, str] = self.adapter_class.secret_env
        kwargs = {kw: env[var] for kw, var in secret_env.items() if env.get(var)}
        adapter: Webhook = self.adapter_class(**kwargs)
        return adapter

    def adapter(self) -> Webhook:
        return self.make_adapter(self.good_env)

    def verified_events(
        self, request: WebhookRequest, *, now: datetime = NOW
    ) -> tuple[Verified, Sequence[DeliveryEvent]]:
        adapter = self.adapter()
        verified = adapter.verify(request, now=now)
        return verified, adapter.parse(request)

    def only_event(self, payload: Any) -> DeliveryEvent:
        _, events = self.verified_events(self.signed_request(payload, now=NOW))
        assert len(events) == 1, events
        return events[0]

    def assert_event(self, event: DeliveryEvent, expected: Mapping[str, Any]) -> None:
        assert event.provider == self.adapter_class.name
        assert event.event_id, "every event needs an id for de-duplication"
        assert event.recipient == event.recipient.lower()
        assert isinstance(event.raw, Mapping) and event.raw, "the raw event must be kept"
        for field_name, value in expected.items():
            assert getattr(event, field_name) == value, (field_name, event)

    def assert_rejected(self, request: WebhookRequest, *, now: datetime = NOW) -> int:
        with pytest.raises(WebhookRejected) as info:
            self.adapter().verify(request, now=now)
        assert 400 <= info.value.status < 500
        return info.value.status

    # -- the shared tests ---------------------------------------------------------------
    def test_signed_hard_bounce_is_verified_and_parsed(self) -> None:
        self.assert_event(self.only_event(self.sample_hard_bounce()), self.expected_hard_bounce)

    def test_complaint(self) -> None:
        self.assert_event(self.only_event(self.sample_complaint()), self.expected_complaint)

    def test_policy_block_sets_policy_flag(self) -> None:
        event = self.only_event(self.sample_policy_block())
        assert event.policy is True
        assert event.type in (EventType.bounced_hard, EventType.bounced_soft)
        self.assert_event(event, self.expected_policy_block)

    def test_hard_bounce_is_not_policy(self) -> None:
        assert self.only_event(self.sample_hard_bounce()).policy is False

    def test_missing_signature_is_rejected(self) -> None:
        self.assert_rejected(self.unsigned_request(self.sample_hard_bounce(), now=NOW))

    def test_bad_signature_is_rejected(self) -> None:
        self.assert_rejected(self.badly_signed_request(self.sample_hard_bounce(), now=NOW))

    def test_stale_timestamp_is_rejected(self) -> None:
        request = self.stale_request(self.sample_hard_bounce(), now=NOW)
        if request is None:
            pytest.skip(f"{self.adapter_class.name} requests carry no timestamp")
        self.assert_rejected(request)

    def test_replay_key_is_stable_for_the_same_request(self) -> None:
        request = self.signed_request(self.sample_hard_bounce(), now=NOW)
        first = self.adapter().verify(request, now=NOW)
        second = self.adapter().verify(request, now=NOW)
        assert first.replay_key == second.replay_key
        if self.has_replay_key:
            assert first.replay_key
            assert first.replay_ttl_seconds > 0
            other = self.signed_request(self.sample_hard_bounce(), now=NOW)
            assert self.adapter().verify(other, now=NOW).replay_key != first.replay_key
        else:
            assert first.replay_key == ""

    def test_unknown_event_kind_maps_to_unknown(self) -> None:
        _, events = self.verified_events(self.signed_request(self.sample_unknown_kind(), now=NOW))
        assert events, "an unknown kind is still reported, as unknown"
        for event in events:
            assert event.type is EventType.unknown
            assert event.raw

    @pytest.mark.parametrize("body", MALFORMED_BODIES)
    def test_malformed_body_is_400(self, body: bytes) -> None:
        self._assert_malformed(body)

    def test_provider_specific_malformed_bodies_are_400(self) -> None:
        for body in self.extra_malformed_bodies:
            self._assert_malformed(body)

    def _assert_malformed(self, body: bytes) -> None:
        request = self.signed_raw_request(body, now=NOW)
        with pytest.raises(WebhookRejected) as info:
            self.verified_events(request)  # either step may refuse it
        assert info.value.status == 400, (body, info.value)

    def test_constructor_refuses_to_start_without_its_secret(self) -> None:
        for variable in self.required_env:
            env = {k: v for k, v in self.good_env.items() if k != variable}
            with pytest.raises(ValueError, match=variable):
                self.make_adapter(env)

    def test_registry_reports_missing_secret_as_config_error(self) -> None:
        cfg = AdapterConfig(
            section="webhooks.test",
            kind=self.adapter_class.name,
            options={},
            source=Path("config.toml"),
        )
        registry = {self.adapter_class.name: self.adapter_class}
        with pytest.raises(ConfigError, match=self.required_env[0]):
            build(registry, cfg, {})
        assert build(registry, cfg, self.good_env) is not None
