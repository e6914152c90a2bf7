"""Bounces that come back by mail, applied (:mod:`digest.bounces.ingest`), on SQLite and
PostgreSQL: a real edition composed and sent (memory transport) with VERP on, then
DSNs, a complaint and stray mail fed back; and ``digest bounces ingest`` in a
subprocess, as a Postfix pipe runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from digest import config, pipeline
from digest.bounces.ingest import BounceTooLarge, Ingested, ingest
from digest.config.runtime import Runtime
from digest.delivery.verp import delivery_of, verp_keys
from digest.store.db import session_scope, upgrade
from digest.store.models import Delivery, DeliveryEventRecord, DeliveryState
from digest.transports.base import OutgoingMessage
from digest.transports.memory import MemoryTransport
from digest.web.mailer import confirmation_message
from subscribers import repository
from subscribers.models import Subscriber, SubscriberStatus
from tests import bounce_samples as samples
from tests.support import REPO, write_config

MONDAY_9_BERLIN = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # edition 2026-W48 is due
BOUNCES = "bounces@test.example"
READERS = ("ada@example.org", "bob@example.org", "cy@example.org", "dee@example.org")
ENV = {"DIGEST_SECRET_KEY": "bounce-test-key"}
# `digest` with the bounces group added if the CLI does not register it (yet).
CLI = (
    "from digest.cli import app\n"
    "from digest.cli.bounces import bounces_app, register\n"
    "if not any(g.typer_instance is bounces_app for g in app.registered_groups):\n"
    "    register(app)\n"
    "app(prog_name='digest')\n"
)


class Clock:
    """``start`` plus the real time since (so waits end)."""

    def __init__(self, start: datetime) -> None:
        self.start, self.origin = start, time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.origin)


@dataclass
class Sent:
    rt: Runtime
    config_path: Path
    db_url: str
    messages: dict[str, OutgoingMessage]  # by reader

    def ingest(self, raw: bytes, recipient: str = "") -> Ingested:
        return ingest(self.rt, raw, envelope_recipient=recipient)

    def dsn(self, reader: str, **fields: str) -> bytes:
        """A Postfix DSN for ``reader``'s message, sent to its VERP address, whose
        returned headers hold no Message-ID of ours: only VERP can match it."""
        message = self.messages[reader]
        return samples.postfix_dsn(message.sender, "<x1@elsewhere.example>", reader, **fields)

    def status(self, reader: str) -> SubscriberStatus:
        with session_scope(self.rt.engine) as session:
            stmt = select(Subscriber).where(Subscriber.email == reader)  # type: ignore[arg-type]
            found: Subscriber = session.execute(stmt).scalar_one()
            return found.status

    def delivery(self, reader: str) -> Delivery:
        with session_scope(self.rt.engine) as session:
            found = session.get(Delivery, self.messages[reader].delivery_id)
            assert found is not None
            return found

    def events(self) -> list[DeliveryEventRecord]:
        with session_scope(self.rt.engine) as session:
            return list(session.execute(select(DeliveryEventRecord)).scalars())


@pytest.fixture
def sent(tmp_path: Path, db_url: str) -> Iterator[Sent]:
    """Edition 2026-W48 composed and sent to four readers with VERP on."""
    path = write_config(tmp_path, transport={"kind": "memory"}, email={"bounce_address": BOUNCES})
    rt = Runtime.open(
        config.load(path, environ={**ENV, "DIGEST_DATABASE_URL": db_url}),
        clock=Clock(MONDAY_9_BERLIN),
    )
    upgrade(rt.engine)
    with session_scope(rt.engine) as session:
        for reader in READERS:
            repository.add(session, email=reader, now=MONDAY_9_BERLIN)
    pipeline.fetch(rt)
    edition = pipeline.compose(rt).edition
    assert edition is not None
    asyncio.run(pipeline.send(rt, edition=edition))
    transport = rt.transport()
    assert isinstance(transport, MemoryTransport)
    yield Sent(rt, path, db_url, {m.recipient: m for m in transport.sent})
    rt.close()


def test_each_message_leaves_with_its_verp_sender(sent: Sent) -> None:
    assert sorted(sent.messages) == sorted(READERS)
    [key] = verp_keys(sent.rt)
    for message in sent.messages.values():
        assert message.sender.startswith("bounces+") and message.sender.endswith("@test.example")
        assert delivery_of(message.sender, BOUNCES, key) == message.delivery_id
        assert b'From: "Test Weekly" <digest@test.example>\r\n' in message.data  # unchanged
    assert len({m.sender for m in sent.messages.values()}) == len(READERS)


def test_confirmation_mail_leaves_with_the_plain_bounce_address(sent: Sent) -> None:
    message = confirmation_message(sent.rt, subscriber_id=1, address="new@example.org")
    assert message.sender == BOUNCES
    assert b"From: Test Weekly <digest@test.example>\r\n" in message.data  # unchanged


def test_a_hard_bounce_to_the_verp_address_bounces_that_reader_once(sent: Sent) -> None:
    ada = sent.messages["ada@example.org"]
    raw = sent.dsn("ada@example.org")
    result = sent.ingest(raw, recipient=ada.sender)
    assert result.kind == "applied" and result.report.kind == "dsn"
    assert result.outcomes == ["reader suppressed (hard bounce)"]
    assert result.line.startswith("applied: dsn: bounced-hard ada@example.org 5.1.1")
    assert sent.status("ada@example.org") == SubscriberStatus.bounced
    delivery = sent.delivery("ada@example.org")
    assert delivery.state == DeliveryState.bounced
    assert "5.1.1" in delivery.detail and "User unknown in virtual mailbox table" in delivery.detail
    assert sent.status("bob@example.org") == SubscriberStatus.active
    before = (len(sent.events()), delivery.detail)

    again = sent.ingest(raw, recipient=ada.sender)
    assert again.kind == "duplicate" and again.outcomes == []
    assert (len(sent.events()), sent.delivery("ada@example.org").detail) == before


def test_a_soft_bounce_is_counted_and_leaves_the_reader(sent: Sent) -> None:
    raw = sent.dsn("bob@example.org", status="4.2.2", diagnostic="452 4.2.2 <{r}>: Mailbox full")
    result = sent.ingest(raw)  # no --recipient: the Delivered-To header carries VERP
    assert result.kind == "applied"
    assert result.outcomes == ["soft bounce; 1 of 3 counted within the window"]
    assert sent.status("bob@example.org") == SubscriberStatus.active
    assert sent.delivery("bob@example.org").state == DeliveryState.sent


def test_a_delay_notice_changes_nothing(sent: Sent) -> None:
    raw = sent.dsn("bob@example.org", action="delayed", status="4.4.1", diagnostic="timed out")
    result = sent.ingest(raw)
    assert result.outcomes == ["stored only (unknown event kind)"]
    assert sent.status("bob@example.org") == SubscriberStatus.active
    assert sent.delivery("bob@example.org").state == DeliveryState.sent


def test_a_policy_block_leaves_the_reader_alone(sent: Sent) -> None:
    raw = sent.dsn("dee@example.org", status="5.7.1", diagnostic="554 5.7.1 blocked by policy")
    result = sent.ingest(raw)
    assert result.outcomes[0].startswith("policy block, reader left alone")
    assert sent.status("dee@example.org") == SubscriberStatus.active


def test_an_arf_complaint_to_the_plain_address_matches_by_message_id(sent: Sent) -> None:
    cy = sent.messages["cy@example.org"]
    raw = samples.arf_complaint(BOUNCES, cy.message_id, "cy@example.org", rcpt_header=False)
    result = sent.ingest(raw, recipient=BOUNCES)
    assert (result.kind, result.outcomes) == ("applied", ["reader suppressed (complaint)"])
    assert sent.status("cy@example.org") == SubscriberStatus.complained
    [row] = [e for e in sent.events() if e.type == "complained"]
    assert row.delivery_id == cy.delivery_id


def test_an_unknown_message_is_counted(sent: Sent) -> None:
    result = sent.ingest(samples.unclassifiable(BOUNCES), recipient=BOUNCES)
    assert result.kind == "unknown" and result.line.startswith("unknown:")
    [row] = sent.events()
    assert row.provider == "mailbox" and row.type == "unknown"
    assert row.raw["subject"] == "Out of office: Test Weekly"
    assert sent.ingest(samples.unclassifiable(BOUNCES)).kind == "unknown"
    assert len(sent.events()) == 1  # the same message again: counted once


def test_a_forged_verp_token_matches_nobody(sent: Sent) -> None:
    ada = sent.messages["ada@example.org"]
    local, _, domain = ada.sender.partition("@")
    forged = f"{local[:-1]}{'b' if local[-1] == 'a' else 'a'}@{domain}"
    raw = samples.postfix_dsn(forged, ada.message_id, "ada@example.org")
    result = sent.ingest(raw, recipient=forged)
    assert result.kind == "unmatched"
    assert result.outcomes[0].startswith("stored only (no matching reader)")
    assert sent.status("ada@example.org") == SubscriberStatus.active
    assert sent.delivery("ada@example.org").state == DeliveryState.sent
    [row] = sent.events()
    assert (row.delivery_id, row.subscriber_id) == (None, None)


def test_a_message_over_the_limit_is_refused(sent: Sent) -> None:
    limit = sent.rt.config.bounces.max_message_bytes
    with pytest.raises(BounceTooLarge, match="max_message_bytes"):
        sent.ingest(b"x" * (limit + 1))


def _cli(
    sent: Sent, stdin: bytes, *args: str, db_url: str = "", config_path: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, **ENV, "DIGEST_DATABASE_URL": db_url or sent.db_url, "COLUMNS": "300"}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            CLI,
            "--config",
            str(config_path or sent.config_path),
            "bounces",
            "ingest",
            *args,
        ],
        input=stdin,
        capture_output=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_the_postfix_pipe_applies_once_and_keeps_what_it_cannot_read(sent: Sent) -> None:
    ada = sent.messages["ada@example.org"]
    raw = sent.dsn("ada@example.org")
    first = _cli(sent, raw, "--recipient", ada.sender)
    assert first.returncode == 0, first.stderr.decode()
    assert first.stdout.decode().startswith("applied: dsn: bounced-hard ada@example.org 5.1.1")
    second = _cli(sent, raw, "--recipient", ada.sender)
    assert second.returncode == 0 and second.stdout.decode().startswith("duplicate:")
    assert sent.status("ada@example.org") == SubscriberStatus.bounced
    assert len(sent.events()) == 1

    stray = samples.unclassifiable(BOUNCES)
    kept = _cli(sent, stray, "--recipient", BOUNCES)
    assert kept.returncode == 0, kept.stderr.decode()
    [saved] = (sent.config_path.parent / "bounces-unknown").glob("*.eml")
    assert saved.read_bytes() == stray and saved.stat().st_mode & 0o777 == 0o600
    assert kept.stdout.decode().startswith("unknown:") and str(saved) in kept.stdout.decode()


def test_the_pipe_says_try_again_later_when_the_database_is_down(sent: Sent) -> None:
    raw = sent.dsn("bob@example.org")
    down = _cli(sent, raw, db_url="postgresql+psycopg://postgres@127.0.0.1:1/none")
    assert down.returncode == 75, down.stderr.decode()
    assert "retry later" in down.stderr.decode()
    assert sent.status("bob@example.org") == SubscriberStatus.active


def test_the_pipe_exits_2_for_bad_configuration(sent: Sent, tmp_path: Path) -> None:
    text = sent.config_path.read_text(encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(f'"{BOUNCES}"', '"Bounces <b@x>"'), encoding="utf-8")
    result = _cli(sent, b"", config_path=bad)
    assert result.returncode == 2, result.stderr.decode()
    assert "[email] key 'bounce_address'" in result.stderr.decode()
