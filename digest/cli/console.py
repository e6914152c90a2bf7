"""What the terminal shows, set up in one place: the consoles, logging and progress.

Why one module: Rich keeps a log line above a live progress bar only when the log
handler and the bar share one :class:`~rich.console.Console` (``err``); with two, the
line is glued onto the bar. And what suits a terminal (bars, colour, a width) garbles
a file: when standard error is not a terminal (``digest run > log 2>&1``, cron,
systemd) every stderr line is a plain record, ``2026-12-04T18:00:00Z INFO
digest.pipeline: message``, progress is a line every ~10 s, and neither stream carries
ANSI, carriage returns or padding (a command's own "error: …" line stays as it is, for
scripts). ``--log-format json`` makes each stderr line one JSON object (``ts``,
``level``, ``logger``, ``message`` and any extra fields), printed messages included.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any, cast

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from digest.common import redaction

LOG_FORMATS = ("text", "json")
ENV_LOG_FORMAT = "DIGEST_LOG_FORMAT"
PROGRESS_LOGGER = "digest.progress"  # progress lines: shown without --verbose
CLI_LOGGER = "digest.cli"  # messages printed on stderr, as JSON records
_OURS = "_digest_handler"  # marks the handler setup() installed (replaced, never stacked)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# A printed stderr line's level (as a JSON record) by how the line starts.
_ERRORS = ("error:", "feed error:", "database error:")
_WARNINGS = ("warning:", "incomplete:", "interrupted:", "SIGTERM", "SIGINT")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class _Settings:
    """What :func:`setup` chose; read at each write (test runners call it many times)."""

    handler: logging.Handler | None = None  # JSON: printed stderr lines become records
    live = False  # Rich bars on stderr (a terminal, text format)


def clean(text: str) -> str:
    """``text`` without ANSI sequences or control characters (tabs kept), for a file."""
    return _CONTROL.sub("", _ANSI.sub("", text))


class _Lines(io.TextIOBase):
    """The current ``sys.stdout``/``sys.stderr`` as the consoles' file, looked up at each
    write (a test runner swaps them). Not a terminal: whole lines without ANSI, carriage
    returns or trailing spaces; with ``--log-format json`` each stderr line becomes a
    record, so every stderr line is JSON."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._held = ""

    def _stream(self) -> IO[str]:
        stream = cast(IO[str], getattr(sys, self._name))
        if self._name == "stderr":  # a live bar's proxy would send it back here
            stream = getattr(stream, "rich_proxied_file", stream)
        return stream

    def isatty(self) -> bool:
        try:
            return self._stream().isatty()
        except ValueError:  # closed (the end of a test run)
            return False

    def write(self, text: str) -> int:
        records = _Settings.handler if self._name == "stderr" else None
        if records is None and self.isatty():
            return self._stream().write(text)
        *lines, self._held = (self._held + text).split("\n")
        for line in lines:
            line = clean(line).rstrip()  # carriage returns too
            if records is not None:
                _record(records, line)
            else:
                self._stream().write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream().flush()


def _record(handler: logging.Handler, line: str) -> None:
    """A printed stderr line as a record: "error: …" an ERROR, "incomplete: …" a WARNING."""
    if not line.strip():
        return
    level = logging.WARNING if line.startswith(_WARNINGS) else logging.INFO
    level = logging.ERROR if line.startswith(_ERRORS) else level
    line = line.removeprefix("error: ")  # the level says it
    handler.handle(logging.LogRecord(CLI_LOGGER, level, "", 0, line, None, None))


# soft_wrap: long lines (paths, server answers) stay whole for logs and grep; tables
# get room when the output is a file or a pipe (cron mail, CI logs), not 80 columns.
def _console(name: str) -> Console:
    lines = _Lines(name)
    width = None if lines.isatty() else 132  # each stream's own: a bar fits its terminal
    return Console(file=cast(IO[str], lines), soft_wrap=True, highlight=False, width=width)


out, err = _console("stdout"), _console("stderr")


