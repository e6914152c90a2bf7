"""The bounce mailbox against real servers: Debian's Postfix and Dovecot on loopback
(tests/mailservers.py), the ``digest`` command in subprocesses.

A digest goes through Postfix with VERP on to a good reader and to one Dovecot does
not know; Postfix accepts both, fails the second over LMTP (550 5.1.1) and writes
its own RFC 3464 DSN to the VERP address, which Dovecot files in the bounce
mailbox. ``digest bounces poll`` then reads that mailbox over IMAP or POP3.
Each test reads its own mailbox (``MailServers.new_box``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from digest.bounces import mailbox
from digest.bounces.imap import ImapBox
from digest.ops import bounce_job
from digest.store.ops_models import RunRecord
from tests import mailservers
from tests.bounce_site import GONE, UNCLASSIFIABLE, Site, plain_imap_server, runtime_of
from tests.mailservers import GOOD_READER, MailServers


@pytest.fixture(scope="session")
def mail() -> Iterator[MailServers]:
    """Postfix and Dovecot for the whole session (skips, or fails under CI=true,
    where they cannot run)."""
    yield from mailservers.started()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'digest.db'}"


def test_postfix_dsn_is_polled_applied_and_filed(
    tmp_path: Path, mail: MailServers, db_url: str
) -> None:
    """Done means 1: the reader is bounced, the row says why, the DSN is in Processed."""
    site = Site(tmp_path, mail, db_url)
    dsn = site.send_to_two_readers()
    assert site.reader(GONE)[:2] == ("active", "sent")  # Postfix accepted both

    polled = site.digest("bounces", "poll")

    assert polled.returncode == 0, polled.stdout + polled.stderr
    assert "1 applied" in polled.stdout, polled.stdout
    status, state, detail = site.reader(GONE)
    assert (status, state) == ("bounced", "bounced")
    assert "5.1.1" in detail, detail
    assert site.reader(GOOD_READER)[:2] == ("active", "sent")
    assert mail.messages("INBOX", site.box) == []
    assert mail.messages("Processed", site.box) == [dsn]
    assert mail.messages("Unknown", site.box) == []
    again = site.digest("bounces", "poll")
    assert again.returncode == 0 and "0 applied" in again.stdout, again.stdout + again.stderr


def test_the_same_dsn_piped_twice_is_applied_once(
    tmp_path: Path, mail: MailServers, sqlite_db: str
) -> None:
    site = Site(tmp_path, mail, sqlite_db)
    dsn = site.send_to_two_readers()

    first = site.digest("bounces", "ingest", stdin=dsn)
    second = site.digest("bounces", "ingest", stdin=dsn)

    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.startswith("applied"), first.stdout
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.startswith("duplicate"), second.stdout
    assert site.reader(GONE)[:2] == ("bounced", "bounced")


def test_an_unclassifiable_message_goes_to_unknown_and_is_counted(
    tmp_path: Path, mail: MailServers, sqlite_db: str
) -> None:
    site = Site(tmp_path, mail, sqlite_db)
    site.prepare()
    mail.append(UNCLASSIFIABLE, site.box)

    polled = site.digest("bounces", "poll")

    assert polled.returncode == 0, polled.stdout + polled.stderr
    assert "1 unknown" in polled.stdout, polled.stdout
    assert mail.messages("INBOX", site.box) == []
    [kept] = mail.messages("Unknown", site.box)
    assert b"Are you free on Friday?" in kept
    assert mail.messages("Processed", site.box) == []


def test_starttls_works_and_no_password_goes_out_in_clear(
    tmp_path: Path, mail: MailServers, sqlite_db: str
) -> None:
    site = Site(tmp_path, mail, sqlite_db, port=mail.imap_port, security="starttls")
    site.prepare()
    mail.append(UNCLASSIFIABLE, site.box)
    polled = site.digest("bounces", "poll")
    assert polled.returncode == 0, polled.stdout + polled.stderr
    assert "1 unknown" in polled.stdout, polled.stdout

    with plain_imap_server() as (port, heard):
        (tmp_path / "plain").mkdir()
        refused = Site(tmp_path / "plain", mail, sqlite_db, port=port, security="starttls")
        done = refused.digest("bounces", "poll")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "does not offer STARTTLS" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert heard and not any(mail.password in line for line in heard), heard


def test_pop3_over_tls_deletes_what_it_applied(
    tmp_path: Path, mail: MailServers, sqlite_db: str
) -> None:
    site = Site(tmp_path, mail, sqlite_db, kind="pop3", port=mail.pop3s_port, delete=True)
    site.send_to_two_readers()
    mail.append(UNCLASSIFIABLE, site.box)

    polled = site.digest("bounces", "poll")

    assert polled.returncode == 0, polled.stdout + polled.stderr
    assert "2 seen, 1 applied" in polled.stdout and "1 unknown" in polled.stdout, polled.stdout
    assert site.reader(GONE)[:2] == ("bounced", "bounced")
    [left] = mail.messages("INBOX", site.box)  # the DSN deleted, the unknown one kept
    assert b"Are you free on Friday?" in left
    again = site.digest("bounces", "poll")  # the kept one is not read again
    assert again.returncode == 0 and "0 seen" in again.stdout, again.stdout + again.stderr


def test_imap_delete_removes_the_applied_dsn(
    tmp_path: Path, mail: MailServers, sqlite_db: str
) -> None:
    site = Site(tmp_path, mail, sqlite_db, delete=True)
    site.send_to_two_readers()

    polled = site.digest("bounces", "poll")

    assert polled.returncode == 0, polled.stdout + polled.stderr
    assert "1 applied" in polled.stdout, polled.stdout
    assert site.reader(GONE)[:2] == ("bounced", "bounced")
    assert mail.messages("INBOX", site.box) == []
    assert mail.messages("Processed", site.box) == []


def test_without_move_or_uidplus_it_copies_flags_and_expunges(
    tmp_path: Path, mail: MailServers, sqlite_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server without MOVE (RFC 6851) or UIDPLUS: UID COPY, \\Deleted, EXPUNGE."""
    site = Site(tmp_path, mail, sqlite_db)
    dsn = site.send_to_two_readers()
    mail.append(UNCLASSIFIABLE, site.box)
    original = ImapBox._call

    def hide(self: ImapBox, what: str, method: Any, *args: Any, **kw: Any) -> Any:
        data = original(self, what, method, *args, **kw)
        if what == "CAPABILITY":
            data = [b" ".join(w for w in data[0].split() if w not in (b"MOVE", b"UIDPLUS"))]
        return data

    monkeypatch.setattr(ImapBox, "_call", hide)
    with runtime_of(site) as rt:
        report = mailbox.poll(rt)

    assert (report.seen, report.applied, report.unknown, report.failed) == (2, 1, 1, 0)
    assert report.ok and report.problems == []
    assert mail.messages("INBOX", site.box) == []
    assert mail.messages("Processed", site.box) == [dsn]
    assert len(mail.messages("Unknown", site.box)) == 1


