"""``digest preview`` and the desk's "next" once this week's edition is done: next
week's edition, made of what has arrived since (issue 12)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from digest import pipeline
from digest.cli.output import write_preview
from digest.config.runtime import Runtime
from digest.desk import editing
from digest.desk import preview as desk
from digest.editions import lifecycle as editions
from digest.errors import DigestError
from digest.store.db import session_scope
from digest.store.models import Comparison, EditionStatus
from digest.web.app import create_app
from tests.test_admin import NOW, add_reader, compose, login, open_runtime

THIS_WEEK, NEXT_WEEK = "2026-W48", "2026-W49"
LATE_TITLE = "Arrived Late vs After The Send"


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = open_runtime(tmp_path)
    yield runtime
    runtime.close()


def finish(rt: Runtime, status: EditionStatus) -> str:
    """Compose this week's edition and bring it to ``status`` (sent: really sent)."""
    key = compose(rt)
    assert key == THIS_WEEK
    if status == EditionStatus.sent:
        add_reader(rt, "ann@example.com", [])
        asyncio.run(pipeline.send(rt, edition=pipeline.find_edition(rt, key)))  # type: ignore[arg-type]
    else:
        with session_scope(rt.engine) as session:
            editions.cancel(session, key=key, note="test", now=NOW)
    assert pipeline.find_edition(rt, key).status == status  # type: ignore[union-attr]
    return key


def arrive_late(rt: Runtime) -> None:
    """A comparison first seen after this week's edition was composed."""
    with session_scope(rt.engine) as session:
        model = session.execute(select(Comparison).limit(1)).scalars().one()
        session.add(
            Comparison(
                id="arrived-late",
                url="https://verdicts.example.com/compare/arrived-late",
                title=LATE_TITLE,
                question=model.question,
                category=model.category,
                published_at=NOW - timedelta(hours=1),
                updated_at=NOW - timedelta(hours=1),
                tools=model.tools,
                reviews=model.reviews,
                first_seen_at=NOW,
                last_seen_at=NOW,
            )
        )


@pytest.mark.parametrize("status", [EditionStatus.sent, EditionStatus.cancelled])
def test_after_this_weeks_edition_next_is_next_weeks_with_what_arrived_since(
    rt: Runtime, status: EditionStatus
) -> None:
    finish(rt, status)
    arrive_late(rt)
    key, chosen = editing.preview_comparisons(rt)
    assert key == NEXT_WEEK and [c.title for c in chosen] == [LATE_TITLE]
    content = desk.edition_content(rt, "next")
    assert (content.key, content.edition) == (NEXT_WEEK, None)
    assert [c.title for c in content.comparisons] == [LATE_TITLE]


def test_while_this_weeks_edition_is_to_send_next_is_still_this_weeks(rt: Runtime) -> None:
    key = compose(rt)
    arrive_late(rt)
    found, chosen = editing.preview_comparisons(rt)
    assert found == key == THIS_WEEK and LATE_TITLE not in [c.title for c in chosen]


def test_nothing_new_since_the_sent_edition_says_so(rt: Runtime) -> None:
    finish(rt, EditionStatus.sent)
    with pytest.raises(DigestError) as info:
        editing.preview_comparisons(rt)
    message = str(info.value)
    assert f"edition {THIS_WEEK} is sent" in message and NEXT_WEEK in message


def test_digest_preview_writes_next_weeks_files(rt: Runtime, tmp_path: Path) -> None:
    finish(rt, EditionStatus.sent)
    arrive_late(rt)
    paths = write_preview(rt, None, tmp_path / "preview")
    assert [p.name for p in paths] == [f"{NEXT_WEEK}.html", f"{NEXT_WEEK}.txt", f"{NEXT_WEEK}.eml"]
    html = paths[0].read_text(encoding="utf-8")
    assert LATE_TITLE in html and "Lumen Notebook" not in html


def test_the_desk_lists_and_previews_next_weeks_edition(rt: Runtime) -> None:
    finish(rt, EditionStatus.sent)
    arrive_late(rt)
    with TestClient(create_app(rt), follow_redirects=False) as client:
        login(client)
        page = client.get("/admin/editions").text
        row = page[page.index('id="upcoming"') :]
        assert row.index(NEXT_WEEK) < row.index("not composed yet") < row.index("next/preview")
        preview = client.get("/admin/editions/next/preview")
        assert preview.status_code == 200 and f"Preview of {NEXT_WEEK}" in preview.text
        frame = client.get("/admin/editions/next/preview.html").text
        assert LATE_TITLE in frame and "Lumen Notebook" not in frame
