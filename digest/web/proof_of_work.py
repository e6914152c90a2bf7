"""Optional proof-of-work on sign-up: self-hosted ALTCHA, each solution accepted once.

With ``[web] proof_of_work = true`` (off by default):

- ``GET /subscribe/challenge`` gives a fresh challenge (JSON, ``Cache-Control:
  no-store``), at most :data:`CHALLENGES_PER_SIGNUP` × ``signups_per_minute`` a
  minute per client address (:func:`digest.web.ratelimit.client_ip`), else 429.
- ``GET /static/altcha/{file}`` serves the vendored widget (the npm package
  ``altcha``, MIT; see ``static/altcha/README.md``): nothing comes from another
  origin. Only the sign-up form loads it, under :data:`SIGNUP_CSP`.
- ``POST /subscribe`` (form or JSON) needs the field :data:`FIELD`: the widget's
  base64 payload. :meth:`ProofOfWork.check` verifies it without touching the
  database; :func:`claim` records it in the sign-up's own transaction.

Challenges are ALTCHA's SHA-256 kind (the ``altcha`` package's v1 API, which the
widget still solves): a random number up to ``proof_of_work_max_number`` to find,
the expiry (``proof_of_work_minutes``) inside the salt, and an HMAC over both. The
HMAC key is HMAC-SHA256(server secret, ``"digest-altcha/v1"``) for each server
secret (``DIGEST_SECRET_KEY`` keys, else the one stored in the database): the
first signs, every one verifies, as for email tokens. Expiry is checked against
the runtime's clock, not the library's.

Accepted once: the challenge's signature goes into ``webhook_replay`` (provider
``"altcha"``) until the challenge expires, in the same transaction as the
sign-up, so a second use in any process is refused, and a sign-up refused for its
address (rolled back) leaves the solution usable for the corrected address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

from altcha.v1 import ChallengeOptions, Payload, create_challenge, verify_solution
from fastapi import APIRouter, FastAPI
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from digest.config.runtime import Runtime
from digest.web import once
from digest.web.ratelimit import SlidingWindow, client_ip

PROVIDER = "altcha"  # webhook_replay.provider of claimed solutions
FIELD = "altcha"  # the form / JSON field the widget fills
FAILED = "The anti-robot check failed or expired. Please try again."
KEY_PURPOSE = b"digest-altcha/v1"
CHALLENGES_PER_SIGNUP = 3  # page reloads and retries fetch new challenges
MAX_PAYLOAD = 4096  # a real payload is about 300 characters
MAX_NUMBER = 2**32
# The sign-up form with the widget: its scripts, its worker and its stylesheet from
# this origin, the challenge fetched from here; still no inline script, no eval,
# no blob: or data: workers, nothing from another origin.
SIGNUP_CSP = (
    "default-src 'none'; script-src 'self'; worker-src 'self'; connect-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_ASSET_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
_ASSETS = ("setup.js", "altcha.min.js", "sha.js", "altcha.css", "LICENSE.txt")
_EXPIRES = re.compile(r"[0-9]{1,12}")

router = APIRouter(tags=["sign-up"])


class AlreadyUsed(Exception):
    """The solution was accepted before (:func:`claim`): roll back, refuse."""


@dataclass(frozen=True, slots=True)
class Solved:
    """A verified, unexpired solution: its challenge signature and expiry."""

    key: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


class ProofOfWork:
    """Challenges and checks for one app; kept on ``app.state.proof_of_work``."""

    def __init__(self, rt: Runtime) -> None:
        cfg = rt.config.web
        self.rt = rt
        self.max_number = cfg.proof_of_work_max_number
        self.lifetime = timedelta(minutes=cfg.proof_of_work_minutes)
        self.limiter = SlidingWindow(CHALLENGES_PER_SIGNUP * cfg.signups_per_minute)
        self.assets = {name: _load(name) for name in _ASSETS}
        self._keys: tuple[bytes, ...] | None = None

    def keys(self) -> tuple[bytes, ...]:
        """The HMAC keys, first one signing (may read the stored secret once)."""
        if self._keys is None:
            secrets = self.rt.secret_keys()
            self._keys = tuple(
                hmac.new(s.encode(), KEY_PURPOSE, hashlib.sha256).digest() for s in secrets
            )
        return self._keys

    def challenge(self) -> dict[str, Any]:
        """A fresh challenge as the widget reads it."""
        options = ChallengeOptions(
            algorithm="SHA-256",
            max_number=self.max_number,
            hmac_key=self.keys()[0],
            expires=self.rt.now() + self.lifetime,
        )
        return dict(create_challenge(options).to_dict())

    def check(self, payload: str) -> Solved | None:
        """The solved challenge, or None for a missing, malformed, altered, wrong or
        expired payload. Records nothing."""
        parsed = _decode(payload)
        if parsed is None:
            return None
        if not any(verify_solution(parsed, key, check_expires=False)[0] for key in self.keys()):
            return None
        expires_at = _expires_at(parsed.salt)
        if expires_at is None or expires_at <= self.rt.now():
            return None
        return Solved(key=parsed.signature, expires_at=expires_at)


def claim(session: Session, solved: Solved, now: datetime) -> None:
    """Record the solution as used, in the caller's transaction. Raises
    :class:`AlreadyUsed` when it is recorded and not expired (an expired row is
    taken over in the same statement, as for webhook replay keys)."""
    if not once.claim(session, PROVIDER, solved.key, solved.expires_at, now):
        raise AlreadyUsed


def of(request: Request) -> ProofOfWork | None:
    """The app's :class:`ProofOfWork`, or None when ``[web] proof_of_work`` is off."""
    found = getattr(request.app.state, "proof_of_work", None)
    return found if isinstance(found, ProofOfWork) else None


