"""Reading an import file safely: bytes → checked UTF-8 lines → CSV records.

An import reads the whole file before it writes a row, so a problem with the file
itself (:class:`CsvFileError`) leaves the database untouched:

* not UTF-8 text: the first bad byte and its offset are named (a UTF-8 byte order
  mark is accepted); UTF-16 text; a binary file (a NUL byte; a ZIP or ``.xlsx``
  and an old ``.xls`` workbook are named as such);
* larger than ``MAX_IMPORT_BYTES``: the rows are held in memory until written;
* a quote that is never closed. The csv module then reads every later line into
  that one field and stops without a word. The input is ended with one blank
  sentinel line: after a closed last record it is a record of its own, an open
  quote swallows it, and the line where that quote opened is named;
* a field longer than ``csv.field_size_limit()`` (usually an open quote, too).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections.abc import Iterator
from typing import BinaryIO, TextIO, cast

from subscribers.errors import SubscriberInputError

MAX_IMPORT_BYTES = 128 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
NOTHING = "nothing was imported from this file"
_AS_UTF8 = f"save it as UTF-8 ('CSV UTF-8') and try again; {NOTHING}"
_SIGNATURES = (
    (b"\xff\xfe", f"is UTF-16 text, not UTF-8; {_AS_UTF8}"),
    (b"\xfe\xff", f"is UTF-16 text, not UTF-8; {_AS_UTF8}"),
    (
        b"PK\x03\x04",
        f"looks binary: a ZIP archive or an Excel workbook (.xlsx), not CSV; {NOTHING}",
    ),
    (b"\xd0\xcf\x11\xe0", f"looks binary: an old Excel workbook (.xls), not CSV; {NOTHING}"),
)


class CsvFileError(SubscriberInputError):
    """The file as a whole cannot be imported; nothing is imported from it."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        self.problem, self.line = problem, line
        super().__init__(problem if line is None else f"line {line}: {problem}")

    def about(self, name: str) -> str:
        """The message naming the file: ``list.csv line 7: …`` or ``list.csv: …``."""
        return f"{name if self.line is None else f'{name} line {self.line}'}: {self.problem}"


def checked_lines(stream: TextIO | BinaryIO, *, max_bytes: int = MAX_IMPORT_BYTES) -> Iterator[str]:
    """The lines of ``stream`` (ends kept), checked as they are read.

    A binary stream is decoded here (strict UTF-8, an optional BOM dropped), which
    lets an error name the byte offset; a text stream is taken as it decodes.
    """
    if isinstance(stream.read(0), str):
        return _text_lines(cast(TextIO, stream), max_bytes)
    return _byte_lines(cast(BinaryIO, stream), max_bytes)


def records(lines: Iterator[str]) -> Iterator[tuple[int, list[str]]]:
    """``(first line, cells)`` for every record, the header included; a blank line is
    ``[]``. Raises :class:`CsvFileError` for an unclosed quote or an overlong field."""
    source = _Lines(lines)
    reader = csv.reader(source)
    end = 0
    while True:
        source.record.clear()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _unreadable(source.record, end + 1, exc) from None
        line, end = end + 1, source.count
        if source.sentinel is not None:
            if line == source.sentinel:
                return  # the sentinel stood alone: every quote was closed
            opened = _open_quote(source.record, line) or line
            raise CsvFileError(f"a quote opened here is never closed; {NOTHING}", opened)
        yield line, cells


