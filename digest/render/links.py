"""Where a digest's links point: straight at their targets, or through the tracked
redirect (``/r/{token}/{ref}``), plus the per-reader vote links and, in the web
copy, the readers' vote. Built once per render; the view asks it for every href.

Per-reader parts are slot markers (:mod:`digest.render.digest`): ``ref`` ends each
tracked link, ``vote_<n>`` is the vote token of the n-th tool of the edition.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from digest.render.base import REF_SLOT, Links

_SLUG = re.compile(r"[a-z0-9-]{1,80}")
WEB_REF = "web"  # the ref of every link in the public web copy (names no one)


class Hrefs:
    """The hrefs of one render. ``slot(name)`` returns the marker for a slot."""

    def __init__(self, links: Links | None, slot: Callable[[str], str]) -> None:
        self._links = links
        self._slot = slot
        self.votes: list[tuple[str, str]] = []  # (comparison id, tool key) by slot number

    @property
    def web_copy(self) -> bool:
        return self._links is not None and self._links.web_copy

    def comparison(self, comparison_id: str, url: str | None) -> str | None:
        return self._tracked(comparison_id, "c", url)

    def tool(self, comparison_id: str, tool_key: str, url: str | None) -> str | None:
        return self._tracked(comparison_id, f"t-{tool_key}", url) if tool_key else url

    def vote_slot(self, comparison_id: str, tool_key: str) -> int | None:
        """The slot number of this tool's vote token (web copy: of its readers'
        vote); None when votes are off or the ids are unusable."""
        if self._links is None or not self._links.votes or not _slug(comparison_id, tool_key):
            return None
        self.votes.append((comparison_id, tool_key))
        return len(self.votes) - 1

    def vote(self, n: int | None, choice: str) -> str:
        if n is None or self._links is None or self.web_copy:
            return ""
        return f"{self._links.base_url}/v/{self._slot(f'vote_{n}')}/{choice}"

    def readers(self, n: int | None) -> str:
        return self._slot(f"readers_{n}") if n is not None and self.web_copy else ""

    def open_pixel(self, edition_key: str) -> str:
        links = self._links
        if links is None or not links.opens or links.web_copy:
            return ""
        return f"{links.base_url}/o/{edition_key}/{self._slot(REF_SLOT)}.gif"

    def _tracked(self, comparison_id: str, target: str, url: str | None) -> str | None:
        links = self._links
        if url is None or links is None or links.track is None or not _slug(comparison_id):
            return url
        token = links.track(comparison_id, target)
        ref = WEB_REF if links.web_copy else self._slot(REF_SLOT)
        return f"{links.base_url}/r/{token}/{ref}"


def _slug(*parts: str) -> bool:
    """Feed ids and tool keys are [a-z0-9-] (the contract); anything else is linked
    plainly (a comparison stored before the contract said so)."""
    return all(_SLUG.fullmatch(p) for p in parts)
