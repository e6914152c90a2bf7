"""Issue 13: no secret in a public answer, a log line or an alert.

The http feed takes its credential from the environment (``DIGEST_FEED_TOKEN``, or
``DIGEST_FEED_USERNAME`` / ``DIGEST_FEED_PASSWORD``), never from the URL, and sends
it only to the origin of ``[feed] url``. URLs are shown without user-info or
secret-looking query values everywhere: messages, log lines (the logging filter,
httpx's own request line included), ``feed_state``, alerts, ``digest status`` and
``digest check``. Feed servers are real, on 127.0.0.1 (:mod:`tests.feed_servers`).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from uvicorn.logging import AccessFormatter

from digest import config as config_mod
from digest.common import redaction
from digest.common.redaction import RedactSecrets, install, redact_text, redact_url
from digest.config.registry import build_feed
from digest.errors import ConfigError, FeedUnavailable
from digest.feeds.base import FeedCursor
from digest.feeds.http import HttpFeed
from digest.feeds.limits import Credential
from tests.feed_servers import FeedServer, Handler, feed_server, json_body, page
from tests.support import run_digest, write_config

TOKEN = "tok-3f9a8b7c6d5e"
SECRET = "SECRET123"
USER, PASSWORD = "reader", "s3cr:et wörd"


def never_known(comparison_id: str, updated_at: str | None, /) -> bool:
    return False


def guarded(document: Any, expect: str, seen: list[str | None]) -> Handler:
    """Serve ``document`` to a request whose Authorization is ``expect``, else 401."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        got = h.headers.get("Authorization")
        seen.append(got)
        if got != expect:
            h.send_response(401)
            h.send_header("WWW-Authenticate", 'Bearer realm="feed"')
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        json_body(document)(h)

    return handle


