"""``digest subscribers …`` through the real command (subprocesses), SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import write_config

Digest = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def digest(tmp_path: Path, db_url: str) -> Digest:
    config = write_config(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k"}
        return subprocess.run(
            [sys.executable, "-m", "digest", "--config", str(config), *args],
            capture_output=True,
            text=True,
            env={**env, "COLUMNS": "200"},
            timeout=120,
        )

    assert run("init").returncode == 0
    return run


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _usage(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert text in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line


@pytest.mark.slow
def test_add_remove_and_suppression(digest: Digest) -> None:
    out = _ok(digest("subscribers", "add", "Ada@Example.com", "--name", "Ada", "--category", "x"))
    assert "Added ada@example.com." in out
    assert "already a subscriber (active)" in _ok(digest("subscribers", "add", "ada@example.com"))
    assert "Unsubscribed ada@example.com" in _ok(digest("subscribers", "remove", "ada@example.com"))
    assert "already unsubscribed" in _ok(digest("subscribers", "remove", "ada@example.com"))
    _usage(digest("subscribers", "add", "ada@example.com"), "is suppressed (unsubscribed)")
    out = _ok(digest("subscribers", "remove", "eve@example.com"))
    assert "was not a subscriber; it is now suppressed" in out
    _usage(digest("subscribers", "add", "eve@example.com"), "is suppressed (unsubscribed)")
    _usage(digest("subscribers", "add", "not-an-address"), "not a valid address")
    _usage(digest("subscribers", "remove", "nope"), "not a valid address")
    data = json.loads(_ok(digest("subscribers", "export-data", "ada@example.com")))
    assert [e["action"] for e in data["consent_log"]] == ["subscribed", "unsubscribed"]
    assert {e["source"] for e in data["consent_log"]} == {"cli"}
    assert data["subscriber"]["categories"] == ["x"]


@pytest.mark.slow
def test_import_export_forget_and_export_data(digest: Digest, tmp_path: Path) -> None:
    csv = tmp_path / "list.csv"
    csv.write_text(
        "email,name,status\nada@example.com,Ada,\nbad,x,\nADA@example.com,,\n"
        "gone@example.com,G,unsubscribed\n",
        encoding="utf-8",
    )
    _usage(digest("subscribers", "import", str(csv), "--consented"), "needs --source")
    _usage(digest("subscribers", "import", str(tmp_path / "missing.csv")), "cannot read")
    out = _ok(digest("subscribers", "import", str(csv), "--consented", "--source", "form 2025"))
    assert f"{csv}:3:" in out and "not a valid address" in out
    assert f"{csv}:4: ada@example.com: merged into line 2" in out
    assert "Imported 2 new subscribers" in out and "(1 active, 1 unsubscribed)" in out
    out = _ok(digest("subscribers", "import", str(csv)))
    assert f"{csv}:5: gone@example.com skipped: suppressed (unsubscribed)" in out
    exported = _ok(digest("subscribers", "export")).splitlines()
    assert exported[0] == "email,name,categories,status,created_at,time_zone"
    assert [line.split(",")[0] for line in exported[1:]] == ["ada@example.com", "gone@example.com"]

    data = json.loads(_ok(digest("subscribers", "export-data", "ADA@example.com")))
    assert data["email"] == "ada@example.com" and data["subscriber"]["status"] == "active"
    assert "form 2025" in data["consent_log"][0]["detail"]
    assert data["suppression"] is None and data["deliveries"] == []

    out = _ok(digest("subscribers", "forget", "ada@example.com"))
    assert "Erased ada@example.com" in out and "stays suppressed" in out
    assert "Nothing to erase" in _ok(digest("subscribers", "forget", "ada@example.com"))
    assert "Nothing to erase" in _ok(digest("subscribers", "forget", "who@example.com"))
    _usage(digest("subscribers", "forget", "nope"), "not a valid address")
    data = json.loads(_ok(digest("subscribers", "export-data", "ada@example.com")))
    assert data["subscriber"] is None and data["suppression"]["reason"] == "erased"
    unknown = digest("subscribers", "export-data", "who@example.com")
    assert json.loads(_ok(unknown))["consent_log"] == []
    assert "Nothing is held" in unknown.stderr
