"""Tracked-link redirects under load: ``GET /r/{token}/{ref}`` at a fixed rate.

    python -m benchmarks.redirect [--rate 500] [--seconds 20] [--readers 2000]
                                  [--connections 64] [--json FILE]

Starts ``digest serve`` (the real command: uvicorn, one process) on loopback over
a SQLite file seeded by :mod:`benchmarks.fixture` (readers, the sample feed, one
composed edition), then sends GETs on an open-loop schedule: request *i* leaves at
``start + i / rate`` whether or not the earlier ones were answered, so a slow
server cannot slow the client down and hide its own latency (no coordinated
omission). Latency runs from that scheduled time to the whole answer; "from
send" runs from the moment the client actually sent it. The client is a pool of
threads, each with one kept-alive ``http.client`` connection: the lighter client
on a 2-core machine it shares with the server (one request at a time against
this server, about 600/s against httpx's async client's 430/s). The client's
garbage collector is off while timing: one of its full collections took 108 ms.

Links: every comparison of the edition and each of its tools; refs: one
pseudonym per reader, sent a day ago, and one request in ten the web copy's
``web``, in a seeded random order (so some readers hit three links within seconds
and are moved to ``scanner``: the counts' rescan path runs too). A warm-up pass
over every link comes first (not timed, counted). Then the server gets SIGTERM,
its shutdown writes the pending counts, and the ``click`` + ``scanner`` counts
stored must equal the 302s answered: no click lost. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import fixture, procs
from benchmarks.fixture import Instance
from digest.editions import lifecycle as editions
from digest.engagement.tokens import EngagementTokens
from digest.store.db import session_scope

ENV = {"DIGEST_SECRET_KEY": fixture.SECRET_KEY}


@dataclass
class Outcome:
    status: int
    latency: float  # seconds, from the scheduled time
    service: float  # seconds, from the actual send


def main() -> None:
    args = _parse()
    root = Path(tempfile.mkdtemp(prefix="digest-redirect-"))
    try:
        instance, warm, paths = _prepare(root, args.readers)
        report = _measure(instance, warm, paths, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(_markdown(report, args))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if report["stored"] != report["redirects"]:
        raise SystemExit(f"lost counts: {report['redirects']} redirects, {report['stored']} stored")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tracked-link redirects under load.")
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s (default 500)")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration (default 20)")
    parser.add_argument("--readers", type=int, default=2000, help="distinct refs (2,000)")
    parser.add_argument("--connections", type=int, default=16, help="client connections")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    return parser.parse_args()


def _prepare(root: Path, readers: int) -> tuple[Instance, list[str], list[str]]:
    """Seed readers and an edition; return the instance, the warm-up paths (every
    link once) and the paths to time."""
    now = datetime.now(UTC)
    fixture.write_feed(root / "feed.json", now)
    fixture.write_config(root, transport={"kind": "outbox", "path": "outbox"}, send={})
    instance = Instance(root, f"sqlite:///{root / 'digest.db'}")
    fixture.seed(instance.db_url, readers, now)
    key = fixture.compose(instance)
    rt = fixture.runtime(instance)
    try:
        tokens = EngagementTokens(rt.signer())
        with session_scope(rt.engine) as session:
            edition = editions.get(session, key=key)
            assert edition is not None
            comparisons = editions.comparisons_of(session, edition=edition)
        links = [
            tokens.link(key, c.id, target)
            for c in comparisons
            for target in ["c", *(f"t-{t['key']}" for t in c.tools)]
        ]
        sent = now - timedelta(days=1)
        refs = [tokens.ref(key, n, sent, individual=False) for n in range(1, readers + 1)]
    finally:
        rt.close()
    pick = random.Random(16)
    paths = [
        f"/r/{pick.choice(links)}/{'web' if pick.random() < 0.1 else pick.choice(refs)}"
        for _ in range(50_000)
    ]
    return instance, [f"/r/{link}/web" for link in links], paths


def _measure(
    instance: Instance, warm: list[str], paths: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    port = procs.free_port()
    env = instance.environ({**os.environ, **ENV})
    command = procs.digest_command(instance.config, "serve", "--port", str(port))
    log = (instance.root / "serve.log").open("wb")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        procs.wait_for_port(port, server)
        first = _Client(port)
        warmed = [_one(first, path, time.perf_counter()).status for path in warm]
        # The client's own full collections (it seeded the readers: ~100 ms each)
        # would show as server latency: none while timing.
        gc.collect()
        gc.freeze()
        gc.disable()
        cpu_before = _cpu_seconds(server.pid), _cpu_seconds(os.getpid())
        started = time.perf_counter()
        outcomes = _fire(port, paths, args.rate, args.seconds, args.connections)
        wall = time.perf_counter() - started
        cpu = [
            now - before
            for now, before in zip(
                (_cpu_seconds(server.pid), _cpu_seconds(os.getpid())),
                cpu_before,
                strict=True,
            )
        ]
    finally:
        gc.enable()
        procs.stop(server)
        log.close()
    if server.returncode not in (0, -15, None):  # uvicorn re-raises SIGTERM after shutdown
        raise SystemExit(f"digest serve exited {server.returncode}; see its log")
    stored = _stored(instance.db_url)
    timed = [o for o in outcomes if o.status == 302]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "versions": ", ".join(
            f"{name} {metadata.version(name)}"
            for name in ("uvicorn", "httptools", "fastapi", "starlette", "sqlalchemy")
        ),
        "requests": len(outcomes),
        "warm_up": len(warmed),
        "rate": len(outcomes) / wall,
        "redirects": sum(s == 302 for s in warmed) + len(timed),
        "errors": len(outcomes) - len(timed),
        "stored": stored,
        "server_cpu_percent": 100 * cpu[0] / wall,
        "client_cpu_percent": 100 * cpu[1] / wall,
        "latency_ms": _percentiles([o.latency for o in timed]),
        "service_ms": _percentiles([o.service for o in timed]),
    }


class _Client(threading.local):
    """One kept-alive connection per worker thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None


