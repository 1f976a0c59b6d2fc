"""The flusher against a real Redis stream and a real chDB engine."""

from __future__ import annotations

import random
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from beacon import metrics
from beacon.event import encode, uuid7
from beacon.flusher import GROUP, Flusher, dead_letter_key, manifests_key

STREAM = "beacon:events"


def send(client, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        assert client.get("/p.gif", params={"e": "pageview", "p.n": str(i)}).status_code == 200


def count(store) -> tuple[int, int]:
    return store.query(f"SELECT count(), uniqExact(props['n']) FROM {store.full_table}")[0]


def test_entries_stay_pending_while_clickhouse_refuses_and_land_once_it_accepts(client, r, store):
    send(client, 30)
    store.command(f"DETACH TABLE {store.full_table}")  # the engine itself now fails every insert
    flusher = Flusher(r, store, STREAM, "f1", batch_rows=1000, batch_age=0.05, claim_idle=0, max_backoff=0.2)
    thread = threading.Thread(target=flusher.run)
    thread.start()
    try:
        time.sleep(1.0)
        assert r.xlen(STREAM) == 30  # nothing acked, nothing trimmed
        assert r.xpending(STREAM, GROUP)["pending"] == 30
        assert r.hlen(manifests_key(STREAM)) == 1
        send(client, 10, start=30)
    finally:
        store.command(f"ATTACH TABLE {store.full_table}")
    deadline = time.monotonic() + 10
    while r.xlen(STREAM) and time.monotonic() < deadline:
        time.sleep(0.05)
    flusher.stop()
    thread.join(10)
    assert count(store) == (40, 40)
    assert r.xlen(STREAM) == 0 and r.hlen(manifests_key(STREAM)) == 0


def test_a_batch_reinserted_after_a_crash_between_insert_and_ack_is_not_duplicated(client, r, store, flush):
    send(client, 25)
    dying = Flusher(r, store, STREAM, "dies", batch_rows=1000, batch_age=0.05, claim_idle=0)
    batch = dying.gather(block=False)
    # What flush() does up to the ack, then the process "dies": manifest written, rows inserted.
    batch.token = "t-" + "-".join(batch.ids)[:20]
    r.hset(manifests_key(STREAM), batch.token, f"dies|{','.join(batch.ids)}")
    store.insert_lines(batch.body(), batch.token)
    assert count(store) == (25, 25)
    assert flush() == 25  # another consumer reclaims the manifest and re-inserts with the same token
    assert count(store) == (25, 25)
    assert r.xlen(STREAM) == 0


def test_pending_entries_of_a_dead_consumer_are_reclaimed(client, r, store):
    send(client, 12)
    dead = Flusher(r, store, STREAM, "dead", batch_rows=1000, batch_age=0.05, claim_idle=0)
    assert dead.gather(block=False).rows == 12  # read, never inserted, never acked
    assert r.xpending(STREAM, GROUP)["pending"] > 0
    alive = Flusher(r, store, STREAM, "alive", batch_rows=1000, batch_age=0.05, claim_idle=0.2)
    time.sleep(0.3)
    alive.recover()
    assert count(store) == (12, 12)
    assert r.xpending(STREAM, GROUP)["pending"] == 0


def test_rows_clickhouse_rejects_go_to_the_dead_letter_stream_and_the_rest_lands(client, r, store, flush):
    send(client, 9)
    poison = b'{"event_id":"not-a-uuid","received_at":"1764061200.000","scope":"mall","event":"poison"}'
    r.xadd(STREAM, {"d": poison, "n": 1})
    send(client, 9, start=9)
    assert flush() == 18
    assert count(store) == (18, 18)
    dead = r.xrange(dead_letter_key(STREAM))
    assert len(dead) == 1
    assert dead[0][1][b"d"] == poison
    assert b"UUID" in dead[0][1][b"error"] or b"parse" in dead[0][1][b"error"].lower()


def test_a_malformed_batch_leaves_no_partial_insert_behind(r, store, flush):
    good = [
        f'{{"event_id":"0190a1b2-c3d4-7e5f-8a9b-{i:012d}","received_at":"1764061200.000","scope":"mall","event":"x"}}'.encode()
        for i in range(5000)
    ]
    bad = b'{"event_id":"0190a1b2-c3d4-7e5f-8a9b-999999999999","received_at":"nope","scope":"mall"}'
    r.xadd(STREAM, {"d": b"\n".join(good[:4000] + [bad] + good[4000:]), "n": 5001})
    assert flush() == 5000
    assert store.query(f"SELECT count(), uniqExact(event_id) FROM {store.full_table}") == [(5000, 5000)]
    assert r.xlen(dead_letter_key(STREAM)) == 1


def test_dead_letter_list_replay_and_drop(r, redis_server, capsys):
    from beacon.cli import main

    dead = dead_letter_key(STREAM)
    for i in range(3):
        r.xadd(dead, {"d": f'{{"bad":{i}}}', "error": "Code: 117. Unknown field", "token": "t"})
    assert main(["dead-letter", "list", "--redis-url", redis_server.url]) == 0
    out = capsys.readouterr()
    assert out.out.count("Unknown field") == 3 and "3 dead-letter rows" in out.err
    first = r.xrange(dead)[0][0].decode()
    assert main(["dead-letter", "replay", "--id", first, "--redis-url", redis_server.url]) == 0
    assert r.xlen(dead) == 2 and [f[b"d"] for _, f in r.xrange(STREAM)] == [b'{"bad":0}']
    assert main(["dead-letter", "drop", "--redis-url", redis_server.url]) == 0
    assert r.xlen(dead) == 0


def test_a_batch_whose_token_clickhouse_knows_but_whose_rows_it_lacks_still_lands_once(client, r, store, flush):
    """MergeTree writes a block's token to its deduplication log before it renames the part
    into place; an insert that fails in between leaves a token that drops every retry. A
    lightweight DELETE after an insert puts the real engine in that same state on purpose."""
    send(client, 20)
    dying = Flusher(r, store, STREAM, "dies", batch_rows=1000, batch_age=0.05, claim_idle=0)
    batch = dying.gather(block=False)
    batch.token = "t-" + "-".join(batch.ids)[:20]
    r.hset(manifests_key(STREAM), batch.token, f"dies|{','.join(batch.ids)}")
    store.insert_lines(batch.body(), batch.token)
    store.command(f"DELETE FROM {store.full_table} WHERE 1")
    store.insert_lines(batch.body(), batch.token)
    assert count(store) == (0, 0)  # the engine drops a retry under a token it knows
    assert flush() == 20  # recovery re-inserts, finds the rows absent, inserts them under a derived token
    assert count(store) == (20, 20)
    assert r.xlen(STREAM) == 0 and r.hlen(manifests_key(STREAM)) == 0


def test_a_batch_holds_about_batch_rows_rows_not_read_count_group_commits(r, store):
    """A batch's memory follows batch_rows: with group commits of 10 rows and batch_rows 25, the
    flusher reads one entry to learn their size, then as many as fill the batch."""
    for entry in range(20):
        lines = [
            encode(
                event_id=uuid7(time.time()),
                received_at=time.time(),
                scope="mall",
                visitor_id="v",
                mode="cookie",
                event="pageview",
                url="",
                referrer="",
                props={"n": str(entry * 10 + i)},
                ip="",
                user_agent="",
                transport="pixel",
            )
            for i in range(10)
        ]
        r.xadd(STREAM, {"d": b"\n".join(lines), "n": 10})
    flusher = Flusher(r, store, STREAM, "f", batch_rows=25, batch_age=5, claim_idle=0)
    batch = flusher.gather(block=False)
    assert (batch.rows, len(batch.ids)) == (30, 3)
    assert r.xpending(STREAM, GROUP)["pending"] == 3  # the other 17 entries were not read
    assert flusher.flush(batch) == 30
    assert flusher.drain() == 170
    assert count(store) == (200, 200)
    assert r.xlen(STREAM) == 0


def lines_of(entry: int, rows: int = 10) -> bytes:
    return b"\n".join(
        encode(
            event_id=uuid7(time.time()),
            received_at=time.time(),
            scope="mall",
            visitor_id="v",
            mode="cookie",
            event="pageview",
            url="",
            referrer="",
            props={"n": str(entry * rows + i)},
            ip="",
            user_agent="",
            transport="pixel",
        )
        for i in range(rows)
    )


def test_a_batch_read_ahead_during_a_flush_that_fails_lands_once(r, store, redis_server):
    """With a backlog the flusher reads the next batch while it inserts one. Here that flush
    fails at its ack (Redis is gone by then): the batch read ahead is dropped, its entries
    stay pending, and recovery lands both batches and the rest, every row once."""
    for entry in range(50):
        r.xadd(STREAM, {"d": lines_of(entry), "n": 10})
    store.command(f"DETACH TABLE {store.full_table}")  # the first insert fails and is retried
    flusher = Flusher(r, store, STREAM, "f", batch_rows=100, batch_age=5, claim_idle=0, max_backoff=0.2)
    thread = threading.Thread(target=flusher.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while r.xpending(STREAM, GROUP)["pending"] < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert r.xpending(STREAM, GROUP)["pending"] == 20  # the batch being inserted and the one read ahead
        redis_server.stop()
        store.command(f"ATTACH TABLE {store.full_table}")  # the insert lands; its ack finds no Redis
        time.sleep(0.5)
        redis_server.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if r.xlen(STREAM) == 0:
                    break
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
    finally:
        flusher.stop()
        thread.join(10)
        if redis_server.proc is None:
            redis_server.start()
        if not store.query(f"EXISTS TABLE {store.full_table}")[0][0]:
            store.command(f"ATTACH TABLE {store.full_table}")
    assert count(store) == (500, 500)
    assert r.xlen(STREAM) == 0 and r.hlen(manifests_key(STREAM)) == 0


def table_dir(store) -> Path:
    root = Path(store.dsn.removeprefix("chdb://"))
    meta = (root / "metadata" / store.database / f"{store.table}.sql").read_text()
    uuid = re.search(r"UUID '([0-9a-f-]{36})'", meta).group(1)
    return root / "store" / uuid[:3] / uuid


def test_inserts_failing_at_random_points_still_land_every_row_once(r, store):
    """The real race: the table directory turns immutable and back at random moments while
    batches are inserted, so some inserts fail after their token was recorded."""
    if subprocess.run(["chattr", "--help"], capture_output=True).returncode not in (0, 1):
        pytest.fail("chattr is needed to make ClickHouse refuse inserts")
    for entry in range(40):  # written straight to the stream: 400 requests would cost more than the test
        lines = [
            encode(
                event_id=uuid7(time.time()),
                received_at=time.time(),
                scope="mall",
                visitor_id="v",
                mode="cookie",
                event="pageview",
                url="",
                referrer="",
                props={"n": str(entry * 10 + i)},
                ip="",
                user_agent="",
                transport="pixel",
            )
            for i in range(10)
        ]
        r.xadd(STREAM, {"d": b"\n".join(lines), "n": 10})
    table = table_dir(store)
    stop = threading.Event()

    def toggle() -> None:  # for a few seconds at most: the rest of the backlog drains in peace
        rng = random.Random(9)
        deadline = time.monotonic() + 4
        while not stop.is_set() and time.monotonic() < deadline:
            subprocess.run(["chattr", "+i", str(table)], check=True)
            time.sleep(rng.random() * 0.03)
            subprocess.run(["chattr", "-i", str(table)], check=True)
            time.sleep(rng.random() * 0.03)

    errors = metrics.FLUSH_ERRORS._value.get()
    flusher = Flusher(r, store, STREAM, "f", batch_rows=10, batch_age=0.05, claim_idle=0, read_count=10, max_backoff=0.05)
    thread = threading.Thread(target=toggle)
    thread.start()
    try:
        flusher.drain()
    finally:
        stop.set()
        thread.join()
        subprocess.run(["chattr", "-i", str(table)], check=True)
    assert metrics.FLUSH_ERRORS._value.get() > errors  # the race was run, not skipped
    assert count(store) == (400, 400)
    assert r.xlen(STREAM) == 0
