"""Nothing outside stalls the weekly edition (issue 12), through the real ``digest``
command: a feed server that trickles, one that sends 400 MB, a gzip bomb, SIGTERM
during the fetch. Servers on 127.0.0.1, SQLite, the outbox transport."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.feed_servers import MB, FeedServer, feed_server, trickle, zeros
from tests.support import write_config

pytestmark = pytest.mark.slow
RSS_LIMIT_KB = 200_000
# Runs the CLI in-process and reports the process's peak RSS (VmHWM) as it exits.
RSS_PROBE = """
import atexit, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("PEAK_RSS_KB=" + line.split()[1] + "\\n")
atexit.register(peak)
from digest.cli import main
sys.argv = ["digest", *sys.argv[1:]]
main()
"""


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with feed_server() as srv:
        yield srv


def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
        "DIGEST_SECRET_KEY": "test-key",
        "COLUMNS": "200",
    }


def digest(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(tmp_path / "config.toml"), *args],
        capture_output=True,
        text=True,
        env=env(tmp_path),
        timeout=timeout,
    )


def stored_week(tmp_path: Path, http_feed: dict[str, Any]) -> None:
    """A database holding the sample comparisons and one reader; then ``http_feed``."""
    write_config(tmp_path)
    for args in (("init",), ("subscribers", "add", "ada@example.com"), ("fetch",)):
        done = digest(tmp_path, *args)
        assert done.returncode == 0, done.stdout + done.stderr
    write_config(tmp_path, feed={"kind": "http", **http_feed})


def test_a_trickling_feed_cannot_stall_the_run(server: FeedServer, tmp_path: Path) -> None:
    stored_week(tmp_path, {"url": server.on("/feed", trickle(2.0)), "deadline_seconds": 3})
    started = time.monotonic()
    result = digest(tmp_path, "run", timeout=3 + 30)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert took < 3 + 30, took
    assert "sent 1" in result.stdout  # the stored comparisons went out
    assert len(list((tmp_path / "outbox").glob("*/*.eml"))) == 1
    error = " ".join(result.stderr.split())
    assert "feed error: feed http://127.0.0.1:" in error
    assert "deadline_seconds = 3 s" in error and "Traceback" not in result.stderr


def test_sigterm_during_the_fetch_ends_the_run(server: FeedServer, tmp_path: Path) -> None:
    stored_week(tmp_path, {"url": server.on("/feed", trickle(2.0)), "deadline_seconds": 600})
    run = subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(tmp_path / "config.toml"), "run"],
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not server.requests and time.monotonic() < deadline:
            assert run.poll() is None, run.communicate()
            time.sleep(0.05)
        time.sleep(1.0)  # well inside the trickle
        signalled = time.monotonic()
        run.send_signal(signal.SIGTERM)
        stdout, stderr = run.communicate(timeout=10)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert time.monotonic() - signalled < 10
    assert run.returncode == 3, stdout + stderr  # interrupted, resumable (README)
    error = " ".join(stderr.split())
    assert "stopped by a signal before the fetch finished" in error
    assert "nothing was composed or sent: run 'digest run' again" in error
    assert "Traceback" not in stderr and not (tmp_path / "outbox").exists()


@pytest.mark.parametrize("gzip", [False, True], ids=["400MB-body", "gzip-bomb"])
def test_huge_bodies_are_refused_in_little_memory(
    server: FeedServer, tmp_path: Path, gzip: bool
) -> None:
    url = server.on("/feed", zeros(400 * MB, gzip=gzip))
    write_config(tmp_path, feed={"kind": "http", "url": url})
    assert digest(tmp_path, "init").returncode == 0
    result = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, "--config", str(tmp_path / "config.toml"), "fetch"],
        capture_output=True,
        text=True,
        env=env(tmp_path),
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    error = " ".join(result.stderr.split())
    assert f"feed page {url} is larger than [feed] max_bytes = 20,000,000 bytes" in error
    assert ("once decompressed" in error) == gzip
    found = re.search(r"PEAK_RSS_KB=(\d+)", result.stderr)
    assert found is not None, result.stderr
    peak = int(found.group(1))
    print(f"peak RSS of 'digest fetch' ({'gzip bomb' if gzip else '400 MB body'}): {peak} kB")
    assert peak < RSS_LIMIT_KB, peak
