"""Named leases in the database: one live holder at a time.

A lease is taken with one portable statement (``INSERT … ON CONFLICT DO UPDATE …
WHERE expired or mine``), so two processes racing for it cannot both win on
SQLite or PostgreSQL. A holder renews it while it works; a holder that dies stops
renewing and another process may take over once it expires.

A holder on *this* host whose process no longer exists (killed with SIGKILL, say)
is taken over at once, so an operator who restarts a killed run does not wait for
the lease to expire. The takeover is conditional on that exact owner, so two
restarts cannot both take it. A holder on another host is waited out.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from digest.errors import LeaseHeld
from digest.store.models import Lease


def new_owner() -> str:
    """An owner id naming this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(engine: Engine, *, name: str, owner: str, ttl: timedelta, now: datetime) -> None:
    """Take or renew the lease ``name`` until ``now + ttl``.

    Raises :class:`LeaseHeld` (with the holder and expiry) when another owner
    holds an unexpired lease.
    """
    table = Lease.__table__  # type: ignore[attr-defined]
    values = {"name": name, "owner": owner, "expires_at": now + ttl}
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={"owner": owner, "expires_at": now + ttl},
        where=(table.c.expires_at < now) | (table.c.owner == owner),
    )
    with engine.begin() as conn:
        conn.execute(stmt)
        holder = conn.execute(
            select(table.c.owner, table.c.expires_at).where(table.c.name == name)
        ).one()
        if holder.owner != owner and holder_is_dead(holder.owner):
            conn.execute(
                update(table)
                .where(table.c.name == name, table.c.owner == holder.owner)
                .values(owner=owner, expires_at=now + ttl)
            )
            holder = conn.execute(
                select(table.c.owner, table.c.expires_at).where(table.c.name == name)
            ).one()
    if holder.owner != owner:
        raise LeaseHeld(
            f"{name} is held by {holder.owner} until {holder.expires_at:%Y-%m-%d %H:%M:%S %Z}"
        )


def holder_is_dead(holder: str) -> bool:
    """True when ``holder`` names a process on this host that no longer exists."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # this process: another runtime of ours, alive by definition
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # exists, owned by another user
    return False


def release(engine: Engine, *, name: str, owner: str) -> None:
    """Give the lease up (only if still ours)."""
    table = Lease.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(delete(table).where(table.c.name == name, table.c.owner == owner))