def test_a_set_stop_event_leaves_every_message_in_place(
    tmp_path: Path, mail: MailServers, sqlite_db: str
) -> None:
    site = Site(tmp_path, mail, sqlite_db)
    site.prepare()
    mail.append(UNCLASSIFIABLE, site.box)
    stop = threading.Event()
    stop.set()

    with runtime_of(site) as rt:
        report = mailbox.poll(rt, stop=stop)

    assert (report.seen, report.left, report.stopped) == (0, 1, True)
    assert "1 left for the next poll (stopped)" in report.line()
    assert len(mail.messages("INBOX", site.box)) == 1


def test_the_scheduler_job_records_each_poll_and_never_raises(
    tmp_path: Path, mail: MailServers, sqlite_db: str
) -> None:
    site = Site(tmp_path, mail, sqlite_db)
    site.prepare()
    mail.append(UNCLASSIFIABLE, site.box)
    with runtime_of(site) as rt:
        good = bounce_job.poll_bounces(rt, trigger="cli")
    site.env["DIGEST_BOUNCES_PASSWORD"] = "not-the-password-42"
    with runtime_of(site) as rt:
        refused = bounce_job.poll_bounces(rt, trigger="schedule")
        with rt.engine.connect() as conn:
            rows = conn.execute(
                select(
                    RunRecord.job, RunRecord.trigger, RunRecord.outcome, RunRecord.detail
                ).order_by(RunRecord.id)  # type: ignore[call-overload]
            ).all()

    assert good.outcome == "ok" and "1 unknown" in good.detail, good.detail
    assert refused.outcome == "failed"
    assert "AUTHENTICATIONFAILED" in refused.detail, refused.detail
    assert [tuple(r[:3]) for r in rows] == [
        ("bounces", "cli", "ok"),
        ("bounces", "schedule", "failed"),
    ]
    assert not any("not-the-password-42" in r[3] or mail.password in r[3] for r in rows)
