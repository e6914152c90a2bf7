"""Engine, sessions and schema upgrades.

SQLite (the embedded default) runs in WAL mode with a busy timeout, and every
transaction starts with ``BEGIN IMMEDIATE``: a transaction that reads and then
writes can otherwise fail with "database is locked" instead of waiting, and
SQLAlchemy silently drops ``with_for_update()`` on SQLite. PostgreSQL uses the
same code through psycopg 3.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlmodel import Session

from digest.errors import ConfigError, DigestError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# The newest migration. ``ensure_current`` (every run) compares the database with it
# without importing Alembic, which costs a sender ~11 MB of memory and 0.1 s;
# tests/test_migrations.py checks that it names the newest file in migrations/.
HEAD_REVISION = "0011"

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create the engine for ``url`` (SQLite or PostgreSQL).

    Raises :class:`ConfigError` for a URL SQLAlchemy cannot use.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "[database] url (or DIGEST_DATABASE_URL) is not a database URL such as "
            "sqlite:///digest.db or postgresql+psycopg://user@host/db"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    if parsed.drivername == "postgresql":  # prefer psycopg 3 over the psycopg2 default
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed, **kwargs)
        return create_engine(parsed, pool_pre_ping=True, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigError(
            f"[database] url {shown!r}: driver not installed ({exc}); for PostgreSQL "
            "install the extra: pip install 'verdicts-digest[postgres]'"
        ) from exc


def _sqlite_engine(url: Any, **kwargs: Any) -> Engine:
    database = url.database
    if database and database != ":memory:":
        _make_folder(Path(database))
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event own transaction start (see below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; safe in WAL
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _make_folder(database: Path) -> None:
    """Create the SQLite file's folder; ConfigError (one line) when that cannot be."""
    folder = database.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(folder) else ""
        why = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError):
            why = "a file, not a folder, is in the way"
        raise ConfigError(
            f"[database] url (or DIGEST_DATABASE_URL): the SQLite database {str(database)!r} "
            f"needs the folder {str(folder)!r}, which cannot be created{where}: {why}"
        ) from None


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def migrations_dir() -> Path:
    """The Alembic scripts: packaged in the wheel, or ``migrations/`` in a checkout."""
    package = Path(__file__).resolve().parents[1]  # digest/
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise DigestError("the Alembic migrations folder is missing from this installation")


def _alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Create or upgrade the schema to the newest revision; return (before, after)."""
    from alembic import command

    before = current_revision(engine)
    try:
        command.upgrade(_alembic_config(engine), "head")
    except OperationalError as exc:
        raise DigestError(f"cannot reach the database to upgrade it: {exc.orig}") from exc
    return before, current_revision(engine)


def current_revision(engine: Engine) -> str | None:
    """The database's migration revision (None: no schema yet), read directly."""
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, "alembic_version"):
            return None
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return None if version is None else str(version)


def head_revision() -> str | None:
    """The newest revision among the migration files (Alembic reads them)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config_without_engine())
    return script.get_current_head()


def _alembic_config_without_engine() -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def ensure_current(engine: Engine) -> None:
    """Raise a clear error when the schema is missing or older than this code."""
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        raise DigestError(f"cannot reach the database: {exc.orig}") from exc
    head = HEAD_REVISION
    if current != head:
        state = "has no schema yet" if current is None else f"is at revision {current}"
        raise DigestError(f"the database {state}, this version needs {head}: run 'digest init'")