def recording(document: Any, seen: list[str | None]) -> Handler:
    """Serve ``document`` to anyone; remember the Authorization each request had."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        seen.append(h.headers.get("Authorization"))
        json_body(document)(h)

    return handle


def redirect(location: str, seen: list[str | None]) -> Handler:
    def handle(h: BaseHTTPRequestHandler) -> None:
        seen.append(h.headers.get("Authorization"))
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return handle


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with feed_server() as srv:
        yield srv


@pytest.fixture
def other() -> Iterator[FeedServer]:
    """A second server: another port, so another origin."""
    with feed_server() as srv:
        yield srv


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- redact_url and redact_text --------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "token",
        "key",
        "api_key",
        "apikey",
        "access_token",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "pwd",
        "sig",
        "signature",
        "auth",
        "API_KEY",
        "Access_Token",
        "refresh_token",
        "upload_key",
        "app_secret",
        "X-Amz-Signature",
    ],
)
def test_secret_query_values_are_starred(name: str) -> None:
    shown = redact_url(f"https://feed.example/v1?page=2&{name}={SECRET}&q=ai")
    assert shown == f"https://feed.example/v1?page=2&{name}=***&q=ai"


def test_redact_url_shapes() -> None:
    assert redact_url(f"http://bob:{SECRET}@feed.example:8080/f?a=1#{SECRET}") == (
        "http://***@feed.example:8080/f?a=1"
    )
    assert redact_url("https://feed.example/v1?page=2&limit=50") == (
        "https://feed.example/v1?page=2&limit=50"
    )
    assert SECRET not in redact_url(f"https://feed.example/?a=1;token={SECRET}")
    assert SECRET not in redact_url(f"https://feed.example/?api%5Fkey={SECRET}")
    assert redact_url("https://feed.example/?token=") == "https://feed.example/?token="
    once = redact_url(f"https://u:p@feed.example/?api_key={SECRET}&x=a+b")
    assert redact_url(once) == once  # idempotent: a stored key stays the same
    assert redact_url("http://[::1/feed") == "http://?"  # unparsable: cut, never raises


def test_redact_text_finds_urls_and_authorization_values() -> None:
    text = (
        f"GET http://bob:{SECRET}@h.example/feed?api_key={SECRET}, then "
        f"'https://h.example/p2?sig={SECRET}' (and ftp://h.example/x?token={SECRET})."
    )
    clean = redact_text(text)
    assert SECRET not in clean
    assert "http://***@h.example/feed?api_key=***, then" in clean
    assert "'https://h.example/p2?sig=***'" in clean and clean.endswith("x?token=***).")
    for fragment in (
        f"Authorization: Bearer {SECRET}",
        f"authorization={SECRET}",
        f"{{'Authorization': 'Basic {SECRET}'}}",
        f"(b'authorization', b'Bearer {SECRET}')",
        f"sent with bearer {SECRET}xyz",
    ):
        assert SECRET not in redact_text(fragment), fragment
    assert redact_text("check the server's authorization rules") == (
        "check the server's authorization rules"
    )


# --- the logging filter ----------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own with a plain handler, the filter installed on it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.redaction")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.DEBUG)
    install(logger)
    yield logger, stream
    logger.handlers, logger.filters = [], []


def test_the_filter_rewrites_messages_and_tracebacks(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("fetching %s (%d)", f"http://bob:{SECRET}@h.example/f?token={SECRET}", 3)
    logger.warning("sent Authorization: Bearer %s", SECRET)
    logger.info("nothing to hide: %s", "https://h.example/f?page=2")
    try:
        raise ValueError(f"bad page https://h.example/f?api_key={SECRET}")
    except ValueError:
        logger.exception("page %d failed", 2)
    text = stream.getvalue()
    assert SECRET not in text
    assert "fetching http://***@h.example/f?token=*** (3)" in text
    assert "Authorization: Bearer ***" in text
    assert "https://h.example/f?page=2" in text
    assert "page 2 failed" in text and "ValueError: bad page" in text  # traceback kept


def test_the_filter_keeps_a_clean_record_as_it_is() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s items", (3,), None)
    assert RedactSecrets().filter(record)
    assert (record.msg, record.args) == ("%s items", (3,))


def test_uvicorn_access_records_keep_their_arguments() -> None:
    args = ("127.0.0.1:5000", "GET", f"/feed?api_key={SECRET}&page=2", "1.1", 200)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None
    )
    assert RedactSecrets().filter(record)
    assert isinstance(record.args, tuple) and len(record.args) == 5
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(record)
    assert SECRET not in line and "/feed?api_key=***&page=2" in line


def test_install_is_idempotent_and_covers_the_named_loggers() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    try:
        install()
        install()
        assert sum(isinstance(f, RedactSecrets) for f in handler.filters) == 1
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "apscheduler"):
            filters = logging.getLogger(name).filters
            assert sum(isinstance(f, RedactSecrets) for f in filters) == 1, name
    finally:
        root.removeHandler(handler)


def test_httpx_request_line_is_redacted(
    server: FeedServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger("httpx"), "filters", [])
    url = server.on(f"/feed?api_key={SECRET}", json_body(page("a")))
    caplog.set_level(logging.INFO, logger="httpx")
    install()
    assert httpx.get(url).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines and lines[0].startswith("HTTP Request: GET ")
    assert "api_key=***" in lines[0] and SECRET not in caplog.text


def test_the_feed_guards_httpx_logging_by_itself(
    server: FeedServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No install() call: the feed's client puts the filter on httpx's logger."""
    monkeypatch.setattr(logging.getLogger("httpx"), "filters", [])
    url = server.on(f"/feed?api_key={SECRET}", json_body(page("a")))
    caplog.set_level(logging.INFO)
    HttpFeed(url).fetch(FeedCursor(), never_known)
    assert "HTTP Request: GET" in caplog.text and SECRET not in caplog.text


# --- the credential: from the environment, to one origin only ---------------------


def test_bearer_token_and_basic_auth_reach_the_feed(server: FeedServer) -> None:
    seen: list[str | None] = []
    url = server.on("/feed", guarded(page("a"), f"Bearer {TOKEN}", seen))
    result = HttpFeed(url, token=TOKEN).fetch(FeedCursor(), never_known)
    assert [e.raw["id"] for e in result.entries] == ["a"] and seen == [f"Bearer {TOKEN}"]

    url = server.on("/basic", guarded(page("b"), basic(USER, PASSWORD), seen))
    result = HttpFeed(url, username=USER, password=PASSWORD).fetch(FeedCursor(), never_known)
    assert [e.raw["id"] for e in result.entries] == ["b"]


