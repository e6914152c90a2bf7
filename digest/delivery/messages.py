"""Per-reader messages: the render stage's output, personalized cheaply.

An edition is rendered once per segment (a distinct set of reader preferences);
each reader's message is that segment's pre-encoded byte template with their
links and name substituted (:mod:`digest.render.personalize`). Sending, the
operator's desk (preview, test sends) and ``digest preview`` all build here, so a
preview is the delivered message.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from email.utils import parseaddr

from digest.config.runtime import Runtime, list_id, sender_address
from digest.delivery.ledger import Recipient
from digest.delivery.run import MessageFactory
from digest.delivery.verp import verp_keys, verp_sender
from digest.editions.segments import (
    PerSegment,
    Segment,
    Skip,
    distinct_categories,
    segment_for,
    skip_reason,
)
from digest.engagement.links import PersonalSlots
from digest.render.base import RenderedDigest
from digest.render.digest import clean_subject
from digest.render.personalize import MessageTemplate
from digest.store.models import Comparison
from digest.transports.base import OutgoingMessage, Personal, SharedContent
from subscribers.tokens import Purpose

# The render stage (:func:`digest.pipeline.render`): runtime, edition key, comparisons.
Render = Callable[[Runtime, str, Sequence[Comparison]], RenderedDigest]


def message_template(
    rt: Runtime,
    edition_key: str,
    digest: RenderedDigest,
    *,
    sender: tuple[str, str] | None = None,
) -> MessageTemplate:
    """The edition's pre-encoded message template. ``sender``: (From header, bare
    address) instead of ``[email] from`` (the welcome mail uses ``transactional_from``);
    the Message-ID domain follows the address."""
    cfg = rt.config
    header, address = sender or (cfg.email.from_, sender_address(cfg))
    domain = address.rpartition("@")[2]
    return MessageTemplate.build(
        digest,
        from_header=header,
        reply_to=cfg.email.reply_to,
        list_id=list_id(cfg),
        feedback_id=cfg.email.feedback_id,
        edition_key=edition_key,
        message_id_domain=domain,
    )


def personal_urls(rt: Runtime, subscriber_id: int) -> dict[str, str]:
    """The per-subscriber links: one-click unsubscribe and preferences (signed)."""
    signer = rt.signer()
    base = rt.config.site.base_url.rstrip("/")
    return {
        "unsubscribe_url": f"{base}/u/{signer.sign(Purpose.unsubscribe, subscriber_id)}",
        "preferences_url": f"{base}/p/{signer.sign(Purpose.preferences, subscriber_id)}",
    }


def message_factory(
    rt: Runtime,
    edition_key: str,
    comparisons: Sequence[Comparison],
    *,
    render: Render,
    urls: Callable[[int], dict[str, str]] | None = None,
    subject_prefix: str = "",
) -> MessageFactory:
    """Per-subscriber messages: one pre-encoded template per segment, rendered with
    ``render`` on first use (the full edition eagerly, so a size error stops the run
    before any send).

    The operator's desk (preview, test sends) builds through this very function:
    ``urls`` replaces :func:`personal_urls` (inert links that change nothing; the
    click refs and vote tokens are then the sample reader 0's, which count nothing)
    and ``subject_prefix`` marks a test (``"[TEST] "``). Sending passes neither."""
    available = distinct_categories([c.category for c in comparisons])
    links = urls or (lambda subscriber_id: personal_urls(rt, subscriber_id))
    inert = urls is not None

    def for_segment(segment: Segment) -> tuple[MessageTemplate, SharedContent, PersonalSlots]:
        chosen = [c for c in comparisons if c.category in segment]
        digest = render(rt, edition_key, chosen)
        if subject_prefix:
            digest = dataclasses.replace(
                digest, subject=clean_subject(subject_prefix + digest.subject)
            )
        shared = SharedContent(
            key=f"{edition_key}/{'|'.join(segment)}",
            digest=digest,
            from_header=rt.config.email.from_,
            reply_to=rt.config.email.reply_to,
            list_id=list_id(rt.config),
        )
        return (
            message_template(rt, edition_key, digest),
            shared,
            PersonalSlots(rt, edition_key, digest),
        )

    templates = PerSegment(for_segment)
    templates.get(tuple(available))
    envelope_from = sender_address(rt.config)
    # [email] bounce_address: VERP, each reader's envelope sender names their row.
    bounce_address = rt.config.email.bounce_address
    verp_key = verp_keys(rt)[0] if bounce_address else b""

    def build(recipients: Sequence[Recipient], now: datetime) -> list[OutgoingMessage | Skip]:
        out: list[OutgoingMessage | Skip] = []
        for r in recipients:
            reason = skip_reason(
                chosen=r.categories, available=available, paused_until=r.paused_until, now=now
            )
            if reason is not None:
                out.append(Skip(r.delivery_id, reason))
                continue
            template, shared, slots = templates.get(segment_for(r.categories, available))
            values = {**slots(0 if inert else r.subscriber_id, now), **links(r.subscriber_id)}
            out.append(
                OutgoingMessage(
                    r.delivery_id,
                    (
                        verp_sender(bounce_address, r.delivery_id, verp_key)
                        if bounce_address
                        else envelope_from
                    ),
                    r.email,
                    template.message_id(r.subscriber_id),
                    functools.partial(_render, template, r, values, now),
                    edition_key,
                    shared=shared,
                    personal=Personal(r.name, values),
                    crlf=True,
                )
            )
        return out

    return build


def _render(template: MessageTemplate, r: Recipient, urls: dict[str, str], now: datetime) -> bytes:
    """One reader's MIME bytes: built only when a transport reads ``message.data``."""
    return template.render(
        subscriber_id=r.subscriber_id, to_email=r.email, to_name=r.name, date=now, **urls
    )


def reader_values(
    rt: Runtime, edition_key: str, digest: RenderedDigest, subscriber_id: int
) -> dict[str, str]:
    """Every slot value of ``digest`` for one reader: footer links, click ref, votes."""
    slots = PersonalSlots(rt, edition_key, digest)
    return {**slots(subscriber_id, rt.now()), **personal_urls(rt, subscriber_id)}


def preview_message(rt: Runtime, edition_key: str, digest: RenderedDigest) -> bytes:
    """The full message as a sample reader would get it (links for a reader id 0)."""
    template = message_template(rt, edition_key, digest)
    _, address = parseaddr(rt.config.email.from_)
    return template.render(
        subscriber_id=0,
        to_email=f"preview@{address.rpartition('@')[2]}",
        to_name="Preview Reader",
        date=rt.now(),
        **reader_values(rt, edition_key, digest, 0),
    )
