from __future__ import annotations

import os

from beacon.spool import Spool, read_records


def test_records_survive_and_a_torn_tail_is_ignored(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    spool.append(b'{"a":1}\n{"a":2}', 2)
    spool.append(b'{"a":3}', 1)
    [path] = tmp_path.glob("spool-*.log")
    with open(path, "ab") as f:
        f.write(b"BSP1\x00\x00\x00\x10\x00")  # a record cut short by a crash
    assert [(n, p) for _, n, p in read_records(path)] == [(2, b'{"a":1}\n{"a":2}'), (1, b'{"a":3}')]
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # corrupt the first payload: nothing after a bad checksum is trusted
    path.write_bytes(bytes(data))
    assert read_records(path) == []


def test_replay_moves_records_once_even_if_interrupted_before_cleanup(tmp_path, r):
    spool = Spool(tmp_path / "s", 1 << 20)
    spool.append(b"l1\nl2", 2)
    spool.append(b"l3", 1)
    spool.close()
    [path] = (tmp_path / "s").glob("spool-*.log")
    copy = path.read_bytes()
    assert Spool(tmp_path / "s", 1 << 20).replay(r, "st") == 3
    assert not path.exists()
    path.write_bytes(copy)  # as if the replayer died after its XADDs, before removing the file
    assert Spool(tmp_path / "s", 1 << 20).replay(r, "st") == 0
    assert [f[b"d"] for _, f in r.xrange("st")] == [b"l1\nl2", b"l3"]


def test_a_file_locked_by_a_live_writer_is_left_to_it(tmp_path, r):
    writer = Spool(tmp_path, 1 << 20)
    writer.append(b"x", 1)
    other = Spool(tmp_path, 1 << 20)
    assert other.replay(r, "st") == 0
    assert writer.replay(r, "st") == 1
    writer.append(b"y", 1)  # a fresh file after its own replay
    assert writer.replay(r, "st") == 1
    assert r.xlen("st") == 2


def test_the_spool_is_bounded(tmp_path):
    import pytest

    from beacon.spool import SpoolFull
    spool = Spool(tmp_path, 100)
    spool.append(b"x" * 50, 1)
    with pytest.raises(SpoolFull):
        spool.append(b"x" * 50, 1)
    assert os.path.getsize(next(tmp_path.glob("spool-*.log"))) == 66
