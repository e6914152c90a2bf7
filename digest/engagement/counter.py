"""Engagement counts, written in batches: never a row lock per click.

:class:`Batch` is what is waiting to be written: count deltas per
``(edition, comparison, link, kind)``, unique clickers (``click_seen``), per-reader
clicks (``click_event``, only with ``[tracking] individual``) and *rescans* (a
message ref found to be a scanner's: its unique-click row and its clicks since a
time are taken back). :func:`write_batch` writes one in the caller's transaction:
one ``INSERT … ON CONFLICT … DO UPDATE SET count = count + excluded.count`` for the
counts (:func:`add_counts`), one ``ON CONFLICT DO NOTHING`` insert for the
clickers, each executed for all the batch's rows.

:class:`ClickCounter` is what the web process holds: :meth:`ClickCounter.buffer` /
:meth:`ClickCounter.note` add to the in-memory batch under a lock (identical keys
aggregate); a background thread writes it every ``flush_seconds`` in one
transaction. A failed write keeps the batch for the next tick (one log line);
:meth:`ClickCounter.close` stops the thread and writes what is left.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from digest.store.engagement_models import ClickEvent, ClickSeen, EngagementCount
from digest.store.models import Edition
from digest.webhooks.base import EventType

log = logging.getLogger(__name__)

CountKey = tuple[str, str, str, str]  # (edition_key, comparison_id, link, kind)
COUNTS: Any = EngagementCount.__table__  # type: ignore[attr-defined]
SEEN: Any = ClickSeen.__table__  # type: ignore[attr-defined]
EVENTS: Any = ClickEvent.__table__  # type: ignore[attr-defined]
EDITIONS: Any = Edition.__table__  # type: ignore[attr-defined]
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

# Provider events with a matched delivery → the edition-wide count they add to.
PROVIDER_KINDS: Mapping[EventType, str] = {
    EventType.delivered: "delivered",
    EventType.opened: "provider_open",
    EventType.clicked: "provider_click",
}


@dataclass(slots=True)
class ClickRow:
    """One ``click_event`` row (a named reader's click: individual tracking only)."""

    edition_key: str
    subscriber_id: int
    comparison_id: str
    link: str
    scanner: bool
    at: datetime


@dataclass(slots=True)
class Batch:
    counts: dict[CountKey, int] = field(default_factory=dict)
    seen: dict[tuple[str, str], datetime] = field(default_factory=dict)  # first click
    clicks: list[ClickRow] = field(default_factory=list)
    rescans: dict[tuple[str, str], datetime] = field(default_factory=dict)  # since when

    def __bool__(self) -> bool:
        return bool(self.counts or self.seen or self.clicks or self.rescans)

    def count(self, key: CountKey, delta: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + delta

    def see(self, edition_key: str, ident: str, at: datetime) -> None:
        key = (edition_key, ident)
        self.seen[key] = min(at, self.seen.get(key, at))

    def rescan(self, edition_key: str, ident: str, since: datetime) -> None:
        """Take back ``ident``'s unique click and mark its clicks as a scanner's, for
        clicks from ``since`` on: those still here now, those written at the next write."""
        key = (edition_key, ident)
        self.rescans[key] = min(since, self.rescans.get(key, since))
        self._apply_rescan(key, since)

    def _apply_rescan(self, key: tuple[str, str], since: datetime) -> None:
        if key in self.seen and self.seen[key] >= since:
            del self.seen[key]
        for row in self.clicks:
            if (row.edition_key, f"s{row.subscriber_id}") == key and row.at >= since:
                row.scanner = True

    def put_back(self, older: Batch) -> None:
        """Fold an unwritten older batch into this newer one (its rescans apply to it)."""
        for key, since in self.rescans.items():
            older._apply_rescan(key, since)
        for ckey, delta in older.counts.items():
            self.count(ckey, delta)
        for (edition_key, ident), at in older.seen.items():
            self.see(edition_key, ident, at)
        self.clicks[:0] = older.clicks
        for (edition_key, ident), since in older.rescans.items():
            key = (edition_key, ident)
            self.rescans[key] = min(since, self.rescans.get(key, since))

    def size(self) -> int:
        return sum(abs(n) for n in self.counts.values()) + len(self.seen) + len(self.clicks)


# A rescan: the message's unique click and its per-reader clicks since a time.
_UNSEE = SEEN.delete().where(
    SEEN.c.edition_key == bindparam("e"),
    SEEN.c.ref == bindparam("ref"),
    SEEN.c.first_at >= bindparam("since", type_=SEEN.c.first_at.type),
)
_AS_SCANNER = (
    EVENTS.update()
    .where(
        EVENTS.c.edition_key == bindparam("e"),
        EVENTS.c.subscriber_id == bindparam("sid"),
        EVENTS.c.at >= bindparam("since", type_=EVENTS.c.at.type),
    )
    .values(scanner=True)
)
_NAMED = re.compile(r"s\d{1,18}")


def _insert(conn: Connection) -> Any:
    try:
        return _INSERTS[conn.dialect.name]
    except KeyError:
        raise ValueError(f"engagement counts: no upsert for {conn.dialect.name!r}") from None


def add_counts(conn: Connection, rows: Mapping[CountKey, int]) -> int:
    """Add each delta to its ``engagement_count`` row (created at the delta), in the
    caller's transaction: one upsert statement, executed for every row (compiled
    once and cached: a statement with a VALUES row per key would be compiled anew
    for each batch size). Zero deltas are skipped; rows go in key order so that two
    processes writing at once lock them in the same order. Returns rows touched."""
    values = [
        {"edition_key": e, "comparison_id": c, "link": link, "kind": k, "count": n}
        for (e, c, link, k), n in sorted(rows.items())
        if n
    ]
    if values:
        stmt = _insert(conn)(COUNTS)
        stmt = stmt.on_conflict_do_update(
            index_elements=["edition_key", "comparison_id", "link", "kind"],
            set_={"count": COUNTS.c.count + stmt.excluded.count},
        )
        conn.execute(stmt, values)
    return len(values)


def write_batch(conn: Connection, batch: Batch) -> None:
    """Write ``batch`` in the caller's transaction: rescans first (they concern rows
    already written), then counts, unique clickers and per-reader clicks."""
    rescans = sorted(batch.rescans.items())
    if rescans:
        conn.execute(_UNSEE, [{"e": e, "ref": ref, "since": t} for (e, ref), t in rescans])
        named = [
            {"e": e, "sid": int(ref[1:]), "since": t}
            for (e, ref), t in rescans
            if _NAMED.fullmatch(ref)
        ]
        if named:
            conn.execute(_AS_SCANNER, named)
    add_counts(conn, batch.counts)
    if batch.seen:
        stmt = _insert(conn)(SEEN).on_conflict_do_nothing(index_elements=["edition_key", "ref"])
        seen = sorted(batch.seen.items())
        conn.execute(stmt, [{"edition_key": e, "ref": i, "first_at": at} for (e, i), at in seen])
    if batch.clicks:
        conn.execute(
            EVENTS.insert(),
            [
                {
                    "edition_key": r.edition_key,
                    "subscriber_id": r.subscriber_id,
                    "comparison_id": r.comparison_id,
                    "link": r.link,
                    "scanner": r.scanner,
                    "at": r.at,
                }
                for r in batch.clicks
            ],
        )


def count_provider_event(conn: Connection, *, edition_id: int, kind: EventType) -> bool:
    """Add one provider ``delivered`` / ``opened`` / ``clicked`` event of a delivery of
    edition ``edition_id`` to that edition's counts (comparison and link ``""``), in
    the caller's transaction. False (nothing counted) for any other kind."""
    counted = PROVIDER_KINDS.get(kind)
    if counted is None:
        return False
    key = conn.execute(select(EDITIONS.c.key).where(EDITIONS.c.id == edition_id)).scalar_one()
    add_counts(conn, {(str(key), "", "", counted): 1})
    return True


class ClickCounter:
    """The web process's batched counter; see the module docstring. Thread-safe."""

    def __init__(self, engine: Engine, *, flush_seconds: float) -> None:
        self._engine = engine
        self._interval = flush_seconds
        self._lock = threading.Lock()  # guards _pending: held for microseconds
        self._writing = threading.Lock()  # one write at a time (thread, flush, close)
        self._pending = Batch()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def buffer(self) -> Iterator[Batch]:
        """The pending batch, under the lock: add to it, never keep it."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._start()
            yield self._pending

    def note(self, key: CountKey, delta: int = 1) -> None:
        with self.buffer() as batch:
            batch.count(key, delta)

    def pending(self) -> int:
        with self._lock:
            return self._pending.size()

    def flush(self) -> bool:
        """Write what is pending now, in one transaction. False when the write failed
        (the batch is kept for the next try and one line is logged)."""
        with self._writing:
            with self._lock:
                batch, self._pending = self._pending, Batch()
            if not batch:
                return True
            written = False
            try:
                with self._engine.begin() as conn:
                    write_batch(conn, batch)
                written = True
            except SQLAlchemyError as exc:
                log.error(
                    "engagement counts not written (%s); %d kept for the next try",
                    type(exc).__name__,
                    batch.size(),
                )
            finally:
                if not written:
                    with self._lock:
                        self._pending.put_back(batch)
            return written

    def close(self, *, attempts: int = 3) -> bool:
        """Stop the flusher and write what is left (``attempts`` tries, a second
        apart). False, with one error line, if the counts could not be written."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        for attempt in range(attempts):
            if self.flush():
                return True
            if attempt + 1 < attempts:
                time.sleep(1.0)
        log.error("engagement counts lost at shutdown: %d could not be written", self.pending())
        return False

    def _start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="click-counter", daemon=True
        )
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval):
            self.flush()
