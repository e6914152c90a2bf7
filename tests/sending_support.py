"""``send_edition`` run in process with a memory transport, as the ledger tests
(``test_sending``, ``test_fencing``) run it: batches of 7, fast retries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from digest.delivery.ledger import Recipient, RetryPolicy
from digest.delivery.sending import SendOptions, SendReport, send_edition
from digest.store.models import Edition
from digest.transports.memory import MemoryTransport


def send_options(**retry: object) -> SendOptions:
    """Batches of 7; ``retry``: ``max_attempts`` (3), ``backoff`` (0.01 s),
    ``unknown_policy`` ("resend"), ``give_up_after`` (72 hours)."""
    policy = RetryPolicy(
        max_attempts=int(retry.get("max_attempts", 3)),  # type: ignore[call-overload]
        backoff_seconds=float(retry.get("backoff", 0.01)),  # type: ignore[arg-type]
        unknown_policy=str(retry.get("unknown_policy", "resend")),
        give_up_after=retry.get("give_up_after", timedelta(hours=72)),  # type: ignore[arg-type]
    )
    return SendOptions(batch_size=7, retry=policy, max_retry_wait=5.0, settle_seconds=0)


def run_send(
    engine: Engine,
    edition: Edition,
    transport: MemoryTransport,
    build: Callable[[Sequence[Recipient], datetime], Sequence[Any]],
    **retry: object,
) -> SendReport:
    """Send ``edition`` through ``transport`` with messages from ``build``, as
    "test-owner", on the real clock; ``retry`` as for :func:`send_options`."""
    return asyncio.run(
        send_edition(
            engine,
            edition=edition,
            transport=transport,
            build_messages=build,
            options=send_options(**retry),
            clock=lambda: datetime.now(UTC),
            owner="test-owner",
        )
    )
