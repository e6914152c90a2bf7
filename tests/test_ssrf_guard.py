"""Issue 13: no request to an internal address on behalf of feed content.

Real loopback servers count every TCP connection they accept; the link check
(``digest check-edition``, :func:`run_preflight`, :class:`LinkChecker`, the desk)
must refuse feed links that are, resolve to, or redirect to loopback without
connecting, and fetch them when ``[preflight] allow_private_addresses = true``.
Names are resolved by an injected resolver (no /etc/hosts, no DNS).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from digest.cli import app as cli_app
from digest.common.netguard import (
    AddressPolicy,
    GuardedBackend,
    GuardedTransport,
    Refused,
    blocked_because,
    guarded_client,
)
from digest.desk.linkcheck import LinkChecker
from digest.desk.preflight import run_preflight
from digest.web.app import create_app
from tests.test_admin import csrf_of, login, open_runtime
from tests.test_preflight import feed_with_links

LOOPBACK_REFUSAL = "127.0.0.1, a loopback address; set [preflight] allow_private_addresses"


class Listener(ThreadingHTTPServer):
    """An HTTP server on loopback that counts accepted connections; answers 200, or
    302 to ``location`` when given."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", location: str = "") -> None:
        self.connections = 0
        self.hosts: list[str] = []  # the Host header of each request
        self.location = location
        self.lock = threading.Lock()
        super().__init__((host, 0), _Handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.lock:
            self.connections += 1
        return True

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: Listener

    def _answer(self) -> None:
        self.server.hosts.append(self.headers.get("Host", ""))
        self.send_response(302 if self.server.location else 200)
        if self.server.location:
            self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET = _answer

    def log_message(self, *args: object) -> None:
        pass


def serve(host: str = "127.0.0.1", location: str = "") -> Listener:
    server = Listener(host, location)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = serve()
    yield server
    server.shutdown()
    server.server_close()


def resolver_of(names: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in names:
            raise OSError(f"no such test name {host}")
        return names[host]

    return resolve


# --- the address classifier ---------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback address (IPv4 127.0.0.1)"),
        ("::ffff:169.254.169.254", "link-local address (IPv4 169.254.169.254)"),
        ("::7f00:1", "loopback address (IPv4 127.0.0.1)"),  # IPv4-compatible
        ("64:ff9b::7f00:1", "loopback address (IPv4 127.0.0.1)"),  # NAT64
        ("64:ff9b::a00:1", "private address (IPv4 10.0.0.1)"),
        ("2002:7f00:1::1", "loopback address (IPv4 127.0.0.1)"),  # 6to4
        ("2001:db8::1", "non-public"),  # documentation
    ],
)
def test_internal_addresses_are_blocked(address: str, why: str) -> None:
    verdict = blocked_because(address)
    assert verdict is not None and why in verdict.why


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "2606:2800:220:1::1",
        "::ffff:93.184.216.34",
        "64:ff9b::5db8:d822",
        "8.8.8.8",
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert blocked_because(address) is None


def test_allow_private_lifts_internal_ranges_but_not_unspecified_or_multicast() -> None:
    lax = AddressPolicy(allow_private=True)
    for address in ("127.0.0.1", "10.0.0.1", "169.254.169.254", "100.64.0.1", "::1", "fc00::1"):
        lax.check("h", [address])
    for address in ("0.0.0.0", "224.0.0.1", "::"):
        with pytest.raises(Refused, match="never fetched"):
            lax.check("h", [address])


# --- digest check-edition -------------------------------------------------------------


def test_check_edition_refuses_a_loopback_link_without_connecting(
    tmp_path: Path, listener: Listener
) -> None:
    base = f"http://127.0.0.1:{listener.port}"
    recent = datetime.now(UTC) - timedelta(hours=1)  # the command runs on the real clock
    feed = feed_with_links(tmp_path, base, broken="none", published=recent)
    open_runtime(
        tmp_path, feed={"kind": "files", "path": str(feed)}, preflight={"check_links": True}
    ).close()
    env = {"DIGEST_SECRET_KEY": "test-key", "COLUMNS": "400"}
    result = CliRunner().invoke(
        cli_app, ["--config", str(tmp_path / "config.toml"), "check-edition", "next"], env=env
    )
    assert result.exit_code == 1, result.output
    assert f"{base}/ok/" in result.output
    assert "refused: 127.0.0.1 is a loopback address; set [preflight] " in result.output
    assert "3 error(s)" in result.output
    assert listener.connections == 0


