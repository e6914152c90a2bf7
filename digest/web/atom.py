"""The archive as an Atom 1.0 feed (RFC 4287), built with ElementTree so every
string is XML-escaped and the document is always well-formed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

ATOM_NS = "http://www.w3.org/2005/Atom"


@dataclass(frozen=True, slots=True)
class FeedEntry:
    key: str
    title: str
    url: str
    updated: datetime
    titles: tuple[str, ...]


def _stamp(moment: datetime) -> str:
    """RFC 3339 in UTC, as Atom's date constructs require (RFC 4287 3.3)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_feed(
    *,
    title: str,
    site_url: str,
    self_url: str,
    entries: Sequence[FeedEntry],
    updated: datetime,
) -> bytes:
    """The feed document (UTF-8, with an XML declaration)."""
    ET.register_namespace("", ATOM_NS)
    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    _child(feed, "id", self_url)
    _child(feed, "title", title)
    _child(feed, "updated", _stamp(updated))
    _child(feed, "link", rel="self", href=self_url, type="application/atom+xml")
    _child(feed, "link", rel="alternate", href=site_url, type="text/html")
    author = _child(feed, "author")
    _child(author, "name", title)
    for item in entries:
        entry = _child(feed, "entry")
        _child(entry, "id", item.url)
        _child(entry, "title", item.title)
        _child(entry, "updated", _stamp(item.updated))
        _child(entry, "link", rel="alternate", href=item.url, type="text/html")
        summary = "; ".join(item.titles) or "No comparisons."
        _child(entry, "summary", summary, type="text")
    document: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document


def _child(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attrs)
    if text is not None:
        element.text = text
    return element
