"""``digest edit`` end to end (issue 15, "Done means" 1): the real command in a
subprocess on SQLite with the sample feed and the outbox transport; the archive page
through the web app, the audit log read back from the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from digest import config as config_mod
from digest.config.runtime import Runtime
from digest.editions import lifecycle as editions
from digest.store import audit
from digest.store.db import session_scope
from digest.web.app import create_app
from subscribers import repository
from tests.support import SAMPLE_FEED, write_config

SAMPLE = json.loads(SAMPLE_FEED.read_text(encoding="utf-8"))["comparisons"]
IDS = [c["id"] for c in SAMPLE]
TITLES = {c["id"]: c["title"] for c in SAMPLE}
EXCLUDED = IDS[1]
ORDER = [i for i in IDS if i != EXCLUDED][::-1]
SUBJECT = "Editor's pick: the retrieval backend we would ship"
NOTE = "Hello **readers**,\nthis week we read [the Tern docs](https://tern.example/docs) twice.\n"
NOTE_HTML = '<strong>readers</strong>,\nthis week we read <a href="https://tern.example/docs"'
NOTE_TEXT = "this week we read the Tern docs (https://tern.example/docs) twice."
READERS = ("ada@example.com", "bob@example.com")
ENV = {"DIGEST_SECRET_KEY": "test-key", "LOGNAME": "ann", "COLUMNS": "200"}


class Desk:
    """A config in ``tmp_path`` and the ``digest`` command run against it."""

    def __init__(self, tmp_path: Path, **sections: Any) -> None:
        sections.setdefault("preflight", {"check_links": False})
        self.dir = tmp_path
        self.config = write_config(tmp_path, **sections)
        self.env = {**os.environ, **ENV, "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path}/digest.db"}

    def run(
        self, *args: str, code: int = 0, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "digest", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.dir,
            input=stdin,
            timeout=120,
        )
        assert result.returncode == code, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        return result

    def cli(self, *args: str, code: int = 0, stdin: str | None = None) -> Result:
        """The same command in this process (Typer's runner): for the many short
        calls of the error cases, each a second faster than a subprocess."""
        from digest.cli import app

        result = CliRunner().invoke(
            app, ["--config", str(self.config), *args], input=stdin, env=dict(self.env)
        )
        assert result.exit_code == code, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result

    def start(self) -> str:
        """init, two readers, fetch, compose; the key of the edition composed."""
        self.run("init")
        rt = self.runtime()
        try:
            with session_scope(rt.engine) as session:
                for email in READERS:
                    repository.add(session, email=email, now=rt.now())
        finally:
            rt.close()
        self.run("fetch")
        composed = self.run("compose").stdout
        key = composed.split("Edition ", 1)[1].split(":", 1)[0]
        assert key.startswith("20") and "composed" in composed
        return key

    def runtime(self) -> Runtime:
        environ = {k: v for k, v in self.env.items() if k.startswith("DIGEST_")}
        return Runtime.open(config_mod.load(self.config, environ=environ))

    def outbox(self) -> list[EmailMessage]:
        paths = sorted((self.dir / "outbox").glob("*/*.eml"))
        return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in paths]


def parts(message: EmailMessage) -> tuple[str, str]:
    text, html = (part.get_content().replace("\r\n", "\n") for part in message.iter_parts())
    return text, html


def assert_edited(text: str, html: str) -> None:
    """The edit as a reader sees it: the note, the order, the excluded one gone."""
    for body in (text, html):
        assert TITLES[EXCLUDED] not in body
        first, second = (
            body.index(TITLES[i].replace("&", "&amp;") if body is html else TITLES[i])
            for i in ORDER
        )
        assert first < second
    assert NOTE_TEXT in text and NOTE_HTML in html


@pytest.mark.slow
def test_edit_preview_send_archive_and_audit(tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    key = desk.start()
    (tmp_path / "note.md").write_text(NOTE, encoding="utf-8")
    edited = desk.run(
        "edit", key, "--exclude", EXCLUDED, "--order", ",".join(ORDER),
        "--note", "note.md", "--subject", SUBJECT,
    ).stdout  # fmt: skip
    assert edited.splitlines() == [
        f"Edition {key}, revision 1:",
        f"  excluded comparison {EXCLUDED}",
        f"  order: {', '.join(ORDER)}",
        f"  note set ({len(NOTE.strip())} characters)",
        f"  subject: {SUBJECT}",
    ]
    again = desk.run("edit", key, "--subject", SUBJECT).stdout
    assert again.strip() == f"Edition {key}: no change."
    shown = desk.run("edit", key).stdout
    assert f"3. {EXCLUDED}  {TITLES[EXCLUDED]}  (excluded)" in shown
    assert f"1. {ORDER[0]}" in shown and f"Subject: {SUBJECT}" in shown

    desk.run("preview", "--edition", key, "--out", "preview")
    preview = message_from_bytes(
        (tmp_path / "preview" / f"{key}.eml").read_bytes(), policy=policy.default
    )
    assert preview["Subject"] == SUBJECT
    assert_edited(*parts(preview))

    sent = desk.run("run").stdout
    assert "sent 2" in sent
    messages = desk.outbox()
    assert len(messages) == 2
    for message in messages:
        assert message["Subject"] == SUBJECT
        assert_edited(*parts(message))

    rt = desk.runtime()
    try:
        with TestClient(create_app(rt)) as client:
            page = client.get(f"/archive/{key}")
        assert page.status_code == 200
        html = page.text
        assert NOTE_HTML in html and TITLES[EXCLUDED] not in html
        assert html.index(TITLES[ORDER[0]]) < html.index(TITLES[ORDER[1]].replace("&", "&amp;"))
        with session_scope(rt.engine) as session:
            log = [
                (e.actor, e.via, e.action, e.detail)
                for e in audit.recent(session, target=f"edition:{key}")
            ]
    finally:
        rt.close()
    assert log == [
        ("cli:ann", "cli", "edition.edit", f"subject: {SUBJECT}"),
        ("cli:ann", "cli", "edition.edit", f"note set ({len(NOTE.strip())} characters)"),
        ("cli:ann", "cli", "edition.edit", f"order: {', '.join(ORDER)}"),
        ("cli:ann", "cli", "edition.edit", f"excluded comparison {EXCLUDED}"),
    ]

    late = desk.run("edit", key, "--subject", "Too late", code=1)
    assert late.stderr.strip() == (
        f"error: edition {key} has started sending: it cannot change any more; nothing was changed"
    )


@pytest.mark.slow
def test_an_edit_after_approval_withdraws_it(tmp_path: Path) -> None:
    desk = Desk(tmp_path, edition={"require_approval": True})
    key = desk.start()
    desk.run("approve", key)
    edited = desk.run("edit", key, "--subject", SUBJECT, "--by", "ann@desk").stdout
    assert f"  subject: {SUBJECT}" in edited
    assert (
        "The approval was withdrawn: it was for the version before this edit. "
        f"'digest approve {key}' approves this one." in edited
    )
    waiting = desk.run("run").stdout
    assert "awaits approval" in waiting and desk.outbox() == []
    desk.run("approve", key)
    desk.run("run")
    assert [m["Subject"] for m in desk.outbox()] == [SUBJECT, SUBJECT]
    rt = desk.runtime()
    try:
        with session_scope(rt.engine) as session:
            actions = [(e.actor, e.detail) for e in audit.recent(session, action="edition.edit")]
            edition = editions.get(session, key=key)
            assert edition is not None and edition.approved_at is not None
    finally:
        rt.close()
    assert ("ann@desk", "approval withdrawn (approve this version to send it)") in actions


@pytest.mark.slow
def test_bad_edits_exit_2_with_one_line_and_change_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    desk = Desk(tmp_path)
    key = desk.start()
    everything = ("--exclude", IDS[0], "--exclude", IDS[1], "--exclude", IDS[2])
    cases = [
        (("--exclude", "nope"), f"comparison 'nope' is not in edition {key}"),
        (("--note", "missing.md"), "cannot read the note missing.md: No such file or directory"),
        (("--sponsor-text", "Acme"), "a sponsor block needs both --sponsor-text and --sponsor-url"),
        (
            ("--sponsor-text", "Acme", "--sponsor-url", "javascript:alert(1)"),
            "the sponsor link must be an http(s) URL, not 'javascript:alert(1)'",
        ),
        (("--subject", "x" * 151), "the subject is 151 characters; the limit is 150"),
        (everything, f"edition {key} needs at least one comparison left in it"),
    ]
    for args, message in cases:
        assert desk.cli("edit", key, *args, code=2).stderr.strip() == f"error: {message}"
    unknown = desk.cli("edit", "2020-W01", "--subject", "x", code=2).stderr.strip()
    assert unknown == "error: there is no edition 2020-W01: 'digest status' lists them"
    shown = desk.cli("edit", key).stdout
    assert f"Edition {key} (composed, revision 0)" in shown and "(excluded)" not in shown

    note = desk.cli("edit", "next", "--note", "-", stdin="From *stdin*\n").stdout
    assert f"Edition {key}, revision 1:\n  note set (12 characters)" in note
    cleared = desk.cli("edit", key, "--clear-note").stdout
    assert "  note cleared" in cleared
