"""Per-request CPU of the whole pixel path in-process: uvicorn's protocol, Beacon's, the app.

    python loadtests/serverpath.py [-n 20000] [--rows floor,limited,returning,new] [--cpu]

loadtests/hotpath.py calls the ASGI app alone; this feeds the bytes wrk sends, one
keep-alive request at a time, to the same protocol object `beacon serve` uses
(beacon/http.py over uvicorn's httptools protocol) on a uvloop event loop, through an
in-memory transport: parsing, the HTTP limits, the request/response cycle, `send`, the
timers and the app, everything but the socket system calls and epoll. The group commit
is replaced by a buffer whose future is resolved on the next loop turn, so each request
still pays the wake-up a real commit costs, but no Redis. Every response is checked.

Rows: `floor` (loadtests/floor.py on uvicorn's own protocol, the bench's row (d)),
`limited` (the floor through beacon/http.py), `returning` and `new` (rows (a) and (b)).
Under `valgrind --tool=callgrind` (one row per run, `-n 300` and `-n 1300`, difference
/ 1000) it gives instructions per request that repeat on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn  # noqa: E402
import uvloop  # noqa: E402
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from beacon import config  # noqa: E402
from beacon.app import create_app  # noqa: E402
from beacon.http import LimitedHttpToolsProtocol, configure  # noqa: E402
from beacon.identity import Identity  # noqa: E402
from beacon.scope import Scope  # noqa: E402
from loadtests import floor  # noqa: E402

KEY = "bench-signing-key-0123456789abcdef0123456789"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
PIXEL = "/p.gif?u=https%3A%2F%2Fshop.example%2Fitem%2F4242%3Fcolour%3Dred&r=https%3A%2F%2Fwww.google.com%2F&p.sku=X-4242&p.list=search"


class Transport(asyncio.Transport):
    """What uvicorn's protocol calls on a socket transport, in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


class NextTurn:
    """A group commit that is durable on the next loop turn: one suspension and wake-up per request."""

    def __init__(self) -> None:
        self.lines = 0

    async def append(self, lines: list[bytes]) -> None:
        self.lines += len(lines)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_soon(fut.set_result, None)
        await fut

    async def close(self) -> None:
        return None


def request(cookie: str | None) -> bytes:
    """The bytes wrk sends (`wrk -H "User-Agent: ..." [-H "Cookie: bcn=..."]`)."""
    head = f"GET {PIXEL} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: {UA}\r\n"
    if cookie:
        head += f"Cookie: bcn={cookie}\r\n"
    return (head + "\r\n").encode()


def protocol(row: str) -> tuple[asyncio.Protocol, NextTurn | None]:
    buffer = None
    if row in ("floor", "limited"):
        app: Any = floor.app
    else:
        s = config.load({"redis_url": "redis://127.0.0.1:1", "secret_keys": KEY}, environ={})
        app = create_app(s)
        buffer = app.core.buffer = NextTurn()
    cls = HttpToolsProtocol if row == "floor" else LimitedHttpToolsProtocol
    # proxy_headers as each runs in the bench: uvicorn.run's default for floor.py, off in `beacon serve`
    cfg = uvicorn.Config(
        app,
        http=cls,
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
        proxy_headers=row in ("floor", "limited"),
    )
    cfg.load()
    if row != "floor":
        configure(cfg, config.load({"redis_url": "redis://127.0.0.1:1", "secret_keys": KEY}, environ={}))
    return cls(cfg, ServerState(), {}), buffer


async def run(row: str, n: int) -> float:
    """µs per request over `n` requests on one keep-alive connection, after a warm-up."""
    proto, buffer = protocol(row)
    transport = Transport()
    proto.connection_made(transport)
    cookie = Identity(Scope("mall", "bcn"), (KEY,)).sign("1b4e28ba-2fa1-41d2-883f-0016d3cca427") if row == "returning" else None
    data = request(cookie)
    out = transport.out
    t = 0.0
    for i in range(2000 + n):
        if i == 2000:
            t = time.perf_counter()
        out.clear()
        proto.data_received(data)
        while not out or not out[-1].endswith(floor.GIF):  # the head, then the GIF
            await asyncio.sleep(0)
    elapsed = time.perf_counter() - t
    response = b"".join(out)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(floor.GIF), response
    assert (b"set-cookie: bcn=" in response) == (row == "new"), response
    assert buffer is None or buffer.lines == 2000 + n, "every pixel appended its event"
    assert not transport.closed
    proto.connection_lost(None)
    return elapsed / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=20_000)
    p.add_argument("--rows", default="floor,limited,returning,new")
    p.add_argument("--cpu", action="store_true", help="time by this thread's CPU time (on a shared, loaded machine)")
    args = p.parse_args()
    if args.cpu:
        time.perf_counter = time.thread_time
    for row in args.rows.split(","):
        us = uvloop.run(run(row, args.n))
        print(f"{row:10s} {us:6.1f} us/request (server protocol + app in-process, no sockets, no Redis)")


if __name__ == "__main__":
    main()
