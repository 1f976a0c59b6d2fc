from __future__ import annotations

import pytest
import redis

from beacon.buffer import COMMIT_LUA, marker_key
from beacon.spool import Spool, SpoolFull, read_records

P = "a" * 32


def test_records_survive_and_a_torn_tail_is_ignored(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    spool.append(b'{"a":1}\n{"a":2}', 2, P, 1)
    spool.append(b'{"a":3}', 1, P, 2)
    assert spool.degraded
    [path] = tmp_path.glob("spool-*.log")
    with open(path, "ab") as f:
        f.write(b"BSP2\x00\x00\x00\x10\x00")  # a record cut short by a crash
    assert [(n, s, p) for n, _, s, p in read_records(path)] == [(2, 1, b'{"a":1}\n{"a":2}'), (1, 2, b'{"a":3}')]
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF  # corrupt the first payload: nothing after a bad checksum is trusted
    path.write_bytes(bytes(data))
    assert read_records(path) == []


def test_replay_moves_records_once_even_if_interrupted_before_cleanup(tmp_path, r):
    spool = Spool(tmp_path / "s", 1 << 20)
    spool.append(b"l1\nl2", 2, P, 1)
    spool.append(b"l3", 1, P, 2)
    spool.close()
    [path] = (tmp_path / "s").glob("spool-*.log")
    copy = path.read_bytes()
    assert Spool(tmp_path / "s", 1 << 20).replay(r, "st") == 3
    assert not path.exists()
    path.write_bytes(copy)  # as if the replayer died after its writes, before removing the file
    assert Spool(tmp_path / "s", 1 << 20).replay(r, "st") == 0
    assert [f[b"d"] for _, f in r.xrange("st")] == [b"l1\nl2", b"l3"]


def test_a_batch_redis_took_unseen_is_not_added_again_by_the_replay(tmp_path, r):
    # The live path committed seq 1 but its reply was lost, so it also spooled it.
    r.register_script(COMMIT_LUA)(keys=["st", marker_key("st")], args=[P, 1, b"l1", 1])
    spool = Spool(tmp_path, 1 << 20)
    spool.append(b"l1", 1, P, 1)
    spool.append(b"l2", 1, P, 2)
    assert spool.replay(r, "st") == 1
    assert [f[b"d"] for _, f in r.xrange("st")] == [b"l1", b"l2"]
    assert not spool.degraded


def test_a_file_locked_by_a_live_writer_is_left_to_it(tmp_path, r):
    writer = Spool(tmp_path, 1 << 20)
    writer.append(b"x", 1, P, 1)
    other = Spool(tmp_path, 1 << 20)
    assert other.replay(r, "st") == 0
    assert writer.replay(r, "st") == 1
    writer.append(b"y", 1, P, 2)  # a fresh file after its own replay
    assert writer.replay(r, "st") == 1
    assert r.xlen("st") == 2


def test_the_spool_is_bounded(tmp_path):
    spool = Spool(tmp_path, 200)
    spool.append(b"x" * 50, 1, P, 1)
    with pytest.raises(SpoolFull):
        spool.append(b"x" * 50, 1, P, 2)


def test_an_outage_does_not_pile_up_spool_files(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    gone = redis.Redis(unix_socket_path=str(tmp_path / "no-redis.sock"), retry=None)
    for seq in range(1, 6):
        spool.append(b"x", 1, P, seq)
        with pytest.raises(redis.ConnectionError):
            spool.replay(gone, "st")
    assert len(list(tmp_path.glob("spool-*.log"))) == 1


def test_files_left_by_failed_replays_are_replayed_later_in_write_order(tmp_path, r):
    # Each failed replay seals the open file and the next append starts a fresh one; a later
    # replay (here after a restart) must move them oldest first, or a newer seq would make
    # the commit script skip the older records as already committed.
    spool = Spool(tmp_path, 1 << 20)
    r.config_set("maxmemory", 1)  # Redis answers, but refuses every write: each replay fails midway
    try:
        for seq in range(1, 7):
            spool.append(f"l{seq}".encode(), 1, P, seq)
            with pytest.raises(redis.ResponseError, match="maxmemory"):
                spool.replay(r, "st")
            assert spool.degraded
    finally:
        r.config_set("maxmemory", 0)
    spool.close()
    assert len(list(tmp_path.glob("spool-*.log"))) == 6
    assert Spool(tmp_path, 1 << 20).replay(r, "st") == 6
    assert [f[b"d"] for _, f in r.xrange("st")] == [b"l1", b"l2", b"l3", b"l4", b"l5", b"l6"]
    assert not list(tmp_path.glob("spool-*.log"))
