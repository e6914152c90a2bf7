"""The ``fetch`` stage: read a feed, store its comparisons, keep the feed's health.

Transactions are kept short and never span the network: the cursor is read first,
the feed is fetched with no transaction open (on SQLite every transaction holds the
write lock, see :mod:`digest.store.db`), then the entries and the new cursor are stored
together in one transaction, so a crash cannot remember a cursor whose entries were
never stored. Nothing stored before is ever touched by a failure.

A fetch that fails after some pages stores what those pages gave, keeps the old
cursor and records the failure; the next fetch then reads every page (up to the
feed's limits) instead of stopping at the first comparison it knows, so the pages
the failure cut off are not skipped for good.

:func:`fetch_in_thread` runs the whole stage on a thread of its own, so an asyncio
caller (``digest run``) keeps handling signals while the feed waits on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from digest.common.redaction import redact_text
from digest.comparisons.store import ingest, known_checker
from digest.errors import FeedError, FeedUnavailable, InvalidComparison
from digest.feeds.base import Feed, FeedCursor, FetchResult, IsKnown, Progress
from digest.store.db import session_scope
from digest.store.models import FeedState

LAST_ERROR_MAX = 2000  # characters of the error kept in feed_state.last_error
STOP_GRACE_SECONDS = 3.0  # how long a stopped fetch may take to store what it read


@dataclass(slots=True)
class FetchReport:
    not_modified: bool = False
    pages: int = 0
    entries: int = 0
    new: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    invalid: list[InvalidComparison] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # The feed failed (before any page, or after ``pages`` pages whose comparisons are
    # stored above). Recorded in feed_state unless the caller stopped the fetch.
    error: FeedError | None = None


def fetch_and_store(
    engine: Engine,
    feed: Feed,
    *,
    now: datetime,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> FetchReport:
    """Fetch ``feed`` and upsert its comparisons; record the outcome in ``feed_state``.

    Returns what was read and stored (bad comparisons and skipped documents are in
    ``invalid`` / ``problems``). Never raises :class:`FeedError`: a failed fetch is
    in ``error``, with the comparisons of the pages read before it stored, and is
    recorded (``consecutive_failures`` + 1, ``last_error``) unless ``stop`` is set
    (the operator stopped it: not the feed's fault).
    """
    cursor, failing = _load_state(engine, feed.key)
    is_known: IsKnown = _never_known if failing else _EngineChecker(engine)
    try:
        result = feed.fetch(cursor, is_known, progress, stop=stop)
    except FeedError as exc:
        if stop is None or not stop.is_set():
            _record_failure(engine, feed.key, now=now, error=str(exc))
        return FetchReport(error=exc)
    with session_scope(engine) as session:
        state = _lock_state(session, feed.key)
        report = ingest(session, result.entries, now=now)
        if result.error is None:
            _record_success(state, result, now=now)
        elif stop is None or not stop.is_set():
            _note_failure(state, now=now, error=str(result.error))
    return FetchReport(
        not_modified=result.not_modified,
        pages=result.pages,
        entries=len(result.entries),
        new=report.new,
        updated=report.updated,
        unchanged=report.unchanged,
        invalid=report.invalid,
        problems=list(result.problems),
        error=result.error,
    )


async def fetch_in_thread(
    engine: Engine,
    feed: Feed,
    *,
    now: datetime,
    progress: Progress | None = None,
    stop: asyncio.Event | None = None,
) -> FetchReport:
    """:func:`fetch_and_store` on a daemon thread, awaited without blocking the loop.

    When ``stop`` is set the fetch is told to stop; the http feed then ends within a
    fraction of a second and what it read is stored. A fetch still busy
    :data:`STOP_GRACE_SECONDS` later is left behind (a daemon thread: it ends with the
    process) and the report says it was stopped. Never raises :class:`FeedError`.
    """
    halt = threading.Event()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[FetchReport] = loop.create_future()

    def target() -> None:
        try:
            report = fetch_and_store(engine, feed, now=now, progress=progress, stop=halt)
        except BaseException as exc:  # handed to the awaiting coroutine
            _settle(loop, done, done.set_exception, exc)
        else:
            _settle(loop, done, done.set_result, report)

    threading.Thread(target=target, name="digest-fetch", daemon=True).start()
    if stop is None:
        return await done
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    waiting: set[asyncio.Future[Any]] = {done, stopped}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not done.done():
        halt.set()
        try:
            return await asyncio.wait_for(asyncio.shield(done), STOP_GRACE_SECONDS)
        except TimeoutError:
            return FetchReport(error=FeedUnavailable(f"feed {feed.key}: stopped by a signal"))
    return done.result()


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[FetchReport],
    setter: Callable[[Any], None],
    value: Any,
) -> None:
    def apply() -> None:
        if not future.done():
            setter(value)

    # RuntimeError: the loop is closed, the caller went away (it was stopped).
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(apply)


def _load_state(engine: Engine, key: str) -> tuple[FeedCursor, bool]:
    """The remembered cursor, and whether the last fetch failed; creates the state
    row on first use.

    Creating it here, in its own short transaction, means two fetches of a new feed
    racing each other both find a row to lock in :func:`_lock_state`.
    """
    try:
        with session_scope(engine) as session:
            state = session.get(FeedState, key)
            if state is None:
                session.add(FeedState(feed=key))
                return FeedCursor(), False
            cursor = FeedCursor(etag=state.etag, last_modified=state.last_modified)
            return cursor, state.consecutive_failures > 0
    except IntegrityError:  # another process created the row a moment ago
        return FeedCursor(), False


def _never_known(comparison_id: str, updated_at: str | None, /) -> bool:
    """After a failed fetch: read every page, not just up to the first known comparison."""
    return False


def _lock_state(session: Session, key: str) -> FeedState:
    # FOR UPDATE serializes two runs storing the same feed on PostgreSQL; SQLite's
    # BEGIN IMMEDIATE already does (and SQLAlchemy drops FOR UPDATE there).
    statement = select(FeedState).where(FeedState.feed == key).with_for_update()
    state = session.exec(statement).first()
    if state is None:  # the row was deleted meanwhile: start it again
        state = FeedState(feed=key)
        session.add(state)
    return state


class _EngineChecker:
    """``IsKnown`` that opens a session per question, so none stays open (or, on
    SQLite, holds the write lock) while the feed waits on the network."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __call__(self, comparison_id: str, updated_at: str | None, /) -> bool:
        with Session(self._engine) as session:
            return known_checker(session)(comparison_id, updated_at)


def _record_success(state: FeedState, result: FetchResult, *, now: datetime) -> None:
    state.etag = result.cursor.etag
    state.last_modified = result.cursor.last_modified
    state.last_success_at = now
    state.last_attempt_at = now
    state.consecutive_failures = 0
    state.last_error = ""


def _record_failure(engine: Engine, key: str, *, now: datetime, error: str) -> None:
    with session_scope(engine) as session:
        state = session.get(FeedState, key) or FeedState(feed=key)
        _note_failure(state, now=now, error=error)
        session.add(state)


def _note_failure(state: FeedState, *, now: datetime, error: str) -> None:
    state.last_attempt_at = now
    state.consecutive_failures += 1
    # The feed's messages show URLs redacted already; this also covers any other
    # adapter's (last_error is shown by 'digest status' and in incidents).
    state.last_error = redact_text(error)[:LAST_ERROR_MAX]
