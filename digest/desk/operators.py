"""The desk's operators: who they are, their passwords, their one-time codes. No HTTP.

- Roles: ``viewer`` < ``editor`` < ``admin``. The last enabled admin can be neither
  demoted nor disabled (the desk would be left without anyone to manage it).
- Passwords: at least :data:`MIN_PASSWORD` characters, stored as argon2id
  (``argon2.PasswordHasher`` defaults), rehashed at sign-in when the parameters
  change. :func:`verify_password` checks a dummy hash for an unknown or disabled
  address, so the time taken does not tell which addresses exist.
- Codes: TOTP (RFC 6238, 30 s, 6 digits). A code counts for its step or one either
  side (pyotp's ``valid_window=1``) and only for a step later than the last one
  accepted. That step is kept in the row itself, with nothing extra stored:
  ``last_sign_in_at`` is set to the *start* of the accepted code's step (the
  sign-in time to within 30 s) by a conditional UPDATE (``WHERE last_sign_in_at <
  that start``), so two processes cannot both accept one code.
- Every change is in the audit log (target ``operator:<id>``). Disabling or a
  password reset also ends the operator's sessions; the desk reads the role from
  the row at every request. Operators are never deleted, only disabled ("an
  operator exists" only goes from false to true: :mod:`digest.web.admin.auth`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache

import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import or_, select, update
from sqlmodel import Session, col

from digest.errors import DigestError
from digest.store import audit
from digest.store.desk_models import Operator
from digest.store.models import AdminSession

ROLES = ("viewer", "editor", "admin")
MIN_PASSWORD = 12
STEP_SECONDS = 30
_hasher = PasswordHasher()  # argon2id


class OperatorError(DigestError):
    """An operator cannot be added or changed as asked; the message says why."""


@cache
def _dummy_hash() -> str:  # checked for unknown addresses, so timing tells nothing
    return _hasher.hash("not the password of anyone")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, from JSON
        return False
    return True


def normalise_email(raw: str) -> str:
    if not _encodable(raw):
        raise OperatorError("that is not an email address")
    try:
        found = validate_email(raw.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise OperatorError(f"{raw.strip()!r} is not an email address: {exc}") from None
    return str(found.normalized).lower()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise OperatorError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def check_password(password: str) -> str:
    if not _encodable(password):
        raise OperatorError("the password holds characters that cannot be stored")
    if len(password) < MIN_PASSWORD:
        raise OperatorError(f"the password must be at least {MIN_PASSWORD} characters long")
    return password


def any_operator(session: Session) -> bool:
    """Whether any operator exists (disabled ones too): from then on the shared
    ``DIGEST_ADMIN_PASSWORD`` no longer signs in."""
    return session.execute(select(col(Operator.id)).limit(1)).first() is not None


def all_operators(session: Session) -> Sequence[Operator]:
    return session.execute(select(Operator).order_by(col(Operator.email))).scalars().all()


def by_id(session: Session, operator_id: int) -> Operator | None:
    return session.get(Operator, operator_id) if 0 < operator_id < 2**31 else None


def named(session: Session, email: str) -> Operator:
    """The operator with this address; OperatorError when there is none."""
    found = _by_email(session, normalise_email(email))
    if found is None:
        raise OperatorError(f"there is no operator {email.strip()!r}")
    return found


def _by_email(session: Session, address: str) -> Operator | None:
    stmt = select(Operator).where(col(Operator.email) == address)
    found: Operator | None = session.execute(stmt).scalar_one_or_none()
    return found


def _log(
    session: Session, op: Operator, action: str, detail: str, *, actor: str, via: str, now: datetime
) -> None:
    audit.record(
        session,
        actor=actor,
        via=via,
        action=f"operator.{action}",
        target=f"operator:{op.id}",
        detail=detail,
        now=now,
    )


def add(
    session: Session, *, email: str, role: str, password: str, actor: str, via: str, now: datetime
) -> Operator:
    """A new operator (no TOTP yet: they enrol at their first sign-in)."""
    address, role = normalise_email(email), check_role(role)
    check_password(password)
    if _by_email(session, address) is not None:
        raise OperatorError(f"there is already an operator {address}")
    op = Operator(email=address, role=role, password_hash=_hasher.hash(password), created_at=now)
    session.add(op)
    session.flush()
    _log(session, op, "add", f"{address} as {role}", actor=actor, via=via, now=now)
    return op


def _keep_an_admin(session: Session, op: Operator) -> None:
    admins = select(col(Operator.id)).where(
        col(Operator.role) == "admin", col(Operator.disabled_at).is_(None)
    )
    last = op.role == "admin" and op.disabled_at is None
    if last and len(session.execute(admins).all()) <= 1:
        raise OperatorError(f"{op.email} is the last enabled admin: add another admin first")


def set_role(
    session: Session, op: Operator, role: str, *, actor: str, via: str, now: datetime
) -> None:
    check_role(role)
    if role == op.role:
        return
    if role != "admin":
        _keep_an_admin(session, op)
    before, op.role = op.role, role
    session.add(op)
    _log(session, op, "role", f"{op.email}: {before} → {role}", actor=actor, via=via, now=now)


def disable(session: Session, op: Operator, *, actor: str, via: str, now: datetime) -> None:
    if op.disabled_at is not None:
        return
    _keep_an_admin(session, op)
    op.disabled_at = now
    session.add(op)
    end_sessions(session, op, now)
    _log(session, op, "disable", op.email, actor=actor, via=via, now=now)


def enable(session: Session, op: Operator, *, actor: str, via: str, now: datetime) -> None:
    if op.disabled_at is None:
        return
    op.disabled_at = None
    session.add(op)
    _log(session, op, "enable", op.email, actor=actor, via=via, now=now)


def reset_password(
    session: Session, op: Operator, password: str, *, actor: str, via: str, now: datetime
) -> None:
    op.password_hash = _hasher.hash(check_password(password))
    session.add(op)
    end_sessions(session, op, now)
    _log(session, op, "password_reset", op.email, actor=actor, via=via, now=now)


def reset_totp(session: Session, op: Operator, *, actor: str, via: str, now: datetime) -> None:
    """Forget the operator's TOTP secret: they enrol a new one at their next sign-in."""
    op.totp_secret, op.totp_confirmed_at = "", None
    session.add(op)
    _log(session, op, "totp_reset", op.email, actor=actor, via=via, now=now)