def test_a_401_names_the_variables_not_the_values(server: FeedServer) -> None:
    url = server.on("/feed", guarded(page("a"), f"Bearer {TOKEN}", []))
    with pytest.raises(FeedUnavailable, match="HTTP 401") as caught:
        HttpFeed(url).fetch(FeedCursor(), never_known)
    assert "DIGEST_FEED_TOKEN" in str(caught.value)
    with pytest.raises(FeedUnavailable, match="check the credential in DIGEST_FEED_TOKEN"):
        HttpFeed(url, token="wrong-token").fetch(FeedCursor(), never_known)


def test_the_credential_never_follows_next_url_to_another_origin(
    server: FeedServer, other: FeedServer
) -> None:
    here: list[str | None] = []
    there: list[str | None] = []
    p2 = other.on("/p2", recording(page("b"), there))
    url = server.on("/p1", guarded(page("a", next_url=p2), f"Bearer {TOKEN}", here))
    # Both servers are on loopback: the other origin passes the address guard only
    # because the feed allows private addresses (see the test after this one).
    feed = HttpFeed(url, token=TOKEN, allow_private_addresses=True)
    result = feed.fetch(FeedCursor(), never_known)
    assert [e.raw["id"] for e in result.entries] == ["a", "b"]
    assert here == [f"Bearer {TOKEN}"] and there == [None]


def test_feed_content_cannot_send_the_fetcher_to_a_private_address(
    server: FeedServer, other: FeedServer
) -> None:
    there: list[str | None] = []
    p2 = other.on("/p2", recording(page("b"), there))
    url = server.on("/p1", json_body(page("a", next_url=p2)))
    result = HttpFeed(url).fetch(FeedCursor(), never_known)
    # The first page (the configured origin, the operator's choice) is kept; the
    # next_url on another, loopback origin is refused without a connection.
    assert [e.raw["id"] for e in result.entries] == ["a"] and there == []
    assert result.error is not None and "refused: 127.0.0.1 is a loopback" in str(result.error)
    assert "[feed] allow_private_addresses" in str(result.error)
    hops: list[str | None] = []
    away = server.on("/inward", redirect(other.url("/p2"), hops))
    with pytest.raises(FeedUnavailable, match=r"refused: 127\.0\.0\.1 is a loopback"):
        HttpFeed(away).fetch(FeedCursor(), never_known)
    assert there == []


def test_the_credential_never_follows_a_redirect_to_another_origin(
    server: FeedServer, other: FeedServer
) -> None:
    hops: list[str | None] = []
    there: list[str | None] = []
    away = server.on("/away", redirect(other.on("/feed", recording(page("x"), there)), hops))
    HttpFeed(away, token=TOKEN, allow_private_addresses=True).fetch(FeedCursor(), never_known)
    assert hops == [f"Bearer {TOKEN}"] and there == [None]

    # Same origin: the credential goes along.
    here: list[str | None] = []
    target = server.on("/feed", guarded(page("a"), f"Bearer {TOKEN}", here))
    moved = server.on("/moved", redirect(target, hops))
    result = HttpFeed(moved, token=TOKEN).fetch(FeedCursor(), never_known)
    assert [e.raw["id"] for e in result.entries] == ["a"] and here == [f"Bearer {TOKEN}"]

    # Another origin that wants a credential: the message says why it was not sent.
    other.on("/locked", guarded(page("y"), f"Bearer {TOKEN}", []))
    locked = server.on("/locked", redirect(other.url("/locked"), hops))
    with pytest.raises(FeedUnavailable, match=r"is sent only to http://127\.0\.0\.1:"):
        HttpFeed(locked, token=TOKEN, allow_private_addresses=True).fetch(FeedCursor(), never_known)


