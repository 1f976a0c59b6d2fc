"""Figures for docs/capacity.md: flusher drain and ClickHouse insert rate, in-process.

    taskset -c 1 python loadtests/capacity.py [--events 200000] [--per-entry 100]

Fills a private redis-server's stream with realistic event lines in group-commit entries
of `--per-entry` events, then times (1) one raw JSONEachRow insert of all of them into
chDB, and (2) a Flusher draining the stream into chDB (XREADGROUP, manifest, insert,
XACK+XDEL). Prints events per second for each. The web path per core is
loadtests/hotpath.py; Redis per shard is redis-benchmark (docs/capacity.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon.event import encode  # noqa: E402
from beacon.flusher import Flusher  # noqa: E402
from beacon.redis_server import EmbeddedRedis  # noqa: E402
from beacon.store import Store  # noqa: E402

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


def line(i: int, t: float) -> bytes:
    return encode(
        event_id=str(uuid.uuid4()),
        received_at=t,
        scope="mall",
        visitor_id=str(uuid.uuid4()),
        mode="cookie",
        event="pageview",
        url=f"https://shop.example/item/{i % 5000}?colour=red",
        referrer="https://www.google.com/",
        props={"sku": f"X-{i % 5000}", "list": "search"},
        ip="198.51.100.0",
        user_agent=UA,
        transport="pixel",
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--per-entry", type=int, default=100)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="beacon-capacity-"))
    server = EmbeddedRedis(tmp / "redis")
    r = redis.Redis.from_url(server.start())
    store = Store(f"chdb:///{tmp}/ch", "capacity", "events", 395, 1000)
    store.migrate()
    try:
        t = time.time()
        lines = [line(i, t) for i in range(args.events)]
        print(f"{args.events} events, {sum(map(len, lines)) / len(lines):.0f} bytes per JSONEachRow line")
        body = b"\n".join(lines)
        store.insert_lines(b"\n".join(lines[:10_000]), uuid.uuid4().hex)  # warm the engine up
        store.command(f"TRUNCATE TABLE {store.full_table}")
        t0 = time.perf_counter()
        store.insert_lines(body, uuid.uuid4().hex)
        dt = time.perf_counter() - t0
        print(f"ClickHouse (chDB) one raw insert: {args.events / dt:,.0f} events/s ({dt:.2f} s)")
        store.command(f"TRUNCATE TABLE {store.full_table}")
        pipe = r.pipeline(transaction=False)
        for i in range(0, len(lines), args.per_entry):
            chunk = lines[i : i + args.per_entry]
            pipe.xadd("beacon:events", {"d": b"\n".join(chunk), "n": len(chunk)})
        pipe.execute()
        f = Flusher(r, store, "beacon:events", "capacity", batch_rows=100_000, batch_age=1.0, claim_idle=30)
        t0 = time.perf_counter()
        rows = f.drain()
        dt = time.perf_counter() - t0
        assert rows == args.events, rows
        print(f"flusher drain (Redis -> chDB, batches of 100,000): {rows / dt:,.0f} events/s ({dt:.2f} s)")
        store.command(f"OPTIMIZE TABLE {store.full_table} FINAL")
        disk, n = store.query(
            "SELECT sum(bytes_on_disk), sum(rows) FROM system.parts WHERE database = 'capacity' AND table = 'events' AND active"
        )[0]
        print(f"stored: {disk / n:.0f} bytes per event on disk (compressed; synthetic data, random ids)")
    finally:
        store.close()
        server.stop()


if __name__ == "__main__":
    main()
