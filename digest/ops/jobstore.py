"""The job store ``digest schedule`` uses: APScheduler's SQLAlchemy job store that
repairs itself instead of stopping the scheduler (see :mod:`digest.ops.scheduler`),
and what the rest of ``ops`` reads of it without a scheduler: each job's next fire
(:func:`next_fires`) and the outcome a repair is recorded with (:data:`REPAIRED`).

Part of the scheduler package, the one place ``apscheduler`` is imported.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import Engine, inspect, select, text

log = logging.getLogger(__name__)

JOBS_TABLE = "apscheduler_jobs"
REPAIRED = "repaired"  # outcome of the run record of a start that repaired the job store


class RepairingJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """APScheduler's SQLAlchemy job store, except that looking up a job it cannot
    restore removes the job and returns None instead of raising.

    ``broken`` maps each removed job's id to why it could not be restored;
    ``lost_fires`` to its stored next fire (a plain column, readable even when the
    pickle is not). Uses two APScheduler 3.x internals, ``jobs_t`` and
    ``_reconstitute_job``, which the ``apscheduler>=3.11.2,<4`` pin keeps stable."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.broken: dict[str, str] = {}
        self.lost_fires: dict[str, datetime] = {}

    def check_all(self) -> None:
        """Look up every stored job once, so any that cannot be restored is removed."""
        with self.engine.begin() as conn:
            ids = list(conn.execute(select(self.jobs_t.c.id)).scalars())
        for job_id in ids:
            self.lookup_job(job_id)

    def lookup_job(self, job_id: str) -> Job | None:
        table = self.jobs_t
        with self.engine.begin() as conn:  # a database error here propagates: not a bad job
            row = conn.execute(
                select(table.c.job_state, table.c.next_run_time).where(table.c.id == job_id)
            ).first()
        if row is None:
            return None
        try:
            job: Job = self._reconstitute_job(row.job_state)
        # Unpickling runs arbitrary __setstate__/import code and may raise anything
        # (UnpicklingError, EOFError, LookupError for a function that no longer
        # imports, ValueError for a newer Job version, …): APScheduler's own loader
        # catches BaseException for the same reason. The job is unusable either way.
        except Exception as exc:
            self._discard(job_id, f"{type(exc).__name__}: {exc}"[:300], row.next_run_time)
            return None
        return job

    def _discard(self, job_id: str, why: str, next_run_time: float | None) -> None:
        log.error("job %s in the job store cannot be restored (%s): removing it", job_id, why)
        with self.engine.begin() as conn:
            conn.execute(self.jobs_t.delete().where(self.jobs_t.c.id == job_id))
        self.broken[job_id] = why
        if next_run_time is not None:
            self.lost_fires[job_id] = datetime.fromtimestamp(float(next_run_time), UTC)


def next_fires(engine: Engine) -> dict[str, datetime]:
    """Each job's next fire, read from the job store (empty before the first start)."""
    if not inspect(engine).has_table(JOBS_TABLE):
        return {}
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT id, next_run_time FROM {JOBS_TABLE}"))  # noqa: S608
        return {
            str(job_id): datetime.fromtimestamp(float(when), UTC)
            for job_id, when in rows
            if when is not None
        }
