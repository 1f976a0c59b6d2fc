"""What waiting for a replica costs a group commit on Redis Cluster.

    python loadtests/cluster_wait.py [--commits 3000] [--lines 20] [--concurrency 1,8,64]

Starts a Redis Cluster of 3 masters and 3 replicas (Debian's redis-server, 127.0.0.1,
torn down on exit), then on one shard measures:

  (a) the commit script alone, on the shard's master (what a single Redis does);
  (b) the commit script + `WAIT 1` in one pipeline on one connection (beacon/rcluster.py,
      what every group commit does with BEACON_REDIS_CLUSTER=true);

serially (latency per commit, p50/p99) and, through Beacon's GroupCommit with N
concurrent appenders, the events per second one web process can commit to one shard.
Prints figures; asserts nothing. See docs/cluster.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon import config, rcluster  # noqa: E402 - after the path setup
from beacon.buffer import GroupCommit  # noqa: E402
from beacon.keys import COMMIT_LUA, marker_key, shard_streams  # noqa: E402
from tests.test_redis_cluster import RedisCluster  # noqa: E402

LINE = b'{"event_id":"00000000-0000-7000-8000-000000000000","scope":"mall","event":"pageview","url":"https://mall.example/p"}'


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def serial(node: aioredis.Redis, stream: str, commits: int, lines: int, wait: bool) -> list[float]:
    keys, proc, payload = [stream, marker_key(stream)], uuid.uuid4().hex, b"\n".join([LINE] * lines)
    out = []
    for seq in range(1, commits + 1):
        t = time.perf_counter()
        pipe = node.pipeline(transaction=False)
        pipe.eval(COMMIT_LUA, 2, *keys, proc, seq, payload, lines)
        if wait:
            pipe.wait(1, 250)
        await pipe.execute()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def grouped(s: config.Settings, rc: aioredis.Redis, stream: str, events: int, concurrency: int, wait: bool) -> float:
    commit = rcluster.ClusterCommit(rc, s, stream) if wait else None
    if not wait:  # the plain script on the master, through the cluster client
        script = rc.register_script(COMMIT_LUA)
        commit = script
    gc = GroupCommit(rc, stream, 2000, 2.0, None, commit=commit)
    per = events // concurrency

    async def worker() -> None:
        for _ in range(per):
            await gc.append([LINE])

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.perf_counter() - t
    await gc.close()
    if isinstance(commit, rcluster.ClusterCommit):
        await commit.aclose()
    return per * concurrency / took


async def main(args: argparse.Namespace, cl: RedisCluster) -> None:
    s = config.load({"redis_url": cl.url, "redis_cluster": "true", "redis_timeout": "0.5"})
    rc = rcluster.async_client(s, socket_timeout=5)
    stream = shard_streams("bench:events", 1, tagged=True)[0]
    await rc.exists(stream)
    node_info = rc.get_node_from_key(stream)
    node = aioredis.Redis(host=node_info.host, port=node_info.port)
    print(f"Redis Cluster 3+3 on 127.0.0.1, shard {stream} on :{node_info.port}; {args.commits} serial commits of {args.lines} lines")
    for wait in (False, True):
        ms = await serial(node, stream, args.commits, args.lines, wait)
        label = "(b) script + WAIT 1" if wait else "(a) script alone   "
        print(f"{label}  p50 {statistics.median(ms):.3f} ms  p99 {pct(ms, 0.99):.3f} ms  mean {statistics.fmean(ms):.3f} ms")
    print("GroupCommit, one process, one shard, events/s (1 line per append):")
    for c in args.concurrency:
        plain = await grouped(s, rc, stream, args.events, c, wait=False)
        waited = await grouped(s, rc, stream, args.events, c, wait=True)
        print(f"  {c:4d} concurrent appenders: script alone {plain:9.0f}/s   script + WAIT 1 {waited:9.0f}/s   ({waited / plain:.0%})")
    await node.aclose()
    await rc.aclose()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=3000)
    ap.add_argument("--lines", type=int, default=20)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--concurrency", type=lambda v: [int(x) for x in v.split(",")], default=[1, 8, 64])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = RedisCluster(Path(tmp))
        try:
            cluster.start()
            asyncio.run(main(a, cluster))
        finally:
            cluster.stop()
