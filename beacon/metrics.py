"""Prometheus metrics, created once at import; hot-path label children are bound up front."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("beacon_requests_total", "HTTP requests by route and status", ["route", "status"])
EVENTS_ACCEPTED = Counter("beacon_events_accepted_total", "Events answered for (durable in the buffer)", ["scope"])
EVENTS_REJECTED = Counter("beacon_events_rejected_total", "Events refused or not recorded, by reason", ["reason"])
FIELDS_DROPPED = Counter("beacon_fields_dropped_total", "Pixel parameters dropped as invalid")
EVENTS_LOST = Counter("beacon_events_lost_total", "Pixel events answered with the GIF but not stored (buffer down)")
BUFFER_WRITES = Counter("beacon_buffer_writes_total", "Group-commit writes to Redis")
BUFFER_ERRORS = Counter("beacon_buffer_errors_total", "Group-commit writes to Redis that failed")
BUFFER_BATCH = Histogram("beacon_buffer_batch_events", "Events per group-commit write",
                         buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048))
SPOOL_RECORDS = Counter("beacon_spool_records_total", "Group commits written to the local spool (Redis down)")
SPOOL_EVENTS = Counter("beacon_spool_events_total", "Events written to the local spool")
SPOOL_FULL = Counter("beacon_spool_full_total", "Group commits refused because the spool is full")
SPOOL_REPLAYED = Counter("beacon_spool_replayed_events_total", "Spooled events moved into Redis")
FLUSH_BATCHES = Counter("beacon_flush_batches_total", "Batches inserted into ClickHouse")
FLUSH_ROWS = Counter("beacon_flush_rows_total", "Rows inserted into ClickHouse")
FLUSH_ERRORS = Counter("beacon_flush_errors_total", "Failed ClickHouse inserts (retried)")
STREAM_PENDING = Gauge("beacon_stream_entries", "Entries in the stream not yet acked (pending or unread)")
STREAM_OLDEST_AGE = Gauge("beacon_stream_oldest_age_seconds", "Age of the oldest entry not yet acked")



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


def loop_count(child: Counter) -> LoopCount:
    """Swap a bound counter child's value for a LoopCount, carrying over what it had counted."""
    count = LoopCount()
    count.n = child._value.get()
    child._value = count  # type: ignore[assignment]
    return count


PIXEL_OK = REQUESTS.labels("pixel", "200")
COLLECT_OK = REQUESTS.labels("collect", "204")
PIXEL_OK_COUNT = loop_count(PIXEL_OK)  # the pixel route: `PIXEL_OK_COUNT.n += 1`

_accepted: dict[str, LoopCount] = {}


def accepted_count(scope: str) -> LoopCount:
    """The accepted-events count of one scope, bound once: `accepted_count(id).n += n`."""
    count = _accepted.get(scope)
    if count is None:
        count = _accepted[scope] = loop_count(EVENTS_ACCEPTED.labels(scope))
    return count


def accepted(scope: str, n: int = 1) -> None:
    accepted_count(scope).n += n


def request(route: str, status: int) -> None:
    REQUESTS.labels(route, str(status)).inc()
