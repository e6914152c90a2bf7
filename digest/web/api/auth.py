"""API-key authentication for ``/api/v1``: ``Authorization: Bearer <key>``.

Every route depends on :func:`needs` with its scope. The answer, in order:

- this client already failed :data:`FAILED_KEYS_PER_MINUTE` key checks in the last
  minute: ``429`` with ``Retry-After``, for any key, the right one too (the
  desk's rule, :class:`~digest.web.ratelimit.FailedAttempts`, per client address
  as :func:`~digest.web.ratelimit.client_ip` believes it: ``[web] trusted_proxies``);
- no ``Authorization: Bearer`` header: ``401`` (not counted);
- a key that is unknown, malformed or revoked: ``401`` (counted);
- a good key without the route's scope: ``403`` naming the scope.

Both ``401`` answers carry ``WWW-Authenticate: Bearer``. A good key's
``last_used_at`` is written at most once a minute (:func:`digest.desk.api_keys.touch`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import Request

from digest.config.runtime import Runtime
from digest.desk import api_keys
from digest.store.db import session_scope
from digest.web.ratelimit import FailedAttempts, client_ip
from digest.web.state import web_of

FAILED_KEYS_PER_MINUTE = 10
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="digest api"'}
bearer = HTTPBearer(auto_error=False, description="An API key: 'digest api-keys create'.")


class ApiError(Exception):
    """Answered as ``{"error": message}`` with ``status`` (and ``headers``)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the key's name and id, for the audit log."""

    key_id: int
    name: str
    scopes: tuple[str, ...]

    @property
    def actor(self) -> str:
        return f"api-key:{self.name}"


def attempts_of(request: Request) -> FailedAttempts:
    found = request.app.state.api_attempts
    assert isinstance(found, FailedAttempts)
    return found


def needs(scope: str) -> Callable[..., Caller]:
    """The dependency for a route that needs ``scope`` (one of :data:`api_keys.SCOPES`)."""
    assert scope in api_keys.SCOPES, scope

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        attempts, ip = attempts_of(request), client_ip(request)
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(401, "send an API key: 'Authorization: Bearer <key>'", CHALLENGE)
        wait = attempts.blocked(ip)
        if wait is not None:
            raise _too_many(wait)
        caller = _verify(web_of(request).rt, credentials.credentials)
        wait = attempts.attempt(ip, caller is not None)
        if wait is not None:
            raise _too_many(wait)
        if caller is None:
            raise ApiError(401, "the API key is unknown or revoked", CHALLENGE)
        if scope not in caller.scopes:
            raise ApiError(403, f"this key lacks the scope {scope}")
        return caller

    check.__name__ = f"needs_{scope.replace(':', '_')}"
    return check


def _verify(rt: Runtime, presented: str) -> Caller | None:
    with session_scope(rt.engine) as session:
        row = api_keys.verify(session, presented)
        if row is None:
            return None
        api_keys.touch(session, row, rt.now())
        assert row.id is not None
        return Caller(row.id, row.name, api_keys.scopes_of(row))


def _too_many(wait: int) -> ApiError:
    return ApiError(
        429,
        f"too many wrong API keys from this address: wait {wait} seconds",
        {"Retry-After": str(wait)},
    )
