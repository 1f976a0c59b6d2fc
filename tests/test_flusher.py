"""The flusher against a real Redis stream and a real chDB engine."""

from __future__ import annotations

import threading
import time

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
    good = [f'{{"event_id":"0190a1b2-c3d4-7e5f-8a9b-{i:012d}","received_at":"1764061200.000","scope":"mall",'
            f'"event":"x"}}'.encode() for i in range(5000)]
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
