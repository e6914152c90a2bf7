"""The one benchmark command: seeds readers, sends an edition every way, reports.

    python -m benchmarks.run [--subscribers N] [--runs 3] [--quick] [--only A,B]
                             [--memory-sizes 10000,100000,1000000] [--json FILE]

Sections (``--only``): ``smtp``, ``providers``, ``outbox``, ``render``, ``plan``,
``memory``, ``workers``. Prints a Markdown report (median, min and max of the
runs, and the ratios measured in the same run); see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from benchmarks import measures, procs
from benchmarks.measures import Samples

SECTIONS = ("smtp", "providers", "outbox", "render", "plan", "memory", "workers")


def main() -> None:
    args = _parse()
    sections = tuple(args.only.split(",")) if args.only else SECTIONS
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {sorted(unknown)}; known: {SECTIONS}")
    readers = 2_000 if args.quick else args.subscribers
    runs = 1 if args.quick else args.runs
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="digest-bench-"))
    samples: Samples = {}
    try:
        setup, seeded = measures.prepare(root / "main", readers)
        samples["seed_sqlite_s"] = [seeded]
        steps: dict[str, Callable[[], Samples]] = {
            "smtp": lambda: measures.smtp(
                setup,
                runs=runs,
                connections=args.connections,
                naive_limit=min(readers, 200 if args.quick else args.naive_limit),
            ),
            "providers": lambda: measures.providers(setup, runs=runs, concurrency=args.concurrency),
            "outbox": lambda: measures.outbox(setup, runs=runs),
            "render": lambda: measures.render(setup, repeats=5 if args.quick else 30),
            "plan": lambda: {
                **measures.plan_sqlite(setup, runs=runs),
                **measures.plan_postgres(root, readers=readers, runs=runs),
            },
            "memory": lambda: _memory(root, [500, 2_000] if args.quick else args.memory_sizes),
            "workers": lambda: measures.workers(root, readers=readers, runs=runs, counts=(1, 2)),
        }
        for name in sections:
            began = time.perf_counter()
            print(f"[{name}] …", file=sys.stderr, flush=True)
            samples.update(steps[name]())
            print(f"[{name}] {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    command = " ".join(["python -m benchmarks.run", *sys.argv[1:]])
    report = _report(samples, readers, runs, command, time.perf_counter() - started, args)
    print(report)
    if args.json:
        args.json.write_text(json.dumps({"readers": readers, "runs": runs, "samples": samples}))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmarks of the weekly digest.")
    parser.add_argument("--subscribers", type=int, default=10_000, help="readers (default 10,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--quick", action="store_true", help="a smoke check under a minute")
    parser.add_argument("--only", default="", help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--connections", type=int, default=4, help="SMTP connections/sessions")
    parser.add_argument("--concurrency", type=int, default=2, help="provider requests in flight")
    parser.add_argument("--naive-limit", type=int, default=1_000, help="readers the naive sends")
    parser.add_argument(
        "--memory-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[10_000, 100_000, 1_000_000],
        help="reader counts for the peak-RSS runs",
    )
    parser.add_argument("--memory-transport", default="sendgrid", choices=("sendgrid", "smtp"))
    parser.add_argument("--json", type=Path, help="also write the raw samples here")
    return parser.parse_args()


def _memory(root: Path, sizes: list[int]) -> Samples:
    """Peak RSS of ``digest send`` (SendGrid-shaped, through the fake) per reader count."""
    samples: Samples = {}
    with procs.fake_provider() as url:
        for size in sizes:
            setup, _ = measures.prepare(root / f"memory-{size}", size)
            transport = {"kind": "sendgrid", "base_url": url, "requests_per_second": 0}
            instance = setup.instance("send", transport=transport, send={"batch_size": 1000})
            done, line = measures.send(instance)
            assert line.sent == size, line
            samples[f"rss_{size}_mb"] = [done.max_rss_mb]
            samples[f"rss_{size}_rate"] = [line.rate]
            shutil.rmtree(setup.root)
    return samples


def _stat(values: list[float] | None, fmt: str = "{:,.0f}") -> str:
    if not values:
        return "–"
    med = measures.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def _ratio(samples: Samples, a: str, b: str) -> str:
    """Median of the per-run ratios a/b (each pair measured in the same run)."""
    pairs = [x / y for x, y in zip(samples.get(a, []), samples.get(b, []), strict=False) if y]
    return _stat(pairs, "{:.2f}×") if pairs else "–"


def _report(
    s: Samples, readers: int, runs: int, command: str, took: float, args: argparse.Namespace
) -> str:
    k = args.connections
    rows = [
        ("SMTP: `digest send`, K connections (msg/s, own clock)", _stat(s.get("digest_rate"))),
        ("SMTP: `digest send` incl. process start (msg/s, wall)", _stat(s.get("digest_wall_rate"))),
        ("SMTP: `smtp-source`, K sessions (msg/s)", _stat(s.get("smtp_source_rate"))),
        ("SMTP: naive sender, 1 connection (msg/s)", _stat(s.get("naive_rate"))),
        ("ratio digest / smtp-source (own clock)", _ratio(s, "digest_rate", "smtp_source_rate")),
        ("ratio digest / smtp-source (wall)", _ratio(s, "digest_wall_rate", "smtp_source_rate")),
        ("ratio digest / naive", _ratio(s, "digest_rate", "naive_rate")),
        ("SMTP: `digest send`, batch_size 20 (msg/s, own clock)", _stat(s.get("digest_b20_rate"))),
        ("ratio batch_size 20 / smtp-source", _ratio(s, "digest_b20_rate", "smtp_source_rate")),
        ("ratio batch_size 20 / naive", _ratio(s, "digest_b20_rate", "naive_rate")),
        ("Postmark-shaped, 500 a call (msg/s)", _stat(s.get("postmark_rate"))),
        ("SendGrid-shaped, 1,000 a call (msg/s)", _stat(s.get("sendgrid_rate"))),
        ("Outbox (msg/s)", _stat(s.get("outbox_rate"))),
        (
            "Outbox reference: bare write + rename loop, same files (files/s)",
            _stat(s.get("outbox_raw_rate")),
        ),
        ("ratio outbox / bare loop", _ratio(s, "outbox_rate", "outbox_raw_rate")),
        ("Compile per segment (ms)", _stat(s.get("compile_ms"), "{:.2f}")),
        ("Pre-encode message template per segment (ms)", _stat(s.get("template_ms"), "{:.2f}")),
        ("Plan N deliveries, SQLite (s)", _stat(s.get("plan_sqlite_s"), "{:.2f}")),
        ("Plan N deliveries, PostgreSQL (s)", _stat(s.get("plan_pg_s"), "{:.2f}")),
        ("Workers on PostgreSQL, 1 (msg/s)", _stat(s.get("workers_1_rate"))),
        ("Workers on PostgreSQL, 2 (msg/s)", _stat(s.get("workers_2_rate"))),
        ("ratio 2 workers / 1", _ratio(s, "workers_2_rate", "workers_1_rate")),
        ("Peak RSS of `digest send` over SMTP (MB)", _stat(s.get("digest_rss_mb"), "{:.1f}")),
    ]
    rows += [
        (
            f"Peak RSS of `digest send`, {key.split('_')[1]} readers, SendGrid-shaped (MB)",
            _stat(values, "{:.1f}"),
        )
        for key, values in s.items()
        if key.startswith("rss_") and key.endswith("_mb")
    ]
    size = s.get("message_bytes", [0])[0]
    lines = [
        f"Command: `{command}` — {readers:,} readers, {runs} run(s), K = {k}, "
        f"message {size:,.0f} bytes; took {took:.0f} s.",
        "",
        f"Machine: {_machine()}",
        "",
        f"Versions: {_versions()}",
        "",
        "| measurement | median (min–max) |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows if value != "–"),
    ]
    return "\n".join(lines)


def _machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def _versions() -> str:
    names = ["mjml-python", "jinja2", "sqlalchemy", "httpx", "orjson", "uvicorn", "httptools"]
    names += ["psycopg"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True, check=False)
    postfix = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "postfix"],
        capture_output=True,
        text=True,
        check=False,
    )
    return ", ".join(
        [
            f"Python {platform.python_version()}",
            f"SQLite {sqlite3.sqlite_version}",
            *found,
            pg.stdout.strip(),
            f"postfix {postfix.stdout.strip()} (smtp-sink, smtp-source)",
        ]
    )


if __name__ == "__main__":
    main()
