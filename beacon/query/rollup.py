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

Each computed day gets a row in `<events>_visit_days` (its mark) with its signature, the
signature its rows carry and its flagged visitors, so a query finds what to read without
scanning the rollup.

Freshness. A ClickHouse materialized view keeps per (scope, day, is_bot) the count and a
hash sum of the events inserted (`<events>_days`); `store.forget` subtracts what it
deletes. A day's signature is made of that day's and the previous day's sums (and the
first block number of their partitions, which a TRUNCATE or a dropped partition changes).
The flusher computes the days ahead (beacon/query/warm.py), many per INSERT; a query reads
the rows of the day's newest mark of its current signature, or, when the caller allows an
age (the web: a few flusher passes), of the newest mark that young; a day with neither is
computed by the query. Nothing runs on the web hot path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import threading
import uuid
import weakref
from typing import TYPE_CHECKING

from beacon.columns import NO_SPARSE, date_of, int_of, ints_of, str_of
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
    "pages Array(LowCardinality(String)), page_pageviews Array(UInt32), page_events Array(UInt32), "
    "names Array(LowCardinality(String)), name_events Array(UInt32), "
    # and each (page, event name) with its events, so a page filter with an event:name breakdown (or the reverse) reads visits
    "pn_pages Array(LowCardinality(String)), pn_names Array(LowCardinality(String)), pn_events Array(UInt32)"
)
# per visit: its events but pageviews, in time order, with their ms after the visit's start, so a funnel of event steps
# reads visits, not events (beacon/query/sequences.py; added by issue 13 with VERSION 7)
SEQ_COLUMNS = "seq_names Array(LowCardinality(String)), seq_ms Array(UInt32)"
# paths and names as dictionary codes (i13-pages): a page filter or breakdown reads and compares
# integers, not every visit's strings (docs/benchmarks.md, "Top pages and the page filter")
DICTIONARY = {
    "entry_page": "LowCardinality(String)",
    "exit_page": "LowCardinality(String)",
    "pages": "Array(LowCardinality(String))",
    "names": "Array(LowCardinality(String))",
}
# 6: rows carry a signature of their computation (`rows` in the marks), days computed many at a time,
# paths and names as dictionary codes, (page, event name) pairs per visit; 7: each visit's event sequence;
# 8: rows in full columns only (a sparse `link` of an earlier part could glue the wrong segments: beacon/columns.py)
VERSION = 8
# events per INSERT ... SELECT of many days: bounds its memory (every event of its days in per-visitor arrays) and how
# long it holds the store's lock (beacon up: the web's queries wait for it)
CHUNK_EVENTS = 2_000_000
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
        f"events UInt32, duration_ms Int64, {attrs}, entry_page {DICTIONARY['entry_page']}, exit_page {DICTIONARY['exit_page']}, "
        f"{PAGE_COLUMNS}, {SEQ_COLUMNS}) ENGINE = MergeTree "
        "PARTITION BY toYYYYMM(day) ORDER BY (scope, timeout, bots, day, sig, vkey) "
        f"TTL day + INTERVAL {ttl + 1} DAY SETTINGS non_replicated_deduplication_window = 10000, {NO_SPARSE}",
        f"CREATE TABLE IF NOT EXISTS {marks_table(store)} (scope LowCardinality(String), timeout UInt16, bots UInt8, "
        "day Date, sig UInt64, links Array(UInt64), cuts Array(UInt64), rows UInt64, at DateTime64(6, 'UTC') DEFAULT now64(6)) "
        "ENGINE = MergeTree "
        f"ORDER BY (scope, timeout, bots, day) TTL day + INTERVAL {ttl + 1} DAY "
        f"SETTINGS non_replicated_deduplication_window = 10000, {NO_SPARSE}",
        f"CREATE TABLE IF NOT EXISTS {days_table(store)} (scope LowCardinality(String), day Date, is_bot UInt8, "
        "events Int64, hash UInt64) ENGINE = SummingMergeTree ORDER BY (scope, day, is_bot) "
        f"TTL day + INTERVAL {ttl + 1} DAY SETTINGS {NO_SPARSE}",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {days_table(store)}_mv TO {days_table(store)} AS "
        f"SELECT scope, toDate(received_at) AS day, is_bot, toInt64(count()) AS events, "
        f"sum(cityHash64(event_id)) AS hash FROM {store.full_table} GROUP BY scope, day, is_bot",
    ]