def test_origins_are_compared_on_scheme_host_and_port() -> None:
    credential = Credential.from_env("https://Feed.Example/v1?x=1", TOKEN, None, None)
    assert credential is not None
    assert credential.allows("https://feed.example:443/v1/page/2")
    assert not credential.allows("http://feed.example/v1")  # no downgrade
    assert not credential.allows("https://feed.example:8443/v1")
    assert not credential.allows("https://cdn.feed.example/v1")
    assert not credential.allows("https://feed.example.evil/v1")
    assert TOKEN not in repr(credential)
    assert TOKEN not in repr(HttpFeed("https://feed.example/", token=TOKEN))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"token": TOKEN, "username": USER, "password": PASSWORD}, "set only one"),
        ({"username": USER}, "DIGEST_FEED_PASSWORD is not set"),
        ({"password": PASSWORD}, "DIGEST_FEED_USERNAME is not set"),
        ({"token": f"{TOKEN} x"}, "cannot go in an HTTP header"),
        ({"username": "a:b", "password": PASSWORD}, "RFC 7617"),
    ],
)
def test_bad_credential_variables_are_refused_without_their_values(
    kwargs: dict[str, str], words: str
) -> None:
    with pytest.raises(ValueError, match=words) as caught:
        HttpFeed("https://feed.example/", **kwargs)
    message = str(caught.value)
    assert TOKEN not in message and PASSWORD not in message and "a:b" not in message


def test_the_credential_is_not_a_config_file_key(tmp_path: Path) -> None:
    table = {"kind": "http", "url": "https://f.example/", "token": TOKEN}
    config = write_config(tmp_path, feed=table)

    def build() -> object:
        cfg = config_mod.load(config, environ={})  # refuses secret-looking keys, or …
        return build_feed(cfg.feed, cfg.env)  # … the feed takes 'token' from the env only

    with pytest.raises(ConfigError, match=r"\[feed\] key 'token'") as caught:
        build()
    assert TOKEN not in str(caught.value)


def test_user_info_in_the_url_is_refused(tmp_path: Path) -> None:
    url = f"https://bob:{SECRET}@feed.example/v1?api_key={SECRET}"
    config = write_config(tmp_path, feed={"kind": "http", "url": url})
    cfg = config_mod.load(config, environ={"DIGEST_FEED_TOKEN": TOKEN})
    with pytest.raises(ConfigError) as caught:
        build_feed(cfg.feed, cfg.env)
    message = str(caught.value)
    assert SECRET not in message and "\n" not in message
    # Today "[feed] in FILE: key 'url': …" (digest.config.registry's wording for a value an
    # adapter refuses); "[feed] key 'url' in FILE: …" would do as well.
    assert message.startswith("[feed] ") and "key 'url'" in message and str(config) in message
    assert "'https://***@feed.example/v1?api_key=***'" in message
    assert "DIGEST_FEED_USERNAME" in message and "DIGEST_FEED_TOKEN" in message


# --- the command line, end to end ---------------------------------------------------


