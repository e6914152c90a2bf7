"""An edition exactly as one reader gets it, built with the sender's own code.

Every copy is built by :func:`digest.delivery.messages.message_factory`, the
function the sender uses, so it is the delivered message but for the two personal
links. Those carry *inert* tokens (``…/u/42.preview-only``): they look like the
reader's links and verify as nothing, so clicking one in a preview, a pre-flight
or a test email changes nothing. Nothing here sends or touches the ledger.

Used by :mod:`digest.desk.preview` (previews, test sends, approval) and
:mod:`digest.desk.preflight` (the checks before approval).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from functools import partial

from digest import pipeline
from digest.config.runtime import Runtime, sender_address
from digest.delivery import messages
from digest.delivery.ledger import Recipient
from digest.desk import editing
from digest.editions import lifecycle as editions
from digest.editions.segments import Skip, distinct_categories
from digest.errors import DigestError
from digest.store.db import session_scope
from digest.store.models import Comparison, Edition
from digest.transports.base import OutgoingMessage
from subscribers.errors import SubscriberInputError
from subscribers.models import SubscriberStatus
from subscribers.repository import get_by_email

INERT_TOKEN = "preview-only"  # noqa: S105  (never a valid tag: verify() refuses it)
SAMPLE_NAME = "Preview Reader"


@dataclass(frozen=True, slots=True)
class EditionContent:
    """An edition's comparisons; ``edition`` is None for the next one, not composed yet."""

    key: str
    edition: Edition | None
    comparisons: tuple[Comparison, ...]

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(distinct_categories([c.category for c in self.comparisons]))


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose copy to build: a subscriber (their categories, their id in the links) or
    a segment (a set of categories; empty = all) for a sample reader."""

    label: str
    recipient: Recipient
    note: str = ""  # e.g. "unsubscribed: gets nothing"


def parse(data: bytes) -> EmailMessage:
    """A message's bytes as the email package reads them (modern policy)."""
    return message_from_bytes(data, policy=policy.default)  # type: ignore[return-value,unused-ignore]


def inert_urls(rt: Runtime, subscriber_id: int) -> dict[str, str]:
    """The reader's personal links with tokens that do nothing."""
    base = rt.config.site.base_url.rstrip("/")
    token = f"{int(subscriber_id)}.{INERT_TOKEN}"
    return {"unsubscribe_url": f"{base}/u/{token}", "preferences_url": f"{base}/p/{token}"}


def edition_content(rt: Runtime, key: str | None) -> EditionContent:
    """The edition ``key``; None or ``"next"``: this week's, composed or not (read-only).
    Raises DigestError for an unknown key or when there is nothing to preview."""
    if key in (None, "", "next"):
        next_key, comparisons = editing.preview_comparisons(rt)
        return EditionContent(next_key, pipeline.find_edition(rt, next_key), tuple(comparisons))
    assert key is not None
    with session_scope(rt.engine) as session:
        edition = editions.get(session, key=key)
        if edition is None:
            raise DigestError(f"there is no edition {key}: 'digest status' lists them")
        return EditionContent(
            key, edition, tuple(editions.comparisons_of(session, edition=edition))
        )


def viewer_for(rt: Runtime, *, email: str = "", categories: Sequence[str] = ()) -> Viewer:
    """A subscriber by address, else a sample reader of ``categories`` (empty: all).
    Raises DigestError for an address that is not a subscriber."""
    if not email:
        label = "Sample reader: " + (", ".join(categories) or "all categories")
        sample = f"preview@{sender_address(rt.config).rpartition('@')[2]}"
        return Viewer(label, Recipient(0, 0, sample, SAMPLE_NAME, tuple(categories)))
    with session_scope(rt.engine) as session:
        try:
            found = get_by_email(session, email=email)
        except SubscriberInputError:
            found = None
        if found is None or found.id is None:
            raise DigestError(f"{email} is not a subscriber: 'digest subscribers list' lists them")
        recipient = Recipient(
            0, found.id, found.email, found.name, tuple(found.categories), found.paused_until
        )
        status = found.status
    note = "" if status == SubscriberStatus.active else f"{status}: gets no digest"
    return Viewer(
        f"{found.email} ({', '.join(found.categories) or 'all categories'})", recipient, note
    )


def build(
    rt: Runtime,
    content: EditionContent,
    recipient: Recipient,
    *,
    now: datetime,
    subject_prefix: str = "",
) -> OutgoingMessage | Skip:
    """One reader's message through the sender's own factory, with inert links.
    Raises RenderError / DigestTooLarge exactly as sending would."""
    factory = messages.message_factory(
        rt,
        content.key,
        content.comparisons,
        render=pipeline.render,
        urls=partial(inert_urls, rt),
        subject_prefix=subject_prefix,
    )
    (result,) = factory([recipient], now)
    return result
