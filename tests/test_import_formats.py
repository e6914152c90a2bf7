"""Issue 15: importing what other services export, through the real ``digest`` command
(subprocesses, a real SQLite database) and the desk's mapping form (TestClient).

Sample exports in ``tests/data/imports/``: a Mailchimp audience export (its three
files), Substack, Buttondown, Ghost and listmonk exports, and a CSV of no known format.
"""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from digest.store.db import make_engine, session_scope
from digest.store.desk_models import AuditEvent
from digest.web.app import create_app
from subscribers import consent
from subscribers.models import Subscriber, Suppression
from tests.support import write_config
from tests.test_admin import csrf_of, login, open_runtime

DATA = Path(__file__).parent / "data" / "imports"
SUBSCRIBED = DATA / "subscribed_members_export_1a2b3c4d5e.csv"
UNSUBSCRIBED = DATA / "unsubscribed_members_export_1a2b3c4d5e.csv"
CLEANED = DATA / "cleaned_members_export_1a2b3c4d5e.csv"
UNKNOWN = DATA / "newsletter-tool.csv"
Digest = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'digest.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def digest(tmp_path: Path, db: Engine) -> Digest:
    """The ``digest`` command, run in this process (Typer's runner) against a config in
    ``tmp_path``: the same code as a subprocess, without a second of start-up per call."""
    from digest.cli import app

    config = write_config(tmp_path)
    env = {"DIGEST_DATABASE_URL": str(db.url), "DIGEST_SECRET_KEY": "k", "COLUMNS": "200"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = CliRunner().invoke(app, ["--config", str(config), *args], env=env)
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        assert not crashed, repr(result.exception)
        return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)

    assert run("init").returncode == 0
    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def readers(db: Engine) -> dict[str, tuple[str, str]]:
    with session_scope(db) as session:
        return {s.email: (s.status, s.name) for s in session.execute(select(Subscriber)).scalars()}


def suppressed(db: Engine, *emails: str) -> dict[str, str]:
    """``{email: reason}`` for those of ``emails`` on the suppression list."""
    with session_scope(db) as session:
        found = {s.email_hash: s.reason for s in session.execute(select(Suppression)).scalars()}
    return {e: str(found[consent.email_hash(e)]) for e in emails if consent.email_hash(e) in found}


def audit_rows(db: Engine) -> list[tuple[str, str, str, str]]:
    with session_scope(db) as session:
        rows = session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars()  # type: ignore[arg-type]
        return [(e.via, e.action, e.target, e.detail) for e in rows]


def test_mailchimp_audience_export_names_joined_and_unsubscribes_suppressed(
    digest: Digest, db: Engine, tmp_path: Path
) -> None:
    out = ok(digest("subscribers", "import", str(SUBSCRIBED)))
    assert f"{SUBSCRIBED}:4: 'not-an-address' is not a valid address" in out  # line, skipped
    assert (
        "Mailchimp export (subscribed members): 4 rows → 3 new readers (3 active), 1 error" in out
    )
    assert readers(db) == {
        "ada@example.com": ("active", "Ada Lovelace"),
        "grace@example.com": ("active", "Grace Hopper"),  # its unknown TIMEZONE is dropped
        "linus@example.com": ("active", "Linus"),
    }

    out = ok(digest("subscribers", "import", str(UNSUBSCRIBED)))
    assert "Mailchimp export (unsubscribed members): 3 rows → 3 suppressions" in out
    assert "ada@example.com: was active; now unsubscribed and suppressed" in out
    out = ok(digest("subscribers", "import", str(CLEANED)))
    assert "Mailchimp export (cleaned members): 1 row → 1 suppression" in out

    gone = ("gone@example.com", "left@example.com", "bounced@example.com")
    assert not set(gone) & set(readers(db))  # suppressed only: never made readers
    assert readers(db)["ada@example.com"][0] == "unsubscribed"
    assert suppressed(db, "ada@example.com", *gone) == {
        "ada@example.com": "unsubscribed",
        "gone@example.com": "unsubscribed",
        "left@example.com": "unsubscribed",
        "bounced@example.com": "bounced",
    }
    listed = ok(digest("subscribers", "list", "--status", "active"))
    assert "grace@example.com" in listed and "ada@example.com" not in listed

    # No import brings them back: the subscribed file again, and our own format as active.
    again = ok(digest("subscribers", "import", str(SUBSCRIBED)))
    assert "ada@example.com skipped: suppressed (unsubscribed)" in again
    ours = tmp_path / "ours.csv"
    ours.write_text("email,status\ngone@example.com,active\nbounced@example.com,\n")
    out = ok(digest("subscribers", "import", str(ours), "--consented", "--source", "x"))
    assert "digest CSV: 2 rows → 2 already suppressed" in out
    assert readers(db)["ada@example.com"][0] == "unsubscribed"
    assert not set(gone) & set(readers(db))
    refused = digest("subscribers", "add", "gone@example.com")
    assert refused.returncode == 2 and "is suppressed (unsubscribed)" in refused.stderr

    imports = [r for r in audit_rows(db) if r[1] == "subscribers.import"]
    assert imports[1] == (
        "cli",
        "subscribers.import",
        f"import:{UNSUBSCRIBED.name}",
        "Mailchimp export (unsubscribed members): 3 rows → 3 suppressions",
    )