def cli_env(db: Engine, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    return {
        **base,
        "DIGEST_DATABASE_URL": str(db.url),
        "DIGEST_SECRET_KEY": "test-key",
        "COLUMNS": "1000",
        **extra,
    }


def digest(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_digest(config, *args, env=env, timeout=120)


@pytest.mark.slow
def test_cli_fetch_and_run_with_credentials_from_the_environment(
    tmp_path: Path, sqlite_engine: Engine, server: FeedServer
) -> None:
    seen: list[str | None] = []
    url = server.on("/feed", guarded(page("a", "b"), f"Bearer {TOKEN}", seen))
    config = write_config(tmp_path, feed={"kind": "http", "url": url, "max_attempts": 1})
    denied = digest(config, "fetch", env=cli_env(sqlite_engine))
    assert denied.returncode == 1 and "HTTP 401" in denied.stderr
    assert "DIGEST_FEED_TOKEN" in denied.stderr

    done = digest(config, "-v", "fetch", env=cli_env(sqlite_engine, DIGEST_FEED_TOKEN=TOKEN))
    assert done.returncode == 0, done.stdout + done.stderr
    assert seen[-1] == f"Bearer {TOKEN}" and TOKEN not in done.stdout + done.stderr

    url = server.on("/basic", guarded(page("c"), basic(USER, PASSWORD), seen))
    config = write_config(tmp_path, feed={"kind": "http", "url": url, "max_attempts": 1})
    env = cli_env(sqlite_engine, DIGEST_FEED_USERNAME=USER, DIGEST_FEED_PASSWORD=PASSWORD)
    ran = digest(config, "-v", "run", env=env)
    assert seen[-1] == basic(USER, PASSWORD)
    assert "feed failed" not in ran.stdout + ran.stderr and "HTTP 401" not in ran.stderr
    assert PASSWORD not in ran.stdout + ran.stderr


@pytest.mark.slow
def test_cli_refuses_user_info_in_one_line(tmp_path: Path, sqlite_engine: Engine) -> None:
    url = f"http://bob:{SECRET}@127.0.0.1:{closed_port()}/feed.json?api_key={SECRET}"
    config = write_config(tmp_path, feed={"kind": "http", "url": url})
    done = digest(config, "fetch", env=cli_env(sqlite_engine))
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert SECRET not in line and "bob" not in line
    assert "[feed]" in line and "key 'url'" in line and str(config) in line
    assert "DIGEST_FEED_USERNAME" in line and "http://***@127.0.0.1:" in line


def all_stored_text(db: Engine) -> str:
    """Every value in every table of the SQLite database, as one string."""
    path = str(db.url.database)
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(
            repr(row) for table in tables for row in conn.execute(f'SELECT * FROM "{table}"')
        )


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["500", "refused"])
def test_a_secret_query_value_is_never_shown(
    tmp_path: Path, sqlite_engine: Engine, server: FeedServer, failure: str
) -> None:
    path = f"/feed.json?api_key={SECRET}"
    if failure == "500":
        url = server.on(path, json_body({"error": "down"}, status=500))
    else:
        url = f"http://127.0.0.1:{closed_port()}{path}"
    feed = {"kind": "http", "url": url, "max_attempts": 2, "backoff_seconds": 0.01}
    config = write_config(tmp_path, feed=feed, operators={"feed_failures": 1})
    env = cli_env(sqlite_engine)
    outputs: list[str] = []
    for args in (("fetch",), ("run",), ("check",), ("status",)):
        done = digest(config, "-v", *args, env=env)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode != 2, done.stderr
    fetched, ran, checked, status = outputs
    assert "api_key=***" in fetched
    assert "HTTP Request: GET" in fetched or failure == "refused"  # httpx's line, redacted
    assert "feed failed" in ran and "needs attention" in checked
    with sqlite3.connect(str(sqlite_engine.url.database)) as conn:
        alerts = conn.execute("SELECT name, detail FROM alert WHERE name LIKE 'feed:%'").fetchall()
        feeds = conn.execute("SELECT feed, last_error FROM feed_state").fetchall()
    shown = redact_url(url)
    assert [name for name, _ in alerts] == [f"feed:{shown}"] and f"{shown}: gave up" in alerts[0][1]
    assert [feed for feed, _ in feeds] == [shown] and "api_key=***" in feeds[0][1]
    assert "Feed http://127.0.0.1:" in status and "api_key=***" in status
    for output in outputs:
        assert SECRET not in output, output
    assert SECRET not in all_stored_text(sqlite_engine)
    if failure == "500":
        assert server.requests and all(r == path for r in server.requests)


def test_incidents_and_alert_rows_hold_redacted_urls() -> None:
    from digest.ops.alerts import Incident

    raw = f"http://bob:{SECRET}@h.example/feed.json?api_key={SECRET}"
    incident = Incident(f"feed:{raw}", f"the feed {raw} failed 3 polls in a row")
    assert incident.name == "feed:http://***@h.example/feed.json?api_key=***"
    assert SECRET not in incident.summary


def test_feed_problems_show_urls_redacted() -> None:
    from digest.comparisons.problems import show

    shown = show(f"https://x.example/?token={SECRET}")
    assert SECRET not in shown and "token=***" in shown
    assert json.loads(json.dumps(show("plain words"))) == "'plain words'"
    assert redaction.REDACTED == "***"


def test_access_log_paths_hide_every_link_token() -> None:
    from digest.web.security import redact

    assert redact("/u/12.abc") == "/u/[token]"
    assert redact("/confirm/eyJ.x.y?next=1") == "/confirm/[token]?next=1"
    assert redact("/v/12.claude-vs-x.claude.TAG/ship") == "/v/[token]/ship"
    assert redact("/r/2026-W48.c1.c.TAG/s12.6b1.TAG") == "/r/[token]/[ref]"
    assert redact("/o/2026-W48/s12.6b1.TAG.gif") == "/o/[token]/[ref]"
    assert redact("/archive/2026-W48") == "/archive/2026-W48"
