"""The measurements, each beside its reference in the same run (see README.md).

Each function takes a :class:`Setup` (a seeded, composed SQLite file to copy per
run) and returns plain dicts of samples; :mod:`benchmarks.run` takes medians.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import fixture, procs
from benchmarks.fixture import Instance
from digest import pipeline
from digest.delivery import ledger as deliveries
from digest.delivery import messages
from digest.editions import lifecycle as editions
from digest.editions.segments import distinct_categories
from digest.store.db import make_engine, session_scope

Samples = dict[str, list[float]]
ENV = {"DIGEST_SECRET_KEY": fixture.SECRET_KEY, "COLUMNS": "200"}
PROVIDER_ENV = {
    "DIGEST_POSTMARK_SERVER_TOKEN": "bench-token",
    "DIGEST_SENDGRID_API_KEY": "bench-token",
}


@dataclass
class Setup:
    """A folder with ``seeded.db``: N readers and a composed edition, never sent."""

    root: Path
    readers: int
    edition_key: str = ""

    @property
    def template(self) -> Path:
        return self.root / "seeded.db"

    def instance(self, name: str, *, transport: dict[str, Any], send: dict[str, Any]) -> Instance:
        """A copy of the seeded database with its own config, ready to send."""
        root = self.root / name
        root.mkdir(exist_ok=True)
        fixture.copy_sqlite(self.template, root / "digest.db")
        shutil.copyfile(self.root / "feed.json", root / "feed.json")
        instance = Instance(root, f"sqlite:///{root / 'digest.db'}", dict(PROVIDER_ENV))
        fixture.write_config(root, transport=transport, send=send)
        return instance


def prepare(root: Path, readers: int) -> tuple[Setup, float]:
    """Seed ``readers`` into a fresh SQLite file and compose; return it and seed seconds."""
    root.mkdir(parents=True, exist_ok=True)
    setup = Setup(root, readers)
    fixture.write_feed(root / "feed.json", datetime.now(UTC))
    fixture.write_config(root, transport={"kind": "outbox", "path": "outbox"}, send={})
    instance = Instance(root, f"sqlite:///{setup.template}")
    seconds = fixture.seed(instance.db_url, readers, datetime.now(UTC))
    setup.edition_key = fixture.compose(instance)
    return setup, seconds


def send(instance: Instance, *extra: str) -> tuple[procs.Finished, procs.SendLine]:
    """``digest send`` in its own process; its summary line and peak RSS."""
    env = instance.environ({**os.environ, **ENV})
    done = procs.run(procs.digest_command(instance.config, "send", *extra), env=env).check()
    lines = procs.send_lines(done.stdout)
    if not lines:
        raise RuntimeError(f"no summary line from digest send:\n{done.stdout}\n{done.stderr}")
    return done, lines[-1]


def _record(samples: Samples, prefix: str, done: procs.Finished, line: procs.SendLine) -> None:
    samples.setdefault(f"{prefix}_rate", []).append(line.rate)
    samples.setdefault(f"{prefix}_wall_rate", []).append(line.sent / done.wall)
    samples.setdefault(f"{prefix}_rss_mb", []).append(done.max_rss_mb)


def smtp(setup: Setup, *, runs: int, connections: int, naive_limit: int) -> Samples:
    """``digest send`` over SMTP, ``smtp-source`` and the naive sender, into one sink."""
    samples: Samples = {}
    message = setup.root / "message.eml"
    _write_sample_message(setup, message)
    samples["message_bytes"] = [float(message.stat().st_size)]
    with procs.smtp_sink() as port:
        transport = {
            "kind": "smtp",
            "host": procs.HOST,
            "port": port,
            "security": "none",
            "connections": connections,
        }
        for i in range(runs):
            instance = setup.instance(f"smtp-{i}", transport=transport, send={})
            done, line = send(instance)
            assert line.sent == setup.readers, line
            _record(samples, "digest", done, line)
            # The same with batch_size = 20: one ledger commit pair per 20 messages
            # (more messages in doubt after a crash; see [transport] batch_size).
            batch20 = {**transport, "batch_size": 20}
            batched = setup.instance(f"smtp-b20-{i}", transport=batch20, send={})
            done, line = send(batched)
            assert line.sent == setup.readers, line
            _record(samples, "digest_b20", done, line)
            shutil.rmtree(batched.root)
            samples.setdefault("smtp_source_rate", []).append(
                procs.smtp_source(
                    port, sessions=connections, messages=setup.readers, message_file=message
                )
            )
            samples.setdefault("naive_rate", []).append(_naive(instance, port, naive_limit))
            shutil.rmtree(instance.root)
    return samples


def _write_sample_message(setup: Setup, path: Path) -> None:
    """One real message of this edition (LF line ends: smtp-source adds the CR)."""
    instance = Instance(setup.root, f"sqlite:///{setup.template}")
    rt = fixture.runtime(instance)
    try:
        edition = pipeline.find_edition(rt, setup.edition_key)
        assert edition is not None
        data = messages.preview_message(rt, edition.key, pipeline.render_edition(rt, edition))
    finally:
        rt.close()
    path.write_bytes(data.replace(b"\r\n", b"\n"))


def _naive(instance: Instance, port: int, limit: int) -> float:
    env = instance.environ({**os.environ, **ENV})
    args = [sys.executable, "-m", "benchmarks.naive_sender", "--config", str(instance.config)]
    args += ["--port", str(port), "--limit", str(limit)]
    done = procs.run(args, env=env, cwd=fixture.REPO).check()
    return float(json.loads(done.stdout.strip().splitlines()[-1])["rate"])


def providers(setup: Setup, *, runs: int, concurrency: int) -> Samples:
    """Postmark-shaped (500 full bodies a call) and SendGrid-shaped (1,000
    personalizations a call) batches through the loopback fake provider."""
    samples: Samples = {}
    with procs.fake_provider() as url:
        for i, (kind, batch) in itertools.product(
            range(runs), (("postmark", 1000), ("sendgrid", 2000))
        ):
            before = _stats(url)["messages"]
            transport = {
                "kind": kind,
                "base_url": url,
                "concurrency": concurrency,
                "requests_per_second": 0,  # the fake has no limit; measure our side
            }
            instance = setup.instance(
                f"{kind}-{i}", transport=transport, send={"batch_size": batch}
            )
            done, line = send(instance)
            received = _stats(url)["messages"] - before
            assert line.sent == setup.readers == received, (line, received)
            _record(samples, kind, done, line)
            shutil.rmtree(instance.root)
    return samples


def _stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/stats", timeout=10) as answer:
        stats: dict[str, int] = json.loads(answer.read())
        return stats


def outbox(setup: Setup, *, runs: int) -> Samples:
    """The outbox transport writing one .eml file per reader, beside its reference:
    a bare loop writing the same number of files of the same size the same way
    (``os.open``/``os.write`` to a temporary name, ``os.replace``), no ledger."""
    samples: Samples = {}
    message = setup.root / "message.eml"
    _write_sample_message(setup, message)
    data = message.read_bytes().replace(b"\n", b"\r\n")
    for i in range(runs):
        transport = {"kind": "outbox", "path": "outbox", "html_preview": True}
        instance = setup.instance(f"outbox-{i}", transport=transport, send={})
        _settle_disk()
        done, line = send(instance)
        assert line.sent == setup.readers, line
        _record(samples, "outbox", done, line)
        shutil.rmtree(instance.root)
        _settle_disk()
        samples.setdefault("outbox_raw_rate", []).append(
            _raw_files(setup.root / f"raw-{i}", setup.readers, data)
        )
    return samples


def _settle_disk() -> None:
    """Start from a clean page cache: without it, the last run's dirty pages and
    deletions made the next run's rate swing 3x (2,900-17,800 files/s) on this VM."""
    os.sync()
    time.sleep(2)