class _Lines:
    """The input's lines for the csv reader, then one blank sentinel line; keeps the
    lines of the record being read (for the line of an unclosed quote)."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self.record: list[str] = []
        self.count = 0  # lines handed out, the sentinel included
        self.sentinel: int | None = None  # the sentinel's line number, once handed out

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.sentinel is not None:
            raise StopIteration
        line = next(self.lines, None)
        self.count += 1
        if line is None:
            self.sentinel, line = self.count, "\n"
        elif not line.endswith(("\n", "\r")):
            line += "\n"  # the last line has no end: end it, so the sentinel stands alone
        self.record.append(line)
        return line


def _unreadable(record: list[str], line: int, exc: csv.Error) -> CsvFileError:
    if "field larger than field limit" not in str(exc):
        return CsvFileError(f"not readable as CSV ({exc}); {NOTHING}", line)
    limit = csv.field_size_limit()
    opened = _open_quote(record, line)
    if opened is None:
        return CsvFileError(f"a field is longer than {limit:,} characters; {NOTHING}", line)
    return CsvFileError(
        f"a quote opened here is not closed within {limit:,} characters "
        f"(is the closing quote missing?); {NOTHING}",
        opened,
    )


def _open_quote(record: list[str], first: int) -> int | None:
    """The line (numbered from ``first``) of the quote ``record`` leaves open, if any.

    The csv module's default dialect, lenient as it reads: a quote opens a field
    only at its start, ``""`` inside is one quote, a quote elsewhere is a character.
    """
    state, opened = "start", None
    for number, text in enumerate(record, first):
        for char in text:
            if state == "quoted":
                if char == '"':
                    state = "quote"
            elif state == "quote":  # closed, unless doubled or followed by text
                state = "quoted" if char == '"' else "start" if char in ",\r\n" else "field"
            elif char == '"' and state == "start":
                state, opened = "quoted", number
            else:
                state = "start" if char in ",\r\n" else "field"
    return opened if state == "quoted" else None


def _too_large(max_bytes: int) -> CsvFileError:
    limit = f"{max_bytes / 2**20:,.0f} MiB" if max_bytes >= 2**20 else f"{max_bytes:,} bytes"
    return CsvFileError(f"is larger than {limit}; split it into smaller files; {NOTHING}")


def _text_lines(stream: TextIO, max_bytes: int) -> Iterator[str]:
    size = 0
    number = 0
    try:
        for number, line in enumerate(stream, 1):
            size += len(line)
            if size > max_bytes:
                raise _too_large(max_bytes)
            if "\x00" in line:
                raise CsvFileError(f"looks binary, not CSV text (a NUL byte); {NOTHING}", number)
            yield line
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        problem = f"not {exc.encoding} text (byte 0x{byte:02x}: {exc.reason}); {_AS_UTF8}"
        raise CsvFileError(problem, number + 1) from None


def _byte_lines(stream: BinaryIO, max_bytes: int) -> Iterator[str]:
    _check_size(stream, max_bytes)
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, count, bom = 0, 0, True
    held: list[str] = []  # decoded text after the last line break
    while True:
        try:
            chunk = stream.read(CHUNK_BYTES)
        except OSError as exc:
            raise CsvFileError(f"cannot be read ({exc.strerror or exc}); {NOTHING}") from None
        if offset == 0:
            _check_kind(chunk)
        if offset + len(chunk) > max_bytes:
            raise _too_large(max_bytes)
        if (nul := chunk.find(b"\x00")) >= 0:
            raise CsvFileError(
                f"looks binary, not CSV text (a NUL byte at offset {offset + nul}); {NOTHING}"
            )
        pending = decoder.getstate()[0]
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise _not_utf8(exc, offset - len(pending), count, "".join(held)) from None
        offset += len(chunk)
        if bom and text:
            text, bom = text.removeprefix("\ufeff"), False
        # A "\r" at the very end may be the first half of "\r\n": it waits.
        cut = max(text.rfind("\n"), text.rfind("\r", 0, len(text) - 1)) + 1
        if not chunk or cut:
            whole = "".join([*held, text if not chunk else text[:cut]])
            held = [] if not chunk else [text[cut:]]
            for line in io.StringIO(whole, newline=""):
                count += 1
                yield line
        else:
            held.append(text)
        if not chunk:
            return


def _check_size(stream: BinaryIO, max_bytes: int) -> None:
    try:
        size = os.fstat(stream.fileno()).st_size
    except (OSError, AttributeError, io.UnsupportedOperation):
        return  # not a file on disk: counted as it is read
    if size > max_bytes:
        raise _too_large(max_bytes)


def _check_kind(start: bytes) -> None:
    for signature, problem in _SIGNATURES:
        if start.startswith(signature):
            raise CsvFileError(problem)


def _not_utf8(exc: UnicodeDecodeError, offset: int, count: int, held: str) -> CsvFileError:
    data = bytes(exc.object)
    before = held + data[: exc.start].decode("utf-8", "replace")
    line = count + before.count("\n") + before.count("\r") - before.count("\r\n") + 1
    at = offset + exc.start
    return CsvFileError(
        f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {at}, line {line}); {_AS_UTF8}"
    )
