"""Who may use the operator's desk, and how a form proves it came from the desk.

Operators (:mod:`digest.desk.operators`) sign in with email, password and a TOTP
code: the password step leaves a short-lived signed "half-signed-in" cookie
(:data:`STEP_COOKIE`, purpose ``step``), the code step opens the session. Until
the first operator exists, ``DIGEST_ADMIN_PASSWORD`` (the form, HTTP Basic with
any user name) signs in as admin; from then on it is refused. ``DIGEST_ADMIN_TOKEN``
(``Authorization: Bearer …``, scripts) stays an admin credential. Comparisons are
constant-time (:func:`hmac.compare_digest`).

Guessing is throttled per client address (:class:`digest.web.admin.FailedAttempts`):
every wrong password, code or token counts; a client with too many in the last
minute gets 429 for any credential, even the right one, until the window passes.
A request carrying no credential is neither counted nor refused.

A sign-in gives a session cookie: ``HttpOnly``, ``SameSite=Strict``, ``Path=/admin``,
``Secure`` over https, signed with ``itsdangerous`` under a key derived from the
server secret *and* the shared credentials (changing them ends every session). The
session lives on the server (:class:`~digest.store.models.AdminSession`, keyed by a
hash of its random id): the cookie counts only while that row exists, is not ended
and is younger than :data:`SESSION_SECONDS`. An operator's role and "disabled" are
read from their row at every request, so a change takes effect at once.

CSRF: every state-changing request must carry a ``csrf`` field equal to an HMAC of
the session's random id (the login and code forms use their signed cookies the same
way). Only a Bearer token, which a browser never attaches on its own, is exempt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import or_, select
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import Response

from digest.config.runtime import Runtime
from digest.desk.operators import any_operator
from digest.store.desk_models import Operator as OperatorRow
from digest.store.models import AdminSession

ENV_PASSWORD = "DIGEST_ADMIN_PASSWORD"  # noqa: S105  (variable names, not secrets)
ENV_TOKEN = "DIGEST_ADMIN_TOKEN"  # noqa: S105
SESSION_COOKIE = "digest_admin"
PRE_COOKIE = "digest_admin_login"
COOKIE_PATH = "/admin"
SESSION_SECONDS = 12 * 3600
PRE_SECONDS = 3600
STEP_COOKIE = "digest_admin_step"  # password checked, code not yet
STEP_SECONDS = 300
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
S = AdminSession.__table__  # type: ignore[attr-defined]
OP = OperatorRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Credentials:
    password: str = ""
    token: str = ""

    @classmethod
    def from_env(cls, env: Any) -> Credentials:
        return cls(env.get(ENV_PASSWORD, "").strip(), env.get(ENV_TOKEN, "").strip())

    @property
    def enabled(self) -> bool:
        return bool(self.password or self.token)

    def fingerprint(self) -> bytes:
        return hashlib.sha256(f"{self.password}\0{self.token}".encode()).digest()


@dataclass(frozen=True, slots=True)
class Operator:
    """An authenticated request: how it proved itself, its session id (cookie
    sessions) and the name given at login (for ``approved_by``)."""

    via: str  # "session", "basic" or "token"
    sid: str = ""
    name: str = ""
    role: str = "admin"  # viewer, editor or admin (the bootstrap credential: admin)
    operator_id: int | None = None  # None: the bootstrap DIGEST_ADMIN_PASSWORD / TOKEN

    @property
    def actor(self) -> str:
        """Who, for the audit log: the operator's address, else the bootstrap credential
        (with the name typed at sign-in, which nothing checks)."""
        if self.operator_id is not None:
            return self.name
        return f"{self.name} (bootstrap {self.via})" if self.name else f"bootstrap ({self.via})"

    @property
    def label(self) -> str:
        return f"{self.name or 'operator'} (desk, {self.via})"


class NotAuthenticated(Exception):
    """Raised by the guard; the app answers 401 or a redirect to the login page."""


class CsrfRefused(Exception):
    """A state-changing request without a valid CSRF token: 403, nothing changed."""


class TooManyAttempts(Exception):
    """Too many wrong credentials from this client: 429, nothing checked."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def sid_hash(sid: str) -> str:
    """What the database keeps of a session id (never the id itself)."""
    return hashlib.sha256(sid.encode()).hexdigest()


