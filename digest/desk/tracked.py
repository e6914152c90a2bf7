"""The pre-flight's view of an edition's own links (issue 16).

Every link to a comparison or a tool goes through the click redirect
(``{base}/r/{token}/{ref}``), so checking the hrefs as they stand would fetch our
own redirect with a made-up ref. Instead each tracked link is checked to carry a
token this instance signed for a comparison of the edition, then resolved to the
page it leads to, and that page is what the link check fetches. Vote links and
the open pixel are per-reader pages of our own: not fetched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from digest.config.runtime import Runtime
from digest.engagement.clicks import Targets
from digest.engagement.tokens import EngagementTokens
from digest.render.base import SLOT_NAMES, RenderedDigest
from digest.store.models import Comparison
from subscribers.tokens import BadToken

_URL_END = r"[^\s\"'<>]*"


def typical_values(rt: Runtime, digest: RenderedDigest) -> dict[str, str]:
    """Every slot of ``digest`` filled as long as a real value (~120 characters for
    the footer's links, told apart by path; ~40 for a click ref, ~96 for a vote
    token), so sizes measured with them are what readers get."""
    base = rt.config.site.base_url.rstrip("/")
    values = {n: f"{base}/{n[0]}/" + "x" * max(8, 120 - len(base) - 3) for n in SLOT_NAMES}
    for name in digest.slot_names:
        values.setdefault(name, "x" * (40 if name == "ref" else 96))
    return values


class TrackedLinks:
    """Resolves the tracked links of one edition's render to their targets."""

    def __init__(self, rt: Runtime, comparisons: Sequence[Comparison]) -> None:
        self._base = rt.config.site.base_url.rstrip("/")
        self._tokens = EngagementTokens(rt.signer())
        self._pages = {c.id: Targets.of(c.url, c.tools) for c in comparisons}
        self._tracked = re.compile(re.escape(self._base) + r"/r/([^/\s\"'<>]+)/" + _URL_END)
        self.bad: list[str] = []  # tracked links whose token is not ours or names no page

    def target(self, token: str) -> str | None:
        """The page a tracked link's token leads to; None (and noted) if none."""
        try:
            link = self._tokens.read_link(token)
        except BadToken:
            link = None
        pages = self._pages.get(link.comparison_id) if link else None
        if link is None or pages is None:
            self.bad.append(token)
            return None
        return pages.tools.get(link.tool_key or "", pages.page)

    def resolve(self, hrefs: Iterable[str]) -> list[str]:
        """``hrefs`` with tracked links replaced by their targets, own per-reader
        pages (vote links, the open pixel) left out."""
        out: list[str] = []
        own = (f"{self._base}/v/", f"{self._base}/o/", f"{self._base}/archive/")
        for href in hrefs:
            found = self._tracked.fullmatch(href)
            if found is not None:
                target = self.target(found[1])
                if target is not None:
                    out.append(target)
            elif not href.startswith(own):
                out.append(href)
        return out

    def resolve_text(self, text: str) -> str:
        """``text`` with each tracked link replaced by its target (for the checks
        that look for a comparison's URL in the text part)."""
        return self._tracked.sub(lambda m: self.target(m[1]) or m[0], text)
