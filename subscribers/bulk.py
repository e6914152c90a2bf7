"""Bulk SQL for the CSV import and export (:mod:`subscribers.csvio`): many rows per
statement, straight to the driver, on SQLite or PostgreSQL.

Table-agnostic: each function takes the :class:`~sqlalchemy.Table` and column names,
every one of which must be a column of that table (``table.c`` raises otherwise) and is
quoted by the dialect before it reaches the SQL text. Also used by the benchmarks'
fixture (``benchmarks/fixture.py``) to fill a database fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, select
from sqlmodel import Session

SQLITE_ROWS_PER_STATEMENT = 100  # stays under SQLite's old 999-parameter limit


def bulk_insert(
    session: Session,
    *,
    table: Table,
    rows: Sequence[dict[str, Any]],
    conflict: Sequence[str] = (),
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (same keys each) fast; ``ON CONFLICT (conflict) DO NOTHING``.

    Returns the ``returning`` columns of the rows inserted. Values go through the
    columns' own bind processing, then straight to the driver: one statement of
    arrays (``unnest``) per call on PostgreSQL, multi-row ``VALUES`` on SQLite.
    SQLAlchemy's executemany costs ~40 µs a row here, mostly parsing long SQL.
    """
    if not rows:
        return []
    dialect = session.get_bind().dialect
    names = list(rows[0])
    columns = [table.c[name] for name in names]
    procs = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    data = [[p(r[n]) if p else r[n] for r in rows] for n, p in zip(names, procs, strict=True)]
    # Every identifier is a column of ``table`` (``table.c`` raises otherwise), quoted.
    quote = dialect.identifier_preparer.quote
    tail = f" ON CONFLICT ({', '.join(quote(table.c[c].name) for c in conflict)}) DO NOTHING"
    tail = tail if conflict else ""
    tail += (
        f" RETURNING {', '.join(quote(table.c[c].name) for c in returning)}" if returning else ""
    )
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) "
    conn = session.connection()
    if dialect.name == "postgresql":
        arrays = ", ".join(f"CAST(%b AS {c.type.compile(dialect)}[])" for c in columns)
        sql = f"{head}SELECT * FROM unnest({arrays}){tail}"  # noqa: S608 (quoted names only)
        result = conn.exec_driver_sql(sql, tuple(data))
        return [tuple(r) for r in result] if returning else []
    out: list[tuple[Any, ...]] = []
    flat = list(zip(*data, strict=True))
    one = "(" + ", ".join("?" * len(names)) + ")"
    for start in range(0, len(flat), SQLITE_ROWS_PER_STATEMENT):
        batch = flat[start : start + SQLITE_ROWS_PER_STATEMENT]
        sql = f"{head}VALUES {', '.join([one] * len(batch))}{tail}"
        result = conn.exec_driver_sql(sql, tuple(v for row in batch for v in row))
        if returning:
            out += [tuple(r) for r in result]
    return out


def select_where_in(
    session: Session, *, table: Table, column: str, values: Sequence[Any], columns: Sequence[str]
) -> list[tuple[Any, ...]]:
    """``SELECT columns FROM table WHERE column IN values`` as plain driver values.

    PostgreSQL gets one array parameter (``= ANY``) instead of thousands of them.
    """
    if not values:
        return []
    conn = session.connection()
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        quote = dialect.identifier_preparer.quote
        names = ", ".join(quote(table.c[c].name) for c in columns)
        where = quote(table.c[column].name)
        sql = f"SELECT {names} FROM {quote(table.name)} WHERE {where} = ANY(%b)"  # noqa: S608
        return [tuple(r) for r in conn.exec_driver_sql(sql, (list(values),))]
    stmt = select(*(table.c[c] for c in columns)).where(table.c[column].in_(values))
    return [tuple(r) for r in conn.execute(stmt)]
