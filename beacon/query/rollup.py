"""The visits rollup: each UTC day's visits computed once, so visit queries read visits, not events.

Why: computing visits at query time costs ~0.4 CPU us per event (every event of the range
grouped per visitor and sorted); a dashboard asks a dozen such queries per page. The
rollup table `<events>_visits` holds one row per visit of one day, computed by the same
SQL as the query-time plan (beacon/query/sql.py) with the day as its range, so a query
whose range is whole UTC days and whose dimensions and filters are all visit:* reads
those rows instead.

Exactness. Visits are defined over the events of the query's range. A day's visits are
the range's visits except for a visitor who
- has an event within the visit timeout before midnight and a visit starting within the
  timeout after it (the two may be one visit), flagged `irregular` on the later day, or
- carries a campaign in the middle of a day's visit before any other campaign that day
  (the campaign carried from an earlier day of the range may split it), flagged too.
Such visitors (flags on a day after the range's first) are recomputed from their events
by the query-time plan; every other visitor's visits are read from the rollup.

Each computed day gets a row in `<events>_visit_days` with its signature and flagged
visitors, so a query finds what to read without scanning the rollup.

Freshness. A ClickHouse materialized view keeps per (scope, day, is_bot) the count and a
hash sum of the events inserted (`<events>_days`); `store.forget` subtracts what it
deletes. A day's rollup rows carry a signature of that day's and the previous day's sums
(and the first block number of their partitions, which a TRUNCATE or a dropped partition
changes); rows with another signature are ignored, and a day without rows of the current
signature is computed on the first query that needs it. Nothing runs on the web hot path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from typing import TYPE_CHECKING

from beacon.columns import date_of, int_of, ints_of
from beacon.query import asof
from beacon.query.model import VISIT_DIMENSIONS, Query
from beacon.query.sql import FIRST_EVENT_COLUMNS, VISIT_METRICS, Builder, column

if TYPE_CHECKING:  # annotations only: store.py calls migrate and forget
    from beacon.store import Store

DAY = dt.timedelta(days=1)
ATTRS = tuple(FIRST_EVENT_COLUMNS.values())
# per visit: its pages (paths, sorted) with their pageviews and events, and its event names with
# their events, so page or name filters and breakdowns read visits too (added by issue 13; VERSION
# changes every day's signature)
PAGE_COLUMNS = (
    "pages Array(String), page_pageviews Array(UInt32), page_events Array(UInt32), names Array(String), name_events Array(UInt32)"
)
VERSION = 3
LOW = {"source", "channel", "browser", "browser_version", "os", "os_version", "device", "country", "region"}


def visits_table(store: Store) -> str:
    return f"{store.full_table}_visits"


def marks_table(store: Store) -> str:
    """One row per computed (scope, timeout, bots, day, signature): the day's flagged visitors."""
    return f"{store.full_table}_visit_days"


def days_table(store: Store) -> str:
    return f"{store.full_table}_days"


def ddl(store: Store) -> list[str]:
    """Statements `beacon migrate` runs (all idempotent); the backfill of `_days` runs once, when it is created."""
    ttl = int(store.retention_days)
    attrs = ", ".join(f"`{c}` {'LowCardinality(String)' if c in LOW else 'String'}" for c in ATTRS)
    return [
        f"CREATE TABLE IF NOT EXISTS {visits_table(store)} (scope LowCardinality(String), timeout UInt16, bots UInt8, "
        "day Date, sig UInt64, vkey UInt64, has_id UInt8, link UInt8, cut UInt8, first_camp UInt64, last_camp UInt64, "
        "start_ms Int64, pageviews UInt32, "
        f"events UInt32, duration_ms Int64, {attrs}, entry_page String, exit_page String, {PAGE_COLUMNS}) ENGINE = MergeTree "
        "PARTITION BY toYYYYMM(day) ORDER BY (scope, timeout, bots, day, sig, vkey) "
        f"TTL day + INTERVAL {ttl + 1} DAY SETTINGS non_replicated_deduplication_window = 10000",
        f"CREATE TABLE IF NOT EXISTS {marks_table(store)} (scope LowCardinality(String), timeout UInt16, bots UInt8, "
        "day Date, sig UInt64, links Array(UInt64), cuts Array(UInt64)) ENGINE = MergeTree "
        f"ORDER BY (scope, timeout, bots, day) TTL day + INTERVAL {ttl + 1} DAY "
        "SETTINGS non_replicated_deduplication_window = 10000",
        f"CREATE TABLE IF NOT EXISTS {days_table(store)} (scope LowCardinality(String), day Date, is_bot UInt8, "
        "events Int64, hash UInt64) ENGINE = SummingMergeTree ORDER BY (scope, day, is_bot) "
        f"TTL day + INTERVAL {ttl + 1} DAY",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {days_table(store)}_mv TO {days_table(store)} AS "
        f"SELECT scope, toDate(received_at) AS day, is_bot, toInt64(count()) AS events, "
        f"sum(cityHash64(event_id)) AS hash FROM {store.full_table} GROUP BY scope, day, is_bot",
    ]


