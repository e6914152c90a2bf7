"""SMTP AUTH (RFC 4954) for :class:`~digest.transports.smtp_wire.SmtpSession`.

The mechanisms (``[transport] auth``)::

    auto      PLAIN (RFC 4616), or LOGIN when PLAIN is not offered or is answered
              504 (not supported): the behaviour before the key existed
    plain     PLAIN only
    login     LOGIN only
    xoauth2   an OAuth 2.0 access token (Gmail, Microsoft 365), sent as the initial
              response base64("user=" user ^A "auth=Bearer " token ^A ^A); a refusal
              comes as a 334 challenge holding the server's status (base64 JSON),
              answered with an empty line, then the final 5xx

:func:`configured_secret` checks the ``[transport]`` keys: the password comes from
``DIGEST_SMTP_PASSWORD``, the access token from ``DIGEST_SMTP_OAUTH_TOKEN``, never
from the file; AUTH without TLS only to a loopback host.

Only what EHLO advertised in its AUTH line is tried: anything else is
:class:`SmtpAuthUnavailable`, raised before a byte is written. A refusal is
:class:`SmtpAuthError`. For XOAUTH2 the error is one line, with the server's JSON
status, and the token is never in it (server words quoting it are masked).
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Awaitable, Callable

from digest.common import options
from digest.common.options import KEY, KEY_MUST
from digest.transports.smtp_codec import Reply, SmtpAuthError, SmtpAuthUnavailable, b64

MECHANISMS = ("auto", "plain", "login", "xoauth2")
ENV_PASSWORD = "DIGEST_SMTP_PASSWORD"  # noqa: S105  (variable names, not secrets)
ENV_TOKEN = "DIGEST_SMTP_OAUTH_TOKEN"  # noqa: S105
_USES = {
    "auto": ("PLAIN", "LOGIN"),
    "plain": ("PLAIN",),
    "login": ("LOGIN",),
    "xoauth2": ("XOAUTH2",),
}
_STATUS_MAX = 300  # characters of the server's XOAUTH2 status kept in the error

# A session's "write this line, read the reply" (``SmtpSession._command``).
Command = Callable[[bytes, str], Awaitable[Reply]]


async def authenticate(
    command: Command,
    offered: frozenset[str],
    where: str,
    username: str,
    secret: str,
    mechanism: str = "auto",
) -> None:
    """AUTH as ``username`` with ``secret`` (a password, or the access token for
    ``"xoauth2"``), using ``mechanism`` if ``offered`` (EHLO's AUTH mechanisms) has it.

    Raises :class:`SmtpAuthUnavailable` (nothing sent) or :class:`SmtpAuthError`.
    """
    if mechanism not in _USES:
        raise ValueError(f"mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    usable = [name for name in _USES[mechanism] if name in offered]
    if not usable:
        names = " ".join(sorted(offered)) or "no AUTH at all"
        raise SmtpAuthUnavailable(
            f"{where} offers no AUTH {' or '.join(_USES[mechanism])} ({names})"
        )
    if usable[0] == "XOAUTH2":
        await _xoauth2(command, username, secret)
        return
    if usable[0] == "PLAIN":
        token = b64(b"\0" + username.encode() + b"\0" + secret.encode())
        reply = await command(b"AUTH PLAIN " + token + b"\r\n", "AUTH")
        if reply.code == 235:
            return
        if reply.code != 504 or "LOGIN" not in usable:
            raise SmtpAuthError(reply.code, reply.text, "AUTH")
    reply = await command(b"AUTH LOGIN\r\n", "AUTH")
    for answer in (username, secret):
        if reply.code != 334:
            break
        reply = await command(b64(answer.encode()) + b"\r\n", "AUTH")
    if reply.code != 235:
        raise SmtpAuthError(reply.code, reply.text, "AUTH")


def xoauth2_response(username: str, token: str) -> bytes:
    """The XOAUTH2 initial client response, base64-encoded."""
    return b64(f"user={username}\x01auth=Bearer {token}\x01\x01".encode())


async def _xoauth2(command: Command, username: str, token: str) -> None:
    response = xoauth2_response(username, token)
    reply = await command(b"AUTH XOAUTH2 " + response + b"\r\n", "AUTH")
    status = ""
    if reply.code == 334:  # refused: the status as a challenge; "" asks for the final reply
        status = oauth_status(reply.text)
        reply = await command(b"\r\n", "AUTH")
    if reply.code == 235:
        return
    words = one_line(reply.text) + (f" (XOAUTH2 status {status})" if status else "")
    for secret in (response.decode(), token):  # a server quoting what we sent
        words = words.replace(secret, "[token]")
    raise SmtpAuthError(reply.code, words, "AUTH")


def oauth_status(challenge: str) -> str:
    """The server's XOAUTH2 error challenge (base64 JSON, e.g. Gmail's
    ``{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}``) as
    one line: compact JSON, else the decoded text, else the challenge itself."""
    text = challenge.strip()
    try:  # binascii.Error, UnicodeDecodeError and JSONDecodeError are ValueErrors
        text = base64.b64decode(text + "=" * (-len(text) % 4), validate=True).decode()
        text = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        pass
    return one_line(text)[:_STATUS_MAX]


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters as single spaces."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def configured_secret(
    *,
    host: str,
    security: str,
    username: str | None,
    auth: str,
    password: str | None,
    token: str | None,
) -> str | None:
    """Check the ``[transport]`` AUTH keys; return the secret AUTH sends (the password,
    or the access token for ``auth = "xoauth2"``), or None: no AUTH. A password
    without a username is ignored. The ``ValueError`` names the key, never the secret.
    """
    options.one_of("auth", auth, MECHANISMS, style=KEY_MUST)
    if username is None:
        if auth != "auto":
            raise ValueError(f"key 'auth': {auth!r} needs key 'username' as well")
        return None
    options.text("username", username, style=KEY)
    if not username.isprintable():
        raise ValueError(f"key 'username': no control characters, got {username!r}")
    if auth == "xoauth2":
        secret, what = (token or "").strip(), "access token"
        if not secret:
            raise ValueError(
                f"key 'auth': 'xoauth2' needs an OAuth 2.0 access token: set the {ENV_TOKEN} "
                "environment variable"
            )
        if not (secret.isascii() and secret.isprintable()) or " " in secret:
            raise ValueError(
                f"key 'auth': {ENV_TOKEN} holds spaces or control characters, "
                "not an OAuth 2.0 access token"
            )
    else:
        if not password:
            raise ValueError(f"key 'username' is set: set {ENV_PASSWORD} as well")
        secret, what = password, "password"
    if security == "none" and not _is_loopback(host):
        raise ValueError(
            f"key 'security': 'none' would send the {what} in clear text to "
            f"{host}; use 'starttls' or 'tls' (AUTH without TLS only on loopback)"
        )
    return secret


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