def _raw_files(folder: Path, count: int, data: bytes) -> float:
    """Files per second of the bare write-then-rename loop (the outbox's ceiling here)."""
    folder.mkdir()
    started = time.perf_counter()
    for n in range(count):
        temp = f"{folder}/.{n}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temp, f"{folder}/{n:07d}-reader{n}@example.com.eml")
    rate = count / (time.perf_counter() - started)
    shutil.rmtree(folder)
    return rate


def render(setup: Setup, *, repeats: int) -> Samples:
    """Milliseconds to compile the edition (Jinja → MJML → HTML, text, subject) for
    each of its segments, and to pre-encode its message template."""
    instance = Instance(setup.root, f"sqlite:///{setup.template}")
    rt = fixture.runtime(instance)
    samples: Samples = {}
    try:
        with session_scope(rt.engine) as session:
            edition = editions.get(session, key=setup.edition_key)
            assert edition is not None
            comparisons = editions.comparisons_of(session, edition=edition)
        categories = distinct_categories([c.category for c in comparisons])
        segments = [
            s for r in range(1, len(categories) + 1) for s in itertools.combinations(categories, r)
        ]
        samples["segments"] = [float(len(segments))]
        for segment in segments:
            chosen = [c for c in comparisons if c.category in segment]
            for _ in range(repeats):
                started = time.perf_counter()
                digest = pipeline.render(rt, setup.edition_key, chosen)
                samples.setdefault("compile_ms", []).append(1000 * (time.perf_counter() - started))
                started = time.perf_counter()
                messages.message_template(rt, setup.edition_key, digest)
                samples.setdefault("template_ms", []).append(1000 * (time.perf_counter() - started))
    finally:
        rt.close()
    return samples


