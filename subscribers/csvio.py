"""CSV import and export of subscribers (``email,name,categories,status,created_at,time_zone``).

Import reads a header row (names case-insensitive; only ``email`` is required;
other columns are reported once and ignored) and works in two passes:

1. read: every row is checked (address, ``status``, ``created_at``, ``time_zone``:
   an IANA name, empty = the site's zone); a bad row is reported with its line
   number and reason. A second spelling of an address already seen (``Ada@X.com``
   after ``ada@x.com``) is *merged* into the first occurrence (blanks filled,
   categories joined, a do-not-mail status wins); the very same spelling twice is
   reported as a duplicate.
2. write, in chunks of ``CHUNK_ROWS``: ``INSERT … ON CONFLICT DO NOTHING …
   RETURNING``, suppression entries and consent events each in one statement.

An import never resurrects: a suppressed address, or an existing reader who
unsubscribed, bounced or complained, stays as it is and the consent log gets an
``import_skipped`` event saying why. Existing active and pending readers are left
unchanged ("already present"). Rows are ``pending`` unless the operator states
where the list's consent came from (``consent_source``); then ``status`` is
honoured. Do-not-mail statuses (unsubscribed, bounced, complained) are honoured
either way: they are imported with that status *and* suppressed.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TextIO

from sqlmodel import Session

from subscribers import consent
from subscribers.addresses import normalize_email
from subscribers.consent import Context
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
from subscribers.repository import (
    BLOCKED_STATUSES,
    bulk_insert,
    clean_categories,
    clean_time_zone,
    list_subscribers,
    new_row,
    select_where_in,
)

CHUNK_ROWS = 2_000
COLUMNS = ("email", "name", "categories", "status", "created_at", "time_zone")
EXPORT_COLUMNS = COLUMNS
_CATEGORY_SEPARATORS = re.compile(r"[;|]")
_STATUSES = ", ".join(s.value for s in SubscriberStatus)
_IMPORT = Context(ConsentSource.import_)
_ACTION_FOR = {
    SubscriberStatus.unsubscribed: ConsentAction.unsubscribed,
    SubscriberStatus.bounced: ConsentAction.bounced,
    SubscriberStatus.complained: ConsentAction.complained,
}
# A dot-atom local part (RFC 5322 3.2.3, the email-validator's own ASCII rule) and an
# ASCII host name: such an address is valid exactly when its domain is, so the domain
# is checked once by email-validator and remembered (~35 µs per address → ~1 µs).
_FAST = re.compile(r"([A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+)*)"
                   r"@([A-Za-z0-9.\-]+)")  # fmt: skip
_TABLE: Any = Subscriber.__table__  # type: ignore[attr-defined]
_EVENTS: Any = ConsentEvent.__table__  # type: ignore[attr-defined]
_SUPPRESSIONS: Any = Suppression.__table__  # type: ignore[attr-defined]
_MAX_ADDRESS = 254  # octets, RFC 5321 4.5.3.1.3 (as email-validator checks it)


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class RowNote:
    """A row that was read but not imported as written (skipped, merged, not applied)."""

    line: int
    email: str
    note: str


@dataclass(slots=True)
class ImportReport:
    added: int = 0
    added_by_status: dict[str, int] = field(default_factory=dict)
    already_present: int = 0
    skipped: list[RowNote] = field(default_factory=list)  # suppressed: never resurrected
    merged: list[RowNote] = field(default_factory=list)  # other spellings of an earlier row
    notes: list[RowNote] = field(default_factory=list)  # already present; file disagrees
    errors: list[RowError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        good = self.added + self.already_present + len(self.skipped) + len(self.merged)
        return good + len(self.errors)


@dataclass(slots=True)
class _Row:
    line: int
    spelling: str  # the address as written, trimmed
    email: str
    name: str
    categories: list[str]
    status: SubscriberStatus | None
    created_at: datetime | None
    time_zone: str = ""
    merged_lines: list[int] = field(default_factory=list)


def import_csv(
    session: Session,
    *,
    stream: TextIO,
    source: str,
    now: datetime,
    consent_source: str | None = None,
) -> ImportReport:
    """Import readers from ``stream``; ``source`` is stored on new rows (e.g. the file name).

    ``consent_source`` says where the list's consent came from ("signup form 2025"):
    given, rows are imported ``active`` (or as their ``status`` column says); not
    given, ``pending``. Raises SubscriberInputError for a bad header or a blank
    ``consent_source``.
    """
    if consent_source is not None and not consent_source.strip():
        raise SubscriberInputError("consent must say where it came from: the source is empty")
    report = ImportReport()
    rows = _read(stream, report, now)
    writer = _Writer(session, report, source=source, consent_source=consent_source, now=now)
    iterator = iter(rows)
    while chunk := list(islice(iterator, CHUNK_ROWS)):
        writer.write(chunk)
    return report


def _read(stream: TextIO, report: ImportReport, now: datetime) -> list[_Row]:
    reader = csv.reader(stream)
    header = [h.strip().lstrip("\ufeff").lower() for h in next(reader, [])]
    if "email" not in header:
        raise SubscriberInputError(
            "the CSV file needs a header row with an 'email' column "
            f"(found: {', '.join(header) or 'nothing'})"
        )
    if len(set(header)) != len(header):
        raise SubscriberInputError(f"the header names a column twice: {', '.join(header)}")
    report.ignored_columns = [h for h in header if h not in COLUMNS]
    normalize = _Normalizer()
    seen: dict[str, _Row] = {}
    end = reader.line_num
    for cells in reader:
        line, end = end + 1, reader.line_num
        if not any(c.strip() for c in cells):
            continue  # blank line
        try:
            row = _parse(dict(zip(header, cells, strict=False)), cells[len(header) :], line)
            row.email = normalize(row.spelling)
            row.created_at = _future_check(row.created_at, now)
        except SubscriberInputError as exc:
            report.errors.append(RowError(line, str(exc)))
            continue
        first = seen.get(row.email)
        if first is None:
            seen[row.email] = row
        elif first.spelling == row.spelling:
            report.errors.append(RowError(line, f"duplicate of line {first.line} ({row.email})"))
        else:
            _merge(first, row)
            report.merged.append(RowNote(line, row.email, f"merged into line {first.line}"))
    return list(seen.values())


def _parse(cells: dict[str, str], extra: list[str], line: int) -> _Row:
    problems: list[str] = []
    if any(c.strip() for c in extra):
        problems.append("more fields than the header has columns")
    status: SubscriberStatus | None = None
    if text := cells.get("status", "").strip().lower():
        try:
            status = SubscriberStatus(text)
        except ValueError:
            problems.append(f"bad status {text!r} (expected one of {_STATUSES})")
    created_at: datetime | None = None
    if text := cells.get("created_at", "").strip():
        try:
            created_at = _parse_time(text)
        except ValueError:
            problems.append(f"bad date {text!r} (expected RFC 3339 or an ISO date: 2025-03-01)")
    time_zone = _time_zone(cells.get("time_zone", ""), problems)
    if problems:
        raise SubscriberInputError("; ".join(problems))
    categories = _CATEGORY_SEPARATORS.split(cells.get("categories", ""))
    return _Row(
        line=line,
        spelling=cells.get("email", "").strip(),
        email="",
        name=cells.get("name", ""),
        categories=clean_categories(categories),
        status=status,
        created_at=created_at,
        time_zone=time_zone,
    )


def _time_zone(text: str, problems: list[str]) -> str:
    """The checked zone name, or ``""`` with the reason added to ``problems``."""
    try:
        return clean_time_zone(text)
    except SubscriberInputError as exc:
        problems.append(str(exc))
        return ""


def _parse_time(text: str) -> datetime:
    """RFC 3339 (``2025-03-01T10:00:00Z``, offsets) or an ISO date; naive means UTC."""
    value = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _future_check(value: datetime | None, now: datetime) -> datetime | None:
    if value is not None and value > now:
        raise SubscriberInputError(f"bad date {value.isoformat()}: created_at is in the future")
    return value


def _merge(first: _Row, other: _Row) -> None:
    """Fold ``other`` (a later spelling of the same address) into ``first``."""
    first.merged_lines.append(other.line)
    if not first.name.strip():
        first.name = other.name
    first.categories = clean_categories([*first.categories, *other.categories])
    first.created_at = first.created_at or other.created_at
    first.time_zone = first.time_zone or other.time_zone
    if other.status in BLOCKED_STATUSES and first.status not in BLOCKED_STATUSES:
        first.status = other.status  # a do-not-mail status is never overruled
    first.status = first.status or other.status


class _Normalizer:
    """:func:`normalize_email` with the domain check cached (same answers, ~30x faster)."""

    def __init__(self) -> None:
        self.domains: dict[str, str] = {}  # domain as written → ASCII, lower case

    def __call__(self, raw: str) -> str:
        candidate = raw.strip()
        match = _FAST.fullmatch(candidate)
        if match is not None and len(candidate) <= _MAX_ADDRESS:
            domain = self.domains.get(match[2])
            if domain is not None:
                return f"{match[1]}@{domain}".lower()
        address = normalize_email(candidate)  # the reference; raises with the reason
        if match is not None and "xn--" not in match[2].lower():
            self.domains[match[2]] = address.rpartition("@")[2]
        return address


class _Writer:
    """Writes chunks of read rows: lookups, inserts, suppressions, consent events."""

    def __init__(
        self,
        session: Session,
        report: ImportReport,
        *,
        source: str,
        consent_source: str | None,
        now: datetime,
    ) -> None:
        self.session, self.report, self.source, self.now = session, report, source, now
        self.consent_source = consent_source
        self.events: list[dict[str, Any]] = []

    def write(self, chunk: list[_Row]) -> None:
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
        fresh: list[_Row] = []
        for row in chunk:
            reason = suppressed.get(hashes[row.email])
            known = existing.get(row.email)
            if reason is None and known is not None and known[1] in BLOCKED_STATUSES:
                reason = f"the reader is {known[1]}"
            if reason is not None:
                self._skip(row, known[0] if known else None, reason)
            elif known is not None:
                self._present(row, known[1])
            else:
                fresh.append(row)
        self._insert(fresh)
        bulk_insert(self.session, table=_EVENTS, rows=self.events)
        self.events = []

    def _skip(self, row: _Row, subscriber_id: int | None, reason: str) -> None:
        note = f"suppressed ({reason}): an import never resurrects an address"
        self.report.skipped.append(RowNote(row.line, row.email, note))
        self._event(row, subscriber_id, ConsentAction.import_skipped, f"not imported: {note}")

    def _present(self, row: _Row, status: str) -> None:
        self.report.already_present += 1
        if row.status in BLOCKED_STATUSES:
            note = f"already present as {status}; the file's status {row.status} was not applied"
            self.report.notes.append(RowNote(row.line, row.email, note))

    def _status(self, row: _Row) -> SubscriberStatus:
        if row.status is not None and row.status in BLOCKED_STATUSES:
            return row.status
        if self.consent_source is None:
            return SubscriberStatus.pending
        return row.status or SubscriberStatus.active

    def _insert(self, rows: list[_Row]) -> None:
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
            self._event(row, ids[row.email], action, self._detail(status))
        consent.suppress_many(self.session, entries=blocked, source="import", now=self.now)

    def _values(self, row: _Row) -> dict[str, Any]:
        status = self._status(row)
        return new_row(
            email=row.email,
            name=row.name,
            status=status,
            source=self.source,
            now=self.now,
            categories=row.categories,
            created_at=row.created_at,
            time_zone=row.time_zone,
        )

    def _detail(self, status: SubscriberStatus) -> str:
        text = f"imported as {status}"
        if status in BLOCKED_STATUSES:
            text += " and suppressed"
        if self.consent_source is not None:
            return f"{text}; consent stated by the operator: {self.consent_source}"
        if status == SubscriberStatus.pending:
            text += ": no consent stated, the reader must confirm"
        return text

    def _event(
        self, row: _Row, subscriber_id: int | None, action: ConsentAction, text: str
    ) -> None:
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
