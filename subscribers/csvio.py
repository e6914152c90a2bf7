"""CSV import and export of subscribers (``email,name,categories,status,created_at,time_zone``).

Import reads a header row (names case-insensitive; only ``email`` is required;
other columns are reported once and ignored) and works in two passes:

1. read (:mod:`subscribers.csvtext`, :mod:`subscribers.csvrows`): the whole file is
   read and every row checked before anything is written. A file that is not UTF-8
   text, looks binary, is over ``MAX_IMPORT_BYTES`` or leaves a quote open is
   refused as a whole (:class:`CsvFileError`, naming the line or byte); a bad row
   is reported with its line number and reason, and the others are imported.
2. write, in chunks of ``CHUNK_ROWS``: ``INSERT … ON CONFLICT DO NOTHING … RETURNING``,
   suppressions and consent events each in one statement (``progress`` after each).

An import never resurrects: a suppressed address, or an existing reader who
unsubscribed, bounced or complained, stays as it is and the consent log gets an
``import_skipped`` event saying why. Existing active and pending readers are left
unchanged ("already present"). Rows are ``pending`` unless the operator states where
the list's consent came from (``consent_source``); then ``status`` is honoured.
Do-not-mail statuses are honoured either way: imported with that status *and* suppressed.

Other services' exports and mapped CSVs: :mod:`subscribers.csvformats` (a service's
do-not-mail rows become suppressions only, and stop a reader present here too).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from itertools import islice
from typing import Any, BinaryIO, TextIO

from sqlmodel import Session

from subscribers import consent
from subscribers.bulk import bulk_insert, select_where_in
from subscribers.consent import Context
from subscribers.csvformats import Plan, initial_status
from subscribers.csvrows import (
    COLUMNS,
    ImportReport,
    Normalizer,
    Row,
    RowError,
    RowNote,
    preview_csv,
    read_file,
)
from subscribers.csvtext import MAX_IMPORT_BYTES, CsvFileError
from subscribers.errors import SubscriberInputError
from subscribers.models import (
    ConsentAction,
    ConsentEvent,
    ConsentSource,
    Subscriber,
    SubscriberStatus,
    Suppression,
    SuppressionReason,
)
from subscribers.repository import BLOCKED_STATUSES, block, list_subscribers, new_row

__all__ = [
    "CHUNK_ROWS",
    "COLUMNS",
    "EXPORT_COLUMNS",
    "MAX_IMPORT_BYTES",
    "CsvFileError",
    "ImportReport",
    "RowError",
    "RowNote",
    "export_csv",
    "import_csv",
    "preview_csv",
]

CHUNK_ROWS = 2_000
EXPORT_COLUMNS = COLUMNS
_IMPORT = Context(ConsentSource.import_)
_ACTION_FOR = {
    SubscriberStatus.unsubscribed: ConsentAction.unsubscribed,
    SubscriberStatus.bounced: ConsentAction.bounced,
    SubscriberStatus.complained: ConsentAction.complained,
}
_TABLE: Any = Subscriber.__table__  # type: ignore[attr-defined]
_EVENTS: Any = ConsentEvent.__table__  # type: ignore[attr-defined]
_SUPPRESSIONS: Any = Suppression.__table__  # type: ignore[attr-defined]
_Normalizer = Normalizer  # its name before the split (tests use it)


def import_csv(
    session: Session,
    *,
    stream: TextIO | BinaryIO,
    source: str,
    now: datetime,
    consent_source: str | None = None,
    max_bytes: int = MAX_IMPORT_BYTES,
    file_name: str = "",
    forced: str | None = None,
    mapping: Mapping[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import readers from ``stream``; ``source`` is stored on new rows (e.g. the file name).

    ``consent_source`` says where the list's consent came from ("signup form 2025"):
    given, rows are imported ``active`` (or as their ``status`` column says); not
    given, ``pending`` (a service's export states its own). ``file_name``, ``forced``
    and ``mapping`` choose the format (:func:`subscribers.csvformats.choose`).
    ``progress(rows written, rows read)``. Raises SubscriberInputError for a bad header
    or mapping, an unknown format or a blank ``consent_source``, and its CsvFileError for
    a file refused as a whole (nothing written). A binary ``stream`` is decoded here.
    """
    if consent_source is not None and not consent_source.strip():
        raise SubscriberInputError("consent must say where it came from: the source is empty")
    report = ImportReport()
    choice = {"file_name": file_name, "forced": forced, "mapping": mapping or {}}
    rows, plan = read_file(stream, report, now, max_bytes, choice)
    if plan.service:  # the service recorded the opt-in
        consent_source = consent_source or f"imported from {plan.label} {file_name}".strip()
    writer = _Writer(session, report, source=source, plan=plan, now=now)
    writer.consent_source = consent_source
    iterator, done = iter(rows), 0
    while chunk := list(islice(iterator, CHUNK_ROWS)):
        writer.write(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, len(rows))
    return report


