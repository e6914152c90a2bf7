"""Feed servers on 127.0.0.1 that misbehave on purpose: they trickle, they send huge
bodies or gzip bombs. Bodies are generated as they are sent, never held whole."""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[[BaseHTTPRequestHandler], None]
MB = 1_000_000


def page(*ids: str, next_url: str | None = None) -> dict[str, Any]:
    """A v1 feed document holding valid comparisons ``ids``."""
    tools = [
        {"key": k, "name": k, "pricing": "free", "panel_ship_pct": 50, "community_pct": None}
        for k in ("alpha", "beta")
    ]
    comparisons = [
        {
            "id": cid,
            "url": f"https://verdicts.example.com/compare/{cid}",
            "title": f"Comparison {cid}",
            "category": "Developer Tools",
            "published_at": "2026-11-20T14:00:00Z",
            "tools": tools,
        }
        for cid in ids
    ]
    return {
        "version": "1",
        "generated_at": "2026-11-23T08:00:00Z",
        "next_url": next_url,
        "comparisons": comparisons,
    }


class FeedServer(ThreadingHTTPServer):
    """Answers each path with its handler; 404 for the rest. Counts requests."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Dispatch)
        self.routes: dict[str, Handler] = {}
        self.requests: list[str] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def on(self, path: str, handler: Handler) -> str:
        self.routes[path] = handler
        return self.url(path)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up and hung up is the point of these servers


class _Dispatch(BaseHTTPRequestHandler):
    server: FeedServer

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        handler = self.server.routes.get(self.path)
        if handler is None:
            self.send_error(404)
            return
        handler(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def json_body(document: Any, status: int = 200) -> Handler:
    data = json.dumps(document).encode()

    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return handle


def trickle(interval: float, *, headers_too: bool = False) -> Handler:
    """One byte every ``interval`` seconds, for ever (or until the client hangs up)."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        if not headers_too:
            h.wfile.write(head)
            head = b""
        data = head + b'{"version": "1", ' + b" " * 100_000
        try:
            for byte in data:
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                time.sleep(interval)
        except OSError:
            return

    return handle


def zeros(total: int, *, content_length: bool = False, gzip: bool = False) -> Handler:
    """A ``total``-byte body of spaces, sent in 64 KB pieces; with ``gzip``, a gzip
    bomb: ``total`` bytes once decompressed, about a thousandth of that on the wire."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        if gzip:
            h.send_header("Content-Encoding", "gzip")
        wire = gzip_bomb(total) if gzip else None
        if content_length:
            h.send_header("Content-Length", str(len(wire) if wire is not None else total))
        h.end_headers()
        try:
            if wire is not None:
                h.wfile.write(wire)
                return
            piece = b" " * 65_536
            for start in range(0, total, len(piece)):
                h.wfile.write(piece[: min(len(piece), total - start)])
        except OSError:
            return

    return handle


@cache
def gzip_bomb(total: int) -> bytes:
    """gzip of ``total`` spaces, built 1 MB at a time."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    chunk = b" " * MB
    out = [packer.compress(chunk) for _ in range(total // MB)]
    out.append(packer.compress(b" " * (total % MB)))
    out.append(packer.flush())
    return b"".join(out)


def compressed(document: Any, coding: str) -> Handler:
    """``document`` as JSON with ``Content-Encoding: coding`` (gzip, deflate, raw-deflate)."""
    data = json.dumps(document).encode()
    wbits = {"gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS, "raw-deflate": -15}[coding]
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    wire = packer.compress(data) + packer.flush()

    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Encoding", "deflate" if coding == "raw-deflate" else coding)
        h.send_header("Content-Length", str(len(wire)))
        h.end_headers()
        h.wfile.write(wire)

    return handle
