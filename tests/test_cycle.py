"""beacon/cycle.py and beacon/http.py's deadlines on the wire: raw sockets against real uvicorn servers.

The same ASGI app runs on uvicorn's own httptools protocol and on Beacon's
(`LimitedHttpToolsProtocol`, with its `Cycle`); every exchange must give the same bytes
on both: prepared heads, a prepared head plus a Set-Cookie, heads uvicorn checks itself,
HEAD, HTTP/1.0, `Connection: close`, pipelining, and an app that fails half-way.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from beacon.cycle import prepared
from beacon.http import LimitedHttpToolsProtocol
from beacon.routes import GIF

from .conftest import free_port

HEADERS = prepared(
    [
        (b"content-type", b"image/gif"),
        (b"Content-Length", str(len(GIF)).encode()),
        (b"cache-control", b"no-store"),
    ]
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope["path"]
    start: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": HEADERS}
    body: dict[str, Any] = {"type": "http.response.body", "body": GIF}
    if path == "/cookie":
        start["headers"] = [*HEADERS, (b"Set-Cookie", b"bcn=abc.def; Path=/; HttpOnly")]
    elif path == "/teapot":
        start["status"] = 418
    elif path == "/plain":
        start["headers"] = [(b"Content-Type", b"text/plain"), (b"content-length", b"2"), (b"X-Thing", b"a b")]
        body["body"] = b"hi"
    elif path == "/chunked":
        start["headers"] = [(b"content-type", b"text/plain")]
        await send(start)
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})
        return
    elif path == "/close":
        start["headers"] = [*HEADERS, (b"connection", b"close")]
    elif path == "/bad-value":
        start["headers"] = [*HEADERS, (b"x-bad", b"a\r\nb")]
    elif path == "/length":  # a content-length of the request's own, as the app wrote it
        body["body"] = b"hi"
        start["headers"] = [(b"Content-Type", b"text/plain"), (b"Content-Length", scope["query_string"].replace(b"_", b" "))]
    elif path == "/bytearray":
        start["headers"] = [*HEADERS, (b"x-a", bytearray(b"b"))]
    elif path == "/value":  # one byte in a per-request header's value
        start["headers"] = [*HEADERS, (b"set-cookie", b"a=" + bytes([int(scope["query_string"])]) + b"b")]
    elif path == "/name":  # one byte in a per-request header's name
        start["headers"] = [*HEADERS, (b"x-" + bytes([int(scope["query_string"])]), b"1")]
    elif path == "/pieces":
        await send(start)
        await send({"type": "http.response.body", "body": GIF[:10], "more_body": True})
        await send({"type": "http.response.body", "body": GIF[10:]})
        return
    elif path == "/fails-after-start":
        await send(start)
        raise RuntimeError("the app failed after its start message")
    elif path == "/no-body":
        await send(start)
        return
    elif path == "/short":
        body["body"] = GIF[:5]
    elif path == "/long":
        body["body"] = GIF + b"x"
    await send(start)
    await send(body)


class Running:
    def __init__(self, http: type[HttpToolsProtocol], **options: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            loop="uvloop",
            http=http,
            lifespan="off",
            access_log=False,
            **{"log_level": "critical", **options},
            server_header=False,
            date_header=False,
        )
        config.beacon_header_timeout = 2.0  # type: ignore[attr-defined]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[int, int]]:
    plain, beacon = Running(HttpToolsProtocol), Running(LimitedHttpToolsProtocol)
    yield plain.port, beacon.port
    plain.stop()
    beacon.stop()


def exchange(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send `data`, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                got = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                return out
            if not got:
                return out
            out += got


def get(path: str, method: str = "GET", version: str = "1.1", close: bool = True) -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: t.test\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n".encode()


PATHS = ["/", "/cookie", "/teapot", "/plain", "/chunked", "/close", "/bad-value"]
PATHS += ["/bytearray", "/pieces", "/fails-after-start", "/no-body", "/short", "/long"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_every_response_is_byte_for_byte_uvicorns(servers, path, method):
    plain, beacon = servers
    request = get(path, method)
    ours = exchange(beacon, request)
    assert ours == exchange(plain, request)
    assert ours.startswith(b"HTTP/1.1 ") or path == "/bad-value"  # uvicorn closes without a word there


@pytest.mark.parametrize("length", ["2", "_2_", "+2", "02", "3", "1", "-1", "x", "2_", "", "0x2"])
def test_a_content_length_of_the_apps_own_is_taken_as_uvicorn_takes_it(servers, length):
    plain, beacon = servers
    for method in ("GET", "HEAD"):
        request = get(f"/length?{length}", method)
        assert exchange(beacon, request) == exchange(plain, request)


@pytest.mark.parametrize("byte", [*range(0, 0x30), *range(0x3A, 0x41), *range(0x5B, 0x61), *range(0x7B, 0x80), 0x80, 0xFF])
def test_per_request_headers_are_refused_exactly_when_uvicorn_refuses_them(servers, byte):
    plain, beacon = servers
    for path in ("/value", "/name"):
        request = get(f"{path}?{byte}")
        assert exchange(beacon, request) == exchange(plain, request), path


def test_a_head_uvicorn_would_refuse_cannot_be_prepared():
    with pytest.raises(ValueError):
        prepared([(b"content-type", b"a\nb"), (b"content-length", b"1")])
    with pytest.raises(ValueError):
        prepared([(b"content-type", b"text/plain")])  # no content-length
    with pytest.raises(ValueError):
        prepared([(b"content-length", b"1"), (b"connection", b"close")])


@pytest.mark.parametrize("path", ["/", "/cookie", "/plain"])
def test_http_1_0_is_answered_and_closed_as_uvicorn_does(servers, path):
    plain, beacon = servers
    request = get(path, version="1.0", close=False)
    ours = exchange(beacon, request)
    assert ours == exchange(plain, request)
    assert b"connection: close\r\n" in ours and ours.endswith(GIF if path != "/plain" else b"hi")


def test_pipelined_keep_alive_requests_are_answered_in_order(servers):
    plain, beacon = servers
    request = get("/", close=False) + get("/cookie", close=False) + get("/teapot", method="HEAD", close=False) + get("/plain")
    ours = exchange(beacon, request)
    assert ours == exchange(plain, request)
    assert ours.count(b"HTTP/1.1 ") == 4 and ours.endswith(b"hi")


def test_a_keep_alive_connection_serves_requests_past_the_header_timeout(servers):
    """The deadlines move on with each request: a busy connection is never cut off by a
    deadline set for an earlier request (the header timeout here is 2 s)."""
    _, beacon = servers
    with socket.create_connection(("127.0.0.1", beacon), timeout=5) as s:
        end = time.monotonic() + 3
        while time.monotonic() < end:
            s.sendall(get("/", close=False))
            got = b""
            while not got.endswith(GIF):
                data = s.recv(4096)
                assert data, "closed while serving"
                got += data
            assert got.startswith(b"HTTP/1.1 200 OK\r\n")
            time.sleep(0.3)


def test_an_idle_keep_alive_connection_is_closed_silently_after_uvicorns_keep_alive():
    """uvicorn's keep-alive (1 s here) ends an idle connection without a word, before the
    2 s header timeout would answer 408."""
    server = Running(LimitedHttpToolsProtocol, timeout_keep_alive=1)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(get("/", close=False))
            got = b""
            while not got.endswith(GIF):
                got += s.recv(4096)
            start = time.monotonic()
            assert s.recv(4096) == b""
            assert time.monotonic() - start < 1.9
    finally:
        server.stop()


def test_a_head_started_after_a_response_gets_408_at_the_header_timeout():
    """Data ends uvicorn's keep-alive wait; the unfinished head then gets its 408."""
    server = Running(LimitedHttpToolsProtocol, timeout_keep_alive=1)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(get("/", close=False))
            got = b""
            while not got.endswith(GIF):
                got += s.recv(4096)
            s.sendall(b"GET / HTTP/1.1\r\nHost: t.test\r\n")
            out = b""
            while True:
                data = s.recv(4096)
                if not data:
                    break
                out += data
            assert out.startswith(b"HTTP/1.1 408 ")
    finally:
        server.stop()
