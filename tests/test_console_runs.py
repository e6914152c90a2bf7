"""Issue 17, done-means 2: ``digest run`` with 20,000 readers on the outbox transport,
once into a file (``> log 2>&1``: timestamped lines, no control bytes, no padding) and
once in a 120x40 tmux pane (no bar left on screen, none glued to a log line, each
stage's summary there). Real subprocesses; tmux missing: skipped with the reason,
but failed under CI=true (like the browser tests)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import write_config

pytestmark = pytest.mark.slow
READERS = 20_000
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
LOG_LINE = re.compile(rf"^{STAMP} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: .*\S$")
# The summaries, one or more lines per stage as it ends (digest/cli/output.py).
FETCH = re.compile(r"^Feed: \d+ comparisons read from \d+ document\(s\): \d+ new, \d+ updated")
COMPOSE = re.compile(r"^Edition \d{4}-W\d\d: composed \d{4}-W\d\d with \d+ comparisons\.$")
SEND = re.compile(rf"^Edition \d{{4}}-W\d\d: sent {READERS}, failed 0, skipped 0, ")
SUMMARY = re.compile(r"^(Feed: |Edition \d{4}-W\d\d[: ]|  \S|Outbox: \S)")
CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
BAR = re.compile(r"[━╸╺]|\d/\?|[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]")
TIMEOUT = 900.0  # bounds one run on a slow machine; never an assertion about speed


def _env() -> dict[str, str]:
    """This environment without any DIGEST_ setting (DIGEST_SECRET_KEY unset: the run
    logs a warning, a log line to check)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}


def _digest(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "digest", "--config", str(config), *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=_env(), timeout=TIMEOUT, cwd=config.parent
    )


def _config(folder: Path) -> Path:
    url = f"sqlite:///{folder / 'digest.db'}"
    outbox = {"kind": "outbox", "path": str(folder / "outbox")}
    return write_config(folder, database={"url": url}, transport=outbox)


@pytest.fixture(scope="module")
def readers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database with 20,000 active readers, imported through the CLI; copied per test."""
    folder = tmp_path_factory.mktemp("readers")
    config = _config(folder)
    assert _digest(config, "init").returncode == 0
    rows = "".join(f"reader{i}@example.com,Reader {i}\n" for i in range(READERS))
    (folder / "readers.csv").write_text("email,name\n" + rows, encoding="utf-8")
    done = _digest(config, "subscribers", "import", str(folder / "readers.csv"), "--consented",
                   "--source", "test list")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"Imported {READERS} new subscribers" in done.stdout
    return folder / "digest.db"


def _fresh(readers: Path, folder: Path) -> Path:
    shutil.copyfile(readers, folder / "digest.db")
    return _config(folder)


def _index(lines: list[str], pattern: re.Pattern[str]) -> int:
    found = [i for i, line in enumerate(lines) if pattern.match(line)]
    assert len(found) == 1, (pattern.pattern, lines)
    return found[0]


def test_run_into_a_file_writes_plain_timestamped_lines(readers: Path, tmp_path: Path) -> None:
    config = _fresh(readers, tmp_path)
    log = tmp_path / "log"
    with log.open("wb") as sink:
        command = [sys.executable, "-m", "digest", "--config", str(config), "run"]
        ran = subprocess.run(
            command, stdout=sink, stderr=sink, env=_env(), timeout=TIMEOUT, cwd=tmp_path
        )
    data = log.read_bytes()
    assert ran.returncode == 0, data.decode()
    assert not CONTROL.search(data), CONTROL.search(data)
    lines = [line for line in data.decode("utf-8").splitlines() if line]
    for line in lines:
        assert LOG_LINE.match(line) or SUMMARY.match(line), line
        assert line == line.rstrip(), f"padded: {line!r}"
    assert any(" WARNING digest.config.runtime: DIGEST_SECRET_KEY is not set" in x for x in lines)
    assert _index(lines, FETCH) < _index(lines, COMPOSE) < _index(lines, SEND)
    status = _digest(config, "status")  # tables into a pipe: no ANSI, no padding
    assert status.returncode == 0 and "Editions" in status.stdout
    assert not CONTROL.search(status.stdout.encode())
    assert all(line == line.rstrip() for line in status.stdout.splitlines())


def _tmux_or_skip() -> str:
    tmux = shutil.which("tmux")
    if tmux is None:
        reason = "tmux is not installed (apt-get install tmux)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the terminal test cannot run: {reason}")
        pytest.skip(reason)
    return tmux


def test_run_in_a_terminal_leaves_no_bar_and_no_glued_line(readers: Path, tmp_path: Path) -> None:
    tmux = [_tmux_or_skip(), "-L", f"digest-test-{os.getpid()}", "-f", os.devnull]
    config = _fresh(readers, tmp_path)
    script = tmp_path / "run.sh"
    script.write_text(
        f"cd {shlex.quote(str(tmp_path))}\n"
        f"{shlex.quote(sys.executable)} -m digest --config {shlex.quote(str(config))} run\n"
        'echo "digest-exit=$?"\nsleep 600\n',
        encoding="utf-8",
    )
    start = ["new-session", "-d", "-x", "120", "-y", "40", f"sh {shlex.quote(str(script))}"]
    subprocess.run([*tmux, *start], check=True, env=_env(), timeout=30)
    try:
        screen = ""
        deadline = time.monotonic() + TIMEOUT
        while "digest-exit=" not in screen and time.monotonic() < deadline:
            time.sleep(1)
            shot = [*tmux, "capture-pane", "-p", "-S", "-"]
            screen = subprocess.run(shot, capture_output=True, text=True, timeout=30).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)
    assert "digest-exit=0" in screen, screen
    lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
    for line in lines:  # the bars were removed when their stage ended; no log line on one
        assert not BAR.search(line), f"a bar left on screen: {line!r}\n{screen}"
    assert any(line.startswith("WARNING  DIGEST_SECRET_KEY is not set") for line in lines)
    assert _index(lines, FETCH) < _index(lines, COMPOSE) < _index(lines, SEND)
