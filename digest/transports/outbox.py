"""A transport that writes ``.eml`` files instead of sending: dry runs and local checks.

Layout: ``<path>/<tag>/<delivery_id:07d>-<recipient>.eml``, one file per delivery row,
so a retry overwrites the same file and the outbox never holds duplicates. Mail
outside the ledger (delivery id 0: operator notices, confirmations, welcomes, test
sends) is never overwritten: each gets ``<UTC time>-<recipient>.eml`` (``-2``,
``-3`` … should that name exist already), so the files sort in the order written
and a second notice to the same operator sits beside the first.

Each file is written to a temporary name and moved into place atomically, so a
reader never sees half a message: :func:`os.replace` for ledger rows,
:func:`os.link` (which refuses an existing name) for the rest. Files are not
fsynced: this is a preview folder, not a mail queue.

With ``html_preview`` the HTML part of the first message written to a folder is
saved once as ``preview.html`` (the only message this transport ever parses).
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import errno
import os
import re
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import ClassVar

from digest.common import options
from digest.common.options import KEY
from digest.errors import TransportUnavailable
from digest.transports.base import Outcome, OutgoingMessage, SendResult

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def safe_name(text: str, *, limit: int = 100) -> str:
    """``text`` as a file-name part: only ``[A-Za-z0-9._@+-]``, no leading dot."""
    return _UNSAFE.sub("_", text)[:limit].lstrip(".") or "_"


class OutboxTransport:
    kind: ClassVar[str] = "outbox"

    def __init__(self, *, path: Path | str, html_preview: bool = True) -> None:
        if not isinstance(path, str | Path) or not str(path):
            raise ValueError(f"key 'path': expected a folder path, got {path!r}")
        self.html_preview = options.flag("html_preview", html_preview, style=KEY)
        self.path = Path(path)
        self._folders: dict[str, str] = {}  # tag → folder
        self._created: set[str] = set()
        self._previewed: set[str] = set()

    @property
    def concurrency(self) -> int:
        return 1

    @property
    def max_batch(self) -> int:
        return 200

    async def open(self) -> None:
        """Create the folder and prove it writable; raises ``TransportUnavailable``."""
        await asyncio.to_thread(self._check_writable)

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Write the batch in a worker thread; ``TransportUnavailable`` if a write fails."""
        return await asyncio.to_thread(self._write_batch, list(messages))

    async def close(self) -> None:
        return None

    def file_for(self, message: OutgoingMessage) -> Path:
        """Where ``message`` is (or would be) written; for mail outside the ledger
        (delivery id 0), the first of its candidate names (see the module doc)."""
        return Path(self._folder(message.tag), self._name(message))

    def _folder(self, tag: str) -> str:
        folder = self._folders.get(tag)
        if folder is None:
            folder = self._folders[tag] = os.path.join(self.path, safe_name(tag or "untagged"))
        return folder

    @staticmethod
    def _name(message: OutgoingMessage) -> str:
        if message.delivery_id == 0:  # outside the ledger: one file per message
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
            return f"{stamp}-{safe_name(message.recipient)}.eml"
        return f"{message.delivery_id:07d}-{safe_name(message.recipient)}.eml"

    def _check_writable(self) -> None:
        probe = self.path / f".probe-{os.getpid()}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise TransportUnavailable(
                f"outbox folder {self.path} is not writable ({exc.strerror or exc}): "
                "check [transport] path and the folder's permissions"
            ) from exc

    def _write_batch(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        # Plain str paths: pathlib costs more than the write itself at 5,000 files/s.
        results: list[SendResult] = []
        for message in messages:
            folder, name = self._folder(message.tag), self._name(message)
            try:
                if folder not in self._created:
                    os.makedirs(folder, exist_ok=True)
                    self._created.add(folder)
                data = message.data  # built here, once, for digest messages
                if message.delivery_id == 0:
                    name = self._write_new(folder, name, data)
                else:
                    self._write(folder, name, data)
                if self.html_preview and folder not in self._previewed:
                    self._write_preview(folder, data)
            except OSError as exc:
                raise TransportUnavailable(
                    f"cannot write {os.path.join(folder, name)} ({exc.strerror or exc}): "
                    "check [transport] path, free disk space and permissions"
                ) from exc
            results.append(SendResult(message.delivery_id, Outcome.sent, provider_id=name))
        return results

    @staticmethod
    def _write(folder: str, name: str, data: bytes) -> None:
        temp = OutboxTransport._temp_file(folder, name, data)
        os.replace(temp, f"{folder}{os.sep}{name}")  # atomic: no reader sees half a file

    @staticmethod
    def _write_new(folder: str, name: str, data: bytes) -> str:
        """Write ``data`` under ``name``, or ``name`` with ``-2``, ``-3`` … before
        ``.eml`` when taken: never over an existing file. Returns the name used."""
        temp = OutboxTransport._temp_file(folder, name, data)
        stem = name.removesuffix(".eml")
        try:
            for attempt in range(1, 1000):
                candidate = name if attempt == 1 else f"{stem}-{attempt}.eml"
                try:
                    _link_new(temp, f"{folder}{os.sep}{candidate}")
                except FileExistsError:
                    continue
                return candidate
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        raise FileExistsError(f"{folder}{os.sep}{name}: 999 files of that name already")

    @staticmethod
    def _temp_file(folder: str, name: str, data: bytes) -> str:
        temp = f"{folder}{os.sep}.{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return temp

    def _write_preview(self, folder: str, data: bytes) -> None:
        self._previewed.add(folder)
        msg = email.message_from_bytes(data, policy=email.policy.default)
        body = msg.get_body(preferencelist=("html",)) if isinstance(msg, EmailMessage) else None
        if body is not None:
            html = str(body.get_content())
            self._write(folder, "preview.html", html.replace("\r\n", "\n").encode("utf-8"))


def _link_new(source: str, target: str) -> None:
    """Give ``source`` the name ``target``, atomically, only if ``target`` does not
    exist (``FileExistsError`` otherwise). Where the file system has no hard links,
    the name is reserved with ``O_EXCL`` and the file moved over it (a reader may
    then see an empty file for a moment, never a half-written one)."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        os.replace(source, target)  # ``source`` is gone: the caller's unlink finds nothing
