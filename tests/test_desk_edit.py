"""Editing an edition on the desk: the lineup page, a save that changes what readers
get (seen in the preview the sender builds), roles, the 409 once sending started,
and composing the next edition from the editions page.

Real app (``create_app``), real SQLite database, the sample feed; a viewer is the
real session with its role lowered by a dependency override around the real guard
(so authentication and CSRF are still checked).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request

from digest import pipeline
from digest.config.runtime import Runtime
from digest.store import audit
from digest.store.db import session_scope
from digest.web.admin import deps
from digest.web.admin.auth import Operator
from digest.web.app import create_app
from tests.test_admin import add_reader, compose, csrf_of, login, open_runtime

DEV = "claude-4-api-tool-streaming-vs-codestral-2"
LUMEN = "lumen-notebook-vs-quill-agents"
TERN = "tern-vector-vs-heron-search"
TERN_TITLE = "Tern Vector vs Heron Search (sample data)"


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = open_runtime(tmp_path)
    yield runtime
    runtime.close()


@pytest.fixture
def app(rt: Runtime) -> FastAPI:
    return create_app(rt)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as c:
        login(c)
        yield c


def as_viewer(app: FastAPI) -> None:
    """From now on the signed-in operator is a viewer (the real guard runs first)."""

    async def viewer(request: Request) -> Operator:
        return dataclasses.replace(await deps.operator(request), role="viewer")

    app.dependency_overrides[deps.operator] = viewer


def lineup_ids(page: str) -> list[str]:
    return re.findall(r'name="lineup" value="([^"]+)"', page)


def form_of(page: str, **changes: str | list[str]) -> dict[str, str | list[str]]:
    """The edit form as the page shows it, with ``changes``."""
    ids = lineup_ids(page)
    data: dict[str, str | list[str]] = {"csrf": csrf_of(page), "lineup": ids, "keep": ids}
    data |= {f"position-{cid}": str(i + 1) for i, cid in enumerate(ids)}
    for name in ("subject", "preheader", "sponsor_text", "sponsor_url", "sponsor_label"):
        found = re.search(rf'name="{name}"[^>]*value="([^"]*)"', page)
        data[name] = found.group(1) if found else ""
    note = re.search(r'<textarea id="note" name="note"[^>]*>(.*?)</textarea>', page, re.S)
    data["note"] = note.group(1) if note else ""
    return data | changes


def test_the_edit_page_shows_the_lineup_and_the_history(rt: Runtime, client: TestClient) -> None:
    key = compose(rt)
    page = client.get(f"/admin/editions/{key}/edit")
    assert page.status_code == 200
    assert lineup_ids(page.text) == [DEV, LUMEN, TERN]
    lineup = page.text[page.text.index('id="lineup"') :]
    assert TERN_TITLE in lineup and "Infrastructure" in lineup
    assert "(excluded)" not in lineup
    assert "No changes recorded yet." in page.text
    assert f'href="/admin/editions/{key}/preview"' in page.text
    editions = client.get("/admin/editions").text
    assert f'href="/admin/editions/{key}/edit"' in editions


def test_a_save_changes_what_the_preview_shows(rt: Runtime, client: TestClient) -> None:
    key = compose(rt)
    before = client.get(f"/admin/editions/{key}/preview.html").text
    assert "Tern Vector" in before
    page = client.get(f"/admin/editions/{key}/edit").text
    form = form_of(
        page,
        keep=[DEV, LUMEN],
        note="A word from the editor: **benchmarks** are back.",
        subject="Three verdicts, one surprise",
        **{f"position-{LUMEN}": "1", f"position-{DEV}": "2"},
    )
    saved = client.post(f"/admin/editions/{key}/edit", data=form)
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/admin/editions/{key}/edit?saved=4"
    after = client.get(saved.headers["location"]).text
    notice = re.search(r'<p class="notice" role="status">(.*?)</p>', after, re.S)
    assert notice and notice.group(1).startswith("saved: excluded comparison " + TERN)
    assert "subject: Three verdicts, one surprise" in notice.group(1)
    assert re.search(r'id="revision">1<', after)
    assert "(excluded)" in after and "Ada" in after  # who edited, in the page and history
    html = client.get(f"/admin/editions/{key}/preview.html").text
    assert "Tern Vector" not in html
    assert html.index("Lumen Notebook") < html.index("Claude 4 API")
    assert "A word from the editor" in html and "<strong>benchmarks</strong>" in html
    preview = client.get(f"/admin/editions/{key}/preview").text
    assert re.search(r'id="subject">Three verdicts, one surprise<', preview)
    with session_scope(rt.engine) as session:
        entries = audit.recent(session, target=f"edition:{key}")
    assert {e.actor for e in entries} == {"Ada (bootstrap session)"}
    assert {e.via for e in entries} == {"desk"}


def test_move_buttons_reorder_and_a_bad_edit_changes_nothing(
    rt: Runtime, client: TestClient
) -> None:
    key = compose(rt)
    page = client.get(f"/admin/editions/{key}/edit").text
    moved = client.post(f"/admin/editions/{key}/edit", data=form_of(page, move=f"down:{DEV}"))
    assert moved.status_code == 303
    page = client.get(f"/admin/editions/{key}/edit").text
    assert lineup_ids(page) == [LUMEN, DEV, TERN]
    bad = form_of(page, subject="way too long " * 20, note="kept out")
    refused = client.post(f"/admin/editions/{key}/edit", data=bad)
    assert refused.status_code == 400
    assert "Not saved, nothing changed: the subject is" in refused.text
    assert "kept out" in refused.text  # what was typed is still in the form
    none_left = client.post(f"/admin/editions/{key}/edit", data=form_of(page, keep=[]))
    assert none_left.status_code == 400 and "at least one comparison" in none_left.text
    page = client.get(f"/admin/editions/{key}/edit").text
    assert re.search(r'id="revision">1<', page) and "(excluded)" not in page
    assert "kept out" not in page


def test_a_viewer_sees_no_buttons_and_gets_403(
    rt: Runtime, app: FastAPI, client: TestClient
) -> None:
    key = compose(rt)
    csrf = csrf_of(client.get("/admin/editions").text)
    as_viewer(app)
    page = client.get(f"/admin/editions/{key}/edit")
    assert page.status_code == 200 and TERN_TITLE in page.text
    assert '<form method="post" action="/admin/editions/' not in page.text
    assert 'name="keep"' not in page.text and "Save " + key not in page.text
    editions = client.get("/admin/editions").text
    assert f"Pause {key}" not in editions and "Compose next edition" not in editions
    preview = client.get(f"/admin/editions/{key}/preview").text
    assert "Send test" not in preview and "Check links" not in preview
    for path, data in (
        (f"/admin/editions/{key}/edit", {"note": "sneaky", "lineup": DEV}),
        (f"/admin/editions/{key}/pause", {"reason": "no"}),
        ("/admin/editions/next/compose", {}),
        (f"/admin/editions/{key}/test-send", {"to": "me@example.com"}),
    ):
        answer = client.post(path, data={"csrf": csrf, **data})
        assert answer.status_code == 403 and "editor role" in answer.text, path
    assert pipeline.find_edition(rt, key).status == "composed"  # type: ignore[union-attr]
    assert "sneaky" not in client.get(f"/admin/editions/{key}/edit").text
    assert not rt.transport().handed  # type: ignore[attr-defined]


def test_once_sending_started_the_edition_cannot_change(rt: Runtime, client: TestClient) -> None:
    add_reader(rt, "ann@example.com", [])
    key = compose(rt)
    page = client.get(f"/admin/editions/{key}/edit").text
    asyncio.run(pipeline.send(rt, edition=pipeline.find_edition(rt, key)))  # type: ignore[arg-type]
    answer = client.post(f"/admin/editions/{key}/edit", data=form_of(page, note="too late"))
    assert answer.status_code == 409
    assert f"edition {key} has started sending: it cannot change any more" in answer.text
    assert 'name="note"' not in answer.text  # no form any more
    shown = client.get(f"/admin/editions/{key}/edit").text
    assert "This edition cannot be edited" in shown and "too late" not in shown
    editions = client.get("/admin/editions").text
    assert f'href="/admin/editions/{key}/edit"' not in editions


def test_compose_next_edition_then_edit_it(rt: Runtime, client: TestClient) -> None:
    editions = client.get("/admin/editions").text
    assert "Compose next edition" in editions
    composed = client.post("/admin/editions/next/compose", data={"csrf": csrf_of(editions)})
    assert composed.status_code == 303
    key = pipeline.find_edition(rt, "2026-W48")
    assert key is not None and key.status == "composed"
    assert composed.headers["location"] == "/admin/editions/2026-W48/edit"
    page = client.get(composed.headers["location"]).text
    assert lineup_ids(page) == [DEV, LUMEN, TERN]
    assert "edition.compose" in page  # the history names it
    editions = client.get("/admin/editions").text
    assert "Compose next edition" not in editions
