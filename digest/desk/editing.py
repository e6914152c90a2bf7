"""Editing an edition from any entry point (``digest edit``, the desk, the API).

Thin on purpose: :func:`edit` is :func:`digest.editions.shaping.apply_edit` in its
own transaction at the runtime's clock; :func:`compose_next` composes the edition
an editor means by "next" so it can be edited before the weekly job gets to it;
:func:`preview_comparisons` is what that next edition would hold, read-only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from digest import pipeline
from digest.config.runtime import Runtime
from digest.editions import lifecycle as editions
from digest.editions import shaping
from digest.editions.lifecycle import ComposeResult
from digest.editions.shaping import Edit, EditResult
from digest.errors import DigestError
from digest.store import audit
from digest.store.db import session_scope
from digest.store.models import Comparison, EditionStatus


def edit(rt: Runtime, *, key: str, change: Edit, actor: str, via: str) -> EditResult:
    """Apply ``change`` to edition ``key`` (``"next"``: compose it first). Raises
    EditRefused (409), EditInvalid (400) or DigestError (no such edition)."""
    if key == "next":
        composed = compose_next(rt, actor=actor, via=via)
        if composed.edition is None:
            raise shaping.EditInvalid(composed.reason)
        key = composed.edition.key
    with session_scope(rt.engine) as session:
        return shaping.apply_edit(session, key=key, edit=change, actor=actor, via=via, now=rt.now())


def next_key(rt: Runtime) -> str:
    """The week an editor means by "next": this week's, or next week's once this
    week's edition is sent or cancelled."""
    now = rt.now()
    tz = rt.config.site.tz
    key = editions.edition_key(now, tz)
    with session_scope(rt.engine) as session:
        existing = editions.get(session, key=key)
        done = existing is not None and existing.status in (
            EditionStatus.sent,
            EditionStatus.cancelled,
        )
    return editions.edition_key(now + timedelta(days=7), tz) if done else key


def compose_next(rt: Runtime, *, actor: str, via: str) -> ComposeResult:
    """Compose the "next" edition now (idempotent: an existing one is returned)."""
    result = pipeline.compose(rt, key=next_key(rt))
    if result.created and result.edition is not None:
        with session_scope(rt.engine) as session:
            audit.record(
                session, actor=actor, via=via, action="edition.compose",
                target=f"edition:{result.edition.key}", detail=result.reason, now=rt.now(),
            )  # fmt: skip
    return result


def preview_comparisons(rt: Runtime) -> tuple[str, Sequence[Comparison]]:
    """The next edition's key and comparisons, without composing (read-only).

    While this week's edition is still to go out (composed, sending, paused): that
    edition. Once it is sent or cancelled: next week's, made of what the next compose
    would choose now (eligible comparisons that are in no edition yet: what has
    arrived since). No edition this week: what composing now would choose. Raises
    DigestError when that is nothing."""
    now = rt.now()
    tz = rt.config.site.tz
    key = editions.edition_key(now, tz)
    done = ""
    with session_scope(rt.engine) as session:
        existing = editions.get(session, key=key)
        if existing is not None and existing.status in (
            EditionStatus.sent,
            EditionStatus.cancelled,
        ):
            done = f"edition {key} is {existing.status}; "
            key = editions.edition_key(now + timedelta(days=7), tz)
            existing = editions.get(session, key=key)
        if existing is not None:
            return key, editions.comparisons_of(session, edition=existing)
        chosen = editions.eligible(
            session,
            now=now,
            max_age=timedelta(days=rt.config.edition.max_age_days),
            limit=rt.config.edition.max_comparisons,
        )
    if not chosen:
        raise DigestError(f"nothing to preview: {done}no edition {key} yet and no new comparisons")
    return key, chosen
