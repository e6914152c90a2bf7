"""Issue 16 end to end, as an operator checks it: ``digest run`` with the outbox
transport, then ``digest serve``. The delivered message carries the whole panel
(every lens with an excerpt), its links go through ``/r/`` and count, the vote
links record one changeable vote per reader per tool, and the archive serves the
web copy as it was sent, with the readers' vote beside the panel's."""

from __future__ import annotations

import html as htmlmod
import json
import re
import time
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from tests.browser_support import Site, html_of, text_of

LENSES = ("Builder", "Skeptic", "Futurist", "Buyer")
CLAUDE = "claude-4-api-tool-streaming-vs-codestral-2"


@pytest.fixture
def sent(tmp_path: Path) -> Site:
    """Two readers got this week's edition through the outbox."""
    site = Site(tmp_path, f"sqlite:///{tmp_path / 'digest.db'}")
    site.write_config()
    with site.config.open("a") as config:  # a click this soon after sending: a scanner's
        config.write("\n[tracking]\nscanner_seconds = 2\n")
    site.digest("init")
    site.digest("subscribers", "add", "ada@example.org", "--name", "Ada")
    site.digest("subscribers", "add", "bob@example.org", "--name", "Bob")
    site.digest("run")
    return site


def delivered(site: Site) -> dict[str, EmailMessage]:
    (folder,) = site.edition_folders()
    mails = site.mails(folder)
    assert set(mails) == {"ada@example.org", "bob@example.org"}
    return mails


def hrefs(message: EmailMessage) -> list[str]:
    return [htmlmod.unescape(h) for h in re.findall(r'href="([^"]+)"', html_of(message))]


def test_the_whole_panel_and_tracked_links_that_count(sent: Site) -> None:
    message = delivered(sent)["ada@example.org"]
    text = text_of(message)
    claude = text[text.index("* Claude 4 API") : text.index("* Codestral 2.0")]
    for lens in LENSES:  # four lenses reviewed it: each with its verdict and an excerpt
        line = re.search(rf"^  {lens} [✓✗] (Ship|Skip): (.+)$", claude, re.M)
        assert line is not None, f"no {lens} line in:\n{claude}"
        assert len(line[2]) > 20
    page = html_of(message)
    assert all(f"{lens}&#160;" in page or f"{lens}\xa0" in page for lens in LENSES)

    tracked = [h for h in hrefs(message) if h.startswith(f"{sent.base}/r/")]
    assert tracked, "no tracked link in the HTML part"
    to_claude = next(h for h in tracked if f".{CLAUDE}.c." in h)
    assert f"https://verdicts.example.com/compare/{CLAUDE}" not in page  # only via /r/
    altered = to_claude.replace(f".{CLAUDE}.c.", ".tern-vector-vs-heron-search.c.")
    with sent.serve(), httpx.Client(timeout=10) as client:
        time.sleep(2.5)  # past [tracking] scanner_seconds: a reader's click, not a scanner's
        answer = client.get(to_claude, headers={"User-Agent": "Mozilla/5.0 (reader)"})
        assert answer.status_code == 302
        assert answer.headers["location"] == f"https://verdicts.example.com/compare/{CLAUDE}"
        assert client.get(altered).status_code == 400
        assert client.get(to_claude[:-3] + "abc").status_code == 400
    stats = sent.digest("stats", "--csv", "-").stdout  # the server flushed on the way out
    rows = list(csv_rows(stats))
    assert len(rows) == 1 and rows[0]["clicks"] == "1", stats


def csv_rows(text: str) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))


def test_a_vote_link_shows_a_form_and_only_a_post_counts(sent: Site) -> None:
    mails = {k.split("@")[0]: m for k, m in delivered(sent).items()}
    ship, skip, bob_ship = (
        next(h for h in hrefs(mails[who]) if f".{CLAUDE}.claude-4-api." in h and h.endswith(end))
        for who, end in (("ada", "/ship"), ("ada", "/skip"), ("bob", "/ship"))
    )
    assert ship.startswith(f"{sent.base}/v/") and ship != bob_ship  # per reader
    feed = json.loads(sent.feed.read_text())  # the site retitles the comparison later
    feed["comparisons"][0]["title"] = "Retitled after the edition went out"
    feed["comparisons"][0]["updated_at"] = "2030-01-01T00:00:00Z"
    sent.feed.write_text(json.dumps(feed))
    sent.digest("fetch")
    with sent.serve(), httpx.Client(timeout=10) as client:
        before = client.get(f"{sent.base}/votes.json").json()["comparisons"]
        form = client.get(ship)
        assert form.status_code == 200 and "<form" in form.text and 'method="post"' in form.text
        assert client.get(f"{sent.base}/votes.json").json()["comparisons"] == before  # no count
        assert client.post(ship).status_code == 200
        assert client.post(skip).status_code == 200  # changes the vote, does not add one
        assert client.post(bob_ship).status_code == 200
        after = client.get(f"{sent.base}/votes.json").json()
        archive = client.get(f"{sent.base}/archive/{sent.edition_folders()[0]}").text
    tools = {t["key"]: t for c in after["comparisons"] for t in c["tools"]}
    voted = tools["claude-4-api"]
    assert (voted["ship"], voted["skip"], voted["total"]) == (1, 1, 2), json.dumps(after)
    assert "Readers: 50% ship · 2 votes" in archive  # beside the panel's, in the web copy
    stored = {c["comparison_id"]: c["title"] for c in after["comparisons"]}
    assert stored[CLAUDE] == "Retitled after the edition went out"  # today's data …
    assert "Retitled" not in archive  # … but the web copy is what was sent
    assert "Claude 4 API: Tool Use Streaming &amp; Prompt Caching" in archive
