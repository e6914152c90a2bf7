"""Readers on the desk: search, one reader's record (deliveries, consent log,
suppression), adding pending (a real confirmation mail) or consented (a stated
source), unsubscribe, forget behind a typed confirmation, the JSON export, the
counts on the front page and the audit entries every change leaves.

Real app (``create_app``), real SQLite database, the memory transport.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from digest import pipeline
from digest.config.runtime import Runtime
from digest.store import audit
from digest.store.db import session_scope
from digest.store.models import AuditEvent
from digest.transports.memory import MemoryTransport
from digest.web.app import create_app
from subscribers import repository
from subscribers.models import Subscriber
from tests.test_admin import add_reader, compose, csrf_of, login, open_runtime


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = open_runtime(tmp_path)
    yield runtime
    runtime.close()


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt), follow_redirects=False) as c:
        login(c)
        yield c


def add(client: TestClient, **data: str | list[str]) -> httpx.Response:
    page = client.get("/admin/readers").text
    return client.post("/admin/readers", data={"csrf": csrf_of(page), **data})


def reader_id(rt: Runtime, email: str) -> int:
    with session_scope(rt.engine) as session:
        found = repository.get_by_email(session, email=email)
        assert found is not None and found.id is not None
        return found.id


def audit_of(rt: Runtime, rid: int) -> list[AuditEvent]:
    with session_scope(rt.engine) as session:
        return list(audit.recent(session, target=f"reader:{rid}"))


def text_of(message: EmailMessage) -> str:
    return "\n".join(str(p.get_content()) for p in message.walk() if not p.is_multipart())


def test_search_by_address_name_status_and_category(rt: Runtime, client: TestClient) -> None:
    add_reader(rt, "ann@example.com", ["Research"])
    add_reader(rt, "bob@example.org", ["Infrastructure"])
    add_reader(rt, "cat@example.com", [])  # every category
    with session_scope(rt.engine) as session:
        repository.remove(session, email="bob@example.org", now=rt.now())

    def listed(**params: str) -> list[str]:
        page = client.get("/admin/readers", params=params)
        assert page.status_code == 200
        table = page.text[page.text.index('id="readers"') :]
        return re.findall(r'href="/admin/readers/\d+">([^<]+)</a>', table)

    assert listed() == ["ann@example.com", "bob@example.org", "cat@example.com"]
    assert listed(q="EXAMPLE.COM") == ["ann@example.com", "cat@example.com"]
    assert listed(status="unsubscribed") == ["bob@example.org"]
    assert listed(category="Research") == ["ann@example.com", "cat@example.com"]
    assert listed(q="100%") == []  # a wildcard is a character, not a pattern


def test_the_list_pages_by_fifty(rt: Runtime, client: TestClient) -> None:
    for i in range(52):
        add_reader(rt, f"r{i:02}@example.com", [])
    first = client.get("/admin/readers").text
    assert "52 reader(s)" in first and "Page 1 of 2" in first
    assert first.count('href="/admin/readers/') - first.count("/admin/readers/?") >= 50
    second = client.get("/admin/readers", params={"page": "2"}).text
    assert "r51@example.com" in second and "r00@example.com" not in second


def test_adding_a_pending_reader_sends_a_working_confirmation(
    rt: Runtime, client: TestClient
) -> None:
    answer = add(client, email="New.Reader@Example.com", name="Nia", categories=["Research"])
    assert answer.status_code == 303
    rid = reader_id(rt, "new.reader@example.com")
    assert answer.headers["location"] == f"/admin/readers/{rid}?done=added-pending"
    transport = rt.transport()
    assert isinstance(transport, MemoryTransport)
    (mail,) = transport.sent
    assert mail.recipient == "new.reader@example.com"
    message = message_from_bytes(mail.data, policy=policy.default)
    link = re.search(r"https://digest\.test\.example(/confirm/[A-Za-z0-9._-]+)", text_of(message))  # type: ignore[arg-type]
    assert link, "no confirmation link in the mail"
    page = client.get(answer.headers["location"]).text
    assert "Added as pending; the confirmation mail went out." in page
    assert re.search(r'id="status">pending<', page) and "Research" in page
    client.post(link.group(1))  # the reader confirms
    with session_scope(rt.engine) as session:
        assert session.get(Subscriber, rid).status == "active"  # type: ignore[union-attr]
    (entry,) = audit_of(rt, rid)
    assert (
        entry.action == "reader.add"
        and entry.actor == "Ada (bootstrap session)"
        and entry.via == "desk"
    )
    assert "new.reader" not in entry.target + entry.detail


def test_adding_a_consented_reader_needs_a_stated_source(rt: Runtime, client: TestClient) -> None:
    refused = add(client, email="sam@example.com", consented="1", source="  ")
    assert refused.status_code == 400
    assert "say where this reader&#39;s consent came from" in refused.text
    with session_scope(rt.engine) as session:
        assert repository.get_by_email(session, email="sam@example.com") is None
    source = "event sign-up sheet 2026-11"
    answer = add(client, email="sam@example.com", consented="1", source=source)
    assert answer.status_code == 303
    rid = reader_id(rt, "sam@example.com")
    page = client.get(f"/admin/readers/{rid}").text
    assert re.search(r'id="status">active<', page)
    log = page[page.index('id="consent-log"') :]
    assert f"consent stated: {source}" in log and "subscribed" in log
    assert not rt.transport().sent
    again = add(client, email="SAM@example.com", consented="1", source=source)
    assert again.headers["location"] == f"/admin/readers/{rid}?done=exists"
    assert [e.action for e in audit_of(rt, rid)] == ["reader.add"]


def test_reader_page_shows_deliveries_consent_and_suppression(
    rt: Runtime, client: TestClient
) -> None:
    add(client, email="ida@example.com", consented="1", source="paper form")
    rid = reader_id(rt, "ida@example.com")
    key = compose(rt)
    asyncio.run(pipeline.send(rt, edition=pipeline.find_edition(rt, key)))  # type: ignore[arg-type]
    page = client.get(f"/admin/readers/{rid}").text
    deliveries = page[page.index('id="deliveries"') : page.index('id="consent-log"')]
    assert re.search(rf"<td>{key}</td><td>sent</td>", deliveries)
    assert "mem-1" in deliveries or "2026-11-24" in deliveries
    assert "none" in page[page.index('id="suppression"') :][:40]
    csrf = csrf_of(page)
    gone = client.post(f"/admin/readers/{rid}/unsubscribe", data={"csrf": csrf})
    assert gone.headers["location"] == f"/admin/readers/{rid}?done=unsubscribed"
    page = client.get(gone.headers["location"]).text
    assert re.search(r'id="status">unsubscribed<', page)
    assert re.search(r'id="suppression">suppressed \(unsubscribed', page)
    assert "unsubscribed" in page[page.index('id="consent-log"') :]
    assert [e.action for e in audit_of(rt, rid)] == ["reader.unsubscribe", "reader.add"]


def test_export_is_everything_held_as_json(rt: Runtime, client: TestClient) -> None:
    add(client, email="eve@example.com", consented="1", source="paper form")
    rid = reader_id(rt, "eve@example.com")
    answer = client.get(f"/admin/readers/{rid}/export")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert f'filename="reader-{rid}.json"' in answer.headers["content-disposition"]
    data = json.loads(answer.text)
    assert data["email"] == "eve@example.com" and data["subscriber"]["status"] == "active"
    assert [e["action"] for e in data["consent_log"]] == ["subscribed"]
    assert data["suppression"] is None and data["deliveries"] == []
    assert audit_of(rt, rid)[0].action == "reader.export"


def test_forget_needs_the_address_typed(rt: Runtime, client: TestClient) -> None:
    add(client, email="zoe@example.com", name="Zoe", consented="1", source="paper form")
    rid = reader_id(rt, "zoe@example.com")
    step = client.get(f"/admin/readers/{rid}/forget")
    assert step.status_code == 200 and "Type the address to confirm" in step.text
    wrong = client.post(
        f"/admin/readers/{rid}/forget", data={"csrf": csrf_of(step.text), "address": "zoe@x.com"}
    )
    assert wrong.status_code == 400 and "nothing was erased" in wrong.text
    with session_scope(rt.engine) as session:
        assert repository.get_by_email(session, email="zoe@example.com") is not None
    done = client.post(
        f"/admin/readers/{rid}/forget",
        data={"csrf": csrf_of(step.text), "address": " Zoe@Example.com "},
    )
    assert done.status_code == 303 and done.headers["location"] == "/admin/readers?done=forgotten"
    with session_scope(rt.engine) as session:
        row = session.get(Subscriber, rid)
        assert row is not None and row.email == f"erased-{rid}@erased.invalid" and not row.name
        everything = session.execute(select(AuditEvent)).scalars().all()
    assert all("zoe" not in (e.target + e.detail).lower() for e in everything)
    assert [e.action for e in audit_of(rt, rid)] == ["reader.forget", "reader.add"]
    again = add(client, email="zoe@example.com", consented="1", source="paper form")
    assert again.status_code == 400 and "suppressed" in again.text


def test_counts_per_status_on_the_front_page_link_to_the_list(
    rt: Runtime, client: TestClient
) -> None:
    add_reader(rt, "a@example.com", [])
    add_reader(rt, "b@example.com", [])
    add(client, email="p@example.com")
    home = client.get("/admin")
    assert home.headers["location"] == "/admin/editions"
    front = client.get(home.headers["location"]).text
    counts = front[front.index('id="reader-counts"') :]
    assert re.search(r'href="/admin/readers\?status=active">active: <span class="count">2<', counts)
    assert re.search(r'status=pending">pending: <span class="count">1<', counts)
    assert re.search(r'status=complained">complained: <span class="count">0<', counts)
    nav = front[: front.index("<main>")]
    for link in ("/admin/readers", "/admin/import", "/admin/audit", "/admin/operators"):
        assert f'href="{link}"' in nav
