"""Per-request CPU of the pixel path, in-process, without the server or Redis.

    python loadtests/hotpath.py [--profile] [--cpu]

Calls the ASGI app directly (what uvicorn would call) for a returning visitor and a new
visitor, with the group-commit buffer replaced by one that commits at once, and prints
microseconds per request; a third row gives every request a page URL never seen before
(no cache keyed by the query can help it). The HTTP server and the Redis round trip are measured by
loadtests/bench.py; this isolates Beacon's own work so changes to it can be compared.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon import config  # noqa: E402
from beacon.app import create_app  # noqa: E402
from beacon.identity import Identity  # noqa: E402

KEY = "bench-signing-key-0123456789abcdef0123456789"
UA = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
QS = b"u=https%3A%2F%2Fshop.example%2Fitem%2F4242%3Fcolour%3Dred&r=https%3A%2F%2Fwww.google.com%2F&p.sku=X-4242&p.list=search"


class Committed:
    async def append(self, lines: list[bytes]) -> None:
        return None

    async def close(self) -> None:
        return None


async def run(n: int, cookie: bytes | None, unique: bool = False) -> float:
    """µs per request; `unique`: a page URL never seen before on every request, so no cache
    keyed by the query (the percent-decoding one) ever hits."""
    s = config.load({"redis_url": "redis://127.0.0.1:1", "secret_keys": KEY}, environ={})
    app = create_app(s)
    app.core.buffer = Committed()
    headers = [
        (b"host", b"beacon.shop.example"),
        (b"user-agent", UA),
        (b"accept", b"image/*"),
        (b"referer", b"https://shop.example/item/4242"),
    ]
    if cookie:
        headers.append((b"cookie", b"bcn=" + cookie))
    scope = {"type": "http", "method": "GET", "path": "/p.gif", "query_string": QS, "headers": headers, "client": ("198.51.100.23", 50000)}

    async def receive() -> dict:
        return {"type": "http.request"}

    async def send(message: dict) -> None:
        return None

    for _ in range(2000):
        await app(scope, receive, send)
    if unique:
        queries = [QS.replace(b"4242%3F", b"%d%%3F" % i) for i in range(n)]
        t = time.perf_counter()
        for qs in queries:
            scope["query_string"] = qs
            await app(scope, receive, send)
    else:
        t = time.perf_counter()
        for _ in range(n):
            await app(scope, receive, send)
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("-n", type=int, default=50_000)
    p.add_argument(
        "--rows",
        default="returning,new,unique",
        help="which rows: returning, new, unique (one at a time under valgrind --tool=callgrind, to count instructions per row)",
    )
    p.add_argument("--profile", action="store_true")
    p.add_argument("--cpu", action="store_true", help="time by this thread's CPU time, not the wall clock (on a shared, loaded machine)")
    args = p.parse_args()
    if args.cpu:
        time.perf_counter = time.thread_time
    from beacon.scope import Scope

    cookie = Identity(Scope("mall", "bcn"), (KEY,)).sign("1b4e28ba-2fa1-41d2-883f-0016d3cca427").encode()
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(run(args.n, cookie))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        return
    rows = {
        "returning": ("returning visitor", cookie, False),
        "new": ("new visitor", None, False),
        "unique": ("returning, new URL", cookie, True),
    }
    for label, c, unique in (rows[r] for r in args.rows.split(",")):
        print(f"{label:18s} {asyncio.run(run(args.n, c, unique)):6.1f} us/request (Beacon's own work, no server, no Redis)")


if __name__ == "__main__":
    main()
