"""A stream in shards on one real Redis: key schema, spread, flush, backlog, dead letters, spool.

The same code runs on Redis Cluster (tests/test_redis_cluster.py); here the shards are
plain keys of one redis-server, which is enough to check what is per shard.
"""

from __future__ import annotations

import orjson
import pytest
from redis.crc import key_slot

from beacon import config, sharding
from beacon.keys import GROUP, dead_letter_key, lease_key, manifests_key, marker_key, shard_streams, spool_subdir, stream_of_subdir

from .conftest import API_KEY

STREAMS = shard_streams("beacon:events", 3, tagged=True)


def test_one_shard_on_one_redis_keeps_the_plain_stream_name() -> None:
    assert shard_streams("beacon:events") == ["beacon:events"]
    assert sharding.streams(config.load({}, environ={})) == ["beacon:events"]


def test_every_key_of_a_shard_is_in_its_slot_and_shards_are_in_different_slots() -> None:
    assert STREAMS == ["beacon:{events-0}", "beacon:{events-1}", "beacon:{events-2}"]
    slots = []
    for stream in STREAMS:
        keys = [stream, marker_key(stream), manifests_key(stream), dead_letter_key(stream), lease_key(stream, "h-1")]
        assert len({key_slot(k.encode()) for k in keys}) == 1, keys
        slots.append(key_slot(stream.encode()))
    assert len(set(slots)) == 3
    assert shard_streams("beacon:events", 1, tagged=True) == ["beacon:{events-0}"]  # a cluster with one shard
    assert stream_of_subdir(spool_subdir(STREAMS[1])) == STREAMS[1]


def test_a_stream_name_with_its_own_hash_tag_is_refused_when_sharded() -> None:
    with pytest.raises(config.ConfigError, match="BEACON_STREAM"):
        config.load({"stream": "app:{x}", "stream_shards": "2"}, environ={})
    with pytest.raises(config.ConfigError, match="BEACON_STREAM_SHARDS"):
        config.load({"stream_shards": "0"}, environ={})


def post(client, n: int) -> None:
    for i in range(n):
        body = orjson.dumps([{"e": "shard", "p": {"n": str(i * 5 + k)}} for k in range(5)])
        assert client.post("/e", content=body, headers={"content-type": "text/plain"}).status_code == 204


def test_commits_spread_over_the_shards_and_one_flusher_process_drains_them_all_once(make_client, make_settings, r, store) -> None:
    client = make_client(stream_shards=3)
    post(client, 30)
    per_shard = [r.xlen(s) for s in STREAMS]
    assert all(n > 0 for n in per_shard) and r.xlen("beacon:events") == 0
    # one commit marker per shard, each with its own process id
    procs = [set(r.hkeys(marker_key(s))) for s in STREAMS]
    assert all(len(p) == 1 for p in procs) and len(set.union(*procs)) == 3

    stats = client.get("/readyz").json()
    assert stats["stream"]["entries"] == sum(per_shard)

    flusher = sharding.flusher(make_settings(stream_shards=3, database=store.database), store, "h-1")
    assert isinstance(flusher, sharding.ShardedFlusher)
    assert flusher.drain() == 150
    assert store.query(f"SELECT count(), uniqExact(props['n']) FROM {store.full_table} WHERE event = 'shard'")[0] == (150, 150)
    for s in STREAMS:
        assert r.xlen(s) == 0 and r.hlen(manifests_key(s)) == 0
        assert r.xinfo_groups(s)[0]["name"].decode() == GROUP  # a consumer group per shard
    assert client.get("/readyz").json()["stream"]["entries"] == 0


def test_dead_letters_of_every_shard_are_listed_and_replayed_into_their_shard(r, redis_server, capsys) -> None:
    from beacon.cli import main

    for i, stream in enumerate(STREAMS[:2]):
        r.xadd(dead_letter_key(stream), {"d": f'{{"bad":{i}}}', "error": "Code: 117. Unknown field", "token": "t"})
    flags = ["--redis-url", redis_server.url, "--stream-shards", "3"]
    assert main(["dead-letter", "list", *flags]) == 0
    out = capsys.readouterr()
    assert out.out.count("Unknown field") == 2 and "2 dead-letter rows" in out.err
    assert main(["dead-letter", "replay", *flags]) == 0
    assert [f[b"d"] for _, f in r.xrange(STREAMS[0])] == [b'{"bad":0}']
    assert [f[b"d"] for _, f in r.xrange(STREAMS[1])] == [b'{"bad":1}']
    assert all(r.xlen(dead_letter_key(s)) == 0 for s in STREAMS)


def test_the_operators_page_sums_every_shard(make_client, r) -> None:
    from .test_dashboard import sign_in

    client = make_client(stream_shards=3)
    post(client, 6)
    r.xadd(dead_letter_key(STREAMS[2]), {"d": b"{}", "error": "x", "token": "t"})
    sign_in(client, API_KEY)
    ops = client.get("/dashboard/ops/data").json()
    assert ops["stream"]["shards"] == 3
    assert ops["stream"]["entries"] == sum(r.xlen(s) for s in STREAMS) > 0
    assert ops["stream"]["dead_letters"] == 1


def test_a_spooled_batch_is_replayed_into_the_shard_it_was_committed_for(make_settings, r, tmp_path) -> None:
    s = make_settings(stream_shards=3)
    spools = sharding.spools(s)
    assert [sp.dir.name for sp in spools.values()] == [spool_subdir(st) for st in STREAMS]
    spools[STREAMS[1]].append(b'{"a":1}', 1, "p" * 32, 1)
    # A spool of a shard this configuration does not have (BEACON_STREAM_SHARDS was 4).
    fourth = shard_streams("beacon:events", 4, tagged=True)[3]
    old = sharding.spools(make_settings(stream_shards=4))[fourth]
    old.append(b'{"a":4}', 1, "q" * 32, 1)
    old.close()
    sharding.replay(s, r, {**spools, **sharding.left_over_spools(s, spools)})
    assert [f[b"d"] for _, f in r.xrange(STREAMS[1])] == [b'{"a":1}']
    assert [f[b"d"] for _, f in r.xrange(fourth)] == [b'{"a":4}']
    assert r.xlen(STREAMS[0]) == 0 and r.xlen(STREAMS[2]) == 0
    assert not any(sp.pending() for sp in spools.values())
    for sp in spools.values():
        sp.close()


def test_an_unreachable_redis_cluster_is_one_line_for_the_operator(capsys) -> None:
    from beacon.cli import main

    from .conftest import free_port

    url = f"redis://127.0.0.1:{free_port()}"
    assert main(["dead-letter", "list", "--redis-cluster", "true", "--redis-url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("beacon: Redis Cluster: no seed node of BEACON_REDIS_URL") and err.count("\n") == 1
    assert "Traceback" not in err
