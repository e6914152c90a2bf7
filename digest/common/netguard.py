"""Outbound requests to URLs that feed content chose: never to an internal address.

A feed decides which links the pre-flight fetches (:mod:`digest.desk.linkcheck`), so a
feed (or whoever edits it) could make this host request its loopback services,
the LAN or a cloud metadata endpoint (169.254.169.254). :func:`guarded_client`
gives an ``httpx.AsyncClient`` that refuses that:

- :class:`GuardedBackend` (an httpcore network backend) resolves the host name
  itself, refuses the connection when *any* of its addresses is blocked
  (:func:`blocked_because`), and connects to the vetted address, so a second DNS
  answer cannot swap in another one (no rebinding window). TLS still uses the host
  name: httpcore passes it to ``start_tls`` as ``server_hostname`` (SNI and
  certificate verification), not the address connected to.
- It sits at connect time, so every redirect hop and every new origin is checked.
- :class:`GuardedTransport` wraps the connection pool for httpx, refuses schemes
  other than http and https, and never uses a proxy: ``HTTP(S)_PROXY`` and
  ``.netrc`` are ignored (through a proxy the guard would vet the proxy, not the
  target; ``.netrc`` would hand credentials to feed-chosen hosts).

``[preflight] allow_private_addresses = true`` (:class:`AddressPolicy`) lifts the
loopback, private, link-local, shared (CGNAT) and other non-public ranges; the
unspecified, multicast and reserved ones stay refused. The refusal is
:class:`Refused`, an ``httpx.ConnectError`` whose message says why and what to set.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore
import httpx

from digest.common.addresses import blocked_because

# (host, port) -> the host's addresses, as text; injectable so tests need no DNS.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
SCHEMES = ("http", "https")


class Refused(httpx.ConnectError):
    """A request the guard would not make (blocked address or scheme); no
    connection was opened. Not worth retrying: the answer will not change."""


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """What may be connected to. ``exempt``: exact addresses allowed anyway (for
    tests that need one loopback server to stand in for a public one)."""

    allow_private: bool = False
    exempt: frozenset[str] = frozenset()
    setting: str = "[preflight] allow_private_addresses"  # named in refusals

    def check(self, host: str, addresses: Sequence[str]) -> None:
        """Raise :class:`Refused` when any of ``host``'s ``addresses`` is blocked."""
        for address in addresses:
            verdict = blocked_because(address)
            if verdict is None or str(ipaddress.ip_address(address)) in self.exempt:
                continue
            if verdict.liftable and self.allow_private:
                continue
            subject = f"{address} is" if _is_ip(host) else f"{host} resolves to {address},"
            hint = (
                f"; set {self.setting} = true to allow it"
                if verdict.liftable
                else "; such addresses are never fetched"
            )
            raise Refused(f"refused: {subject} {verdict.why}{hint}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (``getaddrinfo``), in order."""
    found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolve, vet every address (:class:`AddressPolicy`), connect to a vetted one."""

    def __init__(
        self,
        policy: AddressPolicy,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.resolver: Resolver = resolver or system_resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else anyio.current_time() + timeout
        addresses = [host] if _is_ip(host) else await self._resolve(host, port, timeout)
        self.policy.check(host, addresses)
        last: Exception | None = None
        for address in addresses:  # each one vetted above: connect to it, not the name
            left = None if deadline is None else max(0.0, deadline - anyio.current_time())
            try:
                return await self.inner.connect_tcp(
                    address,
                    port,
                    timeout=left,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[str]:
        try:
            with anyio.fail_after(timeout):
                found = list(await self.resolver(host, port))
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout:g} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not found:
            raise httpcore.ConnectError(f"cannot resolve {host}: no address")
        try:
            return [str(ipaddress.ip_address(a)) for a in found]
        except ValueError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise Refused("refused: Unix sockets are never used for feed-chosen URLs")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


# httpcore's errors as httpx's (most specific first), as httpx's own transport does.
_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for theirs, ours in _ERRORS:
            if isinstance(exc, theirs):
                raise ours(str(exc)) from exc
        raise


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            with _as_httpx_errors():
                await self._stream.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool whose backend is :class:`GuardedBackend`."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver | None = None,
        limits: httpx.Limits | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        limits = limits or httpx.Limits()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),  # SSL_CERT_FILE/DIR still honoured
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver, inner),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in SCHEMES:
            raise Refused(f"refused: {request.url.scheme}: URLs are never fetched")
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            answer = await self._pool.handle_async_request(core)
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_Body(answer.stream),
            extensions=answer.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def guarded_client(
    policy: AddressPolicy, *, resolver: Resolver | None = None, **options: Any
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for feed-chosen URLs: guarded, no proxy, no ``.netrc``.
    ``options``: AsyncClient's (timeout, headers, follow_redirects, limits …)."""
    limits = options.pop("limits", None)
    transport = GuardedTransport(policy, resolver=resolver, limits=limits)
    return httpx.AsyncClient(transport=transport, trust_env=False, **options)
