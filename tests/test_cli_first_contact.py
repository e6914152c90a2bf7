"""Issue 17, first contact: ``--version``, ``--config`` after the subcommand, ``status``
before ``init``, ``check`` without operators and ``preview --open`` on a headless server.
The ``digest`` command runs in this process (Typer's runner), SQLite in ``tmp_path``."""

from __future__ import annotations

import subprocess
import webbrowser
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from digest import __version__
from digest.cli import app
from digest.cli.common import config_to_front
from tests.support import write_config

Digest = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def digest(tmp_path: Path) -> Digest:
    """``digest ARGS`` exactly as given (no ``--config`` added); never a traceback."""
    env = {
        "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
        "DIGEST_SECRET_KEY": "k",
        "DIGEST_CONFIG": None,
        "COLUMNS": "200",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = CliRunner().invoke(app, list(args), env=env)
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        assert not crashed, repr(result.exception)
        return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)

    return run


def test_version_prints_the_version(digest: Digest) -> None:
    result = digest("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"digest {__version__}"


def test_config_after_the_subcommand_works_like_before(digest: Digest, config: Path) -> None:
    assert digest("init", "--config", str(config)).returncode == 0
    after = digest("status", "--config", str(config))
    before = digest("--config", str(config), "status")
    short = digest("status", "-c", str(config))
    joined = digest("status", f"--config={config}")
    assert after.returncode == before.returncode == short.returncode == joined.returncode == 0
    assert after.stdout == before.stdout == short.stdout == joined.stdout
    assert "Subscribers:" in after.stdout


def test_config_after_a_subcommand_group(digest: Digest, config: Path) -> None:
    assert digest("init", "-c", str(config)).returncode == 0
    result = digest("subscribers", "list", "--config", str(config))
    assert result.returncode == 0, result.stderr


def test_config_to_front_touches_only_the_config_tokens() -> None:
    assert config_to_front(["status", "--config", "x.toml"]) == ["--config", "x.toml", "status"]
    assert config_to_front(["a", "b", "--config=x"]) == ["--config=x", "a", "b"]
    assert config_to_front(["a", "--", "-c", "x"]) == ["a", "--", "-c", "x"]
    assert config_to_front(["a", "-c"]) == ["a", "-c"]  # no value: Click reports it


def test_status_before_init_says_to_run_init(digest: Digest, config: Path) -> None:
    result = digest("status", "--config", str(config))
    assert result.returncode == 2
    assert "run 'digest init'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "sqlite" not in result.stderr.lower()


def test_check_without_operators_does_not_claim_an_email(digest: Digest, tmp_path: Path) -> None:
    config = write_config(tmp_path, feed={"kind": "files", "path": str(tmp_path / "missing")})
    assert digest("-c", str(config), "init").returncode == 0
    for _ in range(4):  # enough failed polls for a feed incident
        digest("-c", str(config), "fetch")
    result = digest("-c", str(config), "check")
    assert result.returncode == 1  # the feed incident
    assert "Emailed the operators" not in result.stdout
    assert "No operators are configured to email ([operators] emails is empty)" in result.stdout
    assert "not emailed: needs attention: the feed" in result.stdout


def test_preview_open_without_a_browser_prints_the_path(
    digest: Digest, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webbrowser, "open", lambda *a, **k: False)
    assert digest("init", "-c", str(config)).returncode == 0
    assert digest("fetch", "-c", str(config)).returncode == 0
    out_dir = tmp_path / "preview"
    result = digest("preview", "--open", "--out", str(out_dir), "-c", str(config))
    assert result.returncode == 0, result.stderr
    html = next(out_dir.glob("*.html"))
    assert f"the preview is at {html.resolve()}" in result.stdout


def test_preview_open_when_the_browser_raises(
    digest: Digest, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> bool:
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "open", broken)
    assert digest("-c", str(config), "init").returncode == 0
    assert digest("-c", str(config), "fetch").returncode == 0
    out_dir = tmp_path / "preview"
    result = digest("-c", str(config), "preview", "--open", "--out", str(out_dir))
    assert result.returncode == 0, result.stderr
    assert "the preview is at" in result.stdout