# --- run_preflight / LinkChecker with an injected resolver ---------------------------


def test_a_public_looking_name_resolving_to_loopback_is_refused(
    tmp_path: Path, listener: Listener
) -> None:
    base = f"http://feeds.example.com:{listener.port}"
    feed = feed_with_links(tmp_path, base, broken="none")
    resolve = resolver_of({"feeds.example.com": ["127.0.0.1"]})
    rt = open_runtime(tmp_path, feed={"kind": "files", "path": str(feed)}, preflight={})
    try:
        report = run_preflight(rt, key=None, resolver=resolve)
    finally:
        rt.close()
    refused = [f for f in report.errors if f.check == "links"]
    assert len(refused) == 3 and all(f.comparison for f in refused)
    message = refused[0].describe()
    assert message.startswith(f"links: {base}/ok/")
    assert f"refused: feeds.example.com resolves to {LOOPBACK_REFUSAL}" in message
    assert listener.connections == 0


def test_with_allow_private_addresses_the_loopback_link_is_fetched_by_its_vetted_address(
    tmp_path: Path, listener: Listener
) -> None:
    base = f"http://feeds.example.com:{listener.port}"
    feed = feed_with_links(tmp_path, base, broken="none")
    resolve = resolver_of({"feeds.example.com": ["127.0.0.1"]})
    rt = open_runtime(
        tmp_path,
        feed={"kind": "files", "path": str(feed)},
        preflight={"allow_private_addresses": True},
    )
    try:
        report = run_preflight(rt, key=None, resolver=resolve)
    finally:
        rt.close()
    assert report.ok, [f.describe() for f in report.errors]
    assert report.links_checked == 3 and listener.connections >= 1
    # Connected to the resolved address; the request still names the host.
    assert set(listener.hosts) == {f"feeds.example.com:{listener.port}"}


@pytest.mark.parametrize("target_host", ["127.0.0.1", "internal.example"])
async def test_a_redirect_to_loopback_is_refused_at_the_hop(
    listener: Listener, target_host: str
) -> None:
    # The redirector stands in for a public server: it listens on 127.0.0.2, and
    # the policy exempts exactly that address; the hop goes to 127.0.0.1.
    target = f"http://{target_host}:{listener.port}/"
    try:
        redirector = serve("127.0.0.2", location=target)
    except OSError as exc:  # pragma: no cover (127.0.0.2 is loopback on Linux)
        pytest.skip(f"cannot listen on 127.0.0.2: {exc}")
    try:
        resolve = resolver_of(
            {"redirector.example": ["127.0.0.2"], "internal.example": ["127.0.0.1"]}
        )
        policy = AddressPolicy(exempt=frozenset({"127.0.0.2"}))
        checker = LinkChecker(timeout=5, concurrency=2, policy=policy, resolver=resolve)
        url = f"http://redirector.example:{redirector.port}/go"
        result = (await checker.check([url]))[url]
    finally:
        redirector.shutdown()
        redirector.server_close()
    assert redirector.connections >= 1  # the first hop was allowed and made
    assert result.refused and not result.ok
    subject = "127.0.0.1 is" if target_host == "127.0.0.1" else "internal.example resolves to"
    assert result.describe().startswith(f"refused: {subject} ")
    assert "a loopback address" in result.describe()
    assert listener.connections == 0


