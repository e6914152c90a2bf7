"""The click decision: which stored page a tracked link leads to, and what it counts.

A link token names an edition, a comparison and a target (``c`` or ``t-<tool>``),
never a URL (:mod:`digest.engagement.tokens`): :meth:`ClickTracker.url` finds the
target in the stored comparison (``Comparison.url``; a tool's ``url``, else the
comparison's), kept in a small LRU cache with a lifetime, so a click is no
database read once the cache is warm. Only ``http``/``https`` URLs; an unknown
comparison raises :class:`UnknownLink` (the route answers 404, never redirects).

What a hit counts (:meth:`ClickTracker.count_click`, docs/TRACKING.md):

- reader 0 (the desk's sample reader, ``s0``): nothing;
- a scanner (``scanner`` kind, no unique clicker): a ``HEAD``; a user agent in
  :data:`SCANNER_AGENTS` or :data:`IMAGE_PROXIES`, or none; a hit within
  ``scanner_seconds`` of the message being sent; or the hit that makes one message
  reach ``scanner_links`` distinct links within ``scanner_seconds`` (its earlier
  clicks still in that window move from ``click`` to ``scanner``, their unique
  clicker is taken back);
- anything else: a ``click`` and the message's unique clicker (``click_seen``;
  not for the web copy), plus a ``click_event`` row with ``[tracking] individual``.

Opens (:meth:`ClickTracker.count_open`) are edition-wide; one that is a scanner's
by the first three rules is not counted (image proxies count: they fetch images as
a reader opens a message). The burst window is in memory, per process, bounded.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, select

from digest.config.web_sections import TrackingConfig
from digest.engagement.counter import ClickCounter, ClickRow
from digest.engagement.tokens import EngagementTokens, LinkTarget, MessageRef
from digest.store.models import Comparison, Edition
from subscribers.tokens import TokenSigner

# User-Agent substrings (case-insensitive) of mail security scanners, link
# previewers and HTTP libraries: never a reader. Short on purpose: the time and
# burst rules catch the scanners that pose as browsers.
SCANNER_AGENTS: tuple[str, ...] = (
    # Microsoft Defender Safe Links, Microsoft Office probing a link before opening
    # it, Barracuda, Proofpoint URL Defense, Mimecast URL Protect, link sandboxes
    *("bingpreview", "existence discovery", "barracuda", "proofpoint", "mimecast"),
    "headlesschrome",
    # HTTP libraries and command-line clients
    *("python-requests", "python-urllib", "python-httpx", "aiohttp", "curl/", "wget/"),
    *("go-http-client", "okhttp", "java/", "libwww-perl", "apache-httpclient"),
    # link previews and crawlers: a shared link unfurled is not a click
    *("facebookexternalhit", "slackbot", "twitterbot", "linkedinbot", "discordbot"),
    *("telegrambot", "whatsapp", "skypeuripreview", "googlebot", "bingbot"),
)
# Fetch a message's images when the reader opens it: an open, never a click.
IMAGE_PROXIES = ("googleimageproxy", "yahoomailproxy")
_SCANNERS = re.compile("|".join(map(re.escape, SCANNER_AGENTS)), re.IGNORECASE)
_PROXIES = re.compile("|".join(map(re.escape, IMAGE_PROXIES)), re.IGNORECASE)
_EDITION_KEY = re.compile(r"\d{4}-W\d{2}")
_MISSING = object()


class Kind(StrEnum):
    """What a hit counted as (``engagement_count.kind``, or nothing)."""

    click = "click"
    scanner = "scanner"
    open = "open"
    ignored = "ignored"  # reader 0: nothing counted


class UnknownLink(LookupError):
    """The link's comparison (or the pixel's edition) is not stored, or has no http(s)
    page: answer 404 and count nothing."""


def machine_agent(user_agent: str, *, opening: bool = False) -> bool:
    """Whether ``user_agent`` is a scanner's (no user agent at all is one too).
    ``opening``: an image proxy is a reader opening the message, not a scanner."""
    if not user_agent.strip() or _SCANNERS.search(user_agent):
        return True
    return not opening and _PROXIES.search(user_agent) is not None


def _http(url: object) -> str | None:
    if not isinstance(url, str) or any(c in url for c in "\r\n\t "):
        return None
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.hostname else None


@dataclass(frozen=True, slots=True)
class Targets:
    """One stored comparison's pages: its own and its tools' (tool key → URL)."""

    page: str
    tools: Mapping[str, str]

    @classmethod
    def of(cls, url: str, tools: Any) -> Targets | None:
        page = _http(url)
        if page is None:
            return None
        entries = [t for t in tools or [] if isinstance(t, dict) and isinstance(t.get("key"), str)]
        return cls(page, {t["key"]: u for t in entries if (u := _http(t.get("url")))})


class _Cache:
    """A small thread-safe LRU map whose entries expire (a miss lives shorter)."""

    def __init__(self, *, size: int, ttl: float, miss_ttl: float) -> None:
        self._size, self._ttl, self._miss_ttl = size, ttl, miss_ttl
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[float, object]] = OrderedDict()

    def get(self, key: str) -> object:
        """The value (None for a remembered miss), or ``_MISSING``."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None or entry[0] < time.monotonic():
                return _MISSING
            self._items.move_to_end(key)
            return entry[1]

    def put(self, key: str, value: object) -> None:
        life = self._ttl if value is not None else self._miss_ttl
        with self._lock:
            self._items[key] = (time.monotonic() + life, value)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


