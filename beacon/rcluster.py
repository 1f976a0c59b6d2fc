"""Redis or Redis Cluster: the clients, and the writes that wait for a replica.

`BEACON_REDIS_CLUSTER=true` makes every client a redis-py cluster client
(`redis.cluster.RedisCluster`, `redis.asyncio.cluster.RedisCluster`) seeded with the
comma-separated URLs of `BEACON_REDIS_URL`; otherwise the plain client of one URL, as
before.

Redis replicates asynchronously: a master killed right after it answered a write can
lose that write when its replica is promoted. So on a cluster a group commit is not
answered before a replica has it: the commit script and `WAIT 1 <ms>` go in one
pipeline on one connection to the master of the shard's slot (WAIT counts the writes
of its own connection, so it must be the same connection; a script cannot call WAIT).
A commit that is not replicated in time raises NotReplicated, and the group commit goes
to the spool like any failed write; the commit's seq marker makes the replay a no-op
if the entry did reach the replica after all. The spool replay and the flusher's
manifest use the same wait.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Sequence
from typing import Protocol, TypedDict

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster as cluster
from redis.exceptions import RedisClusterException
from redis.typing import StreamIdT

from beacon.config import Settings
from beacon.keys import COMMIT_LUA

SyncRedis = redis.Redis | cluster.RedisCluster
AsyncRedis = aioredis.Redis | aiocluster.RedisCluster
StreamEntry = tuple[bytes, dict[bytes, bytes]]
CommitArg = str | int | bytes


class SyncCommit(Protocol):
    """The commit script (redis-py's Script) or sync_commit's function: `commit(keys=, args=)`."""

    def __call__(self, keys: Sequence[str], args: Sequence[CommitArg]) -> int: ...


class AsyncCommit(Protocol):
    """The registered commit script (AsyncScript) or a ClusterCommit: `await commit(keys=, args=)`."""

    def __call__(self, keys: Sequence[str], args: Sequence[CommitArg]) -> Awaitable[int]: ...


class Unreachable(RuntimeError):
    """No seed node of the cluster answers (the sync cluster client connects when made):
    one line for an operator from the CLI, a retry for the web's spool replayer."""


# What a Redis or Redis Cluster call can raise when the server side fails: redis-py's
# cluster errors about slots and topology are not RedisErrors.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException, Unreachable)
# ... or, with the local disk too (the spool replay):
REDIS_OR_DISK_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, OSError)


class NotReplicated(redis.RedisError):
    """The master took the write but no replica confirmed it within the wait."""


class UnexpectedReply(TypeError):
    """A reply not of the shape Beacon's clients get (bytes ids and fields, RESP2): a client made
    with decode_responses or RESP3 would otherwise lose the events' bytes without a word."""

    def __init__(self, command: str, reply: object) -> None:
        super().__init__(f"{command}: unexpected reply {reply!r:.200}")


def entries(reply: object, command: str) -> list[StreamEntry]:
    """The entries of an XRANGE or XCLAIM reply, [(id, fields)], less those deleted since (no fields).

    redis-py types these replies as unions over every client mode; this checks the one shape
    Beacon's clients return instead of casting it."""
    if reply is None:
        return []
    if not isinstance(reply, list):
        raise UnexpectedReply(command, reply)
    out: list[StreamEntry] = []
    for entry in reply:
        if not entry:
            continue
        if not isinstance(entry, tuple | list) or len(entry) != 2:
            raise UnexpectedReply(command, entry)
        entry_id, fields = entry
        if not fields:  # deleted after it was delivered
            continue
        if not isinstance(entry_id, bytes) or not isinstance(fields, dict):
            raise UnexpectedReply(command, entry)
        out.append((entry_id, fields))
    return out


def read_group_entries(reply: object) -> list[StreamEntry]:
    """The entries of an XREADGROUP of one stream: [[stream, entries]], or nothing."""
    if not reply:
        return []
    if not isinstance(reply, list) or not isinstance(reply[0], list | tuple) or len(reply[0]) != 2:
        raise UnexpectedReply("XREADGROUP", reply)
    return entries(reply[0][1], "XREADGROUP")


