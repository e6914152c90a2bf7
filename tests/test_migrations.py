"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine
from sqlmodel import SQLModel

import digest.models  # noqa: F401  (registers the tables)
from digest.db import current_revision, head_revision, upgrade


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == [], f"models and migrations differ; add a migration: {diff}"
    assert current_revision(engine) == head_revision()


def test_upgrade_twice_is_harmless(engine: Engine) -> None:
    assert upgrade(engine) == (head_revision(), head_revision())