@dataclass(slots=True)
class _Hit:
    link: tuple[str, str]  # (comparison id, target)
    at: datetime
    click: bool  # still counted as a reader's click


class BurstWindow:
    """The reader-looking hits of each message in the last ``seconds`` (a bounded
    LRU of messages, the newest ``4 × links`` hits of each): the hit that brings one
    message to ``links`` distinct links is a scanner's, and so are its earlier hits
    still in the window."""

    def __init__(self, *, seconds: float, links: int, messages: int = 20_000) -> None:
        self._window = timedelta(seconds=seconds)
        self._links, self._messages, self._keep = links, messages, max(8, 4 * links)
        self._lock = threading.Lock()
        self._refs: OrderedDict[tuple[str, str], list[_Hit]] = OrderedDict()

    def add(
        self, message: tuple[str, str], link: tuple[str, str], at: datetime
    ) -> tuple[bool, list[_Hit]]:
        """(whether this hit is a scanner's, the earlier clicks to move to scanner)."""
        with self._lock:
            kept = self._refs.pop(message, [])[1 - self._keep :]
            hit = _Hit(link, at, click=True)
            hits = [*(h for h in kept if at - h.at < self._window), hit]
            self._refs[message] = hits
            if len(self._refs) > self._messages:
                self._refs.popitem(last=False)
            if len({h.link for h in hits}) < self._links:
                return False, []
            moved = [h for h in hits if h.click and h is not hit]
            for h in hits:
                h.click = False
            return True, moved


