"""Hostile import files (issue 13): an unclosed quote, bytes that are not UTF-8 text,
a binary file, every row rejected, a SQLite folder that cannot be created.

The command runs for real (subprocesses, real files on disk); the reading layer
(subscribers.csvtext) is also checked directly, at its chunk seams.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from digest.store.db import session_scope
from subscribers import csvio, csvtext
from subscribers.models import Subscriber
from tests.support import run_digest, write_config

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00"

Digest = Callable[..., subprocess.CompletedProcess[str]]


def _rows(count: int) -> list[str]:
    return [f"reader{i}@example.com,Reader {i}" for i in range(count)]


@pytest.fixture
def digest(tmp_path: Path, sqlite_url: str) -> Digest:
    config = write_config(tmp_path)

    def run(*args: str, url: str = sqlite_url) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DIGEST_DATABASE_URL": url, "DIGEST_SECRET_KEY": "k"}
        return run_digest(config, *args, env={**env, "COLUMNS": "200"}, timeout=120)

    assert run("init").returncode == 0
    return run


def _readers(digest: Digest) -> list[str]:
    result = digest("subscribers", "export")
    assert result.returncode == 0, result.stderr
    return [line.split(",")[0] for line in result.stdout.splitlines()[1:]]


def _refused(result: subprocess.CompletedProcess[str], *texts: str) -> str:
    """Exit 2 with one line on stderr (no traceback) that says each of ``texts``."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for text in texts:
        assert text in result.stderr, result.stderr
    return result.stderr


@pytest.mark.slow
def test_an_unclosed_quote_at_line_3_of_10_imports_nothing(digest: Digest, tmp_path: Path) -> None:
    assert digest("subscribers", "add", "old@example.com").returncode == 0
    lines = ["email,name", *_rows(9)]
    lines[2] = 'reader1@example.com,"Reader 1'  # line 3: the quote is never closed
    path = tmp_path / "list.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = _refused(
        digest("subscribers", "import", str(path)),
        f"{path} line 3: a quote opened here is never closed",
        "nothing was imported from this file",
    )
    assert "Imported" not in message
    assert _readers(digest) == ["old@example.com"]


@pytest.mark.slow
def test_a_latin1_file_is_refused_in_one_line(digest: Digest, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("email,name\nrene@example.com,René\n".encode("latin-1"))
    _refused(
        digest("subscribers", "import", str(path)),
        f"{path}: not UTF-8 text (byte 0xe9 at offset 31, line 2)",
        "save it as UTF-8",
    )
    assert _readers(digest) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "says"),
    [
        (PNG, "looks binary"),
        (random.Random(13).randbytes(4096), "list.bin: "),
        (b"PK\x03\x04\x14\x00\x06\x00", "Excel workbook (.xlsx)"),
        ("email\na@example.com\n".encode("utf-16"), "is UTF-16 text"),
    ],
    ids=["png", "random-bytes", "xlsx", "utf16"],
)
def test_binary_files_are_refused_in_one_line(
    digest: Digest, tmp_path: Path, content: bytes, says: str
) -> None:
    path = tmp_path / "list.bin"
    path.write_bytes(content)
    _refused(digest("subscribers", "import", str(path)), str(path), says)
    assert _readers(digest) == []