class Guard:
    """Checks credentials, issues and reads signed cookies, makes and checks CSRF tokens."""

    def __init__(self, rt: Runtime, credentials: Credentials) -> None:
        self.rt = rt
        self.credentials = credentials
        self.operators_exist = False  # latched by refresh(): operators are never deleted

    def refresh(self) -> bool:
        """Whether the desk answers at all (a shared credential, or an operator in the
        database); notices the first operator, even one added by another process."""
        if not self.operators_exist:
            with Session(self.rt.engine) as session:
                self.operators_exist = any_operator(session)
        return self.credentials.enabled or self.operators_exist

    @property
    def password_works(self) -> bool:
        """The shared password signs in only until the first operator exists."""
        return bool(self.credentials.password) and not self.operators_exist

    @cached_property
    def _key(self) -> bytes:
        # Lazily: the stored server secret needs the database (create_app must not).
        servers = self.rt.secret_keys()
        material = b"digest-admin/v1/" + self.credentials.fingerprint()
        return hmac.new(servers[0].encode(), material, hashlib.sha256).digest()

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._key, salt=f"digest.admin.{purpose}")

    def check_password(self, given: str) -> bool:
        return self.password_works and _same(given, self.credentials.password)

    def presented(self, request: Request) -> tuple[str, str] | None:
        """The credential in the ``Authorization`` header, as ("token", token) or
        ("basic", password); None when there is none (a cookie is not one)."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return "token", value.strip()
        if scheme.lower() == "basic":
            try:
                _, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                password = ""  # unreadable: a wrong password like any other
            return "basic", password
        return None

    def check(self, via: str, secret: str) -> Operator | None:
        """The operator behind a :meth:`presented` credential, or None."""
        if via == "token":
            return Operator(via) if _same(secret, self.credentials.token) else None
        return Operator(via) if self.check_password(secret) else None

    # --- sessions (database: call from a worker thread) --------------------------------

    def open_session(self, name: str, operator_id: int | None = None, role: str = "admin") -> str:
        """Store a new session (and drop ended and expired ones); the cookie value."""
        sid = secrets.token_urlsafe(24)
        now = self.rt.now()
        with self.rt.engine.begin() as conn:
            conn.execute(S.delete().where(or_(S.c.ended_at.is_not(None), S.c.expires_at <= now)))
            conn.execute(
                S.insert().values(
                    sid_hash=sid_hash(sid),
                    name=name,
                    created_at=now,
                    expires_at=now + timedelta(seconds=SESSION_SECONDS),
                    operator_id=operator_id,
                    role=role,
                )
            )
        return str(self._serializer("session").dumps({"sid": sid}))

    def session_of(self, request: Request) -> Operator | None:
        """The operator of the request's session cookie: signed by the current key,
        and its session stored, not ended, not expired; an operator's session also
        needs them enabled, and takes their current role (one primary-key read)."""
        found = self.load(request, SESSION_COOKIE, "session", SESSION_SECONDS)
        if found is None:
            return None
        sid = str(found["sid"])
        columns = (S.c.name, S.c.expires_at, S.c.ended_at, S.c.operator_id, S.c.role)
        person = (OP.c.email, OP.c.role.label("now_role"), OP.c.disabled_at)
        joined = S.outerjoin(OP, OP.c.id == S.c.operator_id)
        with self.rt.engine.connect() as conn:
            row = conn.execute(
                select(*columns, *person).select_from(joined).where(S.c.sid_hash == sid_hash(sid))
            ).first()
        if row is None or row.ended_at is not None or row.expires_at <= self.rt.now():
            return None
        if row.operator_id is None:  # the shared password (bootstrap)
            return Operator("session", sid, str(row.name), role=str(row.role))
        if row.email is None or row.disabled_at is not None:
            return None
        return Operator("session", sid, str(row.email), str(row.now_role), int(row.operator_id))

    def close_session(self, sid: str) -> None:
        """End the session ``sid`` on the server (its cookie is refused from now on)."""
        if not sid:
            return
        with self.rt.engine.begin() as conn:
            conn.execute(
                S.update()
                .where(S.c.sid_hash == sid_hash(sid), S.c.ended_at.is_(None))
                .values(ended_at=self.rt.now())
            )

    def issue(self, purpose: str, value: dict[str, Any]) -> str:
        """A signed cookie value for ``purpose`` (read back with :meth:`load`)."""
        return str(self._serializer(purpose).dumps(value))

    def load(self, request: Request, cookie: str, purpose: str, age: int) -> dict[str, Any] | None:
        raw = request.cookies.get(cookie, "")
        if not raw:
            return None
        try:
            value = self._serializer(purpose).loads(raw, max_age=age)
        except (BadSignature, ValueError, TypeError):
            return None
        return value if isinstance(value, dict) and value.get("sid") else None

    # --- cookies --------------------------------------------------------------------

    def set_session_cookie(self, request: Request, response: Response, value: str) -> None:
        self.set_cookie(request, response, SESSION_COOKIE, value, SESSION_SECONDS)
        response.delete_cookie(PRE_COOKIE, path=COOKIE_PATH)
        response.delete_cookie(STEP_COOKIE, path=COOKIE_PATH)

    def clear_session_cookie(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)

    def login_sid(self, request: Request) -> tuple[str, str]:
        """The pre-login id for the login form's CSRF token, and the cookie value to
        set ("" when the request already holds a good one)."""
        found = self.load(request, PRE_COOKIE, "login", PRE_SECONDS)
        if found is not None:
            return str(found["sid"]), ""
        sid = secrets.token_urlsafe(24)
        return sid, str(self._serializer("login").dumps({"sid": sid}))

    def set_login_cookie(self, request: Request, response: Response, value: str) -> None:
        self.set_cookie(request, response, PRE_COOKIE, value, PRE_SECONDS)

    def set_cookie(
        self, request: Request, response: Response, name: str, value: str, age: int
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=age,
            path=COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    # --- CSRF -----------------------------------------------------------------------

    def csrf_token(self, sid: str) -> str:
        return hmac.new(self._key, f"csrf/{sid}".encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, sid: str, given: str) -> bool:
        return bool(sid) and _same(given, self.csrf_token(sid))

    def login_csrf_ok(self, request: Request, given: str) -> bool:
        found = self.load(request, PRE_COOKIE, "login", PRE_SECONDS)
        return found is not None and self.check_csrf(str(found["sid"]), given)
