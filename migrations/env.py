"""Alembic environment: the engine is handed in by ``digest.store.db.upgrade``.

Run from the command line with ``alembic -x url=sqlite:///digest.db upgrade head``
if ever needed; ``digest init`` is the normal way.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import digest.store.models  # noqa: F401  (registers every table on SQLModel.metadata)

config = context.config
target_metadata = SQLModel.metadata


def _ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Leave APScheduler's own job table (``digest schedule`` creates it) alone."""
    return not (type_ == "table" and name == "apscheduler_jobs")


def run_migrations() -> None:
    engine = config.attributes.get("engine")
    if engine is None:
        url = context.get_x_argument(as_dictionary=True).get("url")
        if not url:
            raise SystemExit("pass -x url=DATABASE_URL or use 'digest init'")
        engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_object=_ours,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations()
