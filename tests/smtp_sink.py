"""A real SMTP server on loopback (aiosmtpd) that records what it receives.

Shared by the tests that need one: each accepted message is kept with its
envelope and parsed headers; counts per recipient show duplicates.

Misbehaviour on demand, by recipient address (a message's first recipient):
``drop`` keeps the message (the server has it) and closes the connection without
the final reply; ``delay`` waits that many seconds before the final reply;
``refuse`` answers the end of DATA with the given reply instead of 250 (e.g.
``"550 5.7.1 rejected by DMARC policy"``) and keeps nothing; ``gone_after_drop``
stops listening at a drop (reconnecting fails); with ``pipelining``
the server advertises RFC 2920 PIPELINING (aiosmtpd handles it but does not say so).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    def parsed(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class RecordingHandler:
    messages: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    drop: set[str] = field(default_factory=set)
    delay: dict[str, float] = field(default_factory=dict)
    refuse: dict[str, str] = field(default_factory=dict)
    pipelining: bool = False
    gone_after_drop: bool = False  # with a drop, also stop listening
    listener: Any = None  # the asyncio.Server, set by SmtpSink

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must do what aiosmtpd would
        if not self.pipelining:
            return responses
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        first = envelope.rcpt_tos[0].lower()
        if first in self.refuse:
            return self.refuse[first]
        with self.lock:
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        if first in self.drop:  # the server has it; the client never hears so
            server.transport.abort()
            if self.gone_after_drop and self.listener is not None:
                self.listener.close()  # new connections are refused from now on
            return "250 2.0.0 never seen"
        if first in self.delay:
            await asyncio.sleep(self.delay[first])
        return "250 2.0.0 OK queued"

    def per_recipient(self) -> Counter[str]:
        with self.lock:
            return Counter(r for m in self.messages for r in m.rcpt_tos)

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


class SmtpSink:
    """``with SmtpSink() as sink:`` → ``sink.port``, ``sink.handler.messages``."""

    def __init__(self) -> None:
        self.handler = RecordingHandler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=free_port())

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        self.handler.listener = self.controller.server
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return int(self.controller.port)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
