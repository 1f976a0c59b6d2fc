"""The operators' figures: buffer, spool, flusher, dead letters, ingest per scope, engine health.

Counters are this process's (with `beacon up` the flusher runs here too); a fleet is
watched through each host's `/metrics`, which carries the same counters.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, TypedDict

from prometheus_client.registry import Collector

from beacon import metrics
from beacon.sharding import backlog as stream_backlog

if TYPE_CHECKING:  # app.py builds the dashboard from its Core: a real cycle
    from beacon.app import Core


class Health(TypedDict, total=False):
    ok: bool
    ms: float  # how long the ping took
    error: str  # why it failed


class Backlog(TypedDict, total=False):  # empty when Redis does not answer
    entries: int
    oldest_age_seconds: float
    dead_letters: int
    shards: int


class Snapshot(TypedDict):
    """The operators' page's figures (`GET /dashboard/ops/data`)."""

    redis: Health
    clickhouse: Health
    stream: Backlog
    spool: dict[str, int | bool]  # bytes, degraded
    flush: dict[str, float]  # rows_per_second, rows, batches, errors
    ingest: dict[str, float]  # events accepted per scope
    drops: dict[str, float]  # per reason, and lost, spool_full


def _samples(counter: Collector, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[sample.labels.get(label, "")] = out.get(sample.labels.get(label, ""), 0.0) + sample.value
    return out


def _total(counter: Collector) -> float:
    return sum(_samples(counter, "").values())


class Ops:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._last: tuple[float, float] | None = None  # (monotonic time, rows flushed) of the last snapshot

    def flush_rate(self) -> float:
        now, rows = time.monotonic(), _total(metrics.FLUSH_ROWS)
        last, self._last = self._last, (now, rows)
        if last is None or now - last[0] <= 0:
            return 0.0
        return max(0.0, (rows - last[1]) / (now - last[0]))

    async def snapshot(self) -> Snapshot:
        core = self.core
        redis_health: Health = {"ok": False}
        backlog: Backlog = {}
        try:
            if core.redis is None:
                raise ConnectionError("not connected: the app has not started")
            started = time.perf_counter()
            await core.redis.ping()
            redis_health = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}
            entries, age, dead = await stream_backlog(core.redis, core.streams)  # every shard
            backlog = {"entries": entries, "oldest_age_seconds": round(age, 3), "dead_letters": dead, "shards": len(core.streams)}
        except Exception as exc:  # noqa: BLE001 - the page reports Redis down instead of failing
            redis_health = {"ok": False, "error": str(exc)[:200]}
        started = time.perf_counter()
        ch_ok = await asyncio.to_thread(core.store.ping)
        clickhouse: Health = {"ok": ch_ok, "ms": round((time.perf_counter() - started) * 1000, 2)}
        spools = core.spools.values()
        return {
            "redis": redis_health,
            "clickhouse": clickhouse,
            "stream": backlog,
            "spool": {"bytes": sum(spool.size() for spool in spools), "degraded": any(spool.degraded for spool in spools)},
            "flush": {
                "rows_per_second": round(self.flush_rate(), 2),
                "rows": _total(metrics.FLUSH_ROWS),
                "batches": _total(metrics.FLUSH_BATCHES),
                "errors": _total(metrics.FLUSH_ERRORS),
            },
            "ingest": _samples(metrics.EVENTS_ACCEPTED, "scope"),
            "drops": {
                **_samples(metrics.EVENTS_REJECTED, "reason"),
                "lost": _total(metrics.EVENTS_LOST),
                "spool_full": _total(metrics.SPOOL_FULL),
            },
        }