async def test_any_blocked_address_of_a_name_refuses_it_before_connecting() -> None:
    inner = _RecordingBackend()
    resolve = resolver_of({"mixed.example": ["93.184.216.34", "10.0.0.7"]})
    backend = GuardedBackend(AddressPolicy(), resolve, inner)
    with pytest.raises(Refused, match=r"mixed\.example resolves to 10\.0\.0\.7, a private"):
        await backend.connect_tcp("mixed.example", 80, timeout=1)
    assert inner.connected == []


async def test_connects_to_the_vetted_address_and_keeps_the_name_for_tls() -> None:
    inner = _RecordingBackend()
    resolve = resolver_of({"feeds.example.com": ["93.184.216.34"]})
    transport = GuardedTransport(AddressPolicy(), resolver=resolve, inner=inner)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError, match="stop here"):
            await client.get("https://feeds.example.com/page")
    assert inner.connected == [("93.184.216.34", 443)]  # pinned: no second lookup
    assert inner.server_hostnames == ["feeds.example.com"]  # SNI and verification


async def test_other_schemes_are_refused() -> None:
    transport = GuardedTransport(AddressPolicy(allow_private=True))
    with pytest.raises(Refused, match="ftp: URLs are never fetched"):
        await transport.handle_async_request(httpx.Request("GET", "ftp://files.example/x"))


async def test_proxy_settings_in_the_environment_are_ignored(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = f"http://127.0.0.1:{listener.port}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    checker = LinkChecker(timeout=2, concurrency=1)
    result = (await checker.check(["http://10.0.0.1/"]))["http://10.0.0.1/"]
    assert result.refused and "10.0.0.1 is a private address" in result.describe()
    assert listener.connections == 0


async def test_a_name_that_does_not_resolve_is_unreachable_not_refused() -> None:
    async with guarded_client(AddressPolicy(), resolver=resolver_of({}), timeout=2) as client:
        with pytest.raises(httpx.ConnectError, match=r"cannot resolve nowhere\.example") as caught:
            await client.get("http://nowhere.example/")
    assert not isinstance(caught.value, Refused)


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, owner: _RecordingBackend) -> None:
        self.owner = owner

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        self.owner.server_hostnames.append(server_hostname or "")
        raise httpcore.ConnectError("stop here")

    async def aclose(self) -> None:
        pass


class _RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records where it was asked to connect; connects nowhere."""

    def __init__(self) -> None:
        self.connected: list[tuple[str, int]] = []
        self.server_hostnames: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append((host, port))
        return _Stream(self)


# --- the desk -----------------------------------------------------------------------


@pytest.mark.parametrize("allow", [False, True])
def test_the_desk_checks_links_only_on_a_post_with_its_csrf_token(
    tmp_path: Path, listener: Listener, allow: bool
) -> None:
    base = f"http://127.0.0.1:{listener.port}"
    feed = feed_with_links(tmp_path, base, broken="none")
    rt = open_runtime(
        tmp_path,
        feed={"kind": "files", "path": str(feed)},
        preflight={"check_links": True, "allow_private_addresses": allow},
    )
    try:
        with TestClient(create_app(rt), follow_redirects=False) as c:
            login(c)
            for params in ({}, {"links": "1"}):
                page = c.get("/admin/editions/next/preview", params=params)
                assert page.status_code == 200 and "links not fetched" in page.text
            assert 'action="/admin/editions/next/check-links"' in page.text
            assert c.get("/admin/editions/next/check-links").status_code == 405
            for forged in ({}, {"csrf": "0" * 64}):
                answer = c.post("/admin/editions/next/check-links", data=forged)
                assert answer.status_code == 403
            assert listener.connections == 0
            checked = c.post("/admin/editions/next/check-links", data={"csrf": csrf_of(page.text)})
            assert checked.status_code == 200 and "3 links checked" in checked.text
            again = c.get("/admin/editions/next/preview")
            assert 'id="last-link-check"' in again.text and "links not fetched" in again.text
    finally:
        rt.close()
    if allow:
        assert listener.connections >= 1 and "error(s)" not in checked.text
    else:
        assert listener.connections == 0
        assert "refused: 127.0.0.1 is a loopback address" in checked.text
        assert "refused: 127.0.0.1 is a loopback address" in again.text
