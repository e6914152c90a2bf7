"""The shared contract test every transport's tests inherit (like ``webhook_cases.py``).

The base holds the tests that must hold for *every* kind in ``TRANSPORTS``, as
:mod:`digest.transports.base` documents the protocol: one result per message, in
order; what was accepted reaches the peer once, unchanged; ``concurrency`` and
``max_batch`` are positive and honoured; ``close`` is safe twice; the credential
never shows in a result or a log record. Kind-specific behaviour (refusals,
retries, request shapes) stays in each transport's own tests.

How a transport's test module uses it (``tests/test_transport_<kind>.py``)::

    from tests.transport_cases import Delivered, Peer, TransportCases, table

    class TestAcmeContract(TransportCases):
        accepted = Outcome.queued               # the outcome of a message the peer took

        @pytest.fixture
        def peer(self, fake) -> Peer:            # reuse the module's own fixtures
            rec, url = fake
            return Peer(
                table=table("acme", base_url=url),   # the [transport] table
                env={"DIGEST_ACME_API_KEY": TOKEN},  # the secrets, as the registry reads them
                secret=TOKEN,                         # must never show in results or logs
                received=lambda transport: [Delivered(...) for ... in rec...],
            )

The transport is built with :func:`digest.config.registry.build_transport` from the
table and env, as the runtime builds it. ``received`` reads what the peer got, one
:class:`Delivered` per accepted copy (a duplicate shows as two entries): the exact
bytes where the peer keeps them (SMTP server, outbox files, memory), the subject
where it shows only fields (provider APIs).

The class is named ``TransportCases`` (no ``Test`` prefix) so pytest collects only
the subclasses.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import pytest

from digest.config import AdapterConfig
from digest.config.registry import build_transport
from digest.render.base import RenderedDigest, Slot
from digest.render.personalize import MessageTemplate
from digest.transports.base import (
    Outcome,
    OutgoingMessage,
    Personal,
    SendResult,
    SharedContent,
    Transport,
)

SOURCE = Path("/etc/digest/config.toml")
EDITION = "2026-W48"
SENDER = "bounces@verdicts.example.com"
DIGEST = RenderedDigest(
    subject="Contract Weekly: 3 new verdicts",
    html=(
        "<p>Grüße</p><a href='",
        Slot("unsubscribe_url"),
        "'>unsubscribe</a> <a href='",
        Slot("preferences_url"),
        "'>preferences</a>",
    ),
    text=("Grüße\nUnsubscribe: ", Slot("unsubscribe_url"), "\n", Slot("preferences_url"), "\n"),
)
SHARED = SharedContent(
    key=f"{EDITION}/all",
    digest=DIGEST,
    from_header="Contract Weekly <digest@verdicts.example.com>",
    reply_to=None,
    list_id="Contract Weekly <weekly.verdicts.example.com>",
)


def table(kind: str, **options: Any) -> AdapterConfig:
    """A ``[transport]`` table of ``kind`` with ``options``, as config loading makes it."""
    return AdapterConfig(section="transport", kind=kind, options=options, source=SOURCE)


@dataclass(frozen=True)
class Delivered:
    """One accepted copy as the peer shows it; ``None``: the peer does not show it."""

    recipient: str  # bare address, lower case
    subject: str | None = None
    data: bytes | None = None  # the exact message bytes


@dataclass(frozen=True)
class Peer:
    """What a subclass's ``peer`` fixture gives: how to build the transport, and how
    to read what its peer received."""

    table: AdapterConfig
    env: Mapping[str, str]
    received: Callable[[Transport], list[Delivered]]
    secret: str = ""  # the credential configured in ``env``, if any


@cache
def _template() -> MessageTemplate:
    return MessageTemplate.build(
        DIGEST,
        from_header=SHARED.from_header,
        list_id=SHARED.list_id,
        edition_key=EDITION,
        message_id_domain="verdicts.example.com",
    )


def digest_message(delivery_id: int) -> OutgoingMessage:
    """Reader ``delivery_id``'s digest as ``digest.delivery.messages`` builds it: the
    MIME bytes (for SMTP, outbox) and the shared/personal fields (for provider APIs)."""
    to = f"reader{delivery_id}@example.org"
    urls = {
        "unsubscribe_url": f"https://verdicts.example.com/u/t{delivery_id}",
        "preferences_url": f"https://verdicts.example.com/p/t{delivery_id}",
    }
    data = _template().render(
        subscriber_id=delivery_id,
        to_email=to,
        to_name=f"Reader {delivery_id}",
        date=datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
        **urls,
    )
    return OutgoingMessage(
        delivery_id=delivery_id,
        sender=SENDER,
        recipient=to,
        message_id=_template().message_id(delivery_id),
        content=data,
        tag=EDITION,
        shared=SHARED,
        personal=Personal(f"Reader {delivery_id}", urls),
        crlf=True,
    )


class TransportCases:
    """Tests every transport kind must pass. Subclass, set ``accepted`` and provide a
    ``peer`` fixture returning a :class:`Peer`."""

    accepted: ClassVar[Outcome] = Outcome.sent  # ``queued`` for provider APIs

    # -- helpers ---------------------------------------------------------------------
    def build(self, peer: Peer) -> Transport:
        return build_transport(peer.table, peer.env)

    @asynccontextmanager
    async def opened(self, peer: Peer) -> AsyncIterator[Transport]:
        transport = self.build(peer)
        await transport.open()
        try:
            yield transport
        finally:
            await transport.close()

    def messages(self, ids: Sequence[int]) -> list[OutgoingMessage]:
        return [digest_message(i) for i in ids]

    def assert_results(
        self, messages: Sequence[OutgoingMessage], results: Sequence[SendResult]
    ) -> None:
        assert isinstance(results, list)
        assert len(results) == len(messages), results
        assert [r.delivery_id for r in results] == [m.delivery_id for m in messages]
        for result in results:
            assert isinstance(result, SendResult)
            assert isinstance(result.outcome, Outcome), result

    def assert_delivered_once(
        self, received: Sequence[Delivered], messages: Sequence[OutgoingMessage]
    ) -> None:
        counts = Counter(d.recipient for d in received)
        assert counts == Counter(m.recipient.lower() for m in messages), counts
        by_recipient = {d.recipient: d for d in received}
        for m in messages:
            got = by_recipient[m.recipient.lower()]
            if got.data is not None:
                assert got.data == m.data, m.recipient
            if got.subject is not None:
                assert m.shared is not None
                assert got.subject == m.shared.digest.subject, m.recipient

    # -- the shared tests ---------------------------------------------------------------
    async def test_one_result_per_message_in_order(self, peer: Peer) -> None:
        async with self.opened(peer) as transport:
            ids = [30, 10, 20][: transport.max_batch]  # not in delivery-id order
            batch = self.messages(ids)
            results = await transport.send_batch(batch)
        self.assert_results(batch, results)
        assert [r.outcome for r in results] == [self.accepted] * len(batch)

    async def test_accepted_messages_reach_the_peer_once_unchanged(self, peer: Peer) -> None:
        async with self.opened(peer) as transport:
            batch = self.messages(range(1, min(3, transport.max_batch) + 1))
            results = await transport.send_batch(batch)
            assert [r.outcome for r in results] == [self.accepted] * len(batch)
            received = peer.received(transport)
        self.assert_delivered_once(received, batch)

    async def test_limits_are_positive_ints(self, peer: Peer) -> None:
        transport = self.build(peer)
        for value in (transport.max_batch, transport.concurrency):
            assert isinstance(value, int) and not isinstance(value, bool)
            assert value >= 1

    async def test_a_full_batch_goes_in_one_call(self, peer: Peer) -> None:
        async with self.opened(peer) as transport:
            batch = self.messages(range(1, transport.max_batch + 1))
            results = await transport.send_batch(batch)
            received = peer.received(transport)
        self.assert_results(batch, results)
        assert [r.outcome for r in results] == [self.accepted] * len(batch)
        self.assert_delivered_once(received, batch)

    async def test_concurrent_batches_up_to_concurrency(self, peer: Peer) -> None:
        async with self.opened(peer) as transport:
            batches = [self.messages([i]) for i in range(1, transport.concurrency + 1)]
            answers = await asyncio.gather(*(transport.send_batch(b) for b in batches))
            received = peer.received(transport)
        for batch, results in zip(batches, answers, strict=True):
            self.assert_results(batch, results)
            assert results[0].outcome is self.accepted
        self.assert_delivered_once(received, [m for b in batches for m in b])

    async def test_an_empty_batch_has_no_results(self, peer: Peer) -> None:
        # "one result per message": none for none, and nothing reaches the peer.
        async with self.opened(peer) as transport:
            assert await transport.send_batch([]) == []
            assert peer.received(transport) == []

    async def test_close_is_safe_twice(self, peer: Peer) -> None:
        transport = self.build(peer)
        await transport.open()
        await transport.send_batch(self.messages([1]))
        await transport.close()
        await transport.close()

    async def test_the_secret_never_shows(
        self, peer: Peer, caplog: pytest.LogCaptureFixture
    ) -> None:
        if not peer.secret:
            pytest.skip("this transport takes no credential")
        caplog.set_level(logging.DEBUG)
        async with self.opened(peer) as transport:
            results = await transport.send_batch(self.messages([1, 2][: transport.max_batch]))
        for result in results:
            assert peer.secret not in repr(result)
        for record in caplog.records:
            text = record.getMessage() + (record.exc_text or "")
            assert peer.secret not in text, record
