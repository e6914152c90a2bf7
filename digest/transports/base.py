"""The transport protocol: what the delivery ledger hands a transport and gets back.

A transport never raises for a per-message outcome: every message in a batch gets a
:class:`SendResult`. It raises :class:`~digest.errors.TransportUnavailable` only when
it cannot work at all (server unreachable, authentication refused), and then the
ledger leaves the batch's rows to the crash policy (they were marked ``sending``).

``concurrency`` × ``max_batch`` bounds how many messages are in flight at once, and
so how many duplicates a crash can cause: the ledger marks a batch ``sending`` and
commits before calling :meth:`Transport.send_batch`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Protocol

from digest.render.base import RenderedDigest


class Outcome(StrEnum):
    sent = "sent"  # accepted by the server (SMTP 250) / written (outbox)
    queued = "queued"  # accepted by a provider API for later delivery
    rejected = "rejected"  # permanent refusal of this recipient or message (5xx)
    failed = "failed"  # permanent failure not specific to the recipient
    deferred = "deferred"  # temporary (4xx, throttling, timeout before DATA): retry later
    unknown = "unknown"  # may or may not have been delivered (connection lost mid-DATA)


@dataclass(frozen=True, slots=True)
class SharedContent:
    """What every reader of one edition segment gets alike: built once, shared by
    reference. Provider APIs that take JSON fields (or one body plus per-recipient
    substitutions) use this instead of the MIME bytes."""

    key: str  # unique per edition and segment: group a batch by it
    digest: RenderedDigest  # subject, and HTML/text with personal slots
    from_header: str  # "Name <addr>"
    reply_to: str | None
    list_id: str  # "Name <id.domain>"


@dataclass(frozen=True, slots=True)
class Personal:
    """What is one reader's own: their name and the values of the personal slots."""

    to_name: str
    values: Mapping[str, str] = field(default_factory=dict)  # slot name -> value

    @property
    def unsubscribe_url(self) -> str:
        return self.values["unsubscribe_url"]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    delivery_id: int
    sender: str  # envelope MAIL FROM: a bare address
    recipient: str  # envelope RCPT TO: a bare, normalized address
    message_id: str  # the Message-ID header value, with angle brackets
    # The complete RFC 5322 message (CRLF line endings), or a function that builds it:
    # digest messages build their 63 KB of MIME only if the transport reads ``data``
    # (SMTP, outbox); provider APIs that take ``shared``/``personal`` never do, and so
    # never hold a batch's worth of it in memory (docs/BENCHMARKS.md).
    content: bytes | Callable[[], bytes]
    tag: str = ""  # the edition key, e.g. "2026-W48" (outbox folder, provider tag)
    shared: SharedContent | None = None  # set for digest messages (not transactional)
    personal: Personal | None = None
    # ``data`` is canonical CRLF, as MessageTemplate guarantees: SMTP need not scan
    # 63 KB for bare CR/LF before DATA (~100 µs a message, docs/BENCHMARKS.md).
    crlf: bool = False

    @property
    def data(self) -> bytes:
        """The message bytes; built on each call when ``content`` is a function (a
        transport reads it once per send)."""
        content = self.content
        return content if isinstance(content, bytes) else content()


def batch_key(messages: Sequence[OutgoingMessage]) -> str:
    """The idempotency key of a group of messages (64 hex digits), derived only from
    their delivery and message ids, in delivery-id order: the same group sent again,
    however it was ordered, carries the same key. The ledger stores it on each row
    before the network call (``marks.set_batch_key``) so that a retry after a
    crash re-forms exactly this group."""
    digest = hashlib.sha256()
    for m in sorted(messages, key=lambda m: m.delivery_id):
        digest.update(f"{m.delivery_id}\x00{m.message_id}\x01".encode())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class SendResult:
    delivery_id: int
    outcome: Outcome
    provider_id: str = ""  # server queue id / provider message id, when given
    detail: str = ""  # the server's or provider's own words
    retry_after: float | None = None  # seconds, for ``deferred``
    transport: str = ""  # which transport answered, when not the configured one (failover)
    # "hard": the provider says this address must not be mailed again (e.g. Postmark's
    # 406 "inactive recipient"), whatever the status code in ``detail``; "" otherwise.
    bounce: str = ""


@dataclass(frozen=True, slots=True)
class InDoubt:
    """A message whose outcome is ``unknown`` (the provider may or may not have it),
    as the ledger hands it to a transport that can ask its provider."""

    delivery_id: int
    recipient: str  # the bare address it was sent to
    message_id: str  # our Message-ID, with angle brackets
    tag: str  # the edition key
    attempted_at: datetime  # when it was handed over (UTC): search from a little before


class Reconciler(Protocol):
    """Optional, beside :class:`Transport`: a transport whose provider can be asked
    whether it accepted a message (Postmark's outbound message search, Mailgun's
    events API). The ledger asks before applying ``[send] unknown_policy``."""

    async def reconcile(self, items: Sequence[InDoubt]) -> list[SendResult]:
        """One result for each item the provider accounts for: ``queued`` with its
        provider id when it has the message. Items it cannot decide (not found yet,
        the search failed) are left out and stay unknown. Never raises for a
        per-message answer; raises ``TransportUnavailable`` when the provider cannot
        be asked at all."""
        ...


class Transport(Protocol):
    """A way out for messages. Built from ``[transport]`` by the registry."""

    kind: ClassVar[str]

    @property
    def concurrency(self) -> int:
        """How many batches may be in flight at once (e.g. SMTP connections)."""
        ...

    @property
    def max_batch(self) -> int:
        """The largest batch :meth:`send_batch` accepts."""
        ...

    async def open(self) -> None:
        """Prepare (connect, create folders). Raises ``TransportUnavailable``."""

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send; one result per message, in order."""
        ...

    async def close(self) -> None:
        """Release connections; safe to call twice."""
