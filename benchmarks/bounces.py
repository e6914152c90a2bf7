"""How fast a bounce mailbox drains: classify, then ingest, N Postfix DSNs.

    python -m benchmarks.bounces [--readers 2000] [--db sqlite|postgres] [--runs 3]
                                 [--json FILE]

Seeds ``--readers`` readers (:mod:`benchmarks.fixture`), composes the benchmark
edition and sends it with VERP on (``[email] bounce_address``) through the memory
transport, so every delivery row exists and every message's envelope sender is its
VERP address. Then builds one Postfix-shaped hard-bounce DSN per message (addressed
to that message's VERP sender, returning its headers: ``tests/bounce_samples.py``)
and measures, per run:

- ``classify``: :func:`digest.bounces.parse.classify` over every DSN (no database);
- ``ingest``: :func:`digest.bounces.ingest.ingest` of every DSN, one transaction each,
  as ``digest bounces poll`` does (VERP match, event stored, reader suppressed);
- ``again``: every DSN ingested a second time (each a duplicate: nothing changes).

Each run starts from a copy of the seeded database (SQLite) or a fresh schema
(PostgreSQL). After a run every reader must be ``bounced``; the benchmark stops
otherwise. The IMAP round trips of a real poll are not in these figures: a
mailbox's own speed depends on the server, not on this code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from benchmarks import fixture
from benchmarks.fixture import Instance
from digest import pipeline
from digest.bounces.ingest import ingest
from digest.bounces.parse import classify
from digest.config.runtime import Runtime
from digest.delivery.verp import verp_keys, verp_sender
from digest.store.db import session_scope
from digest.store.models import Delivery, Edition
from subscribers.models import Subscriber, SubscriberStatus
from tests.bounce_samples import postfix_dsn

BOUNCE_ADDRESS = "bounces@verdicts.example.com"


def main() -> None:
    args = _parse()
    runs = [_run(args.readers, args.db, n) for n in range(args.runs)]
    report = {"readers": args.readers, "db": args.db, "runs": runs}
    print(_markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Draining a bounce mailbox.")
    parser.add_argument("--readers", type=int, default=2000, help="DSNs per run (2,000)")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    return parser.parse_args()


@contextlib.contextmanager
def _database(root: Path, db: str) -> Iterator[str]:
    if db == "postgres":
        with fixture.pg_schema() as url:
            yield url
    else:
        yield f"sqlite:///{root / 'digest.db'}"


def _run(readers: int, db: str, number: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix=f"digest-bounces-{number}-"))
    try:
        with _database(root, db) as url:
            instance = _prepare(root, url, readers)
            rt = fixture.runtime(instance)
            try:
                return _measure(rt, _dsns(rt))
            finally:
                rt.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _prepare(root: Path, url: str, readers: int) -> Instance:
    now = datetime.now(UTC)
    fixture.write_feed(root / "feed.json", now)
    path = fixture.write_config(root, transport={"kind": "memory"}, send={})
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("[email]\n", f'[email]\nbounce_address = "{BOUNCE_ADDRESS}"\n'))
    instance = Instance(root, url)
    fixture.seed(url, readers, now)
    key = fixture.compose(instance)
    rt = fixture.runtime(instance)
    try:
        edition = pipeline.find_edition(rt, key)
        assert edition is not None
        report = asyncio.run(pipeline.send(rt, edition=edition))
        assert report.sent == readers, f"sent {report.sent} of {readers}"
    finally:
        rt.close()
    return instance


def _dsns(rt: Runtime) -> list[bytes]:
    """One Postfix DSN per delivery, to its VERP address, returning its Message-ID."""
    key = verp_keys(rt)[0]
    domain = "verdicts.example.com"
    with session_scope(rt.engine) as session:
        rows = session.execute(
            select(Delivery.id, Delivery.subscriber_id, Edition.key, Subscriber.email)  # type: ignore[call-overload]
            .join(Edition, Edition.id == Delivery.edition_id)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        ).all()
    return [
        postfix_dsn(
            verp_sender(BOUNCE_ADDRESS, delivery_id, key),
            f"<{edition_key}.s{subscriber_id}.digest@{domain}>",
            email,
            queue_id=f"Q{delivery_id:09d}",
        )
        for delivery_id, subscriber_id, edition_key, email in rows
    ]


def _measure(rt: Runtime, dsns: list[bytes]) -> dict[str, float]:
    started = time.perf_counter()
    kinds = [classify(raw).kind for raw in dsns]
    classified = time.perf_counter() - started
    assert set(kinds) == {"dsn"}, set(kinds)
    started = time.perf_counter()
    first = [ingest(rt, raw).kind for raw in dsns]
    ingested = time.perf_counter() - started
    started = time.perf_counter()
    again = [ingest(rt, raw).kind for raw in dsns]
    repeated = time.perf_counter() - started
    with session_scope(rt.engine) as session:
        bounced = session.execute(
            select(func.count()).where(Subscriber.status == SubscriberStatus.bounced)  # type: ignore[arg-type]
        ).scalar_one()
    if set(first) != {"applied"} or set(again) != {"duplicate"} or bounced != len(dsns):
        raise SystemExit(f"wrong outcome: {set(first)}, {set(again)}, {bounced} bounced")
    n = len(dsns)
    return {
        "messages": n,
        "classify_per_s": n / classified,
        "ingest_per_s": n / ingested,
        "ingest_ms": 1000 * ingested / n,
        "again_per_s": n / repeated,
    }


def _markdown(report: dict[str, Any]) -> str:
    runs = report["runs"]

    def cell(name: str, fmt: str) -> str:
        values = [r[name] for r in runs]
        picked = (min(values), statistics.median(values), max(values))
        low, mid, high = (format(v, fmt) for v in picked)
        return f"{mid} ({low}–{high})"

    return "\n".join(
        [
            f"Bounce mailbox drain: {report['readers']:,} Postfix DSNs, {report['db']}, "
            f"{len(runs)} runs (median, min–max)",
            "",
            "| step | figure |",
            "| --- | --- |",
            f"| classify (no database) | {cell('classify_per_s', ',.0f')} messages/s |",
            f"| ingest (VERP match, event, reader) | {cell('ingest_per_s', ',.0f')} messages/s, "
            f"{cell('ingest_ms', '.2f')} ms each |",
            f"| the same again (duplicates) | {cell('again_per_s', ',.0f')} messages/s |",
        ]
    )


if __name__ == "__main__":
    main()
