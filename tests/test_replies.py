"""redis-py's stream replies checked into Beacon's shapes (beacon/rcluster.py), on a real Redis."""

from __future__ import annotations

import pytest
import redis

from beacon import rcluster
from beacon.flusher import GROUP, Flusher, ensure_group
from beacon.redis_server import EmbeddedRedis
from beacon.store import Store

STREAM = "beacon:events"


def test_entries_deleted_after_delivery_are_left_out_of_reads_and_claims(r: redis.Redis) -> None:
    ensure_group(r, STREAM)
    kept = r.xadd(STREAM, {"d": b"kept", "n": 1})
    gone = r.xadd(STREAM, {"d": b"gone", "n": 1})
    assert rcluster.read_group_entries(r.xreadgroup(GROUP, "a", {STREAM: ">"})) == [
        (kept, {b"d": b"kept", b"n": b"1"}),
        (gone, {b"d": b"gone", b"n": b"1"}),
    ]
    r.xdel(STREAM, gone)
    # Still pending for "a", but only the entry that exists is read back or claimed.
    assert rcluster.read_group_entries(r.xreadgroup(GROUP, "a", {STREAM: "0-0"})) == [(kept, {b"d": b"kept", b"n": b"1"})]
    assert rcluster.claim(r, STREAM, GROUP, "b", 0, [kept, gone]) == [(kept, {b"d": b"kept", b"n": b"1"})]
    assert rcluster.pending_ids(r.xpending_range(STREAM, GROUP, min="-", max="+", count=10, consumername="b")) == [kept]
    start, claimed = rcluster.autoclaim_reply(r.xautoclaim(STREAM, GROUP, "c", 0, "0-0"))
    assert start == b"0-0" and claimed == [(kept, {b"d": b"kept", b"n": b"1"})]
    assert rcluster.entries(r.xrange(STREAM), "XRANGE") == [(kept, {b"d": b"kept", b"n": b"1"})]


def test_a_flusher_on_a_client_that_decodes_replies_stops_instead_of_dropping_the_events(
    r: redis.Redis, redis_server: EmbeddedRedis, store: Store
) -> None:
    r.xadd(STREAM, {"d": b'{"event":"pageview"}', "n": 1})
    decoding = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        flusher = Flusher(decoding, store, STREAM, "decoding", 100, 0.05, 60)
        with pytest.raises(rcluster.UnexpectedReply, match="XREADGROUP: unexpected reply"):
            flusher.gather(block=False)
    finally:
        decoding.close()
    assert r.xlen(STREAM) == 1  # the entry is still there for a flusher that reads bytes
