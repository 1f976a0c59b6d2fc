"""Stream -> ClickHouse, in batches, exactly once.

The loop reads group-committed entries with a consumer group, gathers them until
`batch_rows` rows or `batch_age` seconds, and inserts the joined JSONEachRow bytes
with one raw insert. Before inserting it records a manifest (token -> entry ids) in
Redis; the insert carries that token as ClickHouse's insert_deduplication_token; the
ack, the XDEL and the manifest's removal happen in one MULTI. Whoever re-inserts a
batch after a crash reads the manifest and reproduces the same rows with the same
token, so ClickHouse drops the repeat. Rows ClickHouse rejects as malformed are
isolated by bisection and moved to the dead-letter stream; the rest lands.

A repeated token is not proof that the rows are stored: MergeTree records a block's
token in its deduplication log *before* it renames the new part into place, so an
insert that fails between the two (the table directory refusing the rename, the
process dying) leaves a token that silently drops every retry. So whenever a token
is used a second time (a retry, a recovered manifest), the flusher checks that the
batch's event ids are in the table, and inserts the absent rows under a derived token.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import orjson
import redis

from beacon import failpoints, metrics, rcluster
from beacon.columns import str_of
from beacon.keys import GROUP, dead_letter_key, manifests_key
from beacon.lease import Lease, dead_consumers
from beacon.query.warm import Warmer
from beacon.rcluster import StreamEntry, SyncRedis
from beacon.store import Store

log = logging.getLogger("beacon.flusher")

# ClickHouse error codes that mean "these rows are bad", not "the server is unwell".
DATA_ERRORS = {6, 25, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131, 321, 349, 376, 441, 442}
_CODE = re.compile(r"Code: (\d+)")


def ensure_group(r: SyncRedis, stream: str) -> None:
    try:
        r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def stream_lag(r: SyncRedis, stream: str) -> tuple[int, float]:
    """(entries not yet acked, age in seconds of the oldest). Acked entries are deleted."""
    return lag_from(r.xlen(stream), r.xrange(stream, "-", "+", count=1))


def lag_from(entries: int, oldest: object) -> tuple[int, float]:
    """(entries, age of the oldest) from XLEN and an XRANGE of count 1 (sync or async client)."""
    age = 0.0
    first = rcluster.entries(oldest, "XRANGE")
    if first:
        ms = int(first[0][0].split(b"-")[0])
        age = max(0.0, time.time() - ms / 1000)
    return entries, age


def is_data_error(exc: Exception) -> bool:
    match = _CODE.search(str(exc))
    return match is not None and int(match.group(1)) in DATA_ERRORS


class Batch:
    __slots__ = ("ids", "chunks", "rows", "started", "token")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.chunks: list[bytes] = []
        self.rows = 0
        self.started = 0.0
        self.token = ""

    def add(self, entry_id: bytes | str, fields: dict[bytes, bytes]) -> None:
        if not self.ids:
            self.started = time.monotonic()
        self.ids.append(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
        data = fields.get(b"d", b"")
        if data:
            self.chunks.append(data)
        self.rows += int(fields.get(b"n", 0))

    def body(self) -> bytes:
        return b"\n".join(self.chunks)

    def parts(self) -> list[bytes]:
        """The body as pieces (the entries' chunks with a newline between), for an insert
        that writes them out one by one instead of joining a copy of the whole batch."""
        out = [b"\n"] * (2 * len(self.chunks) - 1)
        out[::2] = self.chunks
        return out


class Flusher:
    def __init__(
        self,
        r: SyncRedis,
        store: Store,
        stream: str,
        consumer: str,
        batch_rows: int,
        batch_age: float,
        claim_idle: float,
        read_count: int = 500,
        max_backoff: float = 10.0,
        lease: float = 0.0,
        wait_ms: int = 0,
        warmer: Warmer | None = None,
    ) -> None:
        self.r = r  # its stream replies are narrowed by rcluster's entries, read_group_entries, ...
        # wait_ms > 0 (Redis Cluster): a manifest is on a replica before its insert (beacon/rcluster.py)
        self.wait_ms = wait_ms
        # lease > 0: a heartbeat key (beacon/lease.py); a dead flusher's batches are taken
        # after `lease` seconds instead of `claim_idle`.
        self.lease = Lease(r, stream, consumer, lease) if lease > 0 else None
        self.store = store
        self.stream = stream
        self.consumer = consumer
        self.batch_rows = batch_rows
        self.batch_age = batch_age
        self.claim_idle_ms = int(claim_idle * 1000)
        self.read_count = read_count
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self._last_recover = 0.0
        self._group_ready = False
        self._reader: ThreadPoolExecutor | None = None  # reads the next batch during an insert
        self._rows_per_entry = 0  # of the last read; 0: unknown yet, read one entry to learn it
        self.manifests = manifests_key(stream)
        self.warmer = warmer  # the visits rollup, built between batches when there is no backlog (beacon/query/warm.py)
        self.dead = dead_letter_key(stream)

    # -- lifecycle -------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Loop until stop(): the current batch is finished (or left pending) before returning."""
        backoff = 0.1
        every = 1.0 if self.lease else max(self.claim_idle_ms / 2000, 1.0)
        if self.lease:
            self.lease.start()
        try:
            self._loop(every, backoff)
        finally:
            self._close_reader()
            if self.lease:
                self.lease.stop()

    def _loop(self, every: float, backoff: float) -> None:
        ahead = Batch()  # read while the previous batch was inserted; flushed even after stop()
        while not self._stop.is_set() or ahead.ids:
            try:
                if not ahead.ids and time.monotonic() - self._last_recover > every:
                    self.recover()  # never with a batch in hand: it would read its entries again
                batch, ahead = (ahead, Batch()) if ahead.ids else (self.gather(), ahead)
                if batch.ids:
                    due = time.monotonic() - self._last_recover > every
                    _, ahead = self._flush_reading_ahead(batch, block=True, read_ahead=not due and not self._stop.is_set())
                if self.warmer and not ahead.ids and batch.rows < self.batch_rows and not self._stop.is_set() and self.warmer.due():
                    self.warmer.run(self.r, self.consumer)  # never raises: a failure is logged and retried later
                backoff = 0.1
            except rcluster.REDIS_ERRORS as exc:
                log.warning("redis unavailable (%s); retrying in %.1fs", exc, backoff)
                self._stop.wait(backoff * (1 + random.random()))
                backoff = min(backoff * 2, self.max_backoff)
                self._last_recover = 0.0  # our reads may be pending: take them back first

    def drain(self) -> int:
        """Flush until the stream holds nothing for us; return rows inserted (tests, CLI)."""
        total = self.recover(min_idle_ms=0)
        ahead = Batch()
        while True:
            batch = ahead if ahead.ids else self.gather(block=False)
            if not batch.ids:
                self._close_reader()
                return total
            rows, ahead = self._flush_reading_ahead(batch, block=False)
            total += rows

    def _flush_reading_ahead(self, batch: Batch, block: bool, read_ahead: bool = True) -> tuple[int, Batch]:
        """Flush `batch`; if it was full (a backlog), read the next one meanwhile, on a thread.

        The insert releases the GIL and Redis builds its reply on its own core, so the
        read then costs the flusher's core only its own copying, not a wait. Returns the
        rows inserted and the batch read ahead (empty if none). If the flush fails, that
        batch is dropped once its read is over: its entries stay pending with no manifest,
        and recover() reads them again, as after a crash during gather()."""
        if not read_ahead or batch.rows < self.batch_rows:
            return self.flush(batch), Batch()
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="flusher-read")
        future = self._reader.submit(self.gather, block)
        try:
            rows = self.flush(batch)
        except BaseException:
            future.exception()  # wait for the read: nothing may run on behind an error
            raise
        return rows, future.result()

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.shutdown()
            self._reader = None

    # -- reading ---------------------------------------------------------------

    def gather(self, block: bool = True) -> Batch:
        if not self._group_ready:
            ensure_group(self.r, self.stream)
            self._group_ready = True
        batch = Batch()
        while batch.rows < self.batch_rows and not self._stop.is_set():
            if batch.ids:
                left = self.batch_age - (time.monotonic() - batch.started)
                if left <= 0:
                    break
                wait_ms = max(1, int(min(left, 0.2) * 1000))
            else:
                wait_ms = 200
            reply = self.r.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=self._count(batch), block=wait_ms if block else None)
            entries = rcluster.read_group_entries(reply)
            before = batch.rows
            for entry_id, fields in entries:
                batch.add(entry_id, fields)
            if entries:
                self._rows_per_entry = max(1, (batch.rows - before) // len(entries))
            if not entries and (not block or not batch.ids):
                break
        return batch

    def _count(self, batch: Batch) -> int:
        """Entries to ask for: about what fills the batch to `batch_rows`, by the size of the
        entries last read, so a batch holds batch_rows rows, not read_count group commits of them."""
        if not self._rows_per_entry:
            return 1
        return max(1, min(self.read_count, -(-(self.batch_rows - batch.rows) // self._rows_per_entry)))

    def recover(self, min_idle_ms: int | None = None) -> int:
        """Re-insert batches with open manifests, then take back idle pending entries; return rows."""
        total = 0
        self._last_recover = time.monotonic()
        ensure_group(self.r, self.stream)
        self._group_ready = True
        idle = self.claim_idle_ms if min_idle_ms is None else min_idle_ms
        in_manifests: set[str] = set()
        dead = set(dead_consumers(self.r, self.stream, GROUP, self.consumer)) if self.lease else set()
        lease_ms = self.lease.ttl_ms if self.lease is not None else idle  # only read when someone is dead
        for token, value in rcluster.bytes_hash(self.r.hgetall(self.manifests), "HGETALL").items():
            owner, _, ids_csv = value.decode().partition("|")
            ids = ids_csv.split(",")
            in_manifests.update(ids)
            owner_idle = 0 if owner == self.consumer else min(idle, lease_ms) if owner in dead else idle
            claimed = rcluster.claim(self.r, self.stream, GROUP, self.consumer, owner_idle, ids)
            if len(claimed) != len(ids):
                continue  # a live flusher still holds (part of) it
            batch = Batch()
            for entry_id, fields in claimed:
                batch.add(entry_id, fields)
            batch.token = token.decode()
            log.info("re-inserting batch %s (%d rows) left by %s", batch.token, batch.rows, owner)
            total += self.flush(batch)
            in_manifests.difference_update(ids)
        # Entries delivered to us or to a dead consumer, with no manifest: never inserted. Those
        # of a manifest we could not take yet (not idle long enough) stay with their manifest:
        # batched under a new token they could be inserted twice.
        batch = Batch()
        for own in (True, False):
            start = b"0-0"
            while not self._stop.is_set():
                if own:
                    reply = self.r.xreadgroup(GROUP, self.consumer, {self.stream: start}, count=self.read_count)
                    entries = rcluster.read_group_entries(reply)  # less the entries deleted since
                    if not entries:
                        break
                    start = entries[-1][0]
                else:
                    reply = self.r.xautoclaim(self.stream, GROUP, self.consumer, idle, start, count=self.read_count)
                    start, entries = rcluster.autoclaim_reply(reply)
                for entry_id, fields in entries:
                    if entry_id.decode() in in_manifests:
                        continue
                    batch.add(entry_id, fields)
                    if batch.rows >= self.batch_rows:
                        total += self.flush(batch)
                        batch = Batch()
                if not own and start == b"0-0":
                    break
        # A dead flusher's entries with no manifest: claimed now, not after claim_idle. After the
        # pass over our own pending entries, which would otherwise read them a second time.
        if dead:
            entries = self._claim_from(dead, min(idle, lease_ms))
            for entry_id, fields in entries:
                if entry_id.decode() in in_manifests:
                    continue
                batch.add(entry_id, fields)
                if batch.rows >= self.batch_rows:
                    total += self.flush(batch)
                    batch = Batch()
        if batch.ids:
            total += self.flush(batch)
        return total

    def _claim_from(self, consumers: set[str], min_idle_ms: int) -> list[StreamEntry]:
        """XCLAIM the pending entries of these consumers; the min idle time makes one taker win."""
        out: list[StreamEntry] = []
        for name in sorted(consumers):
            start = "-"
            while not self._stop.is_set():
                ids = rcluster.pending_ids(
                    self.r.xpending_range(self.stream, GROUP, min=start, max="+", count=self.read_count, consumername=name)
                )
                if not ids:
                    break
                out += rcluster.claim(self.r, self.stream, GROUP, self.consumer, min_idle_ms, ids)
                if len(ids) < self.read_count:
                    break
                ms, seq = ids[-1].decode().split("-")
                start = f"{ms}-{int(seq) + 1}"
            log.info("took over %d pending entries of %s (no lease)", len(out), name)
        return out

    # -- writing ---------------------------------------------------------------

    def flush(self, batch: Batch) -> int:
        """Insert, then ack; return rows inserted (0 when stopped during an outage)."""
        reused = bool(batch.token)  # from a manifest: its token may have been used already
        if not batch.token:
            batch.token = hashlib.sha256(",".join(batch.ids).encode()).hexdigest()[:32]
            manifest = f"{self.consumer}|{','.join(batch.ids)}"
            if self.wait_ms:
                rcluster.hset_replicated(self.r, self.manifests, batch.token, manifest, self.wait_ms)
            else:
                self.r.hset(self.manifests, batch.token, manifest)
        failpoints.hit("before_insert")
        dead: list[tuple[bytes, str]] = []
        inserted = self._insert(batch.parts(), batch.token, dead, reused, batch.rows) if batch.chunks else 0
        failpoints.hit("after_insert")
        if inserted < 0:
            return 0  # stopping during an outage: the manifest and the pending entries stay
        pipe = self.r.pipeline(transaction=True)
        for line, error in dead:
            pipe.xadd(self.dead, {"d": line, "error": error[:2000], "token": batch.token})
        pipe.xack(self.stream, GROUP, *batch.ids)
        pipe.xdel(self.stream, *batch.ids)
        pipe.hdel(self.manifests, batch.token)
        pipe.execute()
        metrics.FLUSH_BATCHES.inc()
        metrics.FLUSH_ROWS.inc(inserted)
        if dead:
            metrics.EVENTS_REJECTED.labels("dead_letter").inc(len(dead))
            log.warning("batch %s: %d rows moved to %s", batch.token, len(dead), self.dead)
        return inserted

    def _insert(self, body: bytes | list[bytes], token: str, dead: list[tuple[bytes, str]], reused: bool = False, rows: int = -1) -> int:
        """Insert until ClickHouse accepts (backing off) or the rows prove bad; -1 if stopped.

        `body`: the bytes, or pieces of them (Batch.parts), joined only on the rare paths
        that split or check lines. `rows`: its line count when known (the entries' `n`).
        `reused`: the token may have been sent before, so an accepted insert may have been
        dropped as a repeat; the rows are then checked (see the module docstring)."""
        backoff = 0.1
        while True:
            try:
                self.store.insert_lines(body, token)
                if not reused:
                    return rows if rows >= 0 else _joined(body).count(b"\n") + 1
                absent = absent_lines(self.store, _joined(body).split(b"\n"))
            except Exception as exc:  # noqa: BLE001 - classified below
                if is_data_error(exc):
                    return self._split(_joined(body), token, exc, dead, reused)
                metrics.FLUSH_ERRORS.inc()
                log.warning("insert %s failed (%s); retrying in %.1fs", token, str(exc).splitlines()[0], backoff)
                reused = True  # the failed attempt may have recorded the token
                if self._stop.wait(backoff * (0.5 + random.random())):
                    return -1
                backoff = min(backoff * 2, self.max_backoff)
                continue
            return self._repair(_joined(body), token, absent, dead)

    def _repair(self, body: bytes, token: str, absent: list[bytes], dead: list[tuple[bytes, str]]) -> int:
        """After an insert under a used token: insert the lines still absent under `<token>.r`.

        The derived token is a function of the token alone, so a crash during this insert
        is repaired the same way, and the next check finds those rows present."""
        n = body.count(b"\n") + 1
        if not absent:
            return n
        metrics.FLUSH_REPAIRED.inc(len(absent))
        log.warning(
            "batch %s: %d of %d rows were dropped as a repeat but are not in ClickHouse; inserting them again under %s.r",
            token,
            len(absent),
            n,
            token,
        )
        got = self._insert(b"\n".join(absent), f"{token}.r", dead, reused=True)
        return -1 if got < 0 else n - len(absent) + got

    def _split(self, body: bytes, token: str, exc: Exception, dead: list[tuple[bytes, str]], reused: bool = False) -> int:
        lines = body.split(b"\n")
        if len(lines) == 1:
            dead.append((body, str(exc)))
            return 0
        mid = len(lines) // 2
        total = 0
        for part, name in ((lines[:mid], "a"), (lines[mid:], "b")):
            got = self._insert(b"\n".join(part), f"{token}.{name}", dead, reused)
            if got < 0:
                return -1
            total += got
        return total


def _joined(body: bytes | list[bytes]) -> bytes:
    return body if isinstance(body, bytes) else b"".join(body)


def absent_lines(store: Store, lines: list[bytes], chunk: int = 5000) -> list[bytes]:
    """The lines whose event_id is not in the table. Decodes the lines: only for the rare
    repeated-token check, never on the normal path. A line without a readable event_id
    counts as present (it cannot be checked; inserting it again could double it)."""
    by_id: dict[str, bytes] = {}
    times: list[float] = []
    for line in lines:
        try:
            doc = orjson.loads(line)
            by_id[str(uuid.UUID(doc["event_id"]))] = line
            times.append(float(doc["received_at"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            continue
    if not by_id:
        return []
    ids = list(by_id)
    present: set[str] = set()
    for i in range(0, len(ids), chunk):
        # ids are canonical UUID strings (parsed above): safe as literals, and an IN list
        # of literals avoids a query string too long for the HTTP interface.
        in_list = ",".join(f"'{x}'" for x in ids[i : i + chunk])
        rows = store.query(
            f"SELECT toString(event_id) FROM {store.full_table} WHERE received_at >= toDateTime64({{lo:Float64}}, 3) "
            f"AND received_at <= toDateTime64({{hi:Float64}}, 3) AND event_id IN ({in_list})",
            {"lo": min(times) - 1, "hi": max(times) + 1},
        )
        present.update(str_of(row[0]) for row in rows)
    return [line for eid, line in by_id.items() if eid not in present]
