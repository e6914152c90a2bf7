"""The render side of clicks and votes: how an edition's links are made
(:func:`links_for`, from ``[tracking]`` and ``[votes]``) and each reader's values
for the slots those links hold (:class:`PersonalSlots`: the message ref that ends
every tracked link, a vote token per tool).

The redirect and the vote pages that read these are :mod:`digest.engagement.clicks`
and :mod:`digest.engagement.votes`; the token shapes are :mod:`.tokens`.
"""

from __future__ import annotations

from datetime import datetime

from digest.config.runtime import Runtime
from digest.engagement.tokens import EngagementTokens
from digest.render.base import REF_SLOT, Links, RenderedDigest


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
    ``vote_<n>`` (the reader's vote token for tool n). Tokens cost ~2 µs each."""

    def __init__(self, rt: Runtime, edition_key: str, digest: RenderedDigest) -> None:
        names = set(digest.slot_names)
        self._tokens = EngagementTokens(rt.signer())
        self._edition_key = edition_key
        self._individual = rt.config.tracking.individual
        self._ref = REF_SLOT in names
        self._votes = [
            (f"vote_{n}", cid, tool)
            for n, (cid, tool) in enumerate(digest.votes)
            if f"vote_{n}" in names
        ]

    def __call__(self, subscriber_id: int, now: datetime) -> dict[str, str]:
        out: dict[str, str] = {}
        if self._ref:
            out[REF_SLOT] = self._tokens.ref(
                self._edition_key, subscriber_id, now, individual=self._individual
            )
        for name, cid, tool in self._votes:
            out[name] = self._tokens.vote(subscriber_id, cid, tool)
        return out
