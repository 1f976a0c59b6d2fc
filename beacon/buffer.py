"""Group commit into a Redis stream: concurrent requests share one write.

A request appends its encoded lines to the open batch and awaits the batch's future.
One writer task at a time takes the whole open batch, writes it as ONE stream entry
(`d` = the lines joined by newlines, `n` = how many), and resolves the future; requests
that arrive during that round trip form the next batch. Nothing is answered before the
write that holds it succeeded.

Each batch has a sequence number in this process (`proc`, `seq`). The write is a Lua
script that adds the entry only if `seq` is above the process's last committed one,
and records it: so a batch whose Redis write failed ambiguously (Redis did it, the
reply was lost) and was therefore spooled is not added twice when the spool is
replayed. To keep that comparison sound, once one batch went to the spool every later
batch of the process goes there too, in order, until the replayer has drained it; and
the writer never starts the next batch before the spool write of the last one ended,
even when its requests were already answered as failed.

A batch neither Redis nor the spool took is refused: its requests get BufferUnavailable
(the routes answer 503), its events are counted in `beacon_events_lost_total`, and the
outage is logged once when it starts and once when writes are stored again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from beacon import metrics
from beacon.errors import NotDurable
from beacon.keys import COMMIT_LUA, marker_key
from beacon.rcluster import AsyncCommit, AsyncRedis
from beacon.spool import Spool

log = logging.getLogger("beacon.buffer")


class BufferUnavailable(NotDurable):
    pass


class Outage:
    """Counts refused events and logs an outage once when it starts and once when it ends,
    never per request."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.active = False
        self.lost = 0

    def refused(self, n: int, reason: str) -> None:
        metrics.EVENTS_LOST.inc(n)
        self.lost += n
        if not self.active:
            self.active = True
            log.error("%s: events are not being stored, requests get 503 (%s)", self.what, reason)

    def stored(self) -> None:
        if self.active:
            log.warning("%s: events are stored again; %d were refused meanwhile", self.what, self.lost)
            self.active = False
            self.lost = 0


class _Batch:
    __slots__ = ("lines", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lines: list[bytes] = []
        self.future: asyncio.Future[None] = loop.create_future()


class GroupCommit:
    """Group commit into Redis, or into the spool when Redis fails within its time budget."""

    def __init__(
        self, redis: AsyncRedis, stream: str, max_lines: int, timeout: float, spool: Spool | None = None, commit: AsyncCommit | None = None
    ) -> None:
        self.redis = redis
        self.spool = spool
        self.stream = stream
        self.keys = [stream, marker_key(stream)]
        self.proc = uuid.uuid4().hex
        self.seq = 0
        # `commit`: the Redis Cluster commit, which also waits for a replica (beacon/rcluster.py)
        self._commit = commit if commit is not None else redis.register_script(COMMIT_LUA)
        self.max_lines = max_lines
        self.timeout = timeout
        self._open: _Batch | None = None
        self._queued: list[_Batch] = []
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.outage = Outage("buffer")
        self._spooling = False  # logged once when Redis fails and batches go to the spool

    async def append(self, lines: list[bytes]) -> None:
        """Return once `lines` are durable (Redis or spool); raise BufferUnavailable otherwise."""
        if self._closing:
            metrics.EVENTS_LOST.inc(len(lines))
            raise BufferUnavailable("shutting down")
        batch = self._open
        if batch is None or len(batch.lines) >= self.max_lines:
            if batch is not None:  # full: queue it behind the writer
                self._queued.append(batch)
            batch = self._open = _Batch(asyncio.get_running_loop())
        batch.lines.extend(lines)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_all())
        # No per-request timer (a wait_for costs more than the rest of the commit): the wait
        # is bounded by the writer, whose Redis attempt has BEACON_REDIS_TIMEOUT and whose
        # spool fallback has BEACON_COMMIT_TIMEOUT.
        await batch.future

    async def _write_all(self) -> None:
        try:
            while True:
                if self._queued:
                    batch = self._queued.pop(0)
                elif self._open is not None and self._open.lines:
                    batch, self._open = self._open, None
                else:
                    return
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: _Batch) -> None:
        n = len(batch.lines)
        payload = b"\n".join(batch.lines)
        self.seq += 1
        seq = self.seq
        redis_error: Exception | None = None
        if self.spool is None or not self.spool.degraded:
            try:
                await self._commit(keys=self.keys, args=[self.proc, seq, payload, n])
            except Exception as exc:  # noqa: BLE001 - any failure means "not known durable in Redis"
                metrics.BUFFER_ERRORS.inc()
                redis_error = exc
            else:
                metrics.BUFFER_WRITES.inc()
                metrics.BUFFER_BATCH.observe(n)
                if self._spooling:
                    self._spooling = False
                    log.warning("Redis takes group commits again")
                return self._done(batch)
        if self.spool is None:
            return self._fail(batch, f"Redis: {redis_error}")
        if redis_error is not None and not self._spooling:
            self._spooling = True
            log.warning("Redis write failed (%s): group commits go to the spool %s until it is replayed", redis_error, self.spool.dir)
        write = asyncio.ensure_future(asyncio.to_thread(self.spool.append, payload, n, self.proc, seq))
        done, _ = await asyncio.wait((write,), timeout=self.timeout)
        if not done:
            self._fail(batch, f"spool write took longer than {self.timeout}s")
            # Order: the next batch may go to Redis only once this one's fate on disk is known.
            await asyncio.wait((write,))
        failure = write.exception()
        if failure is not None:
            reason = f"spool: {failure}" if redis_error is None else f"Redis: {redis_error}; spool: {failure}"
            return self._fail(batch, reason)
        self._done(batch)

    def _done(self, batch: _Batch) -> None:
        if not batch.future.done():
            batch.future.set_result(None)
            self.outage.stored()

    def _fail(self, batch: _Batch, reason: str) -> None:
        if not batch.future.done():
            self.outage.refused(len(batch.lines), reason)
            batch.future.set_exception(BufferUnavailable(reason))
            batch.future.exception()  # mark retrieved: waiters may be gone

    async def close(self) -> None:
        """Stop taking new lines and wait for the in-flight commits."""
        self._closing = True
        while self._writer is not None:
            await asyncio.sleep(0.005)


class DirectWrite:
    """One XADD per request, no sharing and no spool: the baseline group commit is
    measured against (`BEACON_GROUP_COMMIT=false`)."""

    def __init__(self, redis: AsyncRedis, stream: str, timeout: float) -> None:
        self.redis = redis
        self.stream = stream
        self.timeout = timeout
        self.outage = Outage("buffer (group commit off)")

    async def append(self, lines: list[bytes]) -> None:
        try:
            await asyncio.wait_for(self.redis.xadd(self.stream, {"d": b"\n".join(lines), "n": len(lines)}), self.timeout)
        except Exception as exc:  # noqa: BLE001
            metrics.BUFFER_ERRORS.inc()
            self.outage.refused(len(lines), f"Redis: {exc}")
            raise BufferUnavailable(f"Redis write failed: {exc}") from None
        self.outage.stored()
        metrics.BUFFER_WRITES.inc()
        metrics.BUFFER_BATCH.observe(len(lines))

    async def close(self) -> None:
        pass