class _Writer:
    """Writes chunks of read rows: lookups, inserts, suppressions, consent events."""

    def __init__(
        self, session: Session, report: ImportReport, *, source: str, plan: Plan, now: datetime
    ) -> None:
        self.session, self.report, self.source, self.now = session, report, source, now
        self.plan = plan
        self.consent_source: str | None = None
        self.events: list[dict[str, Any]] = []

    def write(self, chunk: list[Row]) -> None:
        hashes = {row.email: consent.email_hash(row.email) for row in chunk}
        suppressed: dict[str, str] = dict(
            select_where_in(
                self.session,
                table=_SUPPRESSIONS,
                column="email_hash",
                values=list(hashes.values()),
                columns=("email_hash", "reason"),
            )
        )
        existing = {
            str(e): (int(i), str(s))
            for e, i, s in select_where_in(
                self.session,
                table=_TABLE,
                column="email",
                values=[row.email for row in chunk],
                columns=("email", "id", "status"),
            )
        }
        fresh: list[Row] = []
        only: list[Row] = []  # a service's do-not-mail rows: suppressed, no reader row
        for row in chunk:
            reason = suppressed.get(hashes[row.email])
            known = existing.get(row.email)
            if reason is None and known is not None and known[1] in BLOCKED_STATUSES:
                reason = f"the reader is {known[1]}"
            if reason is not None:
                self._skip(row, known[0] if known else None, reason)
            elif known is not None:
                self._present(row, *known)
            elif self.plan.service and row.status in BLOCKED_STATUSES:
                only.append(row)
            else:
                fresh.append(row)
        self._insert(fresh)
        self._suppress_only(only)
        bulk_insert(self.session, table=_EVENTS, rows=self.events)
        self.events = []

    def _skip(self, row: Row, subscriber_id: int | None, reason: str) -> None:
        note = f"suppressed ({reason}): an import never resurrects an address"
        self.report.skipped.append(RowNote(row.line, row.email, note))
        self._event(row, subscriber_id, ConsentAction.import_skipped, f"not imported: {note}")

    def _present(self, row: Row, subscriber_id: int, status: str) -> None:
        if row.status not in BLOCKED_STATUSES:
            self.report.already_present += 1
        elif not self.plan.service:
            self.report.already_present += 1
            note = f"already present as {status}; the file's status {row.status} was not applied"
            self.report.notes.append(RowNote(row.line, row.email, note))
        else:  # the reader's own decision at the service: stop mailing them here too
            subscriber = self.session.get(Subscriber, subscriber_id)
            assert subscriber is not None and row.status is not None
            note = f"was {status}; now {row.status} and suppressed ({row.why})"
            where = f"{self.source} line {row.line}: {note}"
            action = _ACTION_FOR[row.status]
            reason = SuppressionReason(row.status.value)
            block(self.session, subscriber, status=row.status, reason=reason, action=action,
                  context=_IMPORT, now=self.now, detail=where)  # fmt: skip
            self.report.stopped += 1
            self.report.notes.append(RowNote(row.line, row.email, note))

    def _suppress_only(self, rows: list[Row]) -> None:
        entries = [(r.email, SuppressionReason(str(r.status))) for r in rows]
        source = f"import:{self.plan.key}"
        consent.suppress_many(self.session, entries=entries, source=source, now=self.now)
        for row in rows:
            action = _ACTION_FOR[SubscriberStatus(str(row.status))]
            self._event(row, None, action, f"suppressed, not made a reader: {row.why}")
        self.report.suppressed_only += len(rows)

    def _insert(self, rows: list[Row]) -> None:
        if not rows:
            return
        values = [self._values(row) for row in rows]
        inserted = bulk_insert(
            self.session, table=_TABLE, rows=values, conflict=["email"], returning=["id", "email"]
        )
        ids = {str(e): int(i) for i, e in inserted}
        blocked: list[tuple[str, SuppressionReason]] = []
        for row, value in zip(rows, values, strict=True):
            if row.email not in ids:  # inserted meanwhile by someone else
                self.report.already_present += 1
                continue
            status = SubscriberStatus(value["status"])
            self.report.added += 1
            self.report.added_by_status[status] = self.report.added_by_status.get(status, 0) + 1
            if status in BLOCKED_STATUSES:
                blocked.append((row.email, SuppressionReason(status.value)))
            action = _ACTION_FOR.get(status, ConsentAction.subscribed)
            self._event(row, ids[row.email], action, self._detail(status, row.why))
        consent.suppress_many(self.session, entries=blocked, source="import", now=self.now)

    def _values(self, row: Row) -> dict[str, Any]:
        return new_row(
            email=row.email,
            name=row.name,
            status=initial_status(row.status, self.consent_source),
            source=self.source,
            now=self.now,
            categories=row.categories,
            created_at=row.created_at,
            time_zone=row.time_zone,
        )

    def _detail(self, status: SubscriberStatus, why: str) -> str:
        text = f"imported as {status}"
        if status in BLOCKED_STATUSES:
            text += f" and suppressed{f' ({why})' if why else ''}"
        if self.consent_source is not None:
            by = "the export" if self.plan.service else "the operator"
            return f"{text}; consent stated by {by}: {self.consent_source}"
        if status == SubscriberStatus.pending:
            text += ": no consent stated, the reader must confirm"
        return text

    def _event(self, row: Row, subscriber_id: int | None, action: ConsentAction, text: str) -> None:
        where = f"{self.source} line {row.line}"
        if row.merged_lines:
            where += f" (merged lines {', '.join(map(str, row.merged_lines))})"
        self.events.append(
            consent.event_row(
                subscriber_id=subscriber_id,
                email=row.email,
                action=action,
                context=_IMPORT,
                now=self.now,
                detail=f"{where}: {text}",
            )
        )


def export_csv(session: Session, *, stream: TextIO, page: int = 5_000) -> int:
    """Write every reader as CSV (``EXPORT_COLUMNS``, categories joined with ``;``).

    Streams in pages by id; erased readers are left out. Returns the row count. The
    output imports back unchanged (``import_csv`` with a ``consent_source``).
    """
    writer = csv.writer(stream)
    writer.writerow(EXPORT_COLUMNS)
    written = 0
    for s in _pages(session, page):
        if s.email.endswith("@erased.invalid"):
            continue
        created = s.created_at.isoformat()
        row = [s.email, s.name, ";".join(s.categories), s.status, created, s.time_zone]
        writer.writerow(row)
        written += 1
    return written


def _pages(session: Session, page: int) -> Iterator[Any]:
    last: int | None = None
    while batch := list_subscribers(session, limit=page, after_id=last):
        yield from batch
        last = batch[-1].id
