"""The ``files`` feed: one feed document on disk, or a folder of them.

The embedded default. A folder is read in sorted file-name order, one document per
``*.json`` file; ``next_url`` is ignored (every file is read). A file in a folder
that is not a valid document is reported in :attr:`FetchResult.problems` and the
others are still read.
"""

from __future__ import annotations

from pathlib import Path

from digest.errors import FeedDocumentError, FeedUnavailable
from digest.feeds.base import FeedCursor, FetchResult, IsKnown, Progress
from digest.feeds.document import parse_document


class FilesFeed:
    """Read comparisons from ``path``: a JSON file or a folder of ``*.json`` files."""

    def __init__(self, path: Path | str) -> None:
        if not isinstance(path, str | Path) or not str(path).strip():
            raise ValueError(f"'path' must be a file or folder path, got {path!r}")
        self.path = Path(path).expanduser().resolve()

    @property
    def key(self) -> str:
        return f"file:{self.path}"

    def fetch(
        self, cursor: FeedCursor, is_known: IsKnown, progress: Progress | None = None
    ) -> FetchResult:
        """Read every document now; ``cursor`` is handed back unchanged.

        Raises :class:`FeedUnavailable` when the path does not exist or cannot be
        read, and :class:`FeedDocumentError` when ``path`` is a single file that is
        not a valid document (a folder's bad files are only reported).
        """
        del is_known  # local files are cheap: always read all of them
        if self.path.is_dir():
            return self._read_folder(cursor, progress)
        if not self.path.exists():
            raise FeedUnavailable(
                f"feed path {self.path} does not exist: check [feed] path in the config"
            )
        entries = parse_document(_read(self.path), source=str(self.path)).entries
        if progress is not None:
            progress(len(entries))
        return FetchResult(entries=entries, cursor=cursor, pages=1)

    def _read_folder(self, cursor: FeedCursor, progress: Progress | None) -> FetchResult:
        result = FetchResult(entries=[], cursor=cursor)
        files = sorted(p for p in self.path.glob("*.json") if p.is_file())
        if not files:
            result.problems.append(f"{self.path}: no *.json files in this folder")
        for file in files:
            try:
                entries = parse_document(_read(file), source=str(file)).entries
            except (FeedDocumentError, FeedUnavailable) as exc:
                result.problems.append(f"skipped {exc}")
                continue
            result.entries.extend(entries)
            result.pages += 1
            if progress is not None:
                progress(len(result.entries))
        return result


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise FeedUnavailable(f"{file}: cannot read the feed file: {exc.strerror}") from exc