def _utc(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _trace(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The record's traceback, or the redacted text the secrets' filter left instead."""
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or ""


class PlainFormatter(logging.Formatter):
    """``2026-12-04T18:00:00Z INFO digest.pipeline: message``; a record of several lines
    (a traceback) repeats the head on each, so every line greps and sorts alike."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if trace := _trace(self, record):
            text += "\n" + trace
        head = f"{_utc(record)} {record.levelname} {record.name}:"
        return "\n".join(f"{head} {clean(line).rstrip()}" for line in text.splitlines() or [""])


class JsonFormatter(logging.Formatter):
    """One JSON object per record, for log shippers: ts, level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data |= {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if trace := _trace(self, record):
            data["exception"] = trace
        return json.dumps(data, ensure_ascii=False, default=str)


class StderrHandler(logging.Handler):
    """Writes each formatted record to the current ``sys.stderr`` (looked up per record)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream = getattr(stream, "rich_proxied_file", stream)
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # logging must never take the command down
            self.handleError(record)


def setup(verbose: bool, log_format: str) -> None:
    """Configure logging and the consoles for this command (idempotent: a second call
    replaces the handler the first installed). A terminal with the text format gets
    Rich's handler on ``err`` and live bars; anything else plain or JSON lines."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    terminal = log_format == "text" and _Lines("stderr").isatty()
    handler: logging.Handler
    if terminal:
        handler = RichHandler(console=err, show_path=False, show_time=False, markup=False)
    else:
        handler = StderrHandler()
        handler.setFormatter(JsonFormatter() if log_format == "json" else PlainFormatter())
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.INFO)
    _Settings.live = terminal
    _Settings.handler = handler if log_format == "json" else None
    redaction.install()  # no URL credential, token or Bearer value in any line


def live() -> bool:
    """True when progress is drawn as Rich bars (else as plain lines every ~10 s)."""
    return _Settings.live


class RateColumn(ProgressColumn):
    """Items per second ("1,234/s"); blank until Rich has a speed."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "", style="progress.data.speed")


def make_progress(label: str, unit: str, *, total_known: bool) -> Progress:
    """A transient bar on ``err`` (the log handler's console, so log lines go above it):
    count of total, percentage, rate and time left; with no total a count and a rate."""
    columns: list[ProgressColumn] = (
        [TextColumn(label), BarColumn(), MofNCompleteColumn(), TaskProgressColumn()]
        if total_known
        else [SpinnerColumn(), TextColumn(label), TextColumn(f"{{task.completed:,.0f}} {unit}")]
    )
    columns += [RateColumn(), *([TimeRemainingColumn()] if total_known else [])]
    # stdout into the bar only when it is this terminal, not a file (digest run > out)
    return Progress(
        *columns, console=err, transient=True, redirect_stdout=_Lines("stdout").isatty()
    )


class Meter:
    """One stage's progress (send, import, fetch): a Rich bar, started at the first
    update (no "0/?" bar before the stage has begun), removed by :meth:`close`; or,
    off a terminal, a line at most every ``interval`` seconds through the log:
    "send: 5,000/20,000 (1,234/s, about 12 s left)". A context manager."""

    def __init__(
        self,
        name: str,
        label: str,
        unit: str,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.label, self.unit = name, label, unit
        self.interval, self.clock = interval, clock
        self.started = self.last = clock()
        self.bar: Progress | None = None

    def update(self, done: int, total: int | None = None) -> None:
        if live():
            if self.bar is None:
                self.bar = make_progress(self.label, self.unit, total_known=bool(total))
                self.bar.start()
                self.bar.add_task(self.name, total=total or None)
            self.bar.update(self.bar.task_ids[0], completed=done, total=total or None)
            return
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            rate = done / max(now - self.started, 1e-9)
            logging.getLogger(PROGRESS_LOGGER).info(
                self.line(done, total, rate),
                extra={"stage": self.name, "done": done, "total": total, "rate": round(rate, 1)},
            )

    def line(self, done: int, total: int | None, rate: float) -> str:
        """The plain progress line for ``done`` (of ``total``) at ``rate`` per second."""
        if not total:
            return f"{self.name}: {done:,} {self.unit} ({rate:,.0f}/s)"
        left = max(total - done, 0) / rate if rate > 0 else None
        when = "" if left is None else f", about {_duration(left)} left"
        return f"{self.name}: {done:,}/{total:,} ({rate:,.0f}/s{when})"

    def close(self) -> None:
        """Remove the bar (nothing stale stays on screen); safe to call twice."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> Meter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