def _fire(port: int, paths: list[str], rate: float, seconds: float, workers: int) -> list[Outcome]:
    """Open loop: request i is handed to the pool at start + i / rate, answered or
    not; a request that finds every worker busy waits, and its latency shows it."""
    client = _Client(port)
    total = int(rate * seconds)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        start = time.perf_counter() + 0.05
        futures = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(_one, client, paths[i % len(paths)], due))
        return [f.result() for f in futures]


def _one(client: _Client, path: str, due: float) -> Outcome:
    sent = time.perf_counter()
    try:
        if client.conn is None:
            client.conn = http.client.HTTPConnection(procs.HOST, client.port, timeout=10)
        client.conn.request("GET", path)
        answer = client.conn.getresponse()
        answer.read()
        status = answer.status
    except (OSError, http.client.HTTPException):
        if client.conn is not None:
            client.conn.close()
        client.conn, status = None, 0
    done = time.perf_counter()
    return Outcome(status, done - due, done - sent)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stored(db_url: str) -> int:
    """Clicks and scanner hits stored, over every link of every edition."""
    path = db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT COALESCE(SUM(count), 0) FROM engagement_count "
            "WHERE kind IN ('click', 'scanner')"
        ).fetchone()
    return int(row[0])


def _percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ms = sorted(s * 1000 for s in seconds)
    cuts = statistics.quantiles(ms, n=1000, method="inclusive")
    return {
        "p50": cuts[499],
        "p95": cuts[949],
        "p99": cuts[989],
        "max": ms[-1],
        "mean": statistics.fmean(ms),
    }


def _markdown(report: dict[str, Any], args: argparse.Namespace) -> str:
    lat, svc = report["latency_ms"], report["service_ms"]
    met = "yes" if lat.get("p99", 1e9) < 20 else "**no**"
    lines = [
        f"`python -m benchmarks.redirect --rate {args.rate:g} --seconds {args.seconds:g} "
        f"--readers {args.readers}` on {report['date']}, {report['machine']}, "
        f"Python {report['python']}, SQLite {report['sqlite']}, {report['versions']}",
        "",
        "| measurement | figure |",
        "| --- | --- |",
        f"| requests timed / achieved rate (req/s) | {report['requests']:,} / "
        f"{report['rate']:,.0f} |",
        f"| latency from schedule, p50 / p95 / p99 / max (ms) | {lat['p50']:.2f} / "
        f"{lat['p95']:.2f} / {lat['p99']:.2f} / {lat['max']:.2f} |",
        f"| latency from send, p50 / p95 / p99 / max (ms) | {svc['p50']:.2f} / "
        f"{svc['p95']:.2f} / {svc['p99']:.2f} / {svc['max']:.2f} |",
        f"| p99 under 20 ms? | {met} |",
        f"| errors (not 302) | {report['errors']} |",
        f"| CPU, % of one core: server / load client | "
        f"{report['server_cpu_percent']:.0f} / {report['client_cpu_percent']:.0f} |",
        f"| 302s answered (warm-up included) / clicks + scanner stored | "
        f"{report['redirects']:,} / {report['stored']:,} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