def migrate(store: Store) -> None:
    existed = store.query(f"EXISTS TABLE {days_table(store)}")[0][0]
    for sql in ddl(store):
        store.command(sql)
    if not store.query(
        "SELECT count() FROM system.columns WHERE database = {d:String} AND table = {t:String} AND name = 'rows'",
        {"d": store.database, "t": marks_table(store).split(".", 1)[1]},
    )[0][0]:  # a rollup of release 3 or earlier: none of its rows is read any more (VERSION), so none is kept
        for table in (visits_table(store), marks_table(store)):
            store.command(f"TRUNCATE TABLE {table}")
        store.command(f"ALTER TABLE {marks_table(store)} ADD COLUMN IF NOT EXISTS rows UInt64")
        store.command(f"ALTER TABLE {marks_table(store)} ADD COLUMN IF NOT EXISTS at DateTime64(6, 'UTC') DEFAULT now64(6)")
    for col in f"{PAGE_COLUMNS}, {SEQ_COLUMNS}".split(", "):  # a rollup of an earlier release: its rows stay unread (VERSION)
        store.command(f"ALTER TABLE {visits_table(store)} ADD COLUMN IF NOT EXISTS {col}")
    types = {
        str_of(name): str_of(type_)
        for name, type_ in store.query(
            "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = {t:String}",
            {"d": store.database, "t": f"{store.table}_visits"},
        )
    }
    if any(types.get(name) != type_ for name, type_ in DICTIONARY.items()):
        # strings of a release before VERSION 4: its rows would be ignored anyway (their signatures are of
        # an older VERSION), so they go, and the columns change type on an empty table (no mutation)
        for table in (visits_table(store), marks_table(store)):
            store.command(f"TRUNCATE TABLE {table}")
        for name, type_ in DICTIONARY.items():
            store.command(f"ALTER TABLE {visits_table(store)} MODIFY COLUMN {name} {type_}")
    for table in (visits_table(store), marks_table(store), days_table(store)):  # BEACON_RETENTION_DAYS may have changed
        store.command(f"ALTER TABLE {table} MODIFY TTL day + INTERVAL {int(store.retention_days) + 1} DAY")
        store.command(f"ALTER TABLE {table} MODIFY SETTING {NO_SPARSE}")  # new parts in full (beacon/columns.py)
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
    """A range of whole UTC days, no commerce (but purchases with visit filters), and only visit:* with event:page and
    event:name dimensions and filters (each visit's pages, event names and (page, name) pairs are in the rollup), or
    (counting events, each segment's events being of one day) no filter and no dimension but time:day."""
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


@dataclasses.dataclass(frozen=True)
class Mark:
    """One computed day: its signature, the signature its rows carry (`rows`), their age, its flagged visitors."""

    sig: int
    rows: int
    age_ms: int
    links: tuple[int, ...]
    cuts: tuple[int, ...]


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def signatures(store: Store, scope: str, first: dt.date, last: dt.date, timeout: int, bots: bool) -> list[tuple[dt.date, int, int]]:
    """(day, signature, events) of each day from first to last; signature 0 for a day without events."""
    kinds = (0, 1) if bots else (0,)
    sums: dict[dt.date, tuple[int, ...]] = {}
    events: dict[dt.date, int] = {}
    for day, is_bot, n, hsum in store.query(
        f"SELECT day, is_bot, sum(events), sum(hash) FROM {days_table(store)} WHERE scope = {{scope:String}} "
        "AND day >= {a:Date} AND day <= {b:Date} GROUP BY day, is_bot",
        {"scope": scope, "a": first - DAY, "b": last},
    ):
        if is_bot in kinds and n:
            sums[date_of(day)] = (*sums.get(date_of(day), ()), int_of(is_bot), int_of(n), int_of(hsum))
            events[date_of(day)] = events.get(date_of(day), 0) + int_of(n)
    blocks = store.first_blocks()  # by partition id: toYYYYMM's, as `%Y%m` below
    out = []
    day = first
    while day <= last:
        prev = day - DAY
        sig = (
            _sig(VERSION, timeout, bots, sums[day], sums.get(prev), blocks.get(day.strftime("%Y%m")), blocks.get(prev.strftime("%Y%m")))
            if day in sums
            else 0
        )
        out.append((day, sig, events.get(day, 0)))
        day += DAY
    return out


