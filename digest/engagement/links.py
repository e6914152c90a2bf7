"""The render side of clicks and votes: how an edition's links are made
(:func:`links_for`, from ``[tracking]`` and ``[votes]``) and each reader's values
for the slots those links hold (:class:`PersonalSlots`: the message ref that ends
every tracked link, a vote token per tool).

The redirect and the vote pages that read these are :mod:`digest.engagement.clicks`
and :mod:`digest.engagement.votes`; the token shapes are :mod:`.tokens`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from digest.config.runtime import Runtime
from digest.engagement.tokens import EngagementTokens
from digest.render.base import REF_SLOT, Links, RenderedDigest
from digest.store.models import Edition


def links_for(rt: Runtime, edition_key: str, *, web_copy: bool = False) -> Links:
    """How edition ``edition_key`` links out: tracked through ``/r/`` unless
    ``[tracking] clicks = false``, vote links unless ``[votes] enabled = false``."""
    cfg = rt.config
    tokens = EngagementTokens(rt.signer())

    def track(comparison_id: str, target: str) -> str:
        return tokens.link(edition_key, comparison_id, target)

    return Links(
        base_url=cfg.site.base_url.rstrip("/"),
        track=track if cfg.tracking.clicks else None,
        votes=cfg.votes.enabled,
        opens=cfg.tracking.opens,
        individual=cfg.tracking.individual,
        web_copy=web_copy,
    )


class PersonalSlots:
    """One edition segment's per-reader slot values beyond the footer's links:
    ``ref`` (signed; the reader's id only with ``[tracking] individual``) and
    ``vote_<n>`` (the reader's vote token for tool n). Tokens cost ~2 µs each.

    The same reader's values must be the same in every build of their message: a
    provider that takes an idempotency key (Resend) refuses a replayed request whose
    body differs. So the ref's time is when the edition was planned (read once, at
    the first message, which is built after planning), not the time of the build;
    only a message of an edition not yet planned (a preview) uses the build time."""

    def __init__(self, rt: Runtime, edition_key: str, digest: RenderedDigest) -> None:
        names = set(digest.slot_names)
        self._tokens = EngagementTokens(rt.signer())
        self._edition_key = edition_key
        self._individual = rt.config.tracking.individual
        self._engine = rt.engine
        self._planned: datetime | None = None
        self._ref = REF_SLOT in names
        self._votes = [
            (f"vote_{n}", cid, tool)
            for n, (cid, tool) in enumerate(digest.votes)
            if f"vote_{n}" in names
        ]

    def __call__(self, subscriber_id: int, now: datetime) -> dict[str, str]:
        out: dict[str, str] = {}
        if self._ref:
            sent = self._planned or self._planned_at() or now
            out[REF_SLOT] = self._tokens.ref(
                self._edition_key, subscriber_id, sent, individual=self._individual
            )
        for name, cid, tool in self._votes:
            out[name] = self._tokens.vote(subscriber_id, cid, tool)
        return out

    def _planned_at(self) -> datetime | None:
        table = Edition.__table__  # type: ignore[attr-defined]
        with self._engine.connect() as conn:
            stmt = select(table.c.planned_at).where(table.c.key == self._edition_key)
            self._planned = conn.execute(stmt).scalar_one_or_none()
        return self._planned
