"""SMTP submission over our own small client (``smtp_wire``): a pool of reused connections.

Each connection carries one transaction at a time. ``batch_size`` messages (default
1) are handed to a connection at once and recorded together: a crash can leave at
most ``connections × batch_size`` messages in doubt. A larger batch saves the
ledger's commit per message (``batch_size = 20`` sends about 1.4 times as fast,
docs/BENCHMARKS.md) at the price of more possible second copies after a crash.
How every phase's answer becomes an outcome: :mod:`digest.transports.smtp_outcomes`.

Timeouts: ``timeout`` (30 s) for connecting and each command; ``data_timeout`` (600 s,
RFC 5321 4.5.3.2.6) for the reply to the body, given after scanning and queueing it.

After a lost connection the slot reconnects for the batch's next message (one message
per transaction: the next was never written on the lost connection); it is sent on a new
one, or ``deferred`` if that fails. Only the message whose body went out is ``unknown``.

After a refusal the session is still healthy: it is RSET (RFC 5321 4.1.1.5) and
kept; if RSET fails, or on 421 (RFC 5321 3.8: the server is closing), or on any
connection error, the connection is dropped and the next send reconnects.

Why not aiosmtplib (used before): pushing one 63 KB message over 4
connections into Postfix's ``smtp-sink`` on a 2-core machine, aiosmtplib managed
about 800 messages/s, a plain asyncio-streams client 2,280 in lockstep and 2,600
with RFC 2920 pipelining, Postfix's own ``smtp-source`` 2,600–3,000. aiosmtplib
pays per-reply machinery and re-normalizes line ends and dot-stuffs every body with
two regexes; its protocol parses one reply per read, so it cannot pipeline. ``smtp_wire``
dot-stuffs CRLF bodies with one ``bytes.replace`` and pipelines MAIL/RCPT/DATA when the
server offers it. Its exceptions stop at this seam. DKIM: :mod:`digest.transports.dkim`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from digest.common import options
from digest.common.options import KEY, KEY_MUST
from digest.errors import TransportUnavailable
from digest.transports import smtp_auth, smtp_wire
from digest.transports.base import OutgoingMessage, SendResult
from digest.transports.dkim import dkim_signer
from digest.transports.pacing import TokenBucket
from digest.transports.smtp_codec import (
    SmtpAddressError,
    SmtpAuthError,
    SmtpAuthUnavailable,
    SmtpConnectionError,
    SmtpError,
    SmtpReplyError,
)
from digest.transports.smtp_outcomes import (
    bad_address,
    describe,
    lost,
    refused,
    sent,
    unreachable,
)
from digest.transports.smtp_wire import SmtpSession

SECURITY = ("none", "starttls", "tls")
# Connection-level failures: the client's own, plus socket and TLS errors (OSError).
_CONNECTION_ERRORS = (SmtpError, OSError, TimeoutError)


class _Connection:
    """One pool slot: at most one open session, used by one send at a time."""

    __slots__ = ("session", "used")

    def __init__(self) -> None:
        self.session: SmtpSession | None = None
        self.used = 0


class SmtpTransport:
    kind: ClassVar[str] = "smtp"
    secret_env: ClassVar[Mapping[str, str]] = {
        "password": smtp_auth.ENV_PASSWORD,
        "oauth_token": smtp_auth.ENV_TOKEN,
    }

    def __init__(
        self,
        *,
        host: str,
        port: int = 25,
        security: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        auth: str = "auto",
        oauth_token: str | None = None,
        connections: int = 4,
        rate_per_second: float = 0,
        timeout: float = 30,
        data_timeout: float = 600,
        local_hostname: str | None = None,
        validate_certs: bool = True,
        max_messages_per_connection: int = 1000,
        batch_size: int = 1,
        ca_path: Path | str | None = None,
        dkim_domain: str | None = None,
        dkim_selector: str | None = None,
        dkim_key_path: Path | str | None = None,
    ) -> None:
        """Validate the ``[transport]`` keywords; ``ValueError`` names the bad key.

        AUTH (with ``username``): ``auth`` is "auto" (PLAIN, else LOGIN), "plain",
        "login" (``password``) or "xoauth2" (``oauth_token``, an OAuth 2.0 access
        token): :mod:`digest.transports.smtp_auth`. DKIM: give ``dkim_domain``,
        ``dkim_selector`` and ``dkim_key_path`` (a PEM private key file) together, or
        none of them.
        """
        options.text("host", host, style=KEY)
        options.count("port", port, maximum=65535, style=KEY)
        options.one_of("security", security, SECURITY, style=KEY_MUST)
        options.count("connections", connections, maximum=100, style=KEY)
        options.count("batch_size", batch_size, maximum=100, style=KEY)
        options.number("rate_per_second", rate_per_second, finite=False, style=KEY)
        for name, seconds in (("timeout", timeout), ("data_timeout", data_timeout)):
            options.number(name, seconds, inclusive=False, finite=False, style=KEY)
        options.count(
            "max_messages_per_connection", max_messages_per_connection, maximum=10**9, style=KEY
        )
        if local_hostname is not None:
            options.text("local_hostname", local_hostname, style=KEY)
            local_hostname = local_hostname.strip()
            if any(c.isspace() or not c.isprintable() for c in local_hostname):
                raise ValueError(
                    f"key 'local_hostname': no spaces or control characters, got {local_hostname!r}"
                )
        options.flag("validate_certs", validate_certs, style=KEY)
        self._secret = smtp_auth.configured_secret(
            host=host,
            security=security,
            username=username,
            auth=auth,
            password=password,
            token=oauth_token,
        )
        self.host, self.port, self.security = host, port, security
        self.username, self._password, self.auth = username, password, auth
        self.timeout = float(timeout)
        self.data_timeout = float(data_timeout)
        self.local_hostname = local_hostname
        self.validate_certs = validate_certs
        self.max_messages_per_connection = max_messages_per_connection
        self.batch_size = batch_size
        self.ca_path = None if ca_path is None else str(ca_path)
        self.bucket = TokenBucket(rate_per_second)
        self.dkim = dkim_signer(dkim_domain, dkim_selector, dkim_key_path)
        self.sessions = 0  # sessions opened so far (connection reuse is visible in tests)
        self._ehlo_name = local_hostname
        self._context: ssl.SSLContext | None = None  # built once, on the first TLS connect
        self._slots = [_Connection() for _ in range(connections)]
        self._pool: asyncio.Queue[_Connection] = asyncio.Queue()
        for slot in self._slots:
            self._pool.put_nowait(slot)

    @property
    def concurrency(self) -> int:
        return len(self._slots)

    @property
    def max_batch(self) -> int:
        return self.batch_size

    async def open(self) -> None:
        """Connect (and authenticate) once to fail fast; keeps the session for reuse.

        Raises ``TransportUnavailable`` naming host:port and what to check.
        """
        slot = await self._pool.get()
        try:
            await self._connect(slot)
        except SmtpAuthError as exc:
            if self.auth == "xoauth2":
                secret = f"{smtp_auth.ENV_TOKEN} environment variable (tokens expire)"
            else:
                secret = f"{smtp_auth.ENV_PASSWORD} environment variable"
            raise TransportUnavailable(
                f"SMTP server {self.host}:{self.port} refused authentication as "
                f"{self.username!r} ({exc.code} {exc.message}): check [transport] "
                f"username and the {secret}"
            ) from exc
        except SmtpAuthUnavailable as exc:
            raise TransportUnavailable(
                f"SMTP server {exc}: check [transport] auth (now {self.auth!r})"
            ) from exc
        except _CONNECTION_ERRORS as exc:
            raise TransportUnavailable(
                f"cannot use SMTP server {self.host}:{self.port} ({describe(exc)}): check "
                f"[transport] host, port and security (now {self.security!r}), that the "
                "server is reachable from here, and its TLS certificate"
            ) from exc
        finally:
            self._pool.put_nowait(slot)

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send each message on one pooled connection; never raises per message."""
        if len(messages) > self.max_batch:
            raise ValueError(f"batch of {len(messages)} is over max_batch={self.max_batch}")
        slot = await self._pool.get()
        try:
            results = []
            for message in messages:
                await self.bucket.acquire()
                results.append(await self._send_one(slot, message))
            return results
        except BaseException:  # cancelled mid-command: the session state is unknown
            await self._drop(slot)
            raise
        finally:
            self._pool.put_nowait(slot)

    async def close(self) -> None:
        """QUIT every open session; safe to call twice."""
        await asyncio.gather(*(self._quit(slot) for slot in self._slots))

    async def _send_one(self, slot: _Connection, message: OutgoingMessage) -> SendResult:
        session = slot.session
        if session is None or not session.is_connected:
            try:
                session = await self._connect(slot)
            except _CONNECTION_ERRORS as exc:
                return unreachable(message, exc, f"{self.host}:{self.port}")
        data = message.data if self.dkim is None else self.dkim.sign(message.data)
        canonical = message.crlf and self.dkim is None
        try:
            reply = await session.send(message.sender, message.recipient, data, canonical=canonical)
        except SmtpAddressError as exc:  # refused before a byte was written
            return bad_address(message, exc)
        except SmtpReplyError as exc:
            return await self._refused(slot, message, exc)
        except SmtpConnectionError as exc:
            await self._drop(slot)
            return lost(message, exc)
        slot.used += 1
        if slot.used >= self.max_messages_per_connection:
            await self._quit(slot)
        return sent(message, reply)

    async def _refused(
        self, slot: _Connection, message: OutgoingMessage, exc: SmtpReplyError
    ) -> SendResult:
        if exc.code == 421 or not await self._reset(slot):
            await self._drop(slot)
        return refused(message, exc)

    async def _connect(self, slot: _Connection) -> SmtpSession:
        await self._drop(slot)
        if self._ehlo_name is None:  # aiosmtplib's default too; may ask DNS, so once
            self._ehlo_name = await asyncio.to_thread(smtp_wire.default_local_hostname)
        context = None
        if self.security != "none":
            if self._context is None:  # loading the system CA store takes milliseconds
                self._context = await asyncio.to_thread(
                    smtp_wire.tls_context, validate_certs=self.validate_certs, ca_path=self.ca_path
                )
            context = self._context
        session = await smtp_wire.connect(
            self.host,
            self.port,
            security=self.security,
            timeout=self.timeout,
            local_hostname=self._ehlo_name,
            context=context,
            data_timeout=self.data_timeout,
        )
        try:
            if self.username is not None and self._secret is not None:
                await session.login(self.username, self._secret, mechanism=self.auth)
        except BaseException:
            session.close()
            raise
        slot.session, slot.used = session, 0
        self.sessions += 1
        return session

    async def _reset(self, slot: _Connection) -> bool:
        if slot.session is None or not slot.session.is_connected:
            return False
        try:
            await slot.session.rset()
        except SmtpError:
            return False
        return True

    async def _quit(self, slot: _Connection) -> None:
        session, slot.session = slot.session, None
        if session is not None:
            await session.quit()  # swallows its own errors and closes

    async def _drop(self, slot: _Connection) -> None:
        session, slot.session = slot.session, None
        if session is not None:
            session.close()
