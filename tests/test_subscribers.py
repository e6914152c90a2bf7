"""Subscribers: address normalization, CSV import/export, removal, tokens."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from digest.store.db import session_scope
from subscribers import csvio, repository
from subscribers.addresses import clean_name, normalize_email
from subscribers.errors import SubscriberInputError
from subscribers.models import SubscriberStatus
from subscribers.tokens import BadToken, Purpose, TokenSigner

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ada@Example.COM", "ada@example.com"),
        ("  grace@example.org ", "grace@example.org"),
        ("x@bücher.de", "x@xn--bcher-kva.de"),
    ],
)
def test_addresses_are_normalized(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", ["", "no-at-sign", "a@b", "eve@example.org\r\nBcc: x@y.z"])
def test_bad_addresses_are_refused_with_a_reason(raw: str) -> None:
    with pytest.raises(SubscriberInputError):
        normalize_email(raw)


def test_names_lose_control_characters() -> None:
    assert clean_name("Eve\r\nBcc: x@example.org") == "Eve Bcc: x@example.org"
    assert clean_name(None) == ""


def test_import_reports_bad_rows_by_line_and_imports_the_rest(engine: Engine) -> None:
    text = (
        "email,name,city\n"
        "ada@example.com,Ada,London\n"
        "not-an-address,Bad,Nowhere\n"
        "ADA@example.com,Ada again,London\n"
        'grace@example.org,"Hopper, Grace",NYC\n'
    )
    with session_scope(engine) as session:
        report = csvio.import_csv(session, stream=io.StringIO(text), source="t", now=NOW)
    assert report.added == 2
    assert report.added_by_status == {"pending": 2}  # no consent stated: pending
    assert [e.line for e in report.errors] == [3]
    assert "not a valid address" in report.errors[0].reason
    assert [(m.line, m.note) for m in report.merged] == [(4, "merged into line 2")]
    assert report.ignored_columns == ["city"]
    with session_scope(engine) as session:
        again = csvio.import_csv(session, stream=io.StringIO(text), source="t", now=NOW)
        names = {s.email: s.name for s in repository.list_subscribers(session)}
    assert again.added == 0 and again.already_present == 2
    assert names == {"ada@example.com": "Ada", "grace@example.org": "Hopper, Grace"}


def test_import_needs_an_email_column(engine: Engine) -> None:
    with session_scope(engine) as session, pytest.raises(SubscriberInputError, match="'email'"):
        csvio.import_csv(session, stream=io.StringIO("mail,name\nx@y.z,X\n"), source="t", now=NOW)


def test_import_never_resurrects_an_unsubscribed_reader(engine: Engine) -> None:
    with session_scope(engine) as session:
        repository.add(session, email="gone@example.com", now=NOW)
        assert repository.remove(session, email="Gone@Example.com", now=NOW)
    with session_scope(engine) as session:
        report = csvio.import_csv(
            session, stream=io.StringIO("email\ngone@example.com\n"), source="t", now=NOW
        )
        subscriber = repository.get_by_email(session, email="gone@example.com")
    assert report.added == 0
    assert [n.line for n in report.skipped] == [2]
    assert subscriber is not None and subscriber.status == SubscriberStatus.unsubscribed


def test_export_round_trips(engine: Engine) -> None:
    with session_scope(engine) as session:
        repository.add(session, email="a@example.com", name="A, with comma", now=NOW)
        repository.add(session, email="b@example.com", now=NOW)
        buffer = io.StringIO()
        assert csvio.export_csv(session, stream=buffer) == 2
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "email,name,categories,status,created_at,time_zone"
    assert lines[1].startswith('a@example.com,"A, with comma",,active,2026-11-23')


def test_add_is_idempotent(engine: Engine) -> None:
    with session_scope(engine) as session:
        first = repository.add(session, email="a@example.com", now=NOW)
        second = repository.add(session, email="A@EXAMPLE.com", name="other", now=NOW)
    assert first.created and not second.created
    assert second.subscriber.id == first.subscriber.id


def test_add_refuses_to_activate_a_suppressed_address(engine: Engine) -> None:
    with session_scope(engine) as session:
        repository.add(session, email="gone@example.com", now=NOW)
        assert repository.remove(session, email="gone@example.com", now=NOW)
        assert not repository.remove(session, email="gone@example.com", now=NOW)
        with pytest.raises(repository.AddressSuppressed, match=r"suppressed \(unsubscribed\)"):
            repository.add(session, email="GONE@example.com", now=NOW)
        # A pending row (a sign-up awaiting confirmation) may exist; it is never mailed.
        pending = repository.add(
            session, email="other@example.com", status=SubscriberStatus.pending, now=NOW
        )
        assert pending.created


def test_tokens_are_scoped_by_purpose_and_survive_rotation() -> None:
    old = TokenSigner(["old-key"])
    rotated = TokenSigner(["new-key", "old-key"])
    token = old.sign(Purpose.unsubscribe, 42)
    assert rotated.verify(Purpose.unsubscribe, token) == 42
    assert rotated.sign(Purpose.unsubscribe, 42) != token  # new tokens use the first key
    with pytest.raises(BadToken):
        rotated.verify(Purpose.preferences, token)
    with pytest.raises(BadToken):
        TokenSigner(["new-key"]).verify(Purpose.unsubscribe, token)
    tampered = "43" + token[2:]
    with pytest.raises(BadToken):
        rotated.verify(Purpose.unsubscribe, tampered)
    for junk in ["", ".", "abc.def", "1.!!!", "9" * 40 + ".AAAA"]:
        with pytest.raises(BadToken):
            rotated.verify(Purpose.unsubscribe, junk)


def test_confirmation_tokens_expire() -> None:
    signer = TokenSigner(["k"])
    token = signer.sign(Purpose.confirm, 7)
    assert signer.verify(Purpose.confirm, token, max_age=60) == 7
    with pytest.raises(BadToken):
        signer.verify(Purpose.unsubscribe, token)
    with pytest.raises(BadToken, match="expired"):
        signer.verify(Purpose.confirm, token, max_age=-1)