class ClickTracker:
    """Reads tokens, resolves targets and counts hits into a :class:`ClickCounter`."""

    def __init__(
        self,
        *,
        engine: Engine,
        signer: Callable[[], TokenSigner],
        counter: ClickCounter,
        tracking: TrackingConfig,
        cache_size: int = 4096,
        cache_seconds: float = 300.0,
    ) -> None:
        self.counter = counter
        self._engine, self._signer, self._cfg = engine, signer, tracking
        self._tokens: EngagementTokens | None = None
        self._cache = _Cache(size=cache_size, ttl=cache_seconds, miss_ttl=30.0)
        self._scan_time = timedelta(seconds=tracking.scanner_seconds)
        self.window = BurstWindow(seconds=tracking.scanner_seconds, links=tracking.scanner_links)

    @property
    def tokens(self) -> EngagementTokens:
        if self._tokens is None:
            self._tokens = EngagementTokens(self._signer())
        return self._tokens

    def read(self, token: str, ref: str) -> tuple[LinkTarget, MessageRef]:
        """The link and the message of a tracked URL. Raises BadToken."""
        return self.tokens.read_link(token), self.tokens.read_ref(ref)

    def cached_url(self, link: LinkTarget) -> str | None:
        """The target from the cache (None: not cached). Raises UnknownLink."""
        found = self._cache.get(link.comparison_id)
        if found is _MISSING:
            return None
        if not isinstance(found, Targets):
            raise UnknownLink(link.comparison_id)
        return found.tools.get(link.tool_key or "", found.page)

    def url(self, link: LinkTarget) -> str:
        """The target URL, read from the database when not cached (a blocking call).
        Raises UnknownLink."""
        cached = self.cached_url(link)
        if cached is not None:
            return cached
        stmt = select(Comparison.url, Comparison.tools).where(Comparison.id == link.comparison_id)  # type: ignore[call-overload]
        with self._engine.connect() as conn:
            row = conn.execute(stmt).first()
        self._cache.put(link.comparison_id, Targets.of(row[0], row[1]) if row else None)
        found = self.cached_url(link)
        assert found is not None
        return found

    def known_edition(self, edition_key: str, *, lookup: bool = True) -> bool | None:
        """Whether ``edition_key`` is a stored edition's: cached, else read (blocking)
        when ``lookup``; None when not cached and not looked up."""
        key = f"edition:{edition_key}"
        known = self._cache.get(key)
        if known is _MISSING and lookup:
            known = None
            if _EDITION_KEY.fullmatch(edition_key):
                stmt = select(Edition.id).where(Edition.key == edition_key)  # type: ignore[call-overload]
                with self._engine.connect() as conn:
                    known = True if conn.execute(stmt).first() else None
            self._cache.put(key, known)
        return None if known is _MISSING else known is True

    def count_click(
        self, link: LinkTarget, message: MessageRef, *, method: str, user_agent: str, now: datetime
    ) -> Kind:
        """Classify one hit on a tracked link and note what it counts (module docstring)."""
        if not message.counted:
            return Kind.ignored
        edition, where = link.edition_key, (link.comparison_id, link.target)
        machine = method.upper() == "HEAD" or machine_agent(user_agent)
        if message.sent_at is None:  # the public web copy: no message, no unique clicker
            kind = Kind.scanner if machine else Kind.click
            self.counter.note((edition, *where, kind.value))
            return kind
        ident = self._ident(edition, message)
        burst, moved = False, list[_Hit]()
        if not machine and now - message.sent_at >= self._scan_time:
            burst, moved = self.window.add((edition, ident), where, now)
        early = now - message.sent_at < self._scan_time
        kind = Kind.scanner if machine or early or burst else Kind.click
        with self.counter.buffer() as batch:
            batch.count((edition, *where, kind.value))
            for hit in moved:
                batch.count((edition, *hit.link, Kind.click.value), -1)
                batch.count((edition, *hit.link, Kind.scanner.value), 1)
            if moved:
                batch.rescan(edition, ident, min(hit.at for hit in moved))
            if kind is Kind.click:
                batch.see(edition, ident, now)
            sid = message.subscriber_id
            if self._cfg.individual and sid is not None:
                batch.clicks.append(ClickRow(edition, sid, *where, kind is Kind.scanner, now))
        return kind

    def count_open(
        self, edition_key: str, message: MessageRef, *, method: str, user_agent: str, now: datetime
    ) -> Kind:
        """Note one open-pixel fetch as an edition-wide ``open``, never per reader. A
        scanner's by the click rules (image proxies excepted) is not counted: an
        edition-wide ``scanner`` count is the scanners' clicks."""
        if not message.counted:
            return Kind.ignored
        machine = method.upper() == "HEAD" or machine_agent(user_agent, opening=True)
        if machine or (message.sent_at is not None and now - message.sent_at < self._scan_time):
            return Kind.scanner
        self.counter.note((edition_key, "", "", Kind.open.value))
        return Kind.open

    def _ident(self, edition_key: str, message: MessageRef) -> str:
        """Who clicked, as stored in ``click_seen``: a named ref (``s<id>``) is kept
        only while ``[tracking] individual`` is on, else it becomes its pseudonym."""
        sid = message.subscriber_id
        if sid is None or self._cfg.individual or message.sent_at is None:
            return message.ident
        ref = self.tokens.ref(edition_key, sid, message.sent_at, individual=False)
        return ref.split(".", 1)[0]
