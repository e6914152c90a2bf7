"""Rendering an edition for the weekly job, the desk and the archive: Jinja2 → MJML →
HTML plus text and subject, with the editors' note and the edition's links; the web
copy as sent (``/archive/{key}``) is stored from here when sending starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from digest.config.runtime import Runtime
from digest.editions import lifecycle as editions
from digest.editions import shaping
from digest.engagement import snapshot
from digest.engagement.links import links_for
from digest.render.base import Editorial, RenderedDigest
from digest.render.digest import render_digest
from digest.render.editorial import from_stored
from digest.store.db import session_scope
from digest.store.models import Comparison, Edition


def find_edition(rt: Runtime, key: str | None) -> Edition | None:
    """The edition ``key``, or the newest one when ``key`` is None."""
    with session_scope(rt.engine) as session:
        return editions.get(session, key=key) if key else editions.latest(session)


def render(
    rt: Runtime,
    edition_key: str,
    comparisons: Sequence[Comparison],
    *,
    max_html_bytes: int | None = None,
    web_copy: bool = False,
) -> RenderedDigest:
    """Jinja2 → MJML → HTML, plus text and subject, once per edition (and segment).
    ``max_html_bytes`` overrides ``[edition] max_html_bytes`` (the pre-flight renders
    an oversized edition anyway, to check the rest). ``web_copy``: the public web
    copy (whole titles and quotes, the readers' vote, no personal links)."""
    site = rt.config.site
    return render_digest(
        rt.templates,
        editorial=editorial_of(rt, edition_key),
        site_name=site.name,
        base_url=site.base_url,
        postal_address=site.postal_address,
        edition_key=edition_key,
        comparisons=comparisons,
        max_html_bytes=max_html_bytes or rt.config.edition.max_html_bytes,
        links=links_for(rt, edition_key, web_copy=web_copy),
    )


def editorial_of(rt: Runtime, edition_key: str) -> Editorial | None:
    """What the editors wrote for ``edition_key`` (None: nothing, or no such edition yet)."""
    with session_scope(rt.engine) as session:
        edition = editions.get(session, key=edition_key)
        found = shaping.editorial_of(session, edition) if edition is not None else None
        return from_stored(found, shaping.SPONSOR_LABEL)


def keep_web_copy(rt: Runtime, edition: Edition, comparisons: Sequence[Comparison]) -> None:
    """Store the web copy of what is about to be sent (``/archive/{key}`` serves it):
    replaced until the edition starts sending, kept as it was from then on."""
    assert edition.id is not None
    web = render(rt, edition.key, comparisons, web_copy=True, max_html_bytes=1 << 30)
    first = edition.planned_at is None
    snapshot.save(rt.engine, edition_id=edition.id, digest=web, now=rt.now(), replace=first)


def render_edition(rt: Runtime, edition: Edition) -> RenderedDigest:
    with session_scope(rt.engine) as session:
        comparisons = editions.comparisons_of(session, edition=edition)
    return render(rt, edition.key, comparisons)