def migrate(store: Store) -> None:
    existed = store.query(f"EXISTS TABLE {days_table(store)}")[0][0]
    for sql in ddl(store):
        store.command(sql)
    for col in PAGE_COLUMNS.split(", "):  # a rollup of an earlier release: its rows stay unread (VERSION)
        store.command(f"ALTER TABLE {visits_table(store)} ADD COLUMN IF NOT EXISTS {col}")
    for table in (visits_table(store), marks_table(store), days_table(store)):  # BEACON_RETENTION_DAYS may have changed
        store.command(f"ALTER TABLE {table} MODIFY TTL day + INTERVAL {int(store.retention_days) + 1} DAY")
    if not existed:  # a table made by an earlier release: its days, once
        store.command(
            f"INSERT INTO {days_table(store)} SELECT scope, toDate(received_at) AS day, is_bot, "
            f"toInt64(count()), sum(cityHash64(event_id)) FROM {store.full_table} GROUP BY scope, day, is_bot"
        )


def forget(store: Store, scope: str, visitor: str) -> None:
    """Before a visitor's events are deleted: change their days' sums and drop their visits.

    The hash sum moves by a random amount, not back to what it was before the visitor came:
    a day's signature never repeats, so a rollup block is never refused as a duplicate of
    one that was computed, and dropped, before."""
    params: dict[str, object] = {"scope": scope, "visitor": visitor}
    store.command(
        f"INSERT INTO {days_table(store)} SELECT scope, toDate(received_at) AS day, is_bot, "
        f"-toInt64(count()), 0 - sum(cityHash64(event_id)) + any(rand64()) FROM {store.full_table} "
        "WHERE scope = {scope:String} AND visitor_id = {visitor:String} GROUP BY scope, day, is_bot",
        params,
    )
    store.command(f"DELETE FROM {visits_table(store)} WHERE scope = {{scope:String}} AND vkey = cityHash64({{visitor:String}})", params)
    store.command(
        f"DELETE FROM {marks_table(store)} WHERE scope = {{scope:String}} "
        "AND (has(links, cityHash64({visitor:String})) OR has(cuts, cityHash64({visitor:String})))",
        params,
    )


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the query builder needs to read the rollup for a range of whole days."""

    table: str
    first: dt.date
    sigs: tuple[int, ...]  # per day of the range, 0 for a day without events
    irregular: tuple[int, ...]  # visitors recomputed from their events (see the module's docstring)


def usable(q: Query, b: Builder) -> bool:
    """A range of whole UTC days, no commerce (but purchases with visit filters), and only visit:* with event:page or event:name dimensions
    and filters (each visit's pages and event names are in the rollup), or (counting events, each segment's events being of one
    day) no filter and no dimension but time:day."""
    midnight = dt.time(0, 0)
    daily = not q.filters and set(q.dimensions) <= {"time:day"} and not set(q.metrics) & VISIT_METRICS and not b.commerce
    shop = b.shop_rolled()  # purchases from their copy, each with its visit from the rollup
    return (
        (not b.event_plan or daily or b.paged or shop or asof.props_split(b) or asof.event_split(b))
        and (not b.commerce or shop)
        and q.start.time() == midnight
        and q.end.time() == midnight
        and q.start.tzinfo is not None
        and q.start.utcoffset() == dt.timedelta(0)
        and q.end.utcoffset() == dt.timedelta(0)
        and q.end - q.start <= 400 * DAY
    )


def _sig(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def prepare(store: Store, scope: str, q: Query, timeout: int) -> Plan:
    """Signatures of the range's days; the days without rows of their signature are computed now."""
    first, last = q.start.date(), (q.end - DAY).date()
    bots = (0, 1) if q.include_bots else (0,)
    sums: dict[dt.date, tuple[int, ...]] = {}
    for day, is_bot, events, hsum in store.query(
        f"SELECT day, is_bot, sum(events), sum(hash) FROM {days_table(store)} WHERE scope = {{scope:String}} "
        "AND day >= {a:Date} AND day <= {b:Date} GROUP BY day, is_bot",
        {"scope": scope, "a": first - DAY, "b": last},
    ):
        if is_bot in bots and events:
            sums[date_of(day)] = (*sums.get(date_of(day), ()), int_of(is_bot), int_of(events), int_of(hsum))
    blocks = {
        str(partition): int_of(block)
        for partition, block in store.query(
            "SELECT partition, min(min_block_number) FROM system.parts WHERE database = {d:String} AND table = {t:String} "
            "AND active GROUP BY partition",
            {"d": store.database, "t": store.table},
        )
    }
    sigs = []
    day = first
    while day <= last:
        prev = day - DAY
        sigs.append(
            _sig(
                VERSION,
                timeout,
                q.include_bots,
                sums[day],
                sums.get(prev),
                blocks.get(day.strftime("%Y%m")),
                blocks.get(prev.strftime("%Y%m")),
            )
            if day in sums
            else 0
        )
        day += DAY
    table = visits_table(store)
    marks = (
        f"SELECT day, sig, links, cuts FROM {marks_table(store)} WHERE scope = {{scope:String}} "
        "AND timeout = {t:UInt16} AND bots = {bots:UInt8} AND day >= {a:Date} AND day <= {b:Date}"
    )
    params = {"scope": scope, "t": timeout, "bots": int(q.include_bots), "a": first, "b": last}
    have = {(d, s): (links, cuts) for d, s, links, cuts in store.query(marks, params)}
    stale = {d for d, _ in have}
    computed = False
    for i, sig in enumerate(sigs):
        day = first + i * DAY
        if sig and (day, sig) not in have:
            _compute(store, scope, q, timeout, day, sig, day in stale)
            computed = True
    if computed:
        have = {(d, s): (links, cuts) for d, s, links, cuts in store.query(marks, params)}
    irregular: set[int] = set()
    for i, sig in enumerate(sigs):
        links, cuts = have.get((first + i * DAY, sig), ((), ()))
        irregular.update(ints_of(cuts))
        if i:  # a segment may continue the day before's visit only if that day is in the range
            irregular.update(ints_of(links))
    return Plan(table, first, tuple(sigs), tuple(sorted(irregular)))


