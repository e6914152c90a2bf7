"""API keys for ``/api/v1``: create (shown once), verify, list, revoke. No HTTP here.

A key reads ``dgk_<prefix>_<secret>``: ``prefix`` (12 hex characters) finds the
row, and the row keeps only the SHA-256 of the whole key, so a copy of the
database holds no usable key. :func:`verify` compares hashes with
:func:`hmac.compare_digest` and does the same work for an unknown prefix as for a
known one, so timing tells nothing. A revoked key never verifies again.

Scopes (:data:`SCOPES`) say what a key may do; every key names at least one.
Creating and revoking are recorded in the audit log (target ``api-key:<id>``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import Session, col

from digest.errors import DigestError
from digest.store import audit
from digest.store.desk_models import ApiKey

SCOPES = (
    "subscribers:read",
    "subscribers:write",
    "editions:read",
    "editions:write",
    "editions:approve",
    "status:read",
)
KEY_PREFIX = "dgk_"
NAME_LIMIT = 200
TOUCH_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per key
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


class ApiKeyError(DigestError):
    """A key cannot be created or revoked as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Created:
    row: ApiKey
    key: str  # the whole key: shown once, never stored


def parse_scopes(raw: str | Iterable[str]) -> tuple[str, ...]:
    """Scopes from ``"a,b"`` or a list, checked and de-duplicated in :data:`SCOPES`
    order. Raises :class:`ApiKeyError` for an unknown scope or none at all."""
    items = raw.split(",") if isinstance(raw, str) else [p for r in raw for p in r.split(",")]
    wanted = {item.strip() for item in items if item.strip()}
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise ApiKeyError(
            f"unknown scope {', '.join(repr(u) for u in unknown)}: "
            f"the scopes are {', '.join(SCOPES)}"
        )
    if not wanted:
        raise ApiKeyError(f"give a key at least one scope: {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in wanted)


def scopes_of(row: ApiKey) -> tuple[str, ...]:
    return tuple(s for s in row.scopes.split(",") if s)


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create(
    session: Session,
    *,
    name: str,
    scopes: str | Sequence[str],
    created_by: str,
    now: datetime,
    via: str = "cli",
) -> Created:
    """A new key named ``name``. Raises :class:`ApiKeyError` for a blank or taken name
    (among keys not revoked) or bad scopes."""
    name = " ".join(name.split())
    if not name or len(name) > NAME_LIMIT:
        raise ApiKeyError(f"a key needs a name of 1 to {NAME_LIMIT} characters")
    checked = parse_scopes(scopes)
    if _active_named(session, name):
        raise ApiKeyError(f"there is already a key named {name!r}: revoke it or pick another name")
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        name=name,
        prefix=prefix,
        secret_hash=digest_of(key),
        scopes=",".join(checked),
        created_at=now,
        created_by=created_by[:200],
    )
    session.add(row)
    session.flush()
    audit.record(
        session, actor=created_by, via=via, action="api-key.create", target=f"api-key:{row.id}",
        detail=f"{name} ({prefix}): {', '.join(checked)}", now=now,
    )  # fmt: skip
    return Created(row, key)


def verify(session: Session, presented: str) -> ApiKey | None:
    """The key's row when ``presented`` is a whole, current key; else None."""
    presented = presented.strip()
    prefix = presented.removeprefix(KEY_PREFIX).partition("_")[0]
    row: ApiKey | None = None
    if presented.startswith(KEY_PREFIX) and 0 < len(prefix) <= 16:
        row = session.execute(
            select(ApiKey).where(col(ApiKey.prefix) == prefix)
        ).scalar_one_or_none()
    expected = row.secret_hash if row is not None else _DUMMY_HASH
    matches = hmac.compare_digest(digest_of(presented), expected)
    if row is None or not matches or row.revoked_at is not None:
        return None
    return row


def touch(session: Session, row: ApiKey, now: datetime) -> None:
    """Set ``last_used_at``, at most once per :data:`TOUCH_EVERY` (a write per call
    would make every read a write)."""
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        row.last_used_at = now
        session.add(row)


def all_keys(session: Session) -> Sequence[ApiKey]:
    """Every key, revoked ones too, oldest first."""
    return session.execute(select(ApiKey).order_by(col(ApiKey.id))).scalars().all()


def revoke(
    session: Session, *, name_or_prefix: str, by: str, now: datetime, via: str = "cli"
) -> ApiKey:
    """Revoke the current key with this name or prefix. Raises :class:`ApiKeyError`
    when there is none."""
    wanted = " ".join(name_or_prefix.split())
    found = [
        k
        for k in all_keys(session)
        if k.revoked_at is None and wanted in (k.name, k.prefix, f"{KEY_PREFIX}{k.prefix}")
    ]
    if not found:
        raise ApiKeyError(f"no current key is named {wanted!r} or has that prefix")
    return _revoke(session, found[0], by=by, now=now, via=via)


def revoke_id(
    session: Session, *, key_id: int, by: str, now: datetime, via: str = "desk"
) -> ApiKey | None:
    """Revoke the key with this id (the desk's button); None when there is no such
    key. Raises :class:`ApiKeyError` when it is already revoked."""
    row = session.get(ApiKey, key_id)
    if row is None:
        return None
    if row.revoked_at is not None:
        raise ApiKeyError(f"the key {row.name!r} ({row.prefix}) is already revoked")
    return _revoke(session, row, by=by, now=now, via=via)


def _revoke(session: Session, row: ApiKey, *, by: str, now: datetime, via: str) -> ApiKey:
    row.revoked_at = now
    session.add(row)
    audit.record(
        session, actor=by, via=via, action="api-key.revoke", target=f"api-key:{row.id}",
        detail=f"{row.name} ({row.prefix})", now=now,
    )  # fmt: skip
    return row


def _active_named(session: Session, name: str) -> bool:
    stmt = select(col(ApiKey.id)).where(col(ApiKey.name) == name, col(ApiKey.revoked_at).is_(None))
    return session.execute(stmt.limit(1)).first() is not None
