"""Checking the rows of an import file: header, address, status, dates, duplicates.

Every row is checked (address, ``status``, ``created_at``, ``time_zone``: an IANA
name, empty = the site's zone); a bad row is reported with its line number and
reason. A second spelling of an address already seen (``Ada@X.com`` after
``ada@x.com``) is *merged* into the first occurrence (blanks filled, categories
joined, a do-not-mail status wins); the very same spelling twice is reported as a
duplicate. The file is read through :mod:`subscribers.csvtext`, which refuses a
file that is not UTF-8 text or leaves a quote open, before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from subscribers.addresses import normalize_email
from subscribers.csvtext import records
from subscribers.errors import SubscriberInputError
from subscribers.models import SubscriberStatus
from subscribers.repository import BLOCKED_STATUSES, clean_categories, clean_time_zone

COLUMNS = ("email", "name", "categories", "status", "created_at", "time_zone")
_CATEGORY_SEPARATORS = re.compile(r"[;|]")
_STATUSES = ", ".join(s.value for s in SubscriberStatus)
# A dot-atom local part (RFC 5322 3.2.3, the email-validator's own ASCII rule) and an
# ASCII host name: such an address is valid exactly when its domain is, so the domain
# is checked once by email-validator and remembered (~35 µs per address → ~1 µs).
_FAST = re.compile(r"([A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+)*)"
                   r"@([A-Za-z0-9.\-]+)")  # fmt: skip
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

    @property
    def all_rejected(self) -> bool:
        """Every row read was refused (an empty file is not that)."""
        return bool(self.errors) and self.rows_read == len(self.errors)


@dataclass(slots=True)
class Row:
    line: int
    spelling: str  # the address as written, trimmed
    email: str
    name: str
    categories: list[str]
    status: SubscriberStatus | None
    created_at: datetime | None
    time_zone: str = ""
    merged_lines: list[int] = field(default_factory=list)


def read_rows(lines: Iterator[str], report: ImportReport, now: datetime) -> list[Row]:
    """The good rows of the file, merged; bad rows go to ``report.errors``.

    Reads to the end of the file before it returns, so a :class:`CsvFileError`
    (raised by :func:`subscribers.csvtext.records`) comes before any row is written.
    """
    rows = records(lines)
    header = [h.strip().lstrip("\ufeff").lower() for h in next(rows, (1, []))[1]]
    if "email" not in header:
        raise SubscriberInputError(
            "the CSV file needs a header row with an 'email' column "
            f"(found: {', '.join(header) or 'nothing'})"
        )
    if len(set(header)) != len(header):
        raise SubscriberInputError(f"the header names a column twice: {', '.join(header)}")
    report.ignored_columns = [h for h in header if h not in COLUMNS]
    normalize = Normalizer()
    seen: dict[str, Row] = {}
    for line, cells in rows:
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


def _parse(cells: dict[str, str], extra: list[str], line: int) -> Row:
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
    return Row(
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


def _merge(first: Row, other: Row) -> None:
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


class Normalizer:
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
