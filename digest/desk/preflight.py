"""Pre-flight checks: what would embarrass the operator, found before anyone is mailed.

:func:`run_preflight` builds the full edition (every category, so every link is
in it) with the sender's own code (:mod:`digest.desk.reader_copy`) and checks:

=========  ===============================================================  =======
check      what                                                             level
=========  ===============================================================  =======
size       HTML part over Gmail's clipping point (~102 KB), or over         error
           [edition] max_html_bytes; unsubscribe link / postal address past
           the clip. Counted on the wire: quoted-printable, as sent
images     every ``<img>`` has an ``alt`` attribute                         error
links      every link absolute http(s) (or mailto), and answering 2xx/3xx;  error
           a broken link names the comparison it sits in. 401/403/429:     warning
           the site may refuse link checkers
subject    present; longer than [preflight] subject_max_chars              warning
title      a comparison's title longer than 120 characters                 warning
text       the plain-text part is there and carries every comparison       error
           (its title as the email shows it, its link), the unsubscribe link
headers    From, To, Subject, Date, Message-ID, MIME-Version once each;     error
           the List-Unsubscribe pair (RFC 2369 / RFC 8058); https for it    warning
footer     unsubscribe link and postal address in the HTML                  error
=========  ===============================================================  =======

Errors block approval (``digest approve``, the desk's Approve button) unless
forced; warnings never do. Links are fetched with httpx, at most ``[preflight]
link_concurrency`` at a time, each within ``link_timeout_seconds``, each URL once
per run (HEAD, then GET when a server refuses HEAD). The personal links and the
edition's own "View in browser" page (public only once sent) are not fetched.
The feed chose those links: one that resolves (or redirects) to a loopback,
private, link-local or CGNAT address is refused, not fetched, and is an error
(:mod:`digest.common.netguard`), unless ``[preflight] allow_private_addresses = true``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from html import escape
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import urlsplit

import httpx

from digest import pipeline
from digest.common.netguard import AddressPolicy, Resolver
from digest.config.runtime import Runtime
from digest.desk import reader_copy as desk
from digest.desk import tracked
from digest.desk.linkcheck import LinkChecker, LinkResult
from digest.editions.segments import Skip
from digest.errors import DigestTooLarge
from digest.render.base import RenderedDigest, fill
from digest.render.size import GMAIL_CLIP_BYTES, decoded_size, wire_html, wire_offset
from digest.render.view import TITLE_LIMIT, comparison_view, safe_url

_REQUIRED_ONCE = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version")
_SOFT_STATUSES = (401, 403, 429)  # often link-checker refusals, not broken pages
TITLE_MAX_CHARS = TITLE_LIMIT  # a longer title is shortened in the email: a warning
Level = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    check: str  # size, images, links, subject, title, text, headers, footer
    message: str
    comparison: str = ""  # the title of the comparison it concerns, if any
    url: str = ""

    def describe(self) -> str:
        where = f" (in comparison '{self.comparison}')" if self.comparison else ""
        return f"{self.check}: {self.message}{where}"


@dataclass(slots=True)
class PreflightReport:
    edition_key: str
    findings: list[Finding] = field(default_factory=list)
    html_bytes: int = 0  # the HTML part on the wire (quoted-printable, as sent)
    links_checked: int = 0  # distinct URLs fetched
    link_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, level: Level, check: str, message: str, **where: str) -> None:
        self.findings.append(Finding(level, check, message, **where))


def run_preflight(
    rt: Runtime,
    *,
    key: str | None,
    check_links: bool | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver | None = None,
) -> PreflightReport:
    """Check edition ``key`` (None / ``"next"``: this week's, composed or not).

    ``check_links`` overrides ``[preflight] check_links``; ``transport`` (replaces
    the address guard) and ``resolver`` (host name to addresses) are for tests.
    Must not be called from a running event loop (it runs its own). Raises
    DigestError when there is no such edition (or nothing to preview)."""
    started = time.monotonic()
    content = desk.edition_content(rt, key)
    report = PreflightReport(content.key)
    digest = _digest(rt, content, report)
    oversized = bool(report.errors)  # sending would refuse it: no message to build
    typical = tracked.typical_values(rt, digest)
    html = fill(digest.html, typical, escape_html=True)
    wire = wire_html(digest.html, typical)
    _check_size(report, wire, typical["unsubscribe_url"], rt.config.site.postal_address)
    links = _Links()
    links.feed(html)
    _check_images(report, links.images)
    _check_subject(report, digest.subject, rt.config.preflight.subject_max_chars)
    _check_titles(report, content)
    inert = {**typical, **desk.inert_urls(rt, 0)}
    own = tracked.TrackedLinks(rt, content.comparisons)
    _check_text(
        report, own.resolve_text(digest.text_with(inert)), content, inert["unsubscribe_url"]
    )
    if not oversized:
        built = desk.build(rt, content, desk.viewer_for(rt).recipient, now=rt.now())
        if not isinstance(built, Skip):
            _check_headers(report, desk.parse(built.data))
    cfg = rt.config.preflight
    wanted = cfg.check_links if check_links is None else check_links
    own_page = f"{rt.config.site.base_url.rstrip('/')}/archive/{content.key}"
    skip = {*typical.values(), own_page}
    targets = _check_link_forms(report, own.resolve(links.hrefs), skip, _titles_by_url(content))
    for token in dict.fromkeys(own.bad):
        report.add("error", "links", f"a tracked link does not lead to this edition: {token}")
    if wanted and targets:
        clock = time.monotonic()
        checker = LinkChecker(
            timeout=cfg.link_timeout_seconds,
            concurrency=cfg.link_concurrency,
            transport=transport,
            policy=AddressPolicy(allow_private=cfg.allow_private_addresses),
            resolver=resolver,
        )
        results = asyncio.run(checker.check(targets))
        report.links_checked = len(results)
        report.link_seconds = time.monotonic() - clock
        _judge_links(report, results, _titles_by_url(content))
    report.seconds = time.monotonic() - started
    return report


def _digest(rt: Runtime, content: desk.EditionContent, report: PreflightReport) -> RenderedDigest:
    """The full edition's digest, rendered as sending would; an oversized one is an
    error and is rendered again without the limit so the other checks still run."""
    try:
        return pipeline.render(rt, content.key, content.comparisons)
    except DigestTooLarge as exc:
        report.add("error", "size", str(exc))
        return pipeline.render(rt, content.key, content.comparisons, max_html_bytes=1 << 40)


def _titles_by_url(content: desk.EditionContent) -> dict[str, str]:
    found: dict[str, str] = {}
    for c in content.comparisons:
        url = safe_url(c.url)
        if url:
            found.setdefault(url, c.title)
    return found


def _check_size(report: PreflightReport, wire: bytes, unsubscribe: str, postal: str) -> None:
    """``wire``: the HTML part as sent (quoted-printable). Gmail's clip counts those
    bytes, not the decoded text (see :mod:`digest.render.size`)."""
    report.html_bytes = len(wire)
    if len(wire) <= GMAIL_CLIP_BYTES:
        return
    report.add(
        "error",
        "size",
        f"the HTML part is {len(wire):,} bytes on the wire (quoted-printable, as sent; "
        f"{decoded_size(wire):,} decoded); Gmail clips messages over about "
        f"{GMAIL_CLIP_BYTES:,} bytes (102 KB): lower [edition] max_comparisons",
    )
    for what, needle in (("unsubscribe link", unsubscribe), ("postal address", postal)):
        at = wire_offset(wire, escape(needle, quote=True))
        if at < 0 or at > GMAIL_CLIP_BYTES:
            where = "missing" if at < 0 else f"at byte {at:,} on the wire"
            report.add("error", "size", f"the {what} is {where}, past Gmail's clipping point")


def _check_images(report: PreflightReport, images: Sequence[tuple[str, str | None]]) -> None:
    for src, alt in images:
        if alt is None:
            report.add("error", "images", f"an image has no alt text: {src[:200]}", url=src)


def _check_subject(report: PreflightReport, subject: str, limit: int) -> None:
    if not subject.strip():
        report.add("error", "subject", "the subject is empty")
    elif len(subject) > limit:
        cut = f"inboxes cut it after about {limit}: {subject[:limit]}…"
        report.add("warning", "subject", f"the subject is {len(subject)} characters; {cut}")


def _check_titles(report: PreflightReport, content: desk.EditionContent) -> None:
    for c in content.comparisons:
        if len(c.title) > TITLE_MAX_CHARS:
            shown = comparison_view(c).title  # as the email shows it
            found = f"comparison {c.id}: title is {len(c.title)} characters"
            report.add("warning", "title", f"{found}; the email shows it shortened to {shown}")


def _check_text(
    report: PreflightReport, text: str, content: desk.EditionContent, unsubscribe: str
) -> None:
    if not text.strip():
        report.add("error", "text", "the plain-text part is missing or empty")
        return
    flat = " ".join(text.split())
    for c in content.comparisons:
        if " ".join(comparison_view(c).title.split()) not in flat:  # shortened if long
            report.add("error", "text", "the text part lacks the comparison", comparison=c.title)
        url = safe_url(c.url)
        if url and url not in text:
            report.add("error", "text", f"the text part lacks the link {url}", comparison=c.title)
    if unsubscribe not in text:
        report.add("error", "text", "the text part has no unsubscribe link")


def _check_headers(report: PreflightReport, message: EmailMessage) -> None:
    for name in _REQUIRED_ONCE:
        count = len(message.get_all(name) or [])
        if count != 1:
            report.add("error", "headers", f"{name} appears {count} times, not once")
    unsub = str(message.get("List-Unsubscribe", ""))
    post = str(message.get("List-Unsubscribe-Post", ""))
    if not unsub.startswith("<http"):
        report.add("error", "headers", "no List-Unsubscribe header with a URL (RFC 2369)")
    elif not unsub.startswith("<https://"):
        report.add("warning", "headers", "List-Unsubscribe is not https: Gmail and Yahoo want it")
    if post != "List-Unsubscribe=One-Click":
        report.add("error", "headers", "no List-Unsubscribe-Post: List-Unsubscribe=One-Click")


def _check_link_forms(
    report: PreflightReport, hrefs: Iterable[str], skip: set[str], titles: dict[str, str]
) -> list[str]:
    """Report links that are not absolute http(s); return the ones to fetch."""
    targets: list[str] = []
    for href in dict.fromkeys(hrefs):
        if href.startswith("mailto:") or href in skip:
            continue
        parts = urlsplit(href)
        if parts.scheme not in ("http", "https") or not parts.netloc or safe_url(href) is None:
            why = f"not an absolute http(s) link: {href[:200]}"
            report.add("error", "links", why, comparison=titles.get(href, ""), url=href)
            continue
        targets.append(href)
    return targets


def _judge_links(
    report: PreflightReport, results: dict[str, LinkResult], titles: dict[str, str]
) -> None:
    for url, result in results.items():
        if result.ok:
            continue
        level: Level = "warning" if result.status in _SOFT_STATUSES else "error"
        why = f"{url} {result.describe()}"
        report.add(level, "links", why, comparison=titles.get(url, ""), url=url)


class _Links(HTMLParser):
    """Every ``<a href>`` and every ``<img>`` (src, alt or None) of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.images: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.hrefs.append(str(values["href"]).strip())
        elif tag == "img":
            self.images.append((str(values.get("src") or ""), values.get("alt")))
