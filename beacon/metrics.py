"""Prometheus metrics, created once at import; hot-path label children are bound up front.

Under `beacon serve --workers N` every worker writes its values to files in
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode, chosen by that variable
when prometheus_client is imported) and `/metrics` answers the sum over all workers.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

REQUESTS = Counter("beacon_requests_total", "HTTP requests by route and status", ["route", "status"])
EVENTS_ACCEPTED = Counter("beacon_events_accepted_total", "Events answered for (durable in the buffer)", ["scope"])
EVENTS_REJECTED = Counter("beacon_events_rejected_total", "Events refused or not recorded, by reason", ["reason"])
FIELDS_DROPPED = Counter("beacon_fields_dropped_total", "Pixel parameters dropped as invalid")
EVENTS_LOST = Counter("beacon_events_lost_total", "Events not stored and answered 503 (neither Redis nor the spool took them)")
BUFFER_WRITES = Counter("beacon_buffer_writes_total", "Group-commit writes to Redis")
BUFFER_ERRORS = Counter("beacon_buffer_errors_total", "Group-commit writes to Redis that failed")
BUFFER_BATCH = Histogram(
    "beacon_buffer_batch_events", "Events per group-commit write", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
)
SPOOL_RECORDS = Counter("beacon_spool_records_total", "Group commits written to the local spool (Redis down)")
SPOOL_EVENTS = Counter("beacon_spool_events_total", "Events written to the local spool")
SPOOL_FULL = Counter("beacon_spool_full_total", "Group commits refused because the spool is full")
SPOOL_REPLAYED = Counter("beacon_spool_replayed_events_total", "Spooled events moved into Redis")
FLUSH_BATCHES = Counter("beacon_flush_batches_total", "Batches inserted into ClickHouse")
FLUSH_ROWS = Counter("beacon_flush_rows_total", "Rows inserted into ClickHouse")
FLUSH_ERRORS = Counter("beacon_flush_errors_total", "Failed ClickHouse inserts (retried)")
FLUSH_REPAIRED = Counter(
    "beacon_flush_repaired_rows_total", "Rows a repeated insert token dropped although ClickHouse did not hold them, inserted again"
)
# Every worker sees the same stream: across workers, the most recent reading is the value.
STREAM_PENDING = Gauge("beacon_stream_entries", "Entries in the stream not yet acked (pending or unread)", multiprocess_mode="mostrecent")
STREAM_OLDEST_AGE = Gauge("beacon_stream_oldest_age_seconds", "Age of the oldest entry not yet acked", multiprocess_mode="mostrecent")


class LoopCount:
    """The value of a counter child that only the event loop's thread increments: a plain
    float bumped as `count.n += 1`, with no lock and no method call (prometheus_client's own
    value takes a lock per increment). prometheus_client reads it through `get()` as it reads
    its own (`Counter._child_samples`), so scrapes and `generate_latest` see every count."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0.0

    def inc(self, amount: float) -> None:
        self.n += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self.n = value

    def get(self) -> float:
        return self.n

    def set_exemplar(self, exemplar: object) -> None:
        pass

    def get_exemplar(self) -> None:
        return None


class SharedCount:
    """`n += 1` on a counter child whose value lives in prometheus-client's multiprocess files
    (`serve --workers N`): each change goes through the child, so every worker's count reaches
    the one `/metrics`."""

    __slots__ = ("child",)

    def __init__(self, child: Counter) -> None:
        self.child = child

    @property
    def n(self) -> float:
        return float(self.child._value.get())

    @n.setter
    def n(self, value: float) -> None:
        self.child.inc(value - self.child._value.get())


def loop_count(child: Counter) -> LoopCount | SharedCount:
    """Swap a bound counter child's value for a LoopCount, carrying over what it had counted;
    in multiprocess mode the value must stay prometheus-client's own (a file shared by workers)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # the variable prometheus_client itself reads
        return SharedCount(child)
    count = LoopCount()
    count.n = child._value.get()
    child._value = count  # read back through get(), as prometheus_client's own
    return count


PIXEL_OK = REQUESTS.labels("pixel", "200")
COLLECT_OK = REQUESTS.labels("collect", "204")
PIXEL_OK_COUNT = loop_count(PIXEL_OK)  # the pixel route: `PIXEL_OK_COUNT.n += 1`

_accepted: dict[str, LoopCount | SharedCount] = {}


def accepted_count(scope: str) -> LoopCount | SharedCount:
    """The accepted-events count of one scope, bound once: `accepted_count(id).n += n`."""
    count = _accepted.get(scope)
    if count is None:
        count = _accepted[scope] = loop_count(EVENTS_ACCEPTED.labels(scope))
    return count


def accepted(scope: str, n: int = 1) -> None:
    accepted_count(scope).n += n


def request(route: str, status: int) -> None:
    REQUESTS.labels(route, str(status)).inc()


def exposition() -> bytes:
    """The text of `/metrics`: this process's metrics, or all workers' in multiprocess mode."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # the variable prometheus_client itself reads
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus-client is untyped here
    return generate_latest(registry)
