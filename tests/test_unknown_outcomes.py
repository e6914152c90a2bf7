"""END-TO-END (issue 12, "Done means" 3): "maybe delivered" answers through ``digest
run`` / ``digest send`` as an operator runs them (a subprocess per command).

- A fake Postmark that accepts a batch and answers 500, and whose outbound message
  search (shaped from Postmark's documentation, ``tests/provider_fakes.py``) finds
  the messages: every reader gets exactly one copy (0 duplicates).
- An SMTP sink that drops the connection after DATA for one reader, with
  ``unknown_policy = "skip"``: that reader got exactly one copy, as did everyone else.

These need both halves of issue 12: the transports say ``unknown`` and can be asked
(``digest/transports``), and the ledger records ``unknown`` rows, calls the
transport's ``reconcile`` and only then applies ``[send] unknown_policy``
(``digest/delivery/sending.py``, ``digest/delivery/ledger.py``). Without the ledger's half, the
unknown rows go to ``unknown_policy = "resend"`` and the Postmark test counts
duplicates.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.provider_fakes import Recorder, postmark_app, serve
from tests.smtp_sink import SmtpSink
from tests.support import SAMPLE_FEED, run_digest, write_config

TOKEN = "test-token"
SUBSCRIBERS = SAMPLE_FEED.parent / "subscribers.csv"


def readers() -> list[str]:
    with SUBSCRIBERS.open(encoding="utf-8") as file:
        return [row["email"].strip().lower() for row in csv.DictReader(file)]


def digest(config: Path, *args: str, db_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DIGEST_DATABASE_URL": db_url,
        "DIGEST_SECRET_KEY": "test-key",
        "DIGEST_POSTMARK_SERVER_TOKEN": TOKEN,
        "COLUMNS": "200",
    }
    return run_digest(config, *args, env=env, timeout=300)


def prepare(config: Path, db_url: str) -> None:
    for args in (
        ("init",),
        ("subscribers", "import", str(SUBSCRIBERS), "--consented", "--source", "test"),
    ):
        done = digest(config, *args, db_url=db_url)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_postmark_500_after_acceptance_is_reconciled_no_duplicates(
    tmp_path: Path, db_url: str
) -> None:
    rec = Recorder(token=TOKEN)
    rec.accept_then(500, times=1)  # the first batch is kept, then answered 500
    with serve(postmark_app(rec)) as url:
        transport = {"kind": "postmark", "base_url": url, "backoff_seconds": 0.01}
        config = write_config(tmp_path, transport=transport, send={"unknown_policy": "resend"})
        prepare(config, db_url)
        run = digest(config, "run", db_url=db_url)
        again = digest(config, "send", db_url=db_url)  # anything still pending goes now
        status = digest(config, "status", db_url=db_url)

    output = run.stdout + run.stderr + again.stdout + again.stderr
    everyone = readers()
    assert len(rec.posts("/email/batch")) >= 1
    searches = [r for r in rec.requests if r.path == "/messages/outbound"]
    assert searches, "the send run never asked Postmark's outbound message search\n" + output
    assert rec.accepted == dict.fromkeys(everyone, 1), output  # 0 duplicates, 0 missing
    assert status.returncode == 0, status.stdout + status.stderr


@pytest.mark.slow
def test_smtp_drop_after_data_with_skip_gives_one_copy(tmp_path: Path, db_url: str) -> None:
    everyone = readers()
    with SmtpSink() as sink:
        sink.handler.drop.add(everyone[0])
        transport = {"kind": "smtp", "host": "127.0.0.1", "port": sink.port, "security": "none"}
        config = write_config(tmp_path, transport=transport, send={"unknown_policy": "skip"})
        prepare(config, db_url)
        run = digest(config, "run", db_url=db_url)
        again = digest(config, "send", db_url=db_url)
        status = digest(config, "status", db_url=db_url)
        record = digest(config, "subscribers", "export-data", everyone[0], db_url=db_url)
    output = run.stdout + run.stderr + again.stdout + again.stderr + status.stdout
    assert sink.handler.per_recipient() == dict.fromkeys(everyone, 1), output
    # The run says what happened, and the reader's row says so too.
    summary = " ".join(run.stdout.split())
    assert "Outcome unknown (maybe delivered): 1 answers this run" in summary, output
    assert "1 skipped ([send] unknown_policy = 'skip')" in summary, output
    deliveries = json.loads(record.stdout)["deliveries"]
    assert [d["state"] for d in deliveries] == ["skipped"], record.stdout
    assert "after the message body was sent" in deliveries[0]["detail"]
    assert "the reader got at most one copy" in deliveries[0]["detail"]