def install(app: FastAPI, runtime: Runtime) -> None:
    """Add the challenge and widget routes, only when ``[web] proof_of_work`` is on."""
    if not runtime.config.web.proof_of_work:
        return
    app.state.proof_of_work = ProofOfWork(runtime)
    app.include_router(router)


@router.get(
    "/subscribe/challenge",
    summary="A fresh anti-robot (ALTCHA) challenge for the sign-up form",
    responses={
        200: {"description": "ALTCHA challenge: algorithm, challenge, maxNumber, salt, signature"},
        429: {"description": "Too many challenges for this client; see Retry-After"},
    },
)
async def new_challenge(request: Request) -> Response:
    pow_ = of(request)
    assert pow_ is not None  # the route exists only when it is on
    headers = {"Cache-Control": "no-store"}
    retry_after = pow_.limiter.hit(client_ip(request))
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
        return JSONResponse({"status": "error", "error": "too many requests"}, 429, headers)
    body = await run_in_threadpool(pow_.challenge)  # the first one may read the secret
    return JSONResponse(body, headers=headers)


@router.get("/static/altcha/{name}", include_in_schema=False)
async def widget_file(request: Request, name: str) -> Response:
    pow_ = of(request)
    asset = pow_.assets.get(name) if pow_ is not None else None
    if asset is None:
        raise HTTPException(404)
    headers = {"Cache-Control": "public, no-cache", "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _load(name: str) -> Asset:
    body = files("digest.web").joinpath("static", "altcha", name).read_bytes()
    suffix = name[name.rindex(".") :]
    return Asset(body, _ASSET_TYPES[suffix], f'"{hashlib.sha256(body).hexdigest()[:20]}"')


def _decode(payload: str) -> Payload | None:
    """The widget's payload (base64 of a JSON object), shapes checked, or None."""
    if not payload or len(payload) > MAX_PAYLOAD:
        return None
    try:
        data = json.loads(base64.b64decode(payload, validate=True))
    except (ValueError, TypeError, RecursionError):  # binascii, Unicode, JSON errors
        return None
    if not isinstance(data, dict) or data.get("algorithm") != "SHA-256":
        return None
    number = data.get("number")
    texts = [data.get(k) for k in ("challenge", "salt", "signature")]
    if type(number) is not int or not 0 <= number <= MAX_NUMBER:
        return None
    challenge, salt, signature = texts
    if not (isinstance(challenge, str) and isinstance(salt, str) and isinstance(signature, str)):
        return None
    return Payload("SHA-256", challenge, number, salt, signature)


def _expires_at(salt: str) -> datetime | None:
    """The ``expires`` the salt carries (signed with it); None when absent or odd."""
    values = parse_qs(salt.partition("?")[2]).get("expires", [])
    if len(values) != 1 or not _EXPIRES.fullmatch(values[0]):
        return None
    return datetime.fromtimestamp(int(values[0]), UTC)
