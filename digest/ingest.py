"""The ``fetch`` stage: read a feed, store its comparisons, keep the feed's health.

Transactions are kept short and never span the network: the cursor is read first,
the feed is fetched with no transaction open (on SQLite every transaction holds the
write lock, see :mod:`digest.db`), then the entries and the new cursor are stored
together in one transaction, so a crash cannot remember a cursor whose entries were
never stored. A failed fetch is recorded in its own transaction and re-raised;
nothing stored before is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from digest.comparisons import ingest, known_checker
from digest.db import session_scope
from digest.errors import FeedError, InvalidComparison
from digest.feeds.base import Feed, FeedCursor, FetchResult, Progress
from digest.models import FeedState

LAST_ERROR_MAX = 2000  # characters of the error kept in feed_state.last_error


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


def fetch_and_store(
    engine: Engine, feed: Feed, *, now: datetime, progress: Progress | None = None
) -> FetchReport:
    """Fetch ``feed`` and upsert its comparisons; record the outcome in ``feed_state``.

    Returns what was read and stored (bad comparisons and skipped documents are in
    ``invalid`` / ``problems``, not raised). Raises the feed's :class:`FeedError`
    after recording the failure (``consecutive_failures`` + 1, ``last_error``).
    """
    cursor = _load_cursor(engine, feed.key)
    try:
        result = feed.fetch(cursor, _EngineChecker(engine), progress)
    except FeedError as exc:
        _record_failure(engine, feed.key, now=now, error=str(exc))
        raise
    with session_scope(engine) as session:
        state = _lock_state(session, feed.key)
        report = ingest(session, result.entries, now=now)
        _record_success(state, result, now=now)
    return FetchReport(
        not_modified=result.not_modified,
        pages=result.pages,
        entries=len(result.entries),
        new=report.new,
        updated=report.updated,
        unchanged=report.unchanged,
        invalid=report.invalid,
        problems=list(result.problems),
    )


def _load_cursor(engine: Engine, key: str) -> FeedCursor:
    """The remembered cursor; creates the state row on first use.

    Creating it here, in its own short transaction, means two fetches of a new feed
    racing each other both find a row to lock in :func:`_lock_state`.
    """
    try:
        with session_scope(engine) as session:
            state = session.get(FeedState, key)
            if state is None:
                session.add(FeedState(feed=key))
                return FeedCursor()
            return FeedCursor(etag=state.etag, last_modified=state.last_modified)
    except IntegrityError:  # another process created the row a moment ago
        return FeedCursor()


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
        state.last_attempt_at = now
        state.consecutive_failures += 1
        state.last_error = error[:LAST_ERROR_MAX]
        session.add(state)
