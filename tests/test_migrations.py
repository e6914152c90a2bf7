"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine
from sqlmodel import SQLModel

import digest.store.models  # noqa: F401  (registers the tables)
from digest.store.db import HEAD_REVISION, current_revision, head_revision, upgrade


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == [], f"models and migrations differ; add a migration: {diff}"
    assert current_revision(engine) == head_revision()


def test_upgrade_twice_is_harmless(engine: Engine) -> None:
    assert upgrade(engine) == (head_revision(), head_revision())


def test_upgrading_a_populated_first_schema_keeps_readers(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    from digest.store.db import _alembic_config, make_engine

    engine = make_engine(db_url)
    command.upgrade(_alembic_config(engine), "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscriber (email, name, status, source, created_at, updated_at) "
                "VALUES ('a@example.com', 'A', 'active', 'cli', '2026-01-01', '2026-01-01')"
            )
        )
    upgrade(engine)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT email, categories FROM subscriber")).one()
    assert row[0] == "a@example.com"
    assert row[1] in ([], "[]")
    engine.dispose()


def test_head_revision_constant_names_the_newest_migration() -> None:
    """``ensure_current`` compares with HEAD_REVISION without reading the files."""
    assert head_revision() == HEAD_REVISION
