"""The weekly job through the real ``digest`` command, as an operator runs it.

Subprocesses, a real SMTP server on loopback, SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.smtp_sink import SmtpSink
from tests.support import REQUIRED_HEADERS, SAMPLE_FEED, write_config

SAMPLE = json.loads(SAMPLE_FEED.read_text(encoding="utf-8"))
TITLES = [c["title"] for c in SAMPLE["comparisons"]]
REQUIRED = REQUIRED_HEADERS


def digest(
    config: Path, *args: str, db_url: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DIGEST_DATABASE_URL": db_url,
        "DIGEST_SECRET_KEY": "test-key",
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def parse(path: Path) -> EmailMessage:
    return message_from_bytes(path.read_bytes(), policy=policy.default)  # type: ignore[return-value]


def parts(message: EmailMessage) -> tuple[str, str]:
    assert message.get_content_type() == "multipart/alternative"
    text, html = list(message.iter_parts())
    assert text.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    return text.get_content(), html.get_content()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_quick_start_writes_one_message_per_subscriber_then_nothing(
    tmp_path: Path, db_url: str
) -> None:
    config = write_config(tmp_path)
    digest(config, "init", db_url=db_url)
    imported = digest(
        config,
        "subscribers",
        "import",
        str(SAMPLE_FEED.parent / "subscribers.csv"),
        "--consented",
        "--source",
        "sample list",
        db_url=db_url,
    )
    assert "Imported 5 new subscribers" in imported.stdout
    first = digest(config, "run", db_url=db_url)
    assert "sent 5" in first.stdout
    assert str(tmp_path / "outbox") in first.stdout.replace("\n", "")
    emls = sorted((tmp_path / "outbox").glob("*/*.eml"))
    assert len(emls) == 5
    assert len(list((tmp_path / "outbox").glob("*/preview.html"))) == 1
    recipients = set()
    for path in emls:
        message = parse(path)
        for name in REQUIRED:
            assert len(message.get_all(name, [])) == 1, (path.name, name)
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["List-Unsubscribe"].startswith("<https://digest.test.example/u/")
        text, html = parts(message)
        for title in TITLES:
            assert title in text
            assert title.replace("&", "&amp;") in html
        recipients.add(message["To"].addresses[0].addr_spec)
        assert all(len(line) <= 998 for line in path.read_bytes().split(b"\r\n"))
    assert len(recipients) == 5

    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "outbox").rglob("*")}
    second = digest(config, "run", db_url=db_url)
    assert "nothing new" in second.stdout.lower()
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "outbox").rglob("*")}
    assert after == before
    status = digest(config, "status", db_url=db_url)
    assert "sent" in status.stdout and "5 active" in status.stdout


def _hostile_feed(tmp_path: Path) -> Path:
    feed = json.loads(json.dumps(SAMPLE))
    first = feed["comparisons"][0]
    first["title"] = "<script>alert(1)</script> Claude vs Codestral"
    first["question"] = "Which one?\r\nBcc: victim@example.org"
    bad = json.loads(json.dumps(feed["comparisons"][1]))
    bad["id"] = "broken-one"
    bad["tools"][1]["pricing"] = "cheap"
    feed["comparisons"].insert(1, bad)
    path = tmp_path / "feed.json"
    path.write_text(json.dumps(feed), encoding="utf-8")
    return path


@pytest.mark.slow
def test_hostile_input_reaches_no_header_and_no_markup(tmp_path: Path, db_url: str) -> None:
    config = write_config(tmp_path, feed={"kind": "files", "path": str(_hostile_feed(tmp_path))})
    digest(config, "init", db_url=db_url)
    csv = tmp_path / "readers.csv"
    csv.write_text('email,name\neve@example.com,"Eve\r\nBcc: x@example.org"\n', encoding="utf-8")
    digest(config, "subscribers", "import", str(csv), "--consented", "--source", "t", db_url=db_url)
    result = digest(config, "run", db_url=db_url)
    assert "'broken-one'" in result.stdout and "pricing" in result.stdout
    assert "1 invalid" in result.stdout
    (path,) = (tmp_path / "outbox").glob("*/*.eml")
    raw = path.read_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in head and b"\r\nBcc" not in head
    message = parse(path)
    assert message.get_all("Bcc") is None
    assert message["To"].addresses[0].addr_spec == "eve@example.com"
    text, html = parts(message)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script> Claude vs Codestral" in text
    assert TITLES[2] in html  # the good comparisons around the bad one went out


@pytest.mark.slow
def test_bad_config_exits_2_with_the_key_named(tmp_path: Path) -> None:
    config = write_config(tmp_path, transport={"kind": "smtp", "hots": "x"})
    result = digest(config, "run", db_url=f"sqlite:///{tmp_path / 'x.db'}", check=False)
    assert result.returncode == 2
    assert "'hots'" in result.stderr and "Traceback" not in result.stderr
    missing = digest(tmp_path / "nope.toml", "run", db_url="sqlite://", check=False)
    assert missing.returncode == 2 and "no config file" in missing.stderr


@pytest.mark.slow
def test_smtp_kill_nine_halfway_then_resume(tmp_path: Path, db_url: str) -> None:
    connections = 4
    total = 2000
    with SmtpSink() as sink:
        config = write_config(
            tmp_path,
            transport={
                "kind": "smtp",
                "host": "127.0.0.1",
                "port": sink.port,
                "security": "none",
                "connections": connections,
            },
        )
        digest(config, "init", db_url=db_url)
        csv = tmp_path / "readers.csv"
        csv.write_text("email\n" + "".join(f"r{i}@example.com\n" for i in range(total)))
        digest(
            config, "subscribers", "import", str(csv), "--consented", "--source", "t", db_url=db_url
        )
        env = {**os.environ, "DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(config), "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while sink.handler.count() < total // 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = sink.handler.count()
        assert 0 < killed_at < total, killed_at

        resumed = digest(config, "send", db_url=db_url)
        counts = sink.handler.per_recipient()
        assert set(counts) == {f"r{i}@example.com" for i in range(total)}
        duplicates = sum(n - 1 for n in counts.values())
        assert duplicates <= connections, (duplicates, resumed.stdout)
        assert "is complete" in resumed.stdout
        again = digest(config, "send", db_url=db_url)
        assert "already sent" in again.stdout
        assert sum(sink.handler.per_recipient().values()) == total + duplicates


@pytest.mark.slow
def test_preview_writes_the_next_edition_and_never_sends(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'digest.db'}"
    config = write_config(tmp_path)
    digest(config, "init", db_url=db_url)
    digest(config, "subscribers", "add", "ada@example.com", "--name", "Ada", db_url=db_url)
    digest(config, "fetch", db_url=db_url)
    result = digest(config, "preview", "--out", str(tmp_path / "pv"), db_url=db_url)
    html = next((tmp_path / "pv").glob("*.html")).read_text(encoding="utf-8")
    text = next((tmp_path / "pv").glob("*.txt")).read_text(encoding="utf-8")
    message = parse(next((tmp_path / "pv").glob("*.eml")))
    for title in TITLES:
        assert title.replace("&", "&amp;") in html
        assert title in text
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Wrote" in result.stdout
    assert not (tmp_path / "outbox").exists()
    status = digest(config, "status", db_url=db_url)
    assert "No editions yet" in status.stdout  # preview composes nothing