def end_sessions(session: Session, op: Operator, now: datetime) -> None:
    """End every open desk session of ``op`` (their cookies stop working)."""
    session.execute(
        update(AdminSession)
        .where(col(AdminSession.operator_id) == op.id, col(AdminSession.ended_at).is_(None))
        .values(ended_at=now)
    )


def verify_password(session: Session, email: str, password: str) -> Operator | None:
    """The enabled operator with this address and password, else None; the same
    argon2 work either way. Rehashes a hash made with older parameters."""
    try:
        address = normalise_email(email)
    except OperatorError:
        address = ""
    op = _by_email(session, address)
    stored = op.password_hash if op is not None and op.password_hash else _dummy_hash()
    password = password if _encodable(password) else ""
    try:
        ok = _hasher.verify(stored, password) and op is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or op is None or op.disabled_at is not None:
        return None
    if _hasher.check_needs_rehash(stored):
        op.password_hash = _hasher.hash(password)
        session.add(op)
    return op


def fingerprint(op: Operator) -> str:
    """Changes when the password is reset: binds a half-finished sign-in to it."""
    return hashlib.sha256(op.password_hash.encode()).hexdigest()[:16]


# --- TOTP ---------------------------------------------------------------------------


def pending_secret(session: Session, op: Operator) -> str:
    """The secret to enrol (made and stored unconfirmed on first use)."""
    if not op.totp_secret:
        op.totp_secret = pyotp.random_base32()
        session.add(op)
    return op.totp_secret


def provisioning_uri(secret: str, email: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def qr_data_uri(uri: str) -> str:
    """The provisioning URI as a QR code: an SVG in a ``data:`` URI (no script, no fetch)."""
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="svg", scale=5, border=4, xmldecl=False)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def accept_code(session: Session, op: Operator, code: str, *, now: datetime) -> bool:
    """Whether ``code`` signs ``op`` in now: right for its step ±1 and newer than the
    last code accepted. On success marks the step used, confirms an enrolment and
    records the sign-in in the audit log."""
    code = "".join(code.split())
    if not (op.totp_secret and len(code) == 6 and code.isdigit()) or op.disabled_at is not None:
        return False
    totp = pyotp.TOTP(op.totp_secret)
    current = int(now.timestamp()) // STEP_SECONDS
    last = int(op.last_sign_in_at.timestamp()) // STEP_SECONDS if op.last_sign_in_at else -1
    hits = [
        s
        for s in (current - 1, current, current + 1)
        if hmac.compare_digest(totp.at(s * STEP_SECONDS), code)
    ]
    fresh = [s for s in hits if s > last]
    if not fresh:
        return False
    start = datetime.fromtimestamp(fresh[-1] * STEP_SECONDS, UTC)
    marked = session.execute(
        update(Operator)
        .where(col(Operator.id) == op.id, col(Operator.disabled_at).is_(None))
        .where(or_(col(Operator.last_sign_in_at).is_(None), col(Operator.last_sign_in_at) < start))
        .values(last_sign_in_at=start)
        .execution_options(synchronize_session=False)
    )
    if getattr(marked, "rowcount", 0) != 1:
        return False  # another process took this code (or a later one) first
    session.expire(op, ["last_sign_in_at"])
    enrolled = op.totp_confirmed_at is None
    if enrolled:
        op.totp_confirmed_at = now
        session.add(op)
    detail = "enrolled TOTP and signed in" if enrolled else "signed in"
    _log(session, op, "sign_in", detail, actor=op.email, via="desk", now=now)
    return True