def marks(store: Store, scope: str, timeout: int, bots: bool, first: dt.date, last: dt.date) -> dict[dt.date, list[Mark]]:
    """The computed days' marks (a mark of an earlier release, without `rows`, is not one)."""
    out: dict[dt.date, list[Mark]] = {}
    for day, sig, rows, age, links, cuts in store.query(
        f"SELECT day, sig, rows, dateDiff('millisecond', at, now64(6)), links, cuts FROM {marks_table(store)} "
        "WHERE scope = {scope:String} AND timeout = {t:UInt16} AND bots = {bots:UInt8} AND day >= {a:Date} AND day <= {b:Date} "
        "AND rows != 0",
        {"scope": scope, "t": timeout, "bots": int(bots), "a": first, "b": last},
    ):
        mark = Mark(int_of(sig), int_of(rows), int_of(age), tuple(ints_of(links)), tuple(ints_of(cuts)))
        out.setdefault(date_of(day), []).append(mark)
    return out


def choose(sig: int, day_marks: list[Mark], max_age_ms: int) -> Mark | None:
    """The rows to read for a day: the newest computed with the day's signature; else, when `max_age_ms` allows, the
    newest of any signature computed at most that long ago (a day still receiving events, refreshed by the flusher)."""
    current = [m for m in day_marks if m.sig == sig]
    if current:
        return min(current, key=lambda m: (m.age_ms, m.rows))
    young = [m for m in day_marks if m.age_ms <= max_age_ms]
    return min(young, key=lambda m: (m.age_ms, m.rows)) if young and max_age_ms > 0 else None


def prepare(store: Store, scope: str, q: Query, timeout: int, max_age: float = 0.0) -> Plan:
    """The rows to read for each day of the range; the days without usable rows are computed now.

    `max_age` (seconds): a day whose events changed since its rollup may be read from a rollup computed at most
    that long ago (see README, "Freshness"); 0: only a rollup of the day's current events."""
    first, last = q.start.date(), (q.end - DAY).date()
    days = signatures(store, scope, first, last, timeout, q.include_bots)
    age_ms = int(max_age * 1000)
    have = marks(store, scope, timeout, q.include_bots, first, last)
    if any(sig and choose(sig, have.get(day, []), age_ms) is None for day, sig, _ in days):
        with _build_lock(store):  # the flusher's thread may be building these days: wait, then read its marks
            have = marks(store, scope, timeout, q.include_bots, first, last)
            todo = [Day(scope, day, sig, n) for day, sig, n in days if sig and choose(sig, have.get(day, []), age_ms) is None]
            for chunk in chunks(todo):
                compute(store, q, timeout, chunk)
            if todo:
                have = marks(store, scope, timeout, q.include_bots, first, last)
    sigs: list[int] = []
    irregular: set[int] = set()
    for i, (day, sig, _) in enumerate(days):
        mark = choose(sig, have.get(day, []), age_ms) if sig else None
        sigs.append(mark.rows if mark else 0)
        if mark:
            irregular.update(mark.cuts)
            if i:  # a segment may continue the day before's visit only if that day is in the range
                irregular.update(mark.links)
    return Plan(visits_table(store), first, tuple(sigs), tuple(sorted(irregular)))


@dataclasses.dataclass(frozen=True)
class Day:
    """A day of one scope to compute: its signature and its events (how much work it is)."""

    scope: str
    day: dt.date
    sig: int
    events: int


def build(store: Store, scopes: list[str], q: Query, timeout: int, max_statements: int) -> tuple[int, int]:
    """Compute the range's days (of these scopes) whose rollup is missing or not of their current events, the newest
    days first, at most `max_statements` INSERTs (the flusher's pace, beacon/query/warm.py); return (INSERTs run,
    days still to compute after them)."""
    first, last = q.start.date(), (q.end - DAY).date()
    lock = _build_lock(store)
    if not lock.acquire(blocking=False):  # a query is computing days (beacon up): the flusher never waits for it
        return 0, 0  # the next pass, an interval later, looks again
    try:
        todo: list[Day] = []
        for scope in scopes:
            have = marks(store, scope, timeout, q.include_bots, first, last)
            days = signatures(store, scope, first, last, timeout, q.include_bots)
            todo += [Day(scope, day, sig, n) for day, sig, n in days if sig and choose(sig, have.get(day, []), 0) is None]
        todo.sort(key=lambda d: (d.day, d.scope), reverse=True)  # the newest days first: the shorter views are ready first
        parts = chunks(todo)
        ran = parts[: max(0, max_statements)]
        for chunk in ran:
            compute(store, q, timeout, chunk)
        return len(ran), sum(len(c) for c in parts[len(ran) :])
    finally:
        lock.release()


