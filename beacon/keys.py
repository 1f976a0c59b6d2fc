"""Beacon's Redis key schema: every key name and the commit script, in one place.

One stream shard is a set of keys that must live in one hash slot, because the commit
script touches the stream and its marker hash at once and the flusher's ack is one
MULTI over the stream, its manifests and its dead letters:

    <stream>              the stream of group commits (entries `d`, `n`)
    <stream>:committed    last committed sequence per web process (the commit script)
    <stream>:manifests    flusher batches in flight: token -> "consumer|id,id,..."
    <stream>:dead         rows ClickHouse rejected
    <stream>:lease:<c>    flusher <c>'s heartbeat

With one shard on a single Redis the stream is `BEACON_STREAM` itself (`beacon:events`),
as it always was. Sharded (`BEACON_STREAM_SHARDS` > 1) or on Redis Cluster, shard `i`
is `<prefix>:{<name>-<i>}`: the braces are Redis Cluster's hash tag, so every key of a
shard hashes on `<name>-<i>` alone and lands in the shard's slot, while different shards
land in different slots (and, spread over the masters, on different nodes).

This module imports nothing of Beacon's, so every module that names a key can import it.
"""

from __future__ import annotations

GROUP = "flushers"  # the consumer group of each shard's stream

# KEYS: stream, marker hash. ARGV: proc, seq, data, n.
COMMIT_LUA = """
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if tonumber(ARGV[2]) <= last then return 0 end
redis.call('XADD', KEYS[1], '*', 'd', ARGV[3], 'n', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""


def shard_streams(stream: str, shards: int = 1, tagged: bool = False) -> list[str]:
    """The stream key of every shard. Untagged with one shard: `stream` itself."""
    if shards < 1:
        raise ValueError("a stream has at least one shard")
    if shards == 1 and not tagged:
        return [stream]
    if "{" in stream or "}" in stream:
        raise ValueError(f"stream {stream!r} has a hash tag already; Beacon adds one per shard")
    prefix, _, name = stream.rpartition(":")
    head = f"{prefix}:" if prefix else ""
    return [f"{head}{{{name}-{i}}}" for i in range(shards)]


def marker_key(stream: str) -> str:
    return f"{stream}:committed"


def manifests_key(stream: str) -> str:
    return f"{stream}:manifests"


def dead_letter_key(stream: str) -> str:
    return f"{stream}:dead"


def lease_key(stream: str, consumer: str) -> str:
    return f"{stream}:lease:{consumer}"


def salt_key(day: str) -> str:
    """Consent's secret salt of one day (ISO date); one key, in whichever slot it hashes to."""
    return f"beacon:salt:{day}"


def revoked_session_key(session_id: str) -> str:
    """A signed-out dashboard session; it lives until the session's cookie would expire."""
    return f"beacon:dash:revoked:{session_id}"


def spool_subdir(stream: str) -> str:
    """Directory (under `<data_dir>/spool`) of a sharded stream's spool: named after the shard's
    stream key, so a spooled batch is replayed into the shard it was committed for, even if
    the number of shards changed since."""
    return "shard-" + stream.replace("/", "%2F")


def stream_of_subdir(name: str) -> str:
    return name.removeprefix("shard-").replace("%2F", "/")
