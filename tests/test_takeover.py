"""Fast takeover: a SIGKILLed flusher's batches are flushed within seconds, exactly once.

The dead flusher is a real process: it reads one batch (delivered to it, no manifest yet),
reads a second, writes that batch's manifest and is SIGKILLed before its insert
(BEACON_FAILPOINT=before_insert). Both kinds of batch must then reach ClickHouse once,
taken over by another flusher through the lease (not after the 30 s idle claim), or
resumed at once by the same flusher restarted under its name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import orjson

from beacon.flusher import GROUP, Flusher, manifests_key

STREAM = "beacon:events"
EVENTS = 1000

DEAD = textwrap.dedent("""
    import os, signal, sys, redis
    from beacon.flusher import Flusher
    f = Flusher(redis.Redis.from_url(sys.argv[1]), None, "beacon:events", "flusher-a", batch_rows=300,
                batch_age=0.2, claim_idle=30, read_count=6, lease=1.0)
    f.lease.start()
    f.gather()           # delivered to flusher-a, no manifest yet
    f.flush(f.gather())  # manifest written, then SIGKILL at before_insert
    os.kill(os.getpid(), signal.SIGKILL)
""")


def post_events(client) -> None:
    for i in range(EVENTS // 50):
        body = orjson.dumps([{"e": "takeover", "p": {"n": str(i * 50 + k)}} for k in range(50)])
        assert client.post("/e", content=body, headers={"content-type": "text/plain"}).status_code == 204


def kill_a_flusher_mid_batch(redis_server, r) -> None:
    env = {**os.environ, "BEACON_FAILPOINT": "before_insert"}
    proc = subprocess.run([sys.executable, "-c", DEAD, redis_server.url], env=env, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    pending = {c["name"].decode(): c["pending"] for c in r.xinfo_consumers(STREAM, GROUP)}
    assert pending["flusher-a"] >= 2  # two batches' entries are stuck with the dead flusher
    assert r.hlen(manifests_key(STREAM)) == 1


def stored(store) -> tuple[int, int]:
    return tuple(store.query(f"SELECT count(), uniqExact(props['n']) FROM {store.full_table} WHERE event = 'takeover'")[0])


def run_flusher(r, store, consumer: str) -> tuple[Flusher, threading.Thread]:
    # claim_idle 30 s, as in production: only the lease can make the takeover fast.
    f = Flusher(r, store, STREAM, consumer, batch_rows=10_000, batch_age=0.2, claim_idle=30, lease=1.0)
    t = threading.Thread(target=f.run, daemon=True)
    t.start()
    return f, t


def wait_drained(r, store, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and stored(store)[0] < EVENTS:
        time.sleep(0.1)


def check_exactly_once(r, store) -> None:
    assert stored(store) == (EVENTS, EVENTS)
    assert r.xlen(STREAM) == 0
    assert r.hlen(manifests_key(STREAM)) == 0


def test_another_flusher_takes_a_killed_flushers_batches_within_seconds(client, r, store, redis_server) -> None:
    post_events(client)
    kill_a_flusher_mid_batch(redis_server, r)
    f, t = run_flusher(r, store, "flusher-b")
    try:
        wait_drained(r, store, 5.0)
        check_exactly_once(r, store)
    finally:
        f.stop()
        t.join(30)


def test_a_flusher_restarted_under_its_name_resumes_its_batches_at_once(client, r, store, redis_server) -> None:
    post_events(client)
    kill_a_flusher_mid_batch(redis_server, r)
    f, t = run_flusher(r, store, "flusher-a")
    try:
        wait_drained(r, store, 5.0)
        check_exactly_once(r, store)
    finally:
        f.stop()
        t.join(30)
    assert not r.exists(f"{STREAM}:lease:flusher-a")  # a clean stop gives the lease up
