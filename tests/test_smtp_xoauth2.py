"""``[transport] auth``: XOAUTH2 (Gmail, Microsoft 365) with the access token from
``DIGEST_SMTP_OAUTH_TOKEN``, and PLAIN or LOGIN on request.

aiosmtpd plays the server: its ``auth_XOAUTH2`` handler hook checks the initial
response and, for a wrong token, answers like Gmail: a 334 challenge holding the
base64 JSON status, then (after the client's empty line) 535. The token must show
in no error, result or log line.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from digest.config import AdapterConfig
from digest.config.registry import build_transport
from digest.errors import ConfigError, TransportUnavailable
from digest.transports import smtp_wire
from digest.transports.base import Outcome, OutgoingMessage, SendResult
from digest.transports.smtp import SmtpTransport
from digest.transports.smtp_auth import oauth_status, xoauth2_response
from digest.transports.smtp_codec import SmtpAuthError, SmtpAuthUnavailable
from tests.smtp_sink import free_port

HOST = "127.0.0.1"
USER = "digest@verdicts.example.com"
TOKEN = "ya29.a0AfB_byC-TEST-0123456789abcdefghijklmnopqrstuvwxyz"
WRONG = "ya29.a0AfB_byC-EXPIRED-9876543210zyxwvutsrqponmlkjihgfedcba"
ECHO = "ya29.echo-me-0123456789"
STATUS = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}
GMAIL_535 = (
    "535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
    "535 5.7.8  https://support.google.com/mail/?p=BadCredentials x1-20020a05"
)
SOURCE = Path("/etc/digest/config.toml")


class OAuthHandler:
    """Takes the XOAUTH2 initial response for USER/TOKEN; records what it got."""

    def __init__(self) -> None:
        self.responses: list[bytes] = []  # decoded initial responses
        self.answers: list[bytes] = []  # the client's answers to the error challenge
        self.logins: list[tuple[str, bytes]] = []  # PLAIN/LOGIN: (mechanism, user)
        self.messages: list[tuple[Any, bytes]] = []  # (auth_data, content)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        blob = base64.b64decode(args[1], validate=True) if len(args) == 2 else b""
        self.responses.append(blob)
        if blob == f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode():
            return AuthResult(success=True, auth_data=USER)
        if ECHO in blob.decode():  # a careless server, quoting what it got
            token = blob.split(b"Bearer ")[1].rstrip(b"\x01").decode()
            return AuthResult(
                success=False, handled=False, message=f"535 5.7.8 {token} expired ({args[1]})"
            )
        answer = await server.challenge_auth(json.dumps(STATUS).encode())
        self.answers.append(answer)
        return AuthResult(success=False, handled=False, message=GMAIL_535)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((session.auth_data, bytes(envelope.content)))
        return "250 2.0.0 OK queued as XO1"


class PasswordHandler:
    """PLAIN and LOGIN only (aiosmtpd's own); no XOAUTH2."""

    def __init__(self) -> None:
        self.logins: list[str] = []  # the mechanisms used

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        self.logins.append(mechanism)
        ok = isinstance(data, LoginPassword) and data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def oauth_server() -> Iterator[tuple[int, OAuthHandler]]:
    handler, port = OAuthHandler(), free_port()
    controller = Controller(handler, hostname=HOST, port=port, auth_require_tls=False)
    controller.start()
    yield port, handler
    controller.stop()


@pytest.fixture
def password_server() -> Iterator[tuple[int, PasswordHandler]]:
    handler, port = PasswordHandler(), free_port()
    controller = Controller(
        object(),
        hostname=HOST,
        port=port,
        auth_require_tls=False,
        authenticator=handler.authenticator,
    )
    controller.start()
    yield port, handler
    controller.stop()


def cfg(**options: Any) -> AdapterConfig:
    options = {"host": HOST, "security": "none", "timeout": 5, "connections": 1, **options}
    return AdapterConfig(section="transport", kind="smtp", options=options, source=SOURCE)


def message() -> OutgoingMessage:
    data = b"From: digest@verdicts.example.com\r\nSubject: oauth\r\n\r\nHello\r\n"
    return OutgoingMessage(1, "bounces@verdicts.example.com", "reader@example.org", "<m1@x>", data)


def everything_said(exc: BaseException | None, *results: SendResult) -> str:
    """Every error message in the chain, with reprs, and the results' details."""
    words = [r.detail for r in results]
    while exc is not None:
        words += [str(exc), repr(exc), repr(getattr(exc, "args", ()))]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(words)


async def test_xoauth2_sends_the_token_from_the_environment(
    oauth_server: tuple[int, OAuthHandler], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port, handler = oauth_server
    env = {"DIGEST_SMTP_OAUTH_TOKEN": TOKEN, "DIGEST_SMTP_PASSWORD": "not-this-one"}
    t = build_transport(cfg(port=port, username=USER, auth="xoauth2"), env)
    await t.open()
    [result] = await t.send_batch([message()])
    await t.close()
    assert result.outcome is Outcome.sent and result.provider_id == "XO1"
    assert handler.responses == [f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode()]
    assert [auth for auth, _ in handler.messages] == [USER]
    assert TOKEN not in caplog.text and TOKEN not in result.detail


async def test_refused_token_is_one_line_with_the_status_and_never_the_token(
    oauth_server: tuple[int, OAuthHandler], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port, handler = oauth_server
    env = {"DIGEST_SMTP_OAUTH_TOKEN": WRONG}
    t = build_transport(cfg(port=port, username=USER, auth="xoauth2"), env)
    with pytest.raises(TransportUnavailable) as info:
        await t.open()
    [result] = await t.send_batch([message()])  # a reconnect that fails the same way
    await t.close()
    text = str(info.value)
    assert "\n" not in text and "\r" not in text
    assert "535 5.7.8 Username and Password not accepted" in text
    assert '(XOAUTH2 status {"status":"401","schemes":"bearer","scope":' in text
    assert "DIGEST_SMTP_OAUTH_TOKEN environment variable (tokens expire)" in text
    assert result.outcome is Outcome.deferred and "535" in result.detail
    assert handler.answers == [b"", b""]  # the empty line after each challenge
    assert handler.messages == []
    sasl = xoauth2_response(USER, WRONG).decode()
    said = everything_said(info.value, result) + "\n" + caplog.text
    assert WRONG not in said and sasl not in said


async def test_session_level_refusal(oauth_server: tuple[int, OAuthHandler]) -> None:
    port, _ = oauth_server
    session = await smtp_wire.connect(
        HOST, port, security="none", timeout=5, local_hostname="client.example"
    )
    with pytest.raises(SmtpAuthError) as info:
        await session.login(USER, WRONG, mechanism="xoauth2")
    assert (info.value.code, info.value.phase) == (535, "AUTH")
    assert info.value.message.endswith(
        '(XOAUTH2 status {"status":"401","schemes":"bearer","scope":"https://mail.google.com/"})'
    )
    assert WRONG not in str(info.value)
    await session.quit()


async def test_a_server_quoting_the_token_gets_it_masked(
    oauth_server: tuple[int, OAuthHandler],
) -> None:
    port, _ = oauth_server
    session = await smtp_wire.connect(
        HOST, port, security="none", timeout=5, local_hostname="client.example"
    )
    with pytest.raises(SmtpAuthError) as info:
        await session.login(USER, ECHO, mechanism="xoauth2")
    assert info.value.message == "5.7.8 [token] expired ([token])"
    await session.quit()


async def test_server_without_xoauth2_is_a_one_line_error(
    password_server: tuple[int, PasswordHandler],
) -> None:
    port, handler = password_server
    t = SmtpTransport(
        host=HOST, port=port, security="none", username=USER, auth="xoauth2", oauth_token=TOKEN
    )
    with pytest.raises(TransportUnavailable) as info:
        await t.open()
    await t.close()
    assert str(info.value) == (
        f"SMTP server {HOST}:{port} offers no AUTH XOAUTH2 (LOGIN PLAIN): "
        "check [transport] auth (now 'xoauth2')"
    )
    assert isinstance(info.value.__cause__, SmtpAuthUnavailable)
    assert handler.logins == []  # nothing else was tried instead


@pytest.mark.parametrize(
    ("auth", "used"), [("auto", ["PLAIN"]), ("plain", ["PLAIN"]), ("login", ["LOGIN"])]
)
async def test_auth_picks_the_password_mechanism(
    password_server: tuple[int, PasswordHandler], auth: str, used: list[str]
) -> None:
    port, handler = password_server
    t = build_transport(
        cfg(port=port, username=USER, auth=auth), {"DIGEST_SMTP_PASSWORD": "s3cret"}
    )
    await t.open()
    await t.close()
    assert handler.logins == used


# Configuration: the token comes from the environment only, and goes with a user.


def test_xoauth2_without_the_token_names_the_key_and_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        build_transport(cfg(port=587, username=USER, auth="xoauth2"), {})
    assert str(info.value) == (
        f"[transport] in {SOURCE}: key 'auth': 'xoauth2' needs an OAuth 2.0 access token: "
        "set the DIGEST_SMTP_OAUTH_TOKEN environment variable"
    )
    with pytest.raises(ConfigError, match="DIGEST_SMTP_OAUTH_TOKEN"):  # a password is no help
        build_transport(
            cfg(port=587, username=USER, auth="xoauth2"), {"DIGEST_SMTP_PASSWORD": "s3cret"}
        )


def test_the_token_is_never_read_from_the_file() -> None:
    with pytest.raises(ConfigError, match=r"key 'oauth_token'.*unknown key"):
        build_transport(cfg(port=587, username=USER, auth="xoauth2", oauth_token=TOKEN), {})


@pytest.mark.parametrize(
    ("options", "env", "match"),
    [
        ({"auth": "cram-md5", "username": USER}, {}, r"key 'auth': must be one of"),
        ({"auth": "xoauth2"}, {"DIGEST_SMTP_OAUTH_TOKEN": TOKEN}, r"needs key 'username'"),
        (
            {"auth": "xoauth2", "username": USER, "host": "smtp.gmail.com"},
            {"DIGEST_SMTP_OAUTH_TOKEN": TOKEN},
            r"'none' would send the access token in clear text to smtp.gmail.com",
        ),
        (
            {"auth": "xoauth2", "username": USER},
            {"DIGEST_SMTP_OAUTH_TOKEN": f"{TOKEN}\n{TOKEN}"},
            r"DIGEST_SMTP_OAUTH_TOKEN holds spaces or control characters",
        ),
        (
            {"auth": "xoauth2", "username": "digest\x01user=other"},
            {"DIGEST_SMTP_OAUTH_TOKEN": TOKEN},
            r"key 'username': no control characters",
        ),
    ],
)
def test_auth_keys_are_checked(options: dict[str, Any], env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        build_transport(cfg(port=587, **options), env)
    assert TOKEN not in str(info.value)


def test_a_token_with_surrounding_white_space_is_trimmed() -> None:
    env = {"DIGEST_SMTP_OAUTH_TOKEN": f" {TOKEN}\n"}
    t = build_transport(cfg(port=587, username=USER, auth="xoauth2"), env)
    assert isinstance(t, SmtpTransport) and t.auth == "xoauth2"


@pytest.mark.parametrize(
    ("challenge", "status"),
    [
        (base64.b64encode(json.dumps(STATUS, indent=2).encode()).decode(), json.dumps(STATUS)),
        ("eyJzdGF0dXMiOiI0MDAifQ", '{"status":"400"}'),  # padding left off
        ("not base64 at all", "not base64 at all"),
        (base64.b64encode(b"plain\r\nwords\x1b[31m").decode(), "plain words [31m"),
    ],
)
def test_oauth_status_is_one_line(challenge: str, status: str) -> None:
    assert oauth_status(challenge) == status.replace(", ", ",").replace(": ", ":")
