"""Editing an edition from any entry point (``digest edit``, the desk, the API).

Thin on purpose: :func:`edit` is :func:`digest.editions.shaping.apply_edit` in its
own transaction at the runtime's clock; :func:`compose_next` composes the edition
an editor means by "next" so it can be edited before the weekly job gets to it.
"""

from __future__ import annotations

from datetime import timedelta

from digest import pipeline
from digest.config.runtime import Runtime
from digest.editions import lifecycle as editions
from digest.editions import shaping
from digest.editions.lifecycle import ComposeResult
from digest.editions.shaping import Edit, EditResult
from digest.store import audit
from digest.store.db import session_scope
from digest.store.models import EditionStatus


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
