"""Many ``digest worker`` processes on PostgreSQL: each reader gets exactly one copy.

And on SQLite: two ``digest send`` runs on one file, the second refuses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.provider_fakes import Recorder, resend_app, serve
from tests.smtp_sink import SmtpSink
from tests.support import write_config


def _env(db_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DIGEST_DATABASE_URL": db_url,
        "DIGEST_SECRET_KEY": "k",
        "DIGEST_RESEND_API_KEY": "test-token",
    }


def _digest(config: Path, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=_env(db_url),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _prepare(
    tmp_path: Path, db_url: str, port: int, readers: int, transport: dict[str, object] | None = None
) -> Path:
    smtp = {"kind": "smtp", "host": "127.0.0.1", "port": port, "security": "none"}
    config = write_config(tmp_path, transport=transport or {**smtp, "connections": 2})
    _digest(config, db_url, "init")
    csv = tmp_path / "readers.csv"
    csv.write_text("email\n" + "".join(f"r{i}@example.com\n" for i in range(readers)))
    _digest(config, db_url, "subscribers", "import", str(csv), "--consented", "--source", "t")
    _digest(config, db_url, "fetch")
    _digest(config, db_url, "compose")
    return config


@pytest.mark.slow
def test_four_workers_on_postgresql_send_each_reader_one_copy(
    tmp_path: Path, pg_schema_url: str
) -> None:
    readers = 10_000
    with SmtpSink() as sink:
        config = _prepare(tmp_path, pg_schema_url, sink.port, readers)
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "digest",
                    "--config",
                    str(config),
                    "worker",
                    "--exit-when-idle",
                ],
                env=_env(pg_schema_url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [w.communicate(timeout=600) for w in workers]
        for w, (stdout, stderr) in zip(workers, outputs, strict=True):
            assert w.returncode == 0, stdout + stderr
        counts = sink.handler.per_recipient()
    assert len(counts) == readers
    assert set(counts.values()) == {1}
    sent_by = [int(o.rsplit("Worker done: ", 1)[1].split()[0]) for o, _ in outputs]
    assert sum(sent_by) == readers
    assert sum(1 for n in sent_by if n) >= 2  # the work was shared


@pytest.mark.slow
def test_sigkill_of_a_worker_then_restart_misses_nobody(tmp_path: Path, pg_schema_url: str) -> None:
    readers, connections = 2_000, 2
    with SmtpSink() as sink:
        config = _prepare(tmp_path, pg_schema_url, sink.port, readers)
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(config), "worker"],
            env=_env(pg_schema_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while sink.handler.count() < readers // 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _digest(config, pg_schema_url, "worker", "--exit-when-idle")
        counts = sink.handler.per_recipient()
    assert len(counts) == readers
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= connections  # at most the messages in flight at the kill


@pytest.mark.slow
@pytest.mark.parametrize("command", ["worker", "send"])
def test_sigkill_then_restart_through_an_idempotent_provider_duplicates_nobody(
    tmp_path: Path, pg_schema_url: str, command: str
) -> None:
    """Resend (Idempotency-Key): a batch in flight at the kill is re-sent as the same
    group under the same key, so the provider drops it: zero duplicates.

    Claims of 150 rows make requests of 100 and 50; the 4th request (a 50-row group
    in the middle of the ledger) is held unanswered while later ones go on, so after
    the restart its rows sit among others: plain re-batching would re-form them with
    other readers under a new key, and the provider would send them again."""
    readers = 1_200
    rec = Recorder()
    rec.hold = {4: 3.0}  # accepted at once, answered late: the kill lands in between
    with serve(resend_app(rec)) as url:
        transport = {"kind": "resend", "base_url": url, "requests_per_second": 0}
        config = _prepare(tmp_path, pg_schema_url, 0, readers, {**transport, "concurrency": 2})
        with config.open("a") as f:
            f.write("\n[send]\nbatch_size = 150\n")
        args = [sys.executable, "-m", "digest", "--config", str(config), command]
        proc = subprocess.Popen(args, env=_env(pg_schema_url), stdout=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _held_and_past(rec, 4, readers // 2):
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        held = rec.posts("/emails/batch")[3]
        restart = [command, "--exit-when-idle"] if command == "worker" else [command]
        _digest(config, pg_schema_url, *restart)
    assert len(held.json()) == 50 and sum(rec.accepted.values()) >= readers // 2
    assert len(rec.accepted) == readers  # nobody missed
    assert set(rec.accepted.values()) == {1}  # nobody got two
    assert rec.duplicates >= 1  # the held batch was replayed, and dropped
    assert all(r.status != 409 for r in rec.requests)  # replays were byte-identical


def _held_and_past(rec: Recorder, number: int, accepted: int) -> bool:
    """True once request ``number`` awaits its answer and ``accepted`` are accepted."""
    posts = rec.posts("/emails/batch")
    held = len(posts) >= number and posts[number - 1].status == 0
    return held and sum(rec.accepted.values()) >= accepted


@pytest.mark.slow
def test_sigterm_drains_and_gives_unsent_rows_back(tmp_path: Path, pg_schema_url: str) -> None:
    readers = 2_000
    with SmtpSink() as sink:
        config = _prepare(tmp_path, pg_schema_url, sink.port, readers)
        proc = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(config), "worker"],
            env=_env(pg_schema_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while sink.handler.count() < readers // 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 3, stdout + stderr  # interrupted mid-edition, resumable
        assert "interrupted" in stderr and "pending" in stderr
        stopped_at = sink.handler.count()
        assert stopped_at < readers
        status = _digest(config, pg_schema_url, "status").stdout
        assert "sending" in status
        _digest(config, pg_schema_url, "worker", "--exit-when-idle")
        counts = sink.handler.per_recipient()
    assert len(counts) == readers
    assert set(counts.values()) == {1}  # a graceful stop leaves nothing in doubt


@pytest.mark.slow
def test_on_sqlite_a_second_send_refuses(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'digest.db'}"
    with SmtpSink() as sink:
        config = _prepare(tmp_path, db_url, sink.port, 3_000)
        first = subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(config), "send"],
            env=_env(db_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while sink.handler.count() < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = _digest(config, db_url, "send")
        first.communicate(timeout=300)
    assert "Another process is working on this already" in second.stdout
    assert first.returncode == 0
    assert set(sink.handler.per_recipient().values()) == {1}


@pytest.mark.slow
def test_send_with_local_workers_on_postgresql(tmp_path: Path, pg_schema_url: str) -> None:
    readers = 1_500
    with SmtpSink() as sink:
        config = _prepare(tmp_path, pg_schema_url, sink.port, readers)
        result = _digest(config, pg_schema_url, "send", "--workers", "3")
        counts = sink.handler.per_recipient()
    assert len(counts) == readers and set(counts.values()) == {1}
    assert f"all senders: {readers} sent" in result.stdout


def test_send_workers_need_postgresql(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'digest.db'}"
    config = write_config(tmp_path)
    _digest(config, db_url, "init")
    _digest(config, db_url, "subscribers", "add", "a@example.com")
    _digest(config, db_url, "fetch")
    _digest(config, db_url, "compose")
    result = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(config), "send", "--workers", "2"],
        capture_output=True,
        text=True,
        env=_env(db_url),
        timeout=120,
    )
    assert result.returncode == 2 and "needs PostgreSQL" in result.stderr


def _sent_ids(db_url: str) -> set[int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id FROM delivery WHERE state = 'sent'")).scalars()
            return {int(i) for i in rows}
    finally:
        engine.dispose()


def _ledger(db_url: str) -> tuple[str, dict[str, int]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM edition")).scalar_one()
            tally = conn.execute(text("SELECT state, count(*) FROM delivery GROUP BY state"))
            return str(status), {str(s): int(n) for s, n in tally}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_worker_stopped_past_its_lease_overwrites_nothing(
    tmp_path: Path, pg_schema_url: str
) -> None:
    """Done-means 1 of issue 12: SIGSTOP one of two workers for longer than its
    lease, then SIGCONT: it finds its rows taken over, sends none of them, writes
    over nothing, says so and exits 3; the other worker finishes the edition."""
    readers, connections, lease = 3_000, 2, 10
    with SmtpSink() as sink:
        config = _prepare(tmp_path, pg_schema_url, sink.port, readers)
        with config.open("a") as f:
            f.write(f"\n[send]\nlease_seconds = {lease}\n")
        args = [sys.executable, "-m", "digest", "--config", str(config), "worker"]
        stopped, other = (
            subprocess.Popen(
                [*args, "--poll", "1"],
                env=_env(pg_schema_url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        )
        seen: set[int] = set()  # every row ever seen sent: none may leave that state
        deadline = time.monotonic() + 120
        while sink.handler.count() < readers // 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        stopped.send_signal(signal.SIGSTOP)
        resume_at = time.monotonic() + lease + 8
        while time.monotonic() < resume_at:
            now_sent = _sent_ids(pg_schema_url)
            assert seen <= now_sent
            seen |= now_sent
            time.sleep(0.5)
        stopped.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            now_sent = _sent_ids(pg_schema_url)
            assert seen <= now_sent, f"rows left 'sent': {sorted(seen - now_sent)[:10]}"
            seen |= now_sent
            if len(seen) == readers and stopped.poll() is not None:
                break
            time.sleep(0.5)
        out, errors = stopped.communicate(timeout=60)
        other.send_signal(signal.SIGTERM)
        other_out, other_err = other.communicate(timeout=60)
        counts = sink.handler.per_recipient()
    assert stopped.returncode == 3, out + errors
    assert "lost its lease" in out + errors
    assert other.returncode == 0, other_out + other_err
    assert len(counts) == readers  # nobody missed
    assert sum(n - 1 for n in counts.values()) <= connections  # its in-flight messages
    assert _sent_ids(pg_schema_url) >= seen
    assert _ledger(pg_schema_url) == ("sent", {"sent": readers})


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


@pytest.mark.slow
def test_send_with_workers_takes_over_from_a_killed_helper(
    tmp_path: Path, pg_schema_url: str
) -> None:
    """Done-means 2 of issue 12: SIGKILL the helper of 'digest send --workers 2' at
    about 40 %: the helper is reaped and its rows taken over; the run ends with
    nobody missing, or exits 3 naming how many remain and a second run finishes."""
    readers, connections = 3_000, 2
    with SmtpSink() as sink:
        config = _prepare(tmp_path, pg_schema_url, sink.port, readers)
        with config.open("a") as f:
            f.write("\n[send]\nlease_seconds = 10\n")
        args = [sys.executable, "-m", "digest", "--config", str(config), "send", "--workers", "2"]
        parent = subprocess.Popen(
            args, env=_env(pg_schema_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 120
        while sink.handler.count() < readers * 2 // 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        (helper,) = _children(parent.pid)
        os.kill(helper, signal.SIGKILL)
        out, errors = parent.communicate(timeout=300)
        status, tally = _ledger(pg_schema_url)
        if parent.returncode == 0:
            assert (status, tally) == ("sent", {"sent": readers}), out + errors
        else:
            assert parent.returncode == 3, out + errors
            assert "still pending" in errors and "digest send" in errors
            _digest(config, pg_schema_url, "send")
        counts = sink.handler.per_recipient()
    assert f"helper process {helper} was killed (SIGKILL)" in out
    assert len(counts) == readers
    assert sum(n - 1 for n in counts.values()) <= connections
    assert _ledger(pg_schema_url) == ("sent", {"sent": readers})


def test_serve_on_a_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    db_url = f"sqlite:///{tmp_path / 'digest.db'}"
    config = write_config(tmp_path)
    _digest(config, db_url, "init")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "digest", "--config", str(config), "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            env=_env(db_url),
            timeout=60,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