def autoclaim_reply(reply: object) -> tuple[bytes, list[StreamEntry]]:
    """XAUTOCLAIM: (the id to start the next call at, b"0-0" when done; the entries claimed)."""
    if not isinstance(reply, list) or len(reply) < 2 or not isinstance(reply[0], bytes):
        raise UnexpectedReply("XAUTOCLAIM", reply)
    return reply[0], entries(reply[1], "XAUTOCLAIM")


def pending_ids(reply: object) -> list[bytes]:
    """The entry ids of an XPENDING range reply (a dict per entry)."""
    if not isinstance(reply, list):
        raise UnexpectedReply("XPENDING", reply)
    ids = []
    for p in reply:
        entry_id = p.get("message_id") if isinstance(p, dict) else None
        if not isinstance(entry_id, bytes):
            raise UnexpectedReply("XPENDING", p)
        ids.append(entry_id)
    return ids


def claim(r: SyncRedis, stream: str, group: str, consumer: str, min_idle_ms: int, ids: Sequence[bytes | str]) -> list[StreamEntry]:
    """XCLAIM these entries for `consumer`; those deleted since (or not idle long enough) are not returned."""
    message_ids: list[StreamIdT] = [*ids]
    return entries(r.xclaim(stream, group, consumer, min_idle_ms, message_ids), "XCLAIM")


def bytes_hash(reply: object, command: str) -> dict[bytes, bytes]:
    """An HGETALL reply, its fields and values bytes."""
    if not isinstance(reply, dict) or not all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in reply.items()):
        raise UnexpectedReply(command, reply)
    return reply


def seed_urls(url: str) -> list[str]:
    return [u.strip() for u in url.split(",") if u.strip()]


def wait_ms(s: Settings) -> int:
    """WAIT's timeout: half the Redis time budget, so the socket never times out first."""
    return max(1, int(s.redis_timeout * 500))


class Timeouts(TypedDict, total=False):
    socket_timeout: float
    socket_connect_timeout: float


def _timeouts(socket_timeout: float | None, socket_connect_timeout: float | None) -> Timeouts:
    """The timeouts given, as redis-py keywords: one not given keeps redis-py's default (not None)."""
    out: Timeouts = {}
    if socket_timeout is not None:
        out["socket_timeout"] = socket_timeout
    if socket_connect_timeout is not None:
        out["socket_connect_timeout"] = socket_connect_timeout
    return out


def sync_client(s: Settings, socket_timeout: float | None = None, socket_connect_timeout: float | None = None) -> SyncRedis:
    kwargs = _timeouts(socket_timeout, socket_connect_timeout)
    urls = seed_urls(s.redis_url.reveal())
    if not s.redis_cluster:
        return redis.Redis.from_url(urls[0] if urls else "", **kwargs)
    nodes = [cluster.ClusterNode(*_host_port(u)) for u in urls[1:]]  # type: ignore[no-untyped-call]
    try:
        return cluster.RedisCluster.from_url(urls[0], startup_nodes=nodes, **kwargs)
    except RedisClusterException as exc:
        seeds = ", ".join("{}:{}".format(*_host_port(u)) for u in urls)
        raise Unreachable(f"Redis Cluster: no seed node of BEACON_REDIS_URL ({seeds}) answers: {exc}") from None


def async_client(s: Settings, socket_timeout: float | None = None, socket_connect_timeout: float | None = None) -> AsyncRedis:
    kwargs = _timeouts(socket_timeout, socket_connect_timeout)
    urls = seed_urls(s.redis_url.reveal())
    if not s.redis_cluster:
        return aioredis.Redis.from_url(urls[0] if urls else "", **kwargs)
    nodes = [aiocluster.ClusterNode(*_host_port(u)) for u in urls[1:]]
    return aiocluster.RedisCluster.from_url(urls[0], startup_nodes=nodes, **kwargs)