@pytest.mark.parametrize(
    ("name", "label", "active", "blocked"),
    [
        ("substack-subscribers.csv", "Substack export", {"reader@example.com": "Rea Der",
         "paid@example.com": ""}, {"quiet@example.com": "unsubscribed"}),
        ("buttondown-export.csv", "Buttondown export", {"bd.regular@example.com": ""},
         {"bd.unsub@example.com": "unsubscribed", "bd.bounce@example.com": "bounced"}),
        ("ghost-members.csv", "Ghost members export", {"gh.member@example.com": "Ghost Member"},
         {"gh.off@example.com": "unsubscribed", "gh.deleted@example.com": "unsubscribed"}),
        ("listmonk-subscribers.csv", "listmonk export", {"lm.ok@example.com": "Lm Ok"},
         {"lm.blocked@example.com": "unsubscribed"}),
    ],
)  # fmt: skip
def test_each_service_export_is_recognised_and_its_unsubscribes_suppressed(
    digest: Digest,
    db: Engine,
    name: str,
    label: str,
    active: dict[str, str],
    blocked: dict[str, str],
) -> None:
    out = ok(digest("subscribers", "import", str(DATA / name)))
    assert f"{label}: " in out and f"{len(blocked)} suppression" in out
    held = readers(db)
    assert {e: n for e, (s, n) in held.items() if s == "active"} == active
    assert not set(blocked) & set(held)  # suppressed, never readers
    assert suppressed(db, *blocked) == blocked
    if name.startswith("buttondown"):
        assert held["bd.new@example.com"][0] == "pending"  # "unactivated": must confirm


def test_an_unknown_csv_needs_a_mapping_then_imports_with_its_bad_row_reported(
    digest: Digest, db: Engine
) -> None:
    refused = digest("subscribers", "import", str(UNKNOWN))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: not a recognised export and no 'email' column (found headers: 'E-Mail', "
        "'Full Name', 'Interests', 'Signed up'); say which column is which with "
        "--map email=COLUMN (also name=, categories=)"
    ]
    wrong = digest("subscribers", "import", str(UNKNOWN), "--map", "email=Mail")
    assert wrong.returncode == 2 and "the file has no column 'mail'" in wrong.stderr
    forced = digest("subscribers", "import", str(UNKNOWN), "--format", "mailchimp")
    assert forced.returncode == 2 and "no 'email address' column" in forced.stderr
    assert readers(db) == {}

    args = ["--map", "email=e-mail", "--map", "name=Full Name", "--map", "categories=Interests"]
    out = ok(
        digest("subscribers", "import", str(UNKNOWN), *args, "--consented", "--source", "fair")
    )
    assert f"{UNKNOWN}:3: 'not an address' is not a valid address" in out
    assert "CSV with a column mapping: 3 rows → 2 new readers (2 active), 1 error" in out
    assert readers(db) == {
        "first@example.com": ("active", "First Reader"),
        "second@example.com": ("active", "Second Reader"),
    }
    with session_scope(db) as session:
        first = session.execute(select(Subscriber).where(Subscriber.email == "first@example.com"))
        assert first.scalar_one().categories == ["Research", "Policy"]