def plan_sqlite(setup: Setup, *, runs: int) -> Samples:
    """Seconds for ``deliveries.plan`` on a copy of the seeded SQLite file."""
    samples: Samples = {}
    for i in range(runs):
        instance = setup.instance(f"plan-{i}", transport={"kind": "outbox", "path": "o"}, send={})
        samples.setdefault("plan_sqlite_s", []).append(_plan(instance.db_url, setup.edition_key))
        shutil.rmtree(instance.root)
    return samples


def plan_postgres(root: Path, *, readers: int, runs: int) -> Samples:
    """Seconds for ``deliveries.plan`` on PostgreSQL (a fresh schema per run)."""
    samples: Samples = {}
    for i in range(runs):
        with fixture.pg_schema() as url:
            instance = _pg_instance(root / f"pg-plan-{i}", url)
            samples.setdefault("seed_pg_s", []).append(
                fixture.seed(url, readers, datetime.now(UTC))
            )
            key = fixture.compose(instance)
            samples.setdefault("plan_pg_s", []).append(_plan(url, key))
    return samples


def _pg_instance(root: Path, url: str, transport: dict[str, Any] | None = None) -> Instance:
    root.mkdir(parents=True, exist_ok=True)
    fixture.write_feed(root / "feed.json", datetime.now(UTC))
    fixture.write_config(root, transport=transport or {"kind": "outbox", "path": "o"}, send={})
    return Instance(root, url, dict(PROVIDER_ENV))


def _plan(db_url: str, edition_key: str) -> float:
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as session:
            edition = editions.get(session, key=edition_key)
            assert edition is not None and edition.id is not None
            edition_id = edition.id
        started = time.perf_counter()
        with engine.begin() as conn:
            deliveries.plan(conn, edition_id=edition_id, now=datetime.now(UTC))
        return time.perf_counter() - started
    finally:
        engine.dispose()


def workers(root: Path, *, readers: int, runs: int, counts: tuple[int, ...]) -> Samples:
    """On PostgreSQL: ``digest worker --exit-when-idle`` × W through the fake provider
    (Postmark-shaped); messages/s from the first start to the last exit."""
    samples: Samples = {}
    with procs.fake_provider() as url:
        transport = {"kind": "postmark", "base_url": url, "requests_per_second": 0}
        for i, count in itertools.product(range(runs), counts):
            with fixture.pg_schema() as db_url:
                instance = _pg_instance(root / f"workers-{count}-{i}", db_url, transport)
                fixture.write_config(instance.root, transport=transport, send={"batch_size": 1000})
                fixture.seed(db_url, readers, datetime.now(UTC))
                fixture.compose(instance)
                env = instance.environ({**os.environ, **ENV})
                command = procs.digest_command(instance.config, "worker", "--exit-when-idle")
                started = time.perf_counter()
                running = [
                    subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
                    for _ in range(count)
                ]
                outputs = [p.communicate(timeout=3600)[0] for p in running]
                wall = time.perf_counter() - started
                sent = sum(line.sent for out in outputs for line in procs.send_lines(out))
                assert sent == readers and all(p.returncode == 0 for p in running), outputs
                samples.setdefault(f"workers_{count}_rate", []).append(readers / wall)
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)
