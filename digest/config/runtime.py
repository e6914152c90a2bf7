"""What an entry point builds once from the config: engine, templates, adapters, signer.

Only entry points (``cli.py``, ``web/app.py``, ``scheduler.py``) create a
:class:`Runtime`; stages receive the typed pieces they need from it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from functools import cached_property

from sqlalchemy import Engine, select

from digest.config import Config
from digest.config.registry import build_feed, build_transport
from digest.errors import ConfigError
from digest.feeds.base import Feed
from digest.render.headers import check_sender, list_id_for
from digest.render.templates import TemplateSet
from digest.store.db import make_engine
from digest.store.models import InstanceSecret
from digest.transports.base import Transport
from digest.transports.failover import FailoverTransport
from subscribers.tokens import TokenSigner

log = logging.getLogger(__name__)


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    config: Config
    engine: Engine
    feed_adapter: Feed
    transport_adapter: Transport
    clock: Callable[[], datetime] = system_clock
    _signer: TokenSigner | None = field(default=None, repr=False)
    _secrets: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def open(cls, config: Config, *, clock: Callable[[], datetime] = system_clock) -> Runtime:
        """Build the runtime. Every configuration mistake (adapter tables, addresses,
        database URL) raises ConfigError here, before any work or database access."""
        sender_address(config)  # every [email] header, checked as messages will be built
        feed = build_feed(config.feed, config.env)
        transport = build_transport(config.transport, config.env)
        if config.failover is not None:
            secondary = build_transport(config.failover, config.env)
            transport = FailoverTransport(transport, secondary, cooldown=config.failover_cooldown)
        if transport.kind == "memory":
            log.warning("[transport] kind = 'memory': messages are kept in memory and lost")
        engine = make_engine(config.database.url)
        return cls(config, engine, feed, transport, clock)

    def now(self) -> datetime:
        return self.clock()

    @cached_property
    def templates(self) -> TemplateSet:
        return TemplateSet(self.config.paths.templates)

    def feed(self) -> Feed:
        return self.feed_adapter

    def transport(self) -> Transport:
        return self.transport_adapter

    def signer(self) -> TokenSigner:
        """Token signer: ``DIGEST_SECRET_KEY`` keys, else a key generated once and kept
        in the database (so links keep working across runs and machines)."""
        if self._signer is None:
            self._signer = TokenSigner(self.secret_keys())
        return self._signer

    def secret_keys(self) -> tuple[str, ...]:
        """The signing secrets, newest first: ``DIGEST_SECRET_KEY`` keys, else the one
        stored in the database (read once: the sign-up form, the desk's login and every
        bounce ask). Every signed thing derives its own key from these."""
        if not self._secrets:
            self._secrets = tuple(self.config.secret_keys) or (self._stored_secret(),)
        return self._secrets

    def _stored_secret(self) -> str:
        table = InstanceSecret.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as conn:
            value = conn.execute(select(table.c.value).where(table.c.id == 1)).scalar()
            if value is None:
                value = secrets.token_urlsafe(32)
                conn.execute(table.insert().values(id=1, value=value, created_at=self.now()))
                log.warning(
                    "DIGEST_SECRET_KEY is not set: generated a signing key and stored it in "
                    "the database; set DIGEST_SECRET_KEY to manage keys yourself"
                )
        return str(value)

    def close(self) -> None:
        self.engine.dispose()


def list_id(config: Config) -> str:
    """``[email] list_id``, or one derived from the site name and the From domain."""
    if config.email.list_id:
        return config.email.list_id
    _, address = parseaddr(config.email.from_)
    return list_id_for(config.site.name, address.rpartition("@")[2] or "invalid")


def sender_address(config: Config) -> str:
    """The bare ``[email] from`` address (the envelope sender), after checking every
    ``[email]`` header as the message builder will. Raises ConfigError naming the key."""
    try:
        return check_sender(
            from_header=config.email.from_,
            reply_to=config.email.reply_to,
            list_id=list_id(config),
            feedback_id=config.email.feedback_id,
        )
    except ValueError as exc:
        key = str(exc).partition(":")[0]
        key = key if key in ("from", "reply_to", "list_id", "feedback_id") else "from"
        raise ConfigError(
            f"[email] key '{key}' in {config.source}: {exc}; expected an address such as "
            "'The Verdict Weekly <digest@example.com>'"
        ) from None
