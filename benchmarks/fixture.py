"""A fresh instance to measure: a config in a temp folder, N readers, one edition.

Everything goes through the real code: the schema by Alembic (``digest.store.db.upgrade``),
readers by ``subscribers.repository.bulk_insert`` (the CSV import's fast path),
comparisons by ``pipeline.fetch`` from a files feed, the edition by
``pipeline.compose``. Only the config file and the feed are written here.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlmodel import Session

from digest import config, pipeline
from digest.config.runtime import Runtime
from digest.store.db import make_engine, upgrade
from subscribers.models import Subscriber
from subscribers.repository import bulk_insert

REPO = Path(__file__).resolve().parent.parent
SAMPLE_FEED = REPO / "examples" / "feed.json"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SECRET_KEY = "benchmark-secret-key"
FROM = "The Verdict Weekly <digest@verdicts.example.com>"
COMPARISONS = 5
SEED_CHUNK = 50_000


@dataclass
class Instance:
    """One benchmark instance: its folder, config file and database URL."""

    root: Path
    db_url: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    def environ(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, **self.env, "DIGEST_DATABASE_URL": self.db_url}


def write_feed(path: Path, now: datetime) -> Path:
    """A files feed of :data:`COMPARISONS` comparisons (the samples, varied), all recent."""
    sample = json.loads(SAMPLE_FEED.read_text(encoding="utf-8"))
    base = sample["comparisons"]
    out = []
    for i in range(COMPARISONS):
        entry = copy.deepcopy(base[i % len(base)])
        if i >= len(base):
            entry["id"] = f"{entry['id']}-{i}"
            entry["url"] = f"{entry['url']}-{i}"
            entry["title"] = f"{entry['title']} (part {i})"
        entry["published_at"] = (now - timedelta(hours=6 + i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(entry)
    sample["comparisons"] = out
    sample["generated_at"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(json.dumps(sample), encoding="utf-8")
    return path


def write_config(root: Path, *, transport: dict[str, Any], send: dict[str, Any]) -> Path:
    """``root/config.toml`` for one measurement (the database URL comes from the env)."""
    tables: dict[str, dict[str, Any]] = {
        "site": {
            "name": "The Verdict Weekly",
            "base_url": "https://digest.verdicts.example.com",
            "postal_address": "Verdicts Media, 1 Example Street, 10115 Berlin, Germany",
            "timezone": "Europe/Berlin",
        },
        "database": {"url": "sqlite:///digest.db"},
        "feed": {"kind": "files", "path": str(root / "feed.json")},
        "email": {"from": FROM, "reply_to": "editors@verdicts.example.com"},
        "transport": transport,
        "edition": {"max_comparisons": COMPARISONS, "max_html_bytes": 200_000},
        "send": send,
    }
    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in table.items()]
        lines.append("")
    path = root / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string here


def runtime(instance: Instance) -> Runtime:
    environ = instance.environ({"DIGEST_SECRET_KEY": SECRET_KEY})
    return Runtime.open(config.load(instance.config, environ=environ))


def seed(db_url: str, readers: int, now: datetime) -> float:
    """Create the schema and ``readers`` active subscribers; return the seconds taken."""
    started = datetime.now(UTC)
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        table = Subscriber.__table__  # type: ignore[attr-defined]
        for start in range(0, readers, SEED_CHUNK):
            rows = [
                {
                    "email": f"reader{i}@example.com",
                    "name": f"Reader {i}",
                    "status": "active",
                    "source": "benchmark",
                    "categories": [],
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(start, min(start + SEED_CHUNK, readers))
            ]
            with Session(engine) as session, session.begin():
                bulk_insert(session, table=table, rows=rows)
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
    finally:
        engine.dispose()
    checkpoint(db_url)
    return (datetime.now(UTC) - started).total_seconds()


def compose(instance: Instance) -> str:
    """Fetch the feed and compose this week's edition; return its key."""
    rt = runtime(instance)
    try:
        pipeline.fetch(rt)
        edition = pipeline.compose(rt).edition
        assert edition is not None, "the benchmark feed composed no edition"
        return edition.key
    finally:
        rt.close()
        checkpoint(instance.db_url)


def checkpoint(db_url: str) -> None:
    """Fold a SQLite file's WAL into it, so the file alone can be copied."""
    if db_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(db_url.removeprefix("sqlite:///"))) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def copy_sqlite(source: Path, target: Path) -> None:
    """A seeded, composed SQLite file copied for one run (checkpointed: no WAL file)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, target)


@contextmanager
def pg_schema() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
