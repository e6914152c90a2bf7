"""The archive, the Atom feed, and what every page promises (headers, errors,
OpenAPI), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from sqlalchemy import text

from digest.store.models import EditionStatus
from tests.test_web_support import Site, open_site

ATOM = "{http://www.w3.org/2005/Atom}"
XSS = "<script>alert(1)</script>"


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    yield from open_site(tmp_path, db_url)


def _editions(site: Site) -> None:
    site.fetch()
    site.comparison("xss", title=XSS)
    site.edition("2026-W46", ["tern-vector-vs-heron-search", "xss"], EditionStatus.sent)
    site.edition("2026-W47", ["claude-4-api-tool-streaming-vs-codestral-2"], EditionStatus.sent)
    site.edition("2026-W48", ["lumen-notebook-vs-quill-agents"], EditionStatus.sending)


def test_the_archive_lists_only_sent_editions_newest_first_escaped(site: Site) -> None:
    _editions(site)
    page = site.client.get("/archive")
    assert page.status_code == 200
    html = page.text
    assert "2026-W47" in html and "2026-W46" in html and "2026-W48" not in html
    assert html.index("/archive/2026-W47") < html.index("/archive/2026-W46")
    assert "Week 47" in html and "Claude 4 API" in html and "Lumen" not in html
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_web_version_is_the_email_without_a_personal_token(site: Site) -> None:
    _editions(site)
    page = site.client.get("/archive/2026-W46")
    assert page.status_code == 200
    html = page.text
    assert "Tern" in html and XSS not in html and "&lt;script&gt;" in html
    assert not re.search(r"/(u|p)/\d+\.", html)
    assert "https://digest.test.example/links" in html
    assert "https://digest.test.example/archive/2026-W46" in html  # "View in browser"
    csp = page.headers["content-security-policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp
    links = site.client.get("/links")
    assert links.status_code == 200 and "personal" in links.text
    for missing in ("/archive/2026-W48", "/archive/2031-W01", "/archive/nope"):
        response = site.client.get(missing)
        assert response.status_code == 404 and "Page not found" in response.text


def test_the_atom_feed_has_one_entry_per_sent_edition(site: Site) -> None:
    _editions(site)
    response = site.client.get("/archive.xml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = ET.fromstring(response.content)
    assert feed.tag == f"{ATOM}feed"
    for child in ("id", "title", "updated"):
        assert feed.find(f"{ATOM}{child}") is not None
    (self_link,) = [link for link in feed.findall(f"{ATOM}link") if link.get("rel") == "self"]
    assert self_link.get("href") == "https://digest.test.example/archive.xml"
    entries = feed.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}id") for e in entries] == [
        "https://digest.test.example/archive/2026-W47",
        "https://digest.test.example/archive/2026-W46",
    ]
    for entry in entries:
        for child in ("title", "updated", "summary", "link"):
            assert entry.find(f"{ATOM}{child}") is not None
    assert XSS in (entries[1].findtext(f"{ATOM}summary") or "")  # escaped, parsed back
    assert b"<script>" not in response.content


def test_an_empty_archive_and_feed(site: Site) -> None:
    assert "No edition has gone out yet." in site.client.get("/archive").text
    feed = ET.fromstring(site.client.get("/archive.xml").content)
    assert feed.findall(f"{ATOM}entry") == []


def test_every_page_has_the_security_headers_and_the_postal_address(site: Site) -> None:
    _editions(site)
    for path in ("/subscribe", "/archive", "/links", "/archive/nope", "/u/bad", "/nowhere"):
        response = site.client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "1 Test Street, 10115 Berlin" in response.text
        assert "<script" not in response.text


def test_a_database_failure_gives_a_plain_503_page(site: Site) -> None:
    with site.rt.engine.begin() as conn:
        conn.execute(text("DROP TABLE edition_editorial"))
        conn.execute(text("DROP TABLE edition_snapshot"))
        conn.execute(text("DROP TABLE edition_comparison"))
        conn.execute(text("DROP TABLE delivery"))
        conn.execute(text("DROP TABLE edition"))
    response = site.client.get("/archive")
    assert response.status_code == 503
    assert "Temporarily unavailable" in response.text and "Traceback" not in response.text
    assert response.headers["referrer-policy"] == "no-referrer"


def test_openapi_describes_the_form_endpoints(site: Site) -> None:
    spec = site.client.get("/openapi.json").json()
    body = spec["paths"]["/subscribe"]["post"]["requestBody"]["content"]
    assert {"application/x-www-form-urlencoded", "multipart/form-data", "application/json"} <= set(
        body
    )
    assert "email" in body["application/json"]["schema"]["properties"]
    unsubscribe = spec["paths"]["/u/{token}"]["post"]["requestBody"]["content"]
    assert (
        "List-Unsubscribe"
        in unsubscribe["application/x-www-form-urlencoded"]["schema"]["properties"]
    )
    for path in ("/confirm/{token}", "/p/{token}", "/archive", "/archive.xml"):
        assert path in spec["paths"]
