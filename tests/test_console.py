"""Issue 17, a terminal that reads well: one console for logs and progress, plain
timestamped lines off a terminal, ``--log-format json``, and ``[section]`` names kept.

Here: the console module itself (formats, progress lines, idempotent setup) and the
commands through Typer's runner. The real runs (``digest run > log 2>&1`` and in a
tmux pane, 20,000 readers) are in tests/test_console_runs.py."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from digest.cli import app, console
from tests.support import write_config

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
LOG_LINE = re.compile(rf"^{STAMP} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: .*\S$")
PROGRESS = re.compile(
    rf"^{STAMP} INFO digest\.progress: send: 5,000/20,000 \([\d,]+/s, about \d+ (s|min) left\)$"
)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Captured:
    """What reached sys.stderr (pytest's capture: a file, not a terminal)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def getvalue(self) -> str:
        return self.capsys.readouterr().err


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[_Captured]:
    """stderr as a file; logging set back to the text format afterwards."""
    yield _Captured(capsys)
    console.setup(False, "text")


def _invoke(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"DIGEST_SECRET_KEY": "k", **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.stdout, result.stderr


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_a_log_record_off_a_terminal_is_one_plain_timestamped_line(stderr: _Captured) -> None:
    console.setup(False, "text")
    logging.getLogger("digest.pipeline").warning("kept [transport] kind = %r\x1b[31m", "memory")
    (line,) = stderr.getvalue().splitlines()
    assert LOG_LINE.match(line), line
    assert line.endswith("WARNING digest.pipeline: kept [transport] kind = 'memory'")  # no ESC


def test_setup_twice_installs_one_handler(stderr: _Captured) -> None:
    for _ in range(3):
        console.setup(True, "text")
    logging.getLogger("digest.test").info("once")
    assert stderr.getvalue().count("once") == 1


def test_a_traceback_repeats_the_head_on_every_line(stderr: _Captured) -> None:
    console.setup(False, "text")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("digest.test").exception("failed")
    lines = stderr.getvalue().splitlines()
    assert len(lines) > 2 and all(LOG_LINE.match(x) for x in lines), lines
    assert lines[-1].endswith("ERROR digest.test: ValueError: boom")


def test_progress_off_a_terminal_is_a_line_at_most_every_ten_seconds(
    stderr: _Captured,
) -> None:
    console.setup(False, "text")
    clock = _Clock()
    meter = console.Meter("send", "Sending", "messages", clock=clock)
    for now, done in [(105.0, 2_000), (109.9, 4_000), (110.0, 5_000), (115.0, 7_000)]:
        clock.now = now
        meter.update(done, 20_000)
    clock.now = 120.0
    meter.update(9_000, 20_000)
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert PROGRESS.match(lines[0]), lines[0]
    assert lines[0].endswith("send: 5,000/20,000 (500/s, about 30 s left)")
    assert lines[1].endswith("send: 9,000/20,000 (450/s, about 24 s left)")


def test_progress_with_no_total_shows_count_and_rate_but_no_time_left(
    stderr: _Captured,
) -> None:
    console.setup(False, "text")
    clock = _Clock()
    meter = console.Meter("fetch", "Reading the feed", "comparisons", clock=clock)
    clock.now = 112.0
    meter.update(1_200)
    assert (
        stderr.getvalue()
        .splitlines()[0]
        .endswith("INFO digest.progress: fetch: 1,200 comparisons (100/s)")
    )


def test_json_records_carry_progress_fields_and_redact_secrets(stderr: _Captured) -> None:
    console.setup(False, "json")
    clock = _Clock()
    meter = console.Meter("send", "Sending", "messages", clock=clock)
    clock.now = 110.0
    meter.update(5_000, 20_000)
    logging.getLogger("digest.feeds").error("feed https://ann:hunter2@feed.example/x failed")
    progress, failure = (json.loads(x) for x in stderr.getvalue().splitlines())
    assert re.fullmatch(STAMP, progress["ts"])
    assert progress["level"] == "INFO" and progress["logger"] == "digest.progress"
    assert progress["message"] == "send: 5,000/20,000 (500/s, about 30 s left)"
    assert (progress["stage"], progress["done"], progress["total"]) == ("send", 5000, 20000)
    assert failure["level"] == "ERROR" and "hunter2" not in failure["message"]
    assert "feed.example" in failure["message"]


def test_the_bar_shows_count_percentage_rate_and_time_left() -> None:
    now = [0.0]
    bar = console.make_progress("Sending", "messages", total_known=True)
    bar.get_time = lambda: now[0]
    task = bar.add_task("send", total=20_000)
    bar.update(task, completed=1_000)
    now[0] = 10.0
    bar.update(task, completed=6_000)  # 5,000 in 10 s
    screen = Console(file=io.StringIO(), width=120, record=True)
    screen.print(bar.make_tasks_table(bar.tasks))
    shown = screen.export_text()
    assert shown.startswith("Sending ") and shown.rstrip().endswith("6000/20000  30% 500/s 0:00:28")
    assert bar.console is console.err  # the log handler's console: log lines go above it


def test_on_a_terminal_the_log_handler_keeps_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    try:
        console.setup(False, "text")
        assert console.live()
        logging.getLogger("digest.test").warning("resolved by [send] unknown_policy ([x])")
    finally:
        console.setup(False, "text")
    assert "resolved by [send] unknown_policy ([x])" in _flat(screen.getvalue())


def test_help_shows_config_names_in_brackets() -> None:
    code, approve, _ = _invoke("approve", "--help")
    assert code == 0 and "([edition] require_approval)" in _flat(approve)
    code, check, _ = _invoke("check-edition", "--help")
    assert code == 0 and "(default: [preflight] check_links)" in _flat(check)
    code, root, _ = _invoke("--help")
    assert code == 0 and "--log-format" in root and "DIGEST_LOG_FORMAT" in root
    assert "\x1b" not in approve + check + root


def test_an_error_naming_a_config_key_keeps_its_brackets(tmp_path: Path) -> None:
    config = write_config(tmp_path, send={"unknown_policy": "sometimes"})
    code, out, err = _invoke("--config", str(config), "status")
    assert code == 2 and out == ""
    (line,) = err.splitlines()  # the command's one line, as a script expects it
    assert line.startswith("error: configuration error: [send] key 'unknown_policy' in ")


def test_json_format_from_the_environment_makes_every_stderr_line_json(tmp_path: Path) -> None:
    code, out, err = _invoke(
        "--config", str(tmp_path / "missing.toml"), "status", env={"DIGEST_LOG_FORMAT": "json"}
    )
    assert code == 2 and out == ""
    records = [json.loads(line) for line in err.splitlines()]
    assert [r["level"] for r in records] == ["ERROR"]
    assert set(records[0]) >= {"ts", "level", "logger", "message"}
    assert records[0]["message"].startswith("configuration error: no config file at ")


def test_a_json_run_writes_only_json_on_stderr_and_the_summaries_on_stdout(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, database={"url": f"sqlite:///{tmp_path / 'digest.db'}"})
    assert _invoke("--config", str(config), "init")[0] == 0
    for name in ("ann", "bob", "cy"):
        assert _invoke("--config", str(config), "subscribers", "add", f"{name}@example.com")[0] == 0
    no_key: dict[str, str | None] = {"DIGEST_SECRET_KEY": None}  # so the run logs a warning
    code, out, err = _invoke("--config", str(config), "--log-format", "json", "run", env=no_key)
    assert code == 0, err
    records = [json.loads(line) for line in err.splitlines()]
    assert records and all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    assert all(re.fullmatch(STAMP, r["ts"]) for r in records)
    assert any(r["message"].startswith("DIGEST_SECRET_KEY is not set") for r in records)
    assert re.search(r"^Edition \S+: sent 3, failed 0, skipped 0, ", out, re.MULTILINE), out


def test_an_unknown_log_format_is_refused_naming_the_option() -> None:
    code, _, err = _invoke("--log-format", "xml", "status")
    assert code == 2 and "--log-format" in err and "'xml' is not one of" in _flat(err)