@pytest.mark.slow
def test_utf8_with_a_bom_and_crlf_imports(digest: Digest, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(
        "\ufeffEmail,Name\r\nrene@example.com,René\r\nada@example.com,Ada\r\n".encode()
    )
    result = digest("subscribers", "import", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Imported 2 new subscribers" in result.stdout
    assert _readers(digest) == ["rene@example.com", "ada@example.com"]


@pytest.mark.slow
def test_every_row_rejected_exits_1_with_the_row_errors(digest: Digest, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("email,status\nnot-an-address,\nb@example.com,maybe\n", encoding="utf-8")
    result = digest("subscribers", "import", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{path}:2:" in result.stdout and "not a valid address" in result.stdout
    assert f"{path}:3: bad status 'maybe'" in result.stdout
    assert "2 rows rejected" in result.stdout
    assert f"every row of {path} was rejected" in result.stderr
    assert "Traceback" not in result.stderr
    path.write_text("email\n", encoding="utf-8")  # no rows at all: nothing failed
    assert digest("subscribers", "import", str(path)).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_a_sqlite_folder_that_cannot_be_created(digest: Digest, tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n", encoding="utf-8")
    folder = blocker / "sub" if where == "under-a-file" else Path("/proc/nope")
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("email\na@example.com\n", encoding="utf-8")
    url = f"sqlite:///{folder / 'digest.db'}"
    for command in (("subscribers", "import", str(csv_file)), ("init",)):
        message = _refused(digest(*command, url=url), "[database] url", str(folder))
        assert "cannot be created" in message


# The reading layer, directly: quotes across lines, chunk seams, limits, text streams.


def _records(data: bytes | str, **kwargs: int) -> list[tuple[int, list[str]]]:
    stream = io.BytesIO(data) if isinstance(data, bytes) else io.StringIO(data, newline="")
    return list(csvtext.records(csvtext.checked_lines(stream, **kwargs)))


def _problem(data: bytes | str, **kwargs: int) -> csvtext.CsvFileError:
    with pytest.raises(csvtext.CsvFileError) as caught:
        _records(data, **kwargs)
    return caught.value


@pytest.mark.parametrize("kind", [bytes, str])
def test_the_line_named_is_where_the_open_quote_opened(kind: type) -> None:
    text = 'email,name\na@example.com,"two\nlines",x\nb@example.com,B,"open\nc@example.com,C\n'
    data = text.encode() if kind is bytes else text
    problem = _problem(data)
    assert problem.line == 4 and "never closed" in str(problem)
    assert problem.about("list.csv").startswith("list.csv line 4: a quote opened here")
    # A quote that opens on a continuation line of its record:
    assert _problem(b'email,name\na@example.com,"two\nlines","open\nb,c\n').line == 3
    # Closed quotes, a doubled quote, a stray quote mid-field, no final line end: fine.
    fine = b'email,name\na@example.com,"Ada ""A"" L"\nb@example.com,B"x\nc@example.com,"C"'
    assert [line for line, _ in _records(fine)] == [1, 2, 3, 4]


def test_chunk_seams_keep_characters_and_line_ends_whole() -> None:
    head = b"email,name\n"
    pad = b"a" * (csvtext.CHUNK_BYTES - len(head) - 1)  # the seam splits the next pair
    tail = b"x\nb@example.com,B\n"
    rows = _records(head + pad + "é".encode() + tail)
    assert [(line, cells[0][-2:]) for line, cells in rows[1:]] == [(2, "éx"), (3, "om")]
    rows = _records(head + pad + b"\r\n" + tail)  # "\r" ends one chunk, "\n" starts the next
    assert [line for line, _ in rows] == [1, 2, 3, 4] and rows[2][1] == ["x"]
    bad = head + b"x" * 100_000 + b"\xff\n"
    problem = _problem(bad)
    assert "byte 0xff at offset 100011, line 2" in str(problem) and problem.line is None
    assert "offset 3," in str(_problem(b"ab\n\xc3"))  # cut off in the middle of a character


def test_a_lone_cr_ends_a_line_and_a_bom_is_dropped() -> None:
    rows = _records(b"\xef\xbb\xbfemail\ra@example.com\rb@example.com")
    assert rows == [(1, ["email"]), (2, ["a@example.com"]), (3, ["b@example.com"])]


def test_size_and_field_limits() -> None:
    assert "larger than 100 bytes" in str(_problem(b"email\n" + b"a" * 200, max_bytes=100))
    assert "larger than 100 bytes" in str(_problem("email\n" + "a" * 200, max_bytes=100))
    long_field = _problem(b"email,name\na," + b"b" * 200_000 + b"\n")
    assert long_field.line == 2 and "longer than 131,072 characters" in str(long_field)
    open_quote = _problem(b'email,name\na,b\nc,"d\n' + b"e,f\n" * 50_000)
    assert open_quote.line == 3 and "not closed within 131,072 characters" in str(open_quote)


def test_a_text_stream_is_checked_too() -> None:
    assert "looks binary" in str(_problem("email\na\x00b\n"))
    wrapper = io.TextIOWrapper(io.BytesIO(b"email\nren\xe9@example.com\n"), encoding="utf-8")
    with pytest.raises(csvtext.CsvFileError) as caught:
        list(csvtext.records(csvtext.checked_lines(wrapper)))
    problem = caught.value
    assert "not utf-8 text (byte 0xe9" in str(problem) and "save it as UTF-8" in str(problem)


def test_import_csv_writes_nothing_from_a_refused_file(sqlite_engine: Engine) -> None:
    text = "email\n" + "\n".join(f"r{i}@example.com" for i in range(5000)) + '\n"open\n'
    with pytest.raises(csvio.CsvFileError), session_scope(sqlite_engine) as session:
        csvio.import_csv(session, stream=io.BytesIO(text.encode()), source="t", now=NOW)
    with session_scope(sqlite_engine) as session:
        assert session.execute(select(func.count()).select_from(Subscriber)).scalar() == 0
    with session_scope(sqlite_engine) as session:
        report = csvio.import_csv(
            session, stream=io.BytesIO(text.encode()[:-7]), source="t", now=NOW
        )
    assert report.added == 5000 and not report.all_rejected
