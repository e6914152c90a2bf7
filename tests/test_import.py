"""CSV import v2 and export (subscribers.csvio), on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from digest.store.db import make_engine, session_scope, upgrade
from subscribers import consent, csvio, repository
from subscribers.addresses import normalize_email
from subscribers.errors import SubscriberInputError
from subscribers.models import SubscriberStatus

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def _import(engine: Engine, text: str, consent_source: str | None = None) -> csvio.ImportReport:
    with session_scope(engine) as session:
        return csvio.import_csv(
            session,
            stream=io.StringIO(text),
            source="import:list.csv",
            now=NOW,
            consent_source=consent_source,
        )


def _statuses(engine: Engine) -> dict[str, str]:
    with session_scope(engine) as session:
        return {s.email: s.status for s in repository.list_subscribers(session)}


def _log(engine: Engine, email: str) -> list[tuple[str, str, str]]:
    with session_scope(engine) as session:
        return [(e.action, e.source, e.detail) for e in consent.history(session, email=email)]


def test_the_issue_scenario_unsubscribed_malformed_and_a_duplicate_in_other_case(
    engine: Engine,
) -> None:
    with session_scope(engine) as session:
        repository.add(session, email="gone@example.com", now=NOW)
        repository.remove(session, email="gone@example.com", now=NOW)
    report = _import(
        engine,
        "Email,Name\n"
        "ada@example.com,Ada\n"
        "gone@example.com,Gone\n"
        "not an address,X\n"
        "ADA@Example.COM,Ada Again\n",
        consent_source="signup form 2025",
    )
    assert report.added == 1 and report.added_by_status == {"active": 1}
    assert [(e.line, "not a valid address" in e.reason) for e in report.errors] == [(4, True)]
    assert [(m.line, m.email, m.note) for m in report.merged] == [
        (5, "ada@example.com", "merged into line 2")
    ]
    assert [(n.line, n.email) for n in report.skipped] == [(3, "gone@example.com")]
    assert _statuses(engine) == {"ada@example.com": "active", "gone@example.com": "unsubscribed"}
    (imported,) = _log(engine, "ada@example.com")
    assert imported[:2] == ("subscribed", "import")
    assert "line 2 (merged lines 5)" in imported[2] and "signup form 2025" in imported[2]
    skipped = _log(engine, "gone@example.com")[-1]
    assert skipped[:2] == ("import_skipped", "import")
    assert "line 3" in skipped[2] and "suppressed (unsubscribed)" in skipped[2]


def test_without_consent_rows_are_pending_and_do_not_mail_statuses_still_count(
    engine: Engine,
) -> None:
    report = _import(
        engine,
        "email,status\na@example.com,active\nb@example.com,\nc@example.com,Unsubscribed\n",
    )
    assert report.added_by_status == {"pending": 2, "unsubscribed": 1}
    assert _statuses(engine) == {
        "a@example.com": "pending",
        "b@example.com": "pending",
        "c@example.com": "unsubscribed",
    }
    assert "no consent stated" in _log(engine, "a@example.com")[0][2]
    with session_scope(engine) as session:
        assert consent.suppression_of(session, email="c@example.com") is not None


def test_consented_import_honours_status_categories_and_created_at(engine: Engine) -> None:
    text = (
        "EMAIL,name,categories,status,created_at\n"
        "a@example.com,A,coding; images|coding,,2025-03-01\n"
        "b@example.com,B,,pending,2025-03-01T10:00:00+02:00\n"
        "c@example.com,C,,unsubscribed,2025-03-01T10:00:00Z\n"
        "d@example.com,D,,bounced,\n"
        "e@example.com,E,,complained,\n"
        "f@example.com,F,,sleeping,\n"
        "g@example.com,G,,,yesterday\n"
        "h@example.com,H,,,2999-01-01\n"
    )
    report = _import(engine, text, consent_source="signup form 2025")
    assert report.added_by_status == {
        "active": 1,
        "pending": 1,
        "unsubscribed": 1,
        "bounced": 1,
        "complained": 1,
    }
    reasons = {e.line: e.reason for e in report.errors}
    assert set(reasons) == {7, 8, 9}
    assert "bad status 'sleeping'" in reasons[7]
    assert "bad date 'yesterday'" in reasons[8] and "in the future" in reasons[9]
    with session_scope(engine) as session:
        a = repository.get_by_email(session, email="a@example.com")
        b = repository.get_by_email(session, email="b@example.com")
        suppressed = {
            e: (s.reason if (s := consent.suppression_of(session, email=e)) else None)
            for e in ("a@example.com", "c@example.com", "d@example.com", "e@example.com")
        }
    assert a is not None and a.categories == ["coding", "images"] and a.name == "A"
    assert a.created_at == datetime(2025, 3, 1, tzinfo=UTC)
    assert b is not None and b.created_at == datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    assert suppressed == {
        "a@example.com": None,
        "c@example.com": "unsubscribed",
        "d@example.com": "bounced",
        "e@example.com": "complained",
    }
    assert [a for a, _, _ in _log(engine, "d@example.com")] == ["bounced"]


def test_existing_readers_are_never_changed_or_resurrected(engine: Engine) -> None:
    with session_scope(engine) as session:
        repository.add(session, email="active@example.com", name="Kept", now=NOW)
        repository.add(session, email="wait@example.com", status=SubscriberStatus.pending, now=NOW)
        repository.add(
            session, email="bounced@example.com", status=SubscriberStatus.bounced, now=NOW
        )
    report = _import(
        engine,
        "email,name,status\n"
        "active@example.com,New name,unsubscribed\n"
        "wait@example.com,,active\n"
        "bounced@example.com,,active\n",
        consent_source="old list",
    )
    assert report.added == 0 and report.already_present == 2
    assert [(n.line, n.email) for n in report.skipped] == [(4, "bounced@example.com")]
    assert "the reader is bounced" in report.skipped[0].note
    assert [n.line for n in report.notes] == [2]  # the file's "unsubscribed" not applied
    assert _statuses(engine) == {
        "active@example.com": "active",
        "wait@example.com": "pending",
        "bounced@example.com": "bounced",
    }
    assert _log(engine, "bounced@example.com")[-1][0] == "import_skipped"
    assert _log(engine, "wait@example.com") == []  # nothing decided, nothing logged


def test_exact_duplicates_are_errors_and_bad_headers_are_refused(engine: Engine) -> None:
    report = _import(engine, "email\na@example.com\n\na@example.com\n")
    assert [(e.line, e.reason) for e in report.errors] == [
        (4, "duplicate of line 2 (a@example.com)")
    ]
    for header in ("mail,name\nx@example.com,X\n", "email,Email\na@example.com,b\n", ""):
        with pytest.raises(SubscriberInputError):
            _import(engine, header)
    with pytest.raises(SubscriberInputError, match="where it came from"):
        _import(engine, "email\na@example.com\n", consent_source="  ")


def test_line_numbers_count_quoted_newlines(engine: Engine) -> None:
    report = _import(engine, 'email,name\na@example.com,"two\nlines"\nbad,x\n')
    assert [e.line for e in report.errors] == [4]


def test_export_round_trips_through_import(engine: Engine, tmp_path: Path) -> None:
    text = (
        "email,name,categories,status,created_at,time_zone\n"
        'a@example.com,"Lovelace, Ada",coding;images,active,2025-03-01T10:00:00+00:00,Asia/Tokyo\n'
        "b@example.com,,,pending,2025-03-02T10:00:00+00:00,\n"
        "c@example.com,C,,unsubscribed,2025-03-03T10:00:00+00:00,America/New_York\n"
    )
    _import(engine, text, consent_source="signup form")
    with session_scope(engine) as session:
        first = io.StringIO()
        assert csvio.export_csv(session, stream=first, page=2) == 3
    assert first.getvalue().replace("\r\n", "\n") == text
    other = make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    upgrade(other)
    report = _import(other, first.getvalue(), consent_source="export")
    assert report.added == 3 and not report.errors
    with session_scope(other) as session:
        second = io.StringIO()
        csvio.export_csv(session, stream=second)
    other.dispose()
    assert second.getvalue() == first.getvalue()


@pytest.mark.parametrize(
    "raw",
    [
        "a@example.com",
        "A.B+tag@Example.COM",
        "x@bücher.de",
        "x@xn--bcher-kva.de",
        "a..b@example.com",
        ".a@example.com",
        "a.@example.com",
        "a@example",
        "a@localhost",
        "a@example.invalid",
        "a@-example.com",
        "a@example.com.",
        "a@123.456",
        "a@" + "x" * 64 + ".com",
        "a" * 65 + "@example.com",
        "a" * 240 + "@example.com",
        "a@b@example.com",
        "info@Example.com",
        "o'brien@example.co.uk",
        "ädam@example.com",
        "a b@example.com",
        '"a"@example.com',
    ],
)
def test_the_fast_address_check_agrees_with_the_validator(raw: str) -> None:
    fast = csvio._Normalizer()
    for _ in range(2):  # the second time round, a valid domain is cached
        assert _outcome(fast, raw) == _outcome(normalize_email, raw), raw
        _outcome(fast, "someone@" + raw.rpartition("@")[2])


def _outcome(normalize: Callable[[str], str], raw: str) -> str | None:
    try:
        return normalize(raw)
    except SubscriberInputError:
        return None


@pytest.mark.slow
def test_a_100000_row_import(engine: Engine) -> None:
    rows = [
        f"reader{i}@example{i % 50}.com,Reader {i},coding;images,,2025-01-02"
        for i in range(100_000)
    ]
    rows[10] = "not-an-address,x,,,"
    rows[20] = "READER0@example0.com,Merged,,,"
    text = "email,name,categories,status,created_at\n" + "\n".join(rows) + "\n"
    started = time.perf_counter()
    report = _import(engine, text, consent_source="benchmark")
    elapsed = time.perf_counter() - started
    print(f"\n100,000-row import on {engine.dialect.name}: {elapsed:.1f} s")
    assert report.added == 99_998
    assert len(report.errors) == 1 and len(report.merged) == 1
    with session_scope(engine) as session:
        assert repository.count_by_status(session) == {"active": 99_998}
        started = time.perf_counter()
        assert csvio.export_csv(session, stream=io.StringIO()) == 99_998
    print(f"100,000-row export on {engine.dialect.name}: {time.perf_counter() - started:.1f} s")
    again = _import(engine, text, consent_source="benchmark")
    assert again.added == 0 and again.already_present == 99_998