def _compute(store: Store, scope: str, q: Query, timeout: int, day: dt.date, sig: int, stale: bool) -> None:
    """One day's visits into the rollup (one block, deduplicated by its signature), older signatures dropped."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    dq = dataclasses.replace(q, start=start, end=start + DAY, dimensions=(), filters=())
    b = Builder(dq, scope, store.full_table, timeout)
    b.segments = True
    b.visit_dims = sorted(VISIT_DIMENSIONS)
    for d in b.visit_dims:
        b.cols[d] = column(d, "a_")
    visitors, arrays = b.visitors(["event"])
    arrays += ["v_start", "v_cut", "v_first_camp", "v_last_camp", "v_pagemap", "v_namemap"]
    bots = "" if q.include_bots else " AND is_bot = 0"
    gap = b.p.bind(b.gap_ms, "Int64")
    midnight = b.p.bind(start.replace(tzinfo=None), "DateTime64(3, 'UTC')")
    scope_p = b.p.bind(scope, "String")
    before = (
        f"SELECT DISTINCT if(visitor_id = '', cityHash64(event_id), cityHash64(visitor_id)) FROM {store.full_table} "
        f"WHERE scope = {scope_p} AND received_at >= {midnight} - toIntervalMillisecond({gap}) "
        f"AND received_at < {midnight}{bots}"
    )
    extra = (
        "SELECT *, arrayReduceInRanges('min', ranges, ms) AS v_start, "
        "arrayMap(r -> toUInt8(r.1 = cut_pos), ranges) AS v_cut, "
        "arrayReduceInRanges('argMin', ranges, camp, positions) AS v_first_camp, "
        "arrayReduceInRanges('argMaxIf', ranges, camp, positions, arrayMap(c -> c != 0, camp)) AS v_last_camp, "
        # (pages, pageviews, events) of each visit; sumMap sorts the pages and keeps each with an event
        "arrayReduceInRanges('sumMap', ranges, arrayMap(p -> [p], s_page), arrayMap(v -> [toUInt32(v)], is_pv), "
        "arrayMap(v -> [toUInt32(1)], is_pv)) AS v_pagemap, "
        "arrayReduceInRanges('sumMap', ranges, arrayMap(e -> [toString(e)], s_event), arrayMap(v -> [toUInt32(1)], is_pv)) "
        "AS v_namemap "
        f"FROM ({visitors})"
    )
    joined = ", ".join(f"{a} AS {a}_1" for a in arrays)
    attrs = ", ".join(f"{b.cols['visit:' + c]}_1" for c in ATTRS)
    link = f"toUInt8(v_start_1 = min_start AND v_start_1 <= toUnixTimestamp64Milli({midnight}) + {gap} AND vkey IN ({before}))"
    select = (
        f"SELECT {scope_p}, {b.p.bind(timeout, 'UInt16')}, {int(q.include_bots)}, {b.p.bind(day, 'Date')}, "
        f"{b.p.bind(sig, 'UInt64')}, vkey, has_id, {link}, v_cut_1, v_first_camp_1, v_last_camp_1, v_start_1, v_pageviews_1, "
        f"v_events_1, v_duration_1, {attrs}, {b.cols['visit:entry_page']}_1, {b.cols['visit:exit_page']}_1, "
        "v_pagemap_1.1, v_pagemap_1.2, v_pagemap_1.3, v_namemap_1.1, v_namemap_1.2 "
        f"FROM (SELECT *, arrayMin(v_start) AS min_start FROM ({extra})) ARRAY JOIN {joined}"
    )
    token = f"visits-{scope}-{timeout}-{int(q.include_bots)}-{day}-{sig}"
    with store._lock:  # noqa: SLF001 - one INSERT ... SELECT with its own settings, under the store's lock
        store.client.command(
            f"INSERT INTO {visits_table(store)} {select}",
            parameters=b.p.values,
            settings={
                "insert_deduplication_token": token,
                "insert_deduplicate": 1,
                "max_insert_block_size": 100_000_000,
                "min_insert_block_size_rows": 100_000_000,
                "min_insert_block_size_bytes": 10_000_000_000,
                "max_threads": 1,
            },
        )
    key = {"s": scope, "t": timeout, "b": int(q.include_bots), "d": day, "g": sig}
    with store._lock:  # noqa: SLF001 - the day's mark, once its rows are in
        store.client.command(
            f"INSERT INTO {marks_table(store)} SELECT scope, timeout, bots, day, sig, groupArrayIf(vkey, link = 1), "
            f"groupArrayIf(vkey, cut = 1) FROM {visits_table(store)} WHERE scope = {{s:String}} AND timeout = {{t:UInt16}} "
            "AND bots = {b:UInt8} AND day = {d:Date} AND sig = {g:UInt64} GROUP BY scope, timeout, bots, day, sig",
            parameters=key,
            settings={"insert_deduplication_token": token, "insert_deduplicate": 1},
        )
    if stale:
        for table in (visits_table(store), marks_table(store)):
            store.command(
                f"DELETE FROM {table} WHERE scope = {{s:String}} AND timeout = {{t:UInt16}} "
                "AND bots = {b:UInt8} AND day = {d:Date} AND sig != {g:UInt64}",
                key,
            )