def chunks(todo: list[Day]) -> list[list[Day]]:
    """Days in groups of at most CHUNK_EVENTS events (a day bigger than that alone): one INSERT each."""
    out: list[list[Day]] = []
    size = 0
    for item in todo:
        if not out or size + item.events > CHUNK_EVENTS:
            out.append([])
            size = 0
        out[-1].append(item)
        size += item.events
    return out


_LOCKS: weakref.WeakKeyDictionary[Store, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _build_lock(store: Store) -> threading.Lock:
    """One builder per Store at a time (in `beacon up` the flusher's thread and the web share one)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(store, threading.Lock())


def compute(store: Store, q: Query, timeout: int, days: list[Day]) -> None:
    """Days' visits (of one or more scopes) into the rollup in one INSERT ... SELECT (grouped per scope, visitor and
    day), then their marks.

    Planning the statement costs ~0.4 s whatever its size, so one statement takes many days and scopes. Each
    computation's rows carry a signature of their own (`rows`: the day's signature and a random run id), named by the
    day's mark: rows of a computation that died before its mark, or of a second computation of the same day beside
    this one, are never read. Marks of a day but its two newest are then dropped with their rows (the second newest
    may still be read by a query that chose it a moment ago)."""
    run = uuid.uuid4().hex
    scopes = [d.scope for d in days]
    day_list = [d.day for d in days]
    daysigs = [d.sig for d in days]
    rowsigs = [_sig(d.sig, run) for d in days]
    start, end = _midnight(min(day_list)), _midnight(max(day_list)) + DAY
    dq = dataclasses.replace(q, start=start, end=end, dimensions=(), filters=())
    b = Builder(dq, scopes[0], store.full_table, timeout)
    b.segments = True
    b.by_day = list(zip(scopes, day_list))
    b.visit_dims = sorted(VISIT_DIMENSIONS)
    for d in b.visit_dims:
        b.cols[d] = column(d, "a_")
    visitors, arrays = b.visitors(["event"])
    arrays += ["v_start", "v_cut", "v_first_camp", "v_last_camp", "v_pagemap", "v_namemap", "v_pnmap", "v_seqn", "v_seqt"]
    bots = "" if q.include_bots else " AND is_bot = 0"
    gap = b.p.bind(b.gap_ms, "Int64")
    lo = b.p.bind(start.replace(tzinfo=None), "DateTime64(3, 'UTC')")
    hi = b.p.bind(end.replace(tzinfo=None), "DateTime64(3, 'UTC')")
    scopes_p = b.p.bind(scopes, "Array(String)")
    days_p = b.p.bind(day_list, "Array(Date)")
    # (scope, visitor, day) of each visitor with an event within the timeout before the day's midnight
    before = (
        "SELECT DISTINCT toString(scope), if(visitor_id = '', cityHash64(event_id), cityHash64(visitor_id)), "
        f"toDate(received_at) + 1 FROM {store.full_table} WHERE has({scopes_p}, scope) "
        f"AND received_at >= {lo} - toIntervalMillisecond({gap}) AND received_at < {hi} "
        f"AND toUnixTimestamp64Milli(received_at) + {gap} >= (toInt64(toDate(received_at)) + 1) * 86400000{bots}"
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
        "AS v_namemap, "
        "arrayReduceInRanges('sumMap', ranges, arrayMap((p, e) -> [(p, toString(e))], s_page, s_event), "
        "arrayMap(v -> [toUInt32(1)], is_pv)) AS v_pnmap, "
        # each visit's events but pageviews in time order, and their times (ms)
        "arrayReduceInRanges('groupArrayIf', ranges, s_event, arrayMap(v -> v = 0, is_pv)) AS v_seqn, "
        "arrayReduceInRanges('groupArrayIf', ranges, ms, arrayMap(v -> v = 0, is_pv)) AS v_seqt "
        f"FROM ({visitors})"
    )
    joined = ", ".join(f"{a} AS {a}_1" for a in arrays)
    attrs = ", ".join(f"{b.cols['visit:' + c]}_1" for c in ATTRS)
    link = f"toUInt8(v_start_1 = min_start AND v_start_1 <= toInt64(r_day) * 86400000 + {gap} AND (r_scope, vkey, r_day) IN ({before}))"
    select = (
        f"SELECT r_scope, {b.p.bind(timeout, 'UInt16')}, {int(q.include_bots)}, r_day, "
        f"arrayElement({b.p.bind(rowsigs, 'Array(UInt64)')}, indexOf(arrayZip({scopes_p}, {days_p}), (r_scope, r_day))), vkey, has_id, "
        f"{link}, v_cut_1, "
        "v_first_camp_1, v_last_camp_1, v_start_1, v_pageviews_1, "
        f"v_events_1, v_duration_1, {attrs}, {b.cols['visit:entry_page']}_1, {b.cols['visit:exit_page']}_1, "
        "v_pagemap_1.1, v_pagemap_1.2, v_pagemap_1.3, v_namemap_1.1, v_namemap_1.2, "
        "arrayMap(t -> t.1, v_pnmap_1.1), arrayMap(t -> t.2, v_pnmap_1.1), v_pnmap_1.2, "
        "v_seqn_1, arrayMap(t -> toUInt32(t - v_start_1), v_seqt_1) "
        f"FROM (SELECT *, arrayMin(v_start) AS min_start FROM ({extra})) ARRAY JOIN {joined}"
    )
    columns = (
        "scope, timeout, bots, day, sig, vkey, has_id, link, cut, first_camp, last_camp, start_ms, pageviews, events, "
        f"duration_ms, {', '.join(f'`{c}`' for c in ATTRS)}, entry_page, exit_page, pages, page_pageviews, page_events, "
        "names, name_events, pn_pages, pn_names, pn_events, seq_names, seq_ms"
    )
    token = f"visits-{run}"
    with store._lock:  # noqa: SLF001 - one INSERT ... SELECT with its own settings, under the store's lock
        store.client.command(
            f"INSERT INTO {visits_table(store)} ({columns}) {select}",
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
    key = {"s": scopes, "t": timeout, "b": int(q.include_bots), "days": day_list, "rows": rowsigs, "sigs": daysigs}
    with store._lock:  # noqa: SLF001 - the days' marks, once their rows are in (a day without rows too: it is computed)
        store.client.command(
            f"INSERT INTO {marks_table(store)} (scope, timeout, bots, day, sig, rows, links, cuts) "
            "SELECT d.scope, {t:UInt16}, {b:UInt8}, d.day, d.sig, d.rows, v.links, v.cuts FROM (SELECT "
            "arrayJoin(arrayZip({s:Array(String)}, {days:Array(Date)}, {sigs:Array(UInt64)}, {rows:Array(UInt64)})) AS x, "
            "x.1 AS scope, x.2 AS day, x.3 AS sig, x.4 AS rows) AS d LEFT JOIN (SELECT sig AS rows, groupArrayIf(vkey, link = 1) "
            f"AS links, groupArrayIf(vkey, cut = 1) AS cuts FROM {visits_table(store)} WHERE has({{s:Array(String)}}, scope) "
            "AND timeout = {t:UInt16} AND bots = {b:UInt8} AND has({days:Array(Date)}, day) AND has({rows:Array(UInt64)}, sig) "
            "GROUP BY sig) AS v ON d.rows = v.rows",
            parameters=key,
            settings={"insert_deduplication_token": token, "insert_deduplicate": 1, "join_use_nulls": 0},
        )
    for scope in dict.fromkeys(scopes):
        _drop_old(store, scope, q.include_bots, timeout, [d.day for d in days if d.scope == scope])


def _drop_old(store: Store, scope: str, bots: bool, timeout: int, days: list[dt.date]) -> None:
    have = marks(store, scope, timeout, bots, min(days), max(days))
    old = [m.rows for d in days for m in sorted(have.get(d, []), key=lambda m: (m.age_ms, m.rows))[2:]]
    if not old:
        return
    key = {"s": scope, "t": timeout, "b": int(bots), "days": days, "old": old}
    for table, column_ in ((visits_table(store), "sig"), (marks_table(store), "rows")):
        store.command(
            f"DELETE FROM {table} WHERE scope = {{s:String}} AND timeout = {{t:UInt16}} AND bots = {{b:UInt8}} "
            f"AND has({{days:Array(Date)}}, day) AND has({{old:Array(UInt64)}}, {column_})",
            key,
        )