def _host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def _node_url(seed: str, host: str, port: str | int) -> str:
    """The seed URL (scheme, credentials, query) pointed at another node."""
    parts = urllib.parse.urlsplit(seed)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@{host}:{port}" if auth else f"{host}:{port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _replicated(replicas: int, what: str, ms: int) -> None:
    if int(replicas) < 1:
        raise NotReplicated(f"{what}: no replica confirmed it within {ms} ms (WAIT 1)")


class ClusterCommit:
    """The group commit of one shard on Redis Cluster: the commit script, then WAIT 1, on one
    connection to the master that owns the shard's slot. Called like the registered script."""

    def __init__(self, rc: AsyncRedis, s: Settings, stream: str) -> None:
        if not isinstance(rc, aiocluster.RedisCluster):  # made only when BEACON_REDIS_CLUSTER is set
            raise TypeError(f"ClusterCommit needs a Redis Cluster client, not {type(rc).__name__}")
        self.rc = rc
        self.stream = stream
        self.seed = seed_urls(s.redis_url.reveal())[0]
        self.wait_ms = wait_ms(s)
        self.timeout = s.redis_timeout
        self._node: aioredis.Redis | None = None
        self._clients: dict[str, aioredis.Redis] = {}

    async def _master(self) -> aioredis.Redis:
        # A keyed call through the cluster client first: it follows a moved slot (a failover)
        # and refreshes its map of the cluster, which then names the shard's master.
        await self.rc.exists(self.stream)
        node = self.rc.get_node_from_key(self.stream)  # the key's master
        if node is None:
            raise RedisClusterException(f"no master serves the slot of {self.stream}")
        client = self._clients.get(node.name)
        if client is None:
            client = self._clients[node.name] = aioredis.Redis.from_url(
                _node_url(self.seed, node.host, node.port), socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        return client

    async def __call__(self, keys: Sequence[str], args: Sequence[CommitArg]) -> int:
        try:
            node = self._node or await self._master()
            pipe = node.pipeline(transaction=False)
            pipe.eval(COMMIT_LUA, len(keys), *keys, *args)
            pipe.wait(1, self.wait_ms)
            added, replicas = await pipe.execute()
        except BaseException:
            self._node = None  # ask the cluster again: the master may have changed
            raise
        self._node = node
        _replicated(replicas, f"commit to {self.stream}", self.wait_ms)
        return int(added)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def _sync_master(r: SyncRedis, key: str) -> redis.Redis:
    if not isinstance(r, cluster.RedisCluster):  # called only when BEACON_REDIS_CLUSTER is set
        raise TypeError(f"a write that waits for a replica needs a Redis Cluster client, not {type(r).__name__}")
    r.exists(key)  # follows a moved slot, as in ClusterCommit._master
    return r.get_redis_connection(r.get_node_from_key(key))  # type: ignore[no-untyped-call]


def sync_commit(rc: SyncRedis, ms: int) -> SyncCommit:
    """The spool replay's commit on Redis Cluster: the script and WAIT 1, like ClusterCommit."""

    def commit(keys: Sequence[str], args: Sequence[CommitArg]) -> int:
        pipe = _sync_master(rc, keys[0]).pipeline(transaction=False)
        pipe.eval(COMMIT_LUA, len(keys), *keys, *args)
        pipe.wait(1, ms)
        added, replicas = pipe.execute()
        _replicated(replicas, f"replay into {keys[0]}", ms)
        return int(added)

    return commit


def hset_replicated(rc: SyncRedis, key: str, field: str, value: str, ms: int) -> None:
    """HSET, then WAIT 1 on the same connection: the flusher's manifest (and, since replication
    is one ordered stream, the deliveries before it) survive a failover before the insert."""
    pipe = _sync_master(rc, key).pipeline(transaction=False)
    pipe.hset(key, field, value)
    pipe.wait(1, ms)
    _, replicas = pipe.execute()
    _replicated(replicas, f"manifest in {key}", ms)


def is_cluster(r: SyncRedis | AsyncRedis) -> bool:
    return isinstance(r, cluster.RedisCluster | aiocluster.RedisCluster)
