"""CSV import and export of subscribers.

Import reads a header row with ``email`` (required) and ``name`` (optional); other
columns are reported once and ignored. Every bad row is reported with its line
number and reason; the good rows are inserted in bulk (chunks of
``CHUNK_ROWS``) with ``ON CONFLICT DO NOTHING``, so existing readers are never
changed or resurrected by an import.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from sqlmodel import Session

from subscribers.addresses import normalize_email
from subscribers.errors import SubscriberInputError
from subscribers.models import Subscriber, SubscriberStatus
from subscribers.repository import insert_ignoring_duplicates, list_subscribers, new_row

CHUNK_ROWS = 2_000
KNOWN_COLUMNS = ("email", "name")
EXPORT_COLUMNS = ("email", "name", "status", "created_at")


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str


@dataclass(slots=True)
class ImportReport:
    added: int = 0
    already_present: int = 0
    duplicates_in_file: int = 0
    errors: list[RowError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        good = self.added + self.already_present + self.duplicates_in_file
        return good + len(self.errors)


def import_csv(
    session: Session,
    *,
    stream: TextIO,
    source: str,
    now: datetime,
    status: SubscriberStatus = SubscriberStatus.active,
) -> ImportReport:
    """Import readers from ``stream``. Raises SubscriberInputError for a bad header."""
    reader = csv.DictReader(stream)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "email" not in header:
        raise SubscriberInputError(
            "the CSV file needs a header row with an 'email' column "
            f"(found: {', '.join(header) or 'nothing'})"
        )
    reader.fieldnames = header
    report = ImportReport(ignored_columns=[h for h in header if h not in KNOWN_COLUMNS])
    seen: dict[str, int] = {}
    chunk: list[dict[str, Any]] = []
    for line, row in _numbered(reader):
        try:
            address = normalize_email(row.get("email") or "")
        except SubscriberInputError as exc:
            report.errors.append(RowError(line, str(exc)))
            continue
        if address in seen:
            report.duplicates_in_file += 1
            report.errors.append(RowError(line, f"duplicate of line {seen[address]} ({address})"))
            continue
        seen[address] = line
        chunk.append(
            new_row(email=address, name=row.get("name"), status=status, source=source, now=now)
        )
        if len(chunk) >= CHUNK_ROWS:
            report.added += _insert(session, chunk)
            chunk = []
    if chunk:
        report.added += _insert(session, chunk)
    report.already_present = len(seen) - report.added
    return report


def _numbered(reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str, str | None]]]:
    for row in reader:
        yield reader.line_num, row


def _insert(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows``, skipping known addresses; return how many were new."""
    stmt = insert_ignoring_duplicates(session).returning(Subscriber.__table__.c.id)  # type: ignore[attr-defined]
    return len(session.execute(stmt, rows).all())


def export_csv(session: Session, *, stream: TextIO, page: int = 5_000) -> int:
    """Write every subscriber as CSV (``EXPORT_COLUMNS``); return the row count."""
    writer = csv.writer(stream)
    writer.writerow(EXPORT_COLUMNS)
    written, offset = 0, 0
    while batch := list_subscribers(session, limit=page, offset=offset):
        for s in batch:
            writer.writerow([s.email, s.name, s.status, s.created_at.isoformat()])
        written += len(batch)
        offset += page
    return written
