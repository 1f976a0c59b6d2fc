"""A stream in shards: one group commit, one spool and one flusher per shard.

The keys of a shard live in one hash slot (beacon/keys.py), so everything that must be
atomic stays on one node. A web process keeps one GroupCommit per shard, each with its
own process id and sequence (the commit script's exactly-once marker is per shard) and
its own spool directory named after the shard's stream key, so a spooled batch is
replayed into the shard it was committed for. Requests go to the shards round-robin.
A flusher process runs one Flusher per shard (a consumer group per shard stream), each
with its manifests, repair, dead letters and lease in that shard's slot.

With one shard on a single Redis none of this is used: the stream, spool and flusher
are exactly those of an unsharded Beacon.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from beacon import rcluster
from beacon.buffer import DirectWrite, GroupCommit
from beacon.config import Settings
from beacon.flusher import Flusher, lag_from
from beacon.keys import dead_letter_key, shard_streams, spool_subdir, stream_of_subdir
from beacon.query.warm import Warmer
from beacon.rcluster import AsyncRedis, SyncRedis
from beacon.sink import Buffer
from beacon.spool import Spool
from beacon.store import Store

log = logging.getLogger("beacon.sharding")


def streams(s: Settings) -> list[str]:
    return shard_streams(s.stream, s.stream_shards, tagged=s.redis_cluster)


def sharded(s: Settings) -> bool:
    return s.redis_cluster or s.stream_shards > 1


def spools(s: Settings) -> dict[str, Spool]:
    """Stream key -> its spool. Unsharded: `<data_dir>/spool`, as always."""
    root = Path(s.data_dir) / "spool"
    if not sharded(s):
        return {s.stream: Spool(root, s.spool_max_bytes)}
    return {st: Spool(root / spool_subdir(st), s.spool_max_bytes) for st in streams(s)}


def left_over_spools(s: Settings, known: dict[str, Spool]) -> dict[str, Spool]:
    """Spools of shards this configuration has not (a changed BEACON_STREAM_SHARDS): replayed
    into the shard their directory names."""
    root = Path(s.data_dir) / "spool"
    if not root.is_dir():
        return {}
    dirs = {d.name: d for d in root.glob("shard-*") if d.is_dir()}
    return {
        stream_of_subdir(name): Spool(d, s.spool_max_bytes)
        for name, d in dirs.items()
        if stream_of_subdir(name) not in known and any(d.glob("spool-*.log"))
    }


class ShardedBuffer:
    """One buffer per shard; each append goes to the next shard."""

    def __init__(self, buffers: list[Buffer], commits: list[rcluster.ClusterCommit]) -> None:
        self.buffers = buffers
        self.commits = commits
        self._next = 0

    async def append(self, lines: list[bytes]) -> None:
        i = self._next = (self._next + 1) % len(self.buffers)
        await self.buffers[i].append(lines)

    async def close(self) -> None:
        for b in self.buffers:
            await b.close()
        for c in self.commits:
            await c.aclose()


def buffer(s: Settings, redis: AsyncRedis, spool_by_stream: dict[str, Spool]) -> Buffer:
    """The web process's buffer: a GroupCommit per shard (waiting for a replica on a cluster)."""
    parts: list[Buffer] = []
    commits: list[rcluster.ClusterCommit] = []
    for stream, spool in spool_by_stream.items():
        if not s.group_commit:
            parts.append(DirectWrite(redis, stream, s.commit_timeout))
            continue
        commit = rcluster.ClusterCommit(redis, s, stream) if s.redis_cluster else None
        commits += [commit] if commit is not None else []
        parts.append(GroupCommit(redis, stream, s.commit_max_lines, s.commit_timeout, spool, commit=commit))
    return ShardedBuffer(parts, commits) if sharded(s) else parts[0]


def replay(s: Settings, r: SyncRedis, spool_by_stream: dict[str, Spool]) -> None:
    """Replay every spool that has records into its shard (sync client); a shard whose master
    does not answer keeps its files for the next round, the others go on."""
    commit = rcluster.sync_commit(r, rcluster.wait_ms(s)) if s.redis_cluster else None
    failed: list[str] = []
    for stream, spool in {**spool_by_stream, **left_over_spools(s, spool_by_stream)}.items():
        if not spool.pending():
            continue
        try:
            spool.replay(r, stream, commit)
        except rcluster.REDIS_OR_DISK_ERRORS as exc:
            failed.append(f"{stream}: {exc}")
    if failed:
        raise OSError("; ".join(failed))


async def backlog(redis: AsyncRedis, stream_keys: list[str]) -> tuple[int, float, int]:
    """(entries not yet flushed, age of the oldest in seconds, dead letters) over every shard."""
    entries, age, dead = 0, 0.0, 0
    for stream in stream_keys:
        n, a = lag_from(await redis.xlen(stream), await redis.xrange(stream, "-", "+", count=1))
        entries, age = entries + n, max(age, a)
        dead += await redis.xlen(dead_letter_key(stream))
    return entries, age, dead


class ShardedFlusher:
    """One Flusher per shard, each in its own thread with its own Redis client; the inserts
    share the Store, which serialises them."""

    def __init__(self, flushers: list[Flusher]) -> None:
        self.flushers = flushers
        self.consumer = flushers[0].consumer
        self.stream = ",".join(f.stream for f in flushers)

    def run(self) -> None:
        threads = [threading.Thread(target=f.run, name=f"flusher-{i}", daemon=True) for i, f in enumerate(self.flushers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def stop(self) -> None:
        for f in self.flushers:
            f.stop()

    @property
    def stopping(self) -> bool:
        return all(f.stopping for f in self.flushers)

    def drain(self) -> int:
        return sum(f.drain() for f in self.flushers)


def flusher(s: Settings, store: Store, consumer: str) -> Flusher | ShardedFlusher:
    warmer = Warmer(store, s.rollup_interval, s.visit_timeout) if s.rollup_interval > 0 else None
    if not sharded(s):
        return Flusher(
            rcluster.sync_client(s), store, s.stream, consumer, s.batch_rows, s.batch_age, s.claim_idle, lease=s.lease, warmer=warmer
        )
    wait = rcluster.wait_ms(s) if s.redis_cluster else 0
    return ShardedFlusher(
        [
            Flusher(
                rcluster.sync_client(s, socket_timeout=30),
                store,
                stream,
                consumer,
                s.batch_rows,
                s.batch_age,
                s.claim_idle,
                lease=s.lease,
                wait_ms=wait,
                warmer=warmer if i == 0 else None,  # one shard's flusher builds the rollup
            )
            for i, stream in enumerate(streams(s))
        ]
    )
