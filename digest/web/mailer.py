"""The emails the web side sends: the double opt-in confirmation and the welcome.

Both go out *after* the database change is committed and after the response is
on its way (a background task), so a slow or failing mail server never fails a
form, and a sign-up for a known address takes as long as one for a new address.
A failure is logged (without tokens or addresses) and dropped: the reader can
ask again once ``[web] confirm_resend_minutes`` has passed.

- confirmation: transactional (no List-Unsubscribe), To is the bare address,
  nothing the person typed appears in it;
- welcome: the latest *sent* edition, rendered exactly as the weekly send does
  (pipeline.render / messages.personal_urls, the same byte template), so it carries
  List-Unsubscribe and the RFC 8058 one-click header. No sent edition: no welcome.

Both come from ``[email] transactional_from`` (default: ``from``), envelope
sender and From header alike: Gmail's sender guidelines ask that subscription
mail (the weekly digest) and other mail use different addresses, so a reader's
spam verdict on one does not land on the other. With ``[email] bounce_address``
set, that is the envelope sender instead, so bounces reach the bounce mailbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Callable
from functools import partial

from sqlalchemy.exc import SQLAlchemyError

from digest import pipeline
from digest.config.runtime import Runtime
from digest.delivery import messages
from digest.editions import lifecycle as editions
from digest.errors import DigestError
from digest.render.digest import clean_subject
from digest.render.transactional import CONFIRM, build_transactional
from digest.render.view import SiteView, site_view
from digest.store.db import session_scope
from digest.transports.base import Outcome, OutgoingMessage
from digest.web import catalog
from subscribers.models import Subscriber
from subscribers.tokens import Purpose

log = logging.getLogger(__name__)

CONFIRM_TAG = "transactional"
WELCOME_TAG = "welcome"  # its own outbox folder: never overwrites a confirmation file
WELCOME_SUBJECT = "emails/welcome_subject.txt.j2"


def confirmation_message(rt: Runtime, *, subscriber_id: int, address: str) -> OutgoingMessage:
    """The confirmation email for ``address`` (bare, normalized). Raises RenderError."""
    cfg = rt.config
    site = site_view_of(rt)
    token = rt.signer().sign(Purpose.confirm, subscriber_id)
    header, sender = transactional_sender(rt)
    message_id = f"<{secrets.token_hex(16)}.confirm@{sender.rpartition('@')[2]}>"
    data = build_transactional(
        rt.templates,
        CONFIRM,
        {
            "site": site,
            "confirm_url": f"{site.base_url}/confirm/{token}",
            "hours": cfg.web.confirm_token_hours,
        },
        from_header=header,
        reply_to=cfg.email.reply_to,
        to_address=address,
        message_id=message_id,
        date=rt.now(),
    )
    return OutgoingMessage(0, envelope_sender(rt), address, message_id, data, CONFIRM_TAG)


def welcome_message(rt: Runtime, *, subscriber_id: int) -> OutgoingMessage | None:
    """The latest sent edition for a newly confirmed reader, or None when there is
    no sent edition, or none of its comparisons is in the reader's categories."""
    with session_scope(rt.engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        edition = catalog.latest_sent(session)
        if subscriber is None or edition is None:
            return None
        comparisons = list(editions.comparisons_of(session, edition=edition))
    if subscriber.categories:
        wanted = set(subscriber.categories)
        comparisons = [c for c in comparisons if c.category in wanted]
    if not comparisons:
        return None
    digest = pipeline.render(rt, edition.key, comparisons)
    subject = rt.templates.render(
        WELCOME_SUBJECT, {"site": site_view_of(rt), "subject": digest.subject}
    )
    digest = dataclasses.replace(digest, subject=clean_subject(subject))
    header, sender = transactional_sender(rt)
    template = messages.message_template(rt, edition.key, digest, sender=(header, sender))
    data = template.render(
        subscriber_id=subscriber_id,
        to_email=subscriber.email,
        to_name=subscriber.name,
        date=rt.now(),
        **messages.reader_values(rt, edition.key, digest, subscriber_id),
    )
    return OutgoingMessage(
        0,
        envelope_sender(rt),
        subscriber.email,
        template.message_id(subscriber_id),
        data,
        WELCOME_TAG,
    )


def transactional_sender(rt: Runtime) -> tuple[str, str]:
    """``[email] transactional_from`` (default ``from``): the From header and the
    bare envelope address. Both were checked when the config was loaded."""
    email = rt.config.email
    return email.transactional_header, email.transactional_address


def envelope_sender(rt: Runtime) -> str:
    """``[email] bounce_address`` when set (no VERP token: a bounce of these is
    matched by its Message-ID or address), else the transactional address."""
    return rt.config.email.bounce_address or rt.config.email.transactional_address


def site_view_of(rt: Runtime) -> SiteView:
    site = rt.config.site
    return site_view(name=site.name, base_url=site.base_url, postal_address=site.postal_address)


class Mailer:
    """Sends one message at a time through ``runtime.transport()`` (shared adapter)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    def _guard(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a lock belongs to one event loop
            self._loop, self._lock = loop, asyncio.Lock()
        return self._lock

    async def send_confirmation(self, subscriber_id: int, address: str) -> None:
        build = partial(confirmation_message, self.rt, subscriber_id=subscriber_id, address=address)
        await self._deliver("confirmation", build)

    async def send_welcome(self, subscriber_id: int) -> None:
        await self._deliver(
            "welcome", partial(welcome_message, self.rt, subscriber_id=subscriber_id)
        )

    async def _deliver(self, what: str, build: Callable[[], OutgoingMessage | None]) -> None:
        """Build (in a thread: templates, database) and send; log any failure."""
        try:
            message = await asyncio.to_thread(build)
            if message is None:
                log.info("%s email skipped: nothing to send", what)
                return
            await self.send(message)
        except (DigestError, SQLAlchemyError, ValueError, OSError) as exc:
            # Only the exception's type: a transport's message may hold the address.
            log.error("%s email not sent (%s)", what, type(exc).__name__)

    async def send(self, message: OutgoingMessage) -> None:
        """Open, send, close. Raises TransportError; logs a refused message."""
        transport = self.rt.transport()
        async with self._guard():
            await transport.open()
            try:
                (result,) = await transport.send_batch([message])
            finally:
                await transport.close()
        if result.outcome not in (Outcome.sent, Outcome.queued):
            log.warning("%s email refused: %s", message.tag, result.outcome.value)
