"""One-time values, across processes: a webhook's replay key, a solved sign-up
challenge. Kept in ``webhook_replay`` (namespace, key, expires_at) until they
expire; the table's primary key makes the second claim fail in any process.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from digest.store.models import WebhookReplay

R = WebhookReplay.__table__  # type: ignore[attr-defined]
MAX_KEY = 200  # the column's width; longer keys are stored as their hash


def claim(session: Session, namespace: str, key: str, expires_at: datetime, now: datetime) -> bool:
    """Record ``key`` in the caller's transaction; False when it is recorded and
    not expired. An expired row is taken over in the same statement (``ON CONFLICT
    … DO UPDATE … WHERE``), and expired rows of every namespace are purged."""
    if len(key) > MAX_KEY:
        key = "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    session.execute(R.delete().where(R.c.expires_at < now))  # opportunistic purge
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(R).values(provider=namespace, key=key, expires_at=expires_at)
    stmt = insert.on_conflict_do_update(
        index_elements=["provider", "key"],
        set_={"expires_at": insert.excluded.expires_at},
        where=R.c.expires_at < now,
    ).returning(R.c.key)
    return session.execute(stmt).first() is not None