def test_add_remove_and_forget_are_audited_by_reader_id_never_by_address(
    digest: Digest, db: Engine
) -> None:
    ok(digest("subscribers", "add", "kim@example.com"))
    with session_scope(db) as session:
        kim = session.execute(select(Subscriber)).scalar_one().id
    ok(digest("subscribers", "remove", "kim@example.com"))
    ok(digest("subscribers", "remove", "kim@example.com"))  # nothing changed: not audited
    ok(digest("subscribers", "forget", "kim@example.com"))
    rows = audit_rows(db)
    assert [(v, a, t) for v, a, t, _ in rows] == [
        ("cli", "subscribers.add", f"reader:{kim}"),
        ("cli", "subscribers.remove", f"reader:{kim}"),
        ("cli", "subscribers.forget", f"reader:{kim}"),
    ]
    assert not any("kim" in " ".join(r) for r in rows)


def test_the_desk_maps_an_unknown_csv_previews_its_first_rows_and_imports(
    tmp_path: Path,
) -> None:
    rt = open_runtime(tmp_path)
    with TestClient(create_app(rt), follow_redirects=False) as client:
        login(client)
        page = client.get("/admin/import")
        assert page.status_code == 200 and 'type="file"' in page.text
        csrf = csrf_of(page.text)
        files = {"file": (UNKNOWN.name, UNKNOWN.read_bytes(), "text/csv")}
        answer = client.post("/admin/import/preview", data={"csrf": csrf}, files=files)
        assert answer.status_code == 200
        assert "Not a recognised export" in answer.text
        assert '<option value="E-Mail">E-Mail</option>' in answer.text  # the mapping form
        assert 'id="preview"' not in answer.text
        content = re.search(r'name="content" value="([^"]+)"', answer.text)
        assert content and base64.b64decode(content[1]) == UNKNOWN.read_bytes()

        form = {"csrf": csrf, "filename": UNKNOWN.name, "content": content[1]}
        form |= {"map_email": "E-Mail", "map_name": "Full Name"}
        answer = client.post("/admin/import/preview", data=form, files={"x": ("", b"")})
        assert answer.status_code == 200, answer.text
        table = answer.text.split('id="preview"')[1].split("</table>")[0]
        assert "first@example.com" in table and "First Reader" in table and "pending" in table
        assert "second@example.com" in table
        assert "line 3: &#39;not an address&#39; is not a valid address" in answer.text
        assert readers(rt.engine) == {}  # a preview writes nothing

        answer = client.post("/admin/import", data=form, files={"x": ("", b"")})
        assert answer.status_code == 200
        summary = "CSV with a column mapping: 3 rows → 2 new readers (2 pending), 1 error"
        assert summary in answer.text
        assert f"{UNKNOWN.name} line 3: &#39;not an address&#39;" in answer.text
    assert readers(rt.engine) == {
        "first@example.com": ("pending", "First Reader"),
        "second@example.com": ("pending", "Second Reader"),
    }
    assert audit_rows(rt.engine)[-1] == (
        "desk",
        "subscribers.import",
        f"import:{UNKNOWN.name}",
        summary,
    )
    rt.close()


def test_the_desk_recognises_a_mailchimp_unsubscribed_export_and_suppresses_it(
    tmp_path: Path,
) -> None:
    rt = open_runtime(tmp_path)
    with TestClient(create_app(rt), follow_redirects=False) as client:
        login(client)
        csrf = csrf_of(client.get("/admin/import").text)
        files = {"file": (UNSUBSCRIBED.name, UNSUBSCRIBED.read_bytes(), "text/csv")}
        answer = client.post("/admin/import/preview", data={"csrf": csrf}, files=files)
        assert "Mailchimp export (unsubscribed members), 3 rows" in answer.text
        assert "suppressed (unsubscribed)" in answer.text
        answer = client.post("/admin/import", data={"csrf": csrf}, files=files)
        assert "Mailchimp export (unsubscribed members): 3 rows → 3 suppressions" in answer.text
        forged = client.post("/admin/import", data={"csrf": "0" * 64}, files=files)
        assert forged.status_code == 403
    assert readers(rt.engine) == {}
    assert len(suppressed(rt.engine, "gone@example.com", "ada@example.com")) == 2
    rt.close()
