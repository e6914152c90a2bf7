"""Child processes for the benchmarks: timed runs with their peak RSS, and the
loopback servers measured against (Postfix's ``smtp-sink``, the fake provider).

Peak RSS comes from ``wait4``'s rusage of that one child (``ru_maxrss``, KiB on
Linux): the high-water mark of the sending process itself, not of its parent.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
_SEND_LINE = re.compile(
    r"sent (\d+), failed (\d+), skipped (\d+), retried later (\d+); ([\d.]+) s, (\d+) messages/s"
)


@dataclass(frozen=True, slots=True)
class Finished:
    """A child that ran to its end: wall time, peak RSS and what it printed."""

    args: tuple[str, ...]
    returncode: int
    wall: float
    max_rss_mb: float
    stdout: str
    stderr: str

    def check(self) -> Finished:
        if self.returncode != 0:
            raise RuntimeError(
                f"{' '.join(self.args)} exited {self.returncode}:\n{self.stdout}\n{self.stderr}"
            )
        return self


def run(args: Sequence[str], *, env: dict[str, str], cwd: Path | None = None) -> Finished:
    """Run ``args`` to its end; measure wall time and the child's own peak RSS.

    The peak is the program's ``VmHWM`` (its address space's high-water mark),
    read every 10 ms while it runs. Not ``ru_maxrss``: that also counts the copy of
    this (benchmark) process the child was forked as before it exec'ed, which after
    seeding 100,000 readers in process is larger than the sender itself (134 MB
    reported for a sender whose own peak was 106 MB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=cwd)
        peak_kb = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_kb = max(peak_kb, _high_water_kb(proc.pid))
            time.sleep(0.01)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Finished(
            tuple(args),
            proc.returncode,
            wall,
            (peak_kb or usage.ru_maxrss) / 1024,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )


def _high_water_kb(pid: int) -> int:
    """``VmHWM`` of a running process in kB (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def digest_command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "digest", "--config", str(config), *args]


@dataclass(frozen=True, slots=True)
class SendLine:
    """The summary line ``digest send`` prints (its own clock: plan + send + record)."""

    sent: int
    failed: int
    skipped: int
    seconds: float
    rate: float  # printed as a whole number, from the unrounded elapsed time


def send_lines(stdout: str) -> list[SendLine]:
    return [
        SendLine(int(m[1]), int(m[2]), int(m[3]), float(m[5]), float(m[6]))
        for m in _SEND_LINE.finditer(stdout)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited early with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a server this module started (by its own pid), then reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tool(name: str) -> str:
    """The path of a Postfix test tool; a clear error when the package is missing."""
    found = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else ""
    )
    if not found:
        raise SystemExit(
            f"{name} not found: install Debian's postfix package (apt-get install postfix); "
            "only its smtp-sink and smtp-source test tools are used"
        )
    return found


@contextmanager
def smtp_sink() -> Iterator[int]:
    """Postfix's ``smtp-sink`` on a loopback port: accepts and discards every message."""
    port = free_port()
    args = [tool("smtp-sink")]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]  # smtp-sink refuses to run as root
    proc = subprocess.Popen(
        [*args, f"{HOST}:{port}", "256"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        stop(proc)


def smtp_source(port: int, *, sessions: int, messages: int, message_file: Path) -> float:
    """``smtp-source`` pushing ``messages`` copies of ``message_file`` over ``sessions``
    connections kept open (``-d``); returns messages per second (wall clock)."""
    args = [
        tool("smtp-source"),
        "-d",
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-F",
        str(message_file),
        "-f",
        "digest@verdicts.example.com",
        "-t",
        "reader@example.com",
        f"{HOST}:{port}",
    ]
    result = run(args, env=dict(os.environ)).check()
    return messages / result.wall


@contextmanager
def fake_provider() -> Iterator[str]:
    """``benchmarks.fake_provider`` under uvicorn in its own process; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.fake_provider:app",
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield f"http://{HOST}:{port}"
    finally:
        stop(proc)
