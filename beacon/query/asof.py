"""Events with their visit from the visits rollup: event properties after a visit filter, and funnels.

Why: the query-time plan (beacon/query/sql.py) computes every visit of the range from all its
events (~0.4 CPU us an event, 7-8 CPU s for 30 days of 10M events) just to give a few events
their visit's values. Here only the events that matter are read (those carrying the property,
or the funnel's steps), and each takes its visit from the rollup (beacon/query/rollup.py), as
the commerce cards' purchases do (`Builder.purchase_visits`).

An event's visit is its visitor's last visit starting at or before it (ASOF JOIN on vkey and
start) that has not ended before it: a visitor's visits are disjoint in time and every event of
the range is in one, between its visit's start and end. The visits joined are only those that
pass the visit filters, so an event of a visit that fails finds none (or an earlier visit that
ended before it) and is dropped. Rollup rows for the regular visitors, glued visits for the
irregular ones (`Builder.glued`). One approximation, shared with the purchases: an event that
has the same millisecond as the start of its visitor's next visit (a campaign split within one
millisecond) is given the later visit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from beacon.query.model import PROP_PREFIX, Filter, dimensions_of, is_event_level

if TYPE_CHECKING:  # sql.py imports this module: annotations only
    from beacon.query.sql import Builder

VKEY = "if(visitor_id = '', cityHash64(event_id), cityHash64(visitor_id))"


def props_split(b: Builder) -> bool:
    """One event:props:<name> breakdown answered from the rollup: with only visit:* filters (the properties panel
    after a visit filter), the events carrying the property take their visit from the rollup, and the visits'
    other events (the breakdown's "" row) are counted from the visits' totals, so no event without the property
    is read; without filters or with page and name filters, `props_copied`."""
    q = b.q
    one = not b.commerce and len(q.dimensions) == 1 and q.dimensions[0].startswith(PROP_PREFIX)
    return one and (_visit_only(b) or props_copied(b))


def _visit_only(b: Builder) -> bool:
    return bool(b.filter_dims) and all(d.startswith("visit:") for d in b.filter_dims)


def props_copied(b: Builder) -> bool:
    """The properties breakdown (visitors, events, pageviews) unfiltered or with page and name filters, each top-level
    filter about the event's page and name alone or the visit alone: the carrying events from their copy
    (beacon/query/copies.py) and each visitor's other events from the rollup's counts (`copied_rows`)."""
    from beacon.query.sql import KEY_VARS, VISIT_METRICS  # sql.py imports this module

    def pure(dims: set[str]) -> bool:
        return dims <= set(KEY_VARS) or all(d.startswith("visit:") for d in dims)

    q = b.q
    return (
        bool(b.props)
        and not b.commerce
        and len(q.dimensions) == 1
        and q.dimensions[0].startswith(PROP_PREFIX)
        and not q.include_bots  # the rollup warmed ahead is the one without bots (beacon/query/warm.py)
        and not set(q.metrics) & VISIT_METRICS  # rows per (value, visitor), not per visit
        and not _visit_only(b)
        and all(pure(dimensions_of(f)) for f in q.filters)
    )


def event_split(b: Builder) -> bool:
    """Event-level dimensions or filters (page and name together, properties, hours) where each top-level
    filter is about the event alone or the visit alone, and one is about the event: the events that pass the
    event filters are read (few, for a clicked page or property), each takes its visit from the rollup, and
    the visit filters are applied to the visits. An event counts when it and its visit pass, as in the event
    plan."""
    from beacon.query.sql import VISIT_METRICS  # sql.py imports this module

    split = [{is_event_level(d) for d in dimensions_of(f)} for f in b.q.filters]
    visits = {False} in split or any(d.startswith("visit:") for d in b.q.dimensions) or bool(set(b.q.metrics) & VISIT_METRICS)
    pure = all(len(s) == 1 for s in split) and {True} in split
    return not b.commerce and b.event_plan and not b.paged and pure and visits  # no visit needed: `events_only`


def event_rows(b: Builder) -> str:
    """Rows of the event plan's shape for `event_split`: per (dimension values, visit), its passing events."""
    from beacon.query.sql import PAGE, PAGEVIEW, column  # sql.py imports this module

    event_filters = [f for f in b.q.filters if all(is_event_level(d) for d in dimensions_of(f))]
    visit_filters = [f for f in b.q.filters if f not in event_filters]
    event_dims = [d for d in b.q.dimensions if is_event_level(d)]
    cond = " AND ".join(b.condition(f, b.event_expr) for f in event_filters)
    values = "".join(f", {b.event_expr(d)} AS e_{column(d)}" for d in event_dims)
    page = PAGE if "event:page" in (*b.q.dimensions, *b.filter_dims) else "''"  # the URLs are read only when asked
    left = (
        f"SELECT {VKEY} AS vkey, toUnixTimestamp64Milli(received_at) AS t_ms, {page} AS page, toUInt8({PAGEVIEW}) AS pv"
        f"{values} {scan(b, cond)}"
    )
    picked = "".join(f"e.e_{column(d)} AS {column(d)}, " if d in event_dims else f"v.{b.cols[d]} AS {column(d)}, " for d in b.q.dimensions)
    cols = f"{picked}e.vkey AS vkey, v.v_start AS v_start, v.has_id AS has_id, e.pv AS pv, v.v_pv AS v_pv, v.v_dur AS v_dur"
    rows = joined(b, left, cols, visit_filters)
    group = "".join(f"{column(d)}, " for d in b.q.dimensions)
    return (
        f"SELECT {group}vkey, any(has_id) AS has_id, count() AS m_events, sum(pv) AS m_pageviews, any(v_pv) AS v_pageviews, "
        f"any(v_dur) AS v_duration FROM ({rows}) GROUP BY {group}vkey, v_start"
    )


def scan(b: Builder, where: str, source: str = "") -> str:
    """FROM ... WHERE over the range's events (scope, bots) that satisfy `where` (in `source`: the events, or a copy)."""
    bots = "" if b.q.include_bots else " AND is_bot = 0"
    scope = b.p.bind(b.scope, "String")
    start = b.p.bind(b.q.start.replace(tzinfo=None), "DateTime64(3, 'UTC')")
    end = b.p.bind(b.q.end.replace(tzinfo=None), "DateTime64(3, 'UTC')")
    return f"FROM {source or b.table} WHERE scope = {scope} AND received_at >= {start} AND received_at < {end}{bots} AND ({where})"


def visits(b: Builder, filters: Sequence[Filter] | None = None) -> str:
    """The visits that pass the filters (`filters`, visit:* only, or else all of the query's): vkey, v_start,
    v_end (ms), has_id, v_pv, v_ev, v_dur and the visit:* attributes.

    `b.cols` names the visit:* attributes. With page (or event name) filters (`b.paged`) a visit passes
    when one of its pages, with the visit's values, matches, as the event plan counts it."""
    from beacon.query.sql import FIRST_EVENT_COLUMNS  # sql.py imports this module

    irregular = b.p.bind(list(b.plan.irregular), "Array(UInt64)")
    source = {d: f"`{c}`" for d, c in FIRST_EVENT_COLUMNS.items()} | {"visit:entry_page": "entry_page", "visit:exit_page": "exit_page"}
    attrs = "".join(f", {source[d]} AS {b.cols[d]}" for d in b.visit_dims)
    pages = ((", pages" if b.key == "event:page" else ", names") + " AS pg_pages") if b.paged else ""
    rows = (
        f"SELECT vkey, start_ms AS v_start{attrs}, has_id, pageviews AS v_pv, events AS v_ev, duration_ms AS v_dur{pages} "
        f"FROM {b.plan.table} WHERE {b.rolled_where()} AND vkey NOT IN (SELECT arrayJoin({irregular}))"
    )
    if b.plan.irregular:
        rows += f" UNION ALL {b.glued(irregular, starts=True, totals=True)}"
    if filters is not None:
        cond = " AND ".join(b.condition(f, lambda d: b.cols[d]) for f in filters) or "1"
    elif b.paged:
        cond = f"arrayExists(x_page -> {b.where(lambda d: 'x_page' if d == b.key else b.cols[d])}, pg_pages)"
    else:
        cond = b.where(lambda d: b.cols[d])
    keep = "".join(f", {b.cols[d]}" for d in b.visit_dims)
    return f"SELECT vkey, v_start, v_start + v_dur AS v_end, has_id, v_pv, v_ev, v_dur{keep} FROM ({rows}) WHERE {cond}"


def joined(b: Builder, left: str, cols: str, filters: Sequence[Filter] | None = None) -> str:
    """`cols` (of `e`, an event of `left` with vkey and t_ms, and `v`, its visit) of the events of `left` in a
    visit that passes the filters (`visits`)."""
    right = visits(b, filters)
    on = "e.vkey = v.vkey AND e.t_ms >= v.v_start"
    return f"SELECT {cols} FROM ({left}) AS e ASOF JOIN ({right}) AS v ON {on} WHERE e.t_ms <= v.v_end"


def props_rows(b: Builder) -> str:
    """Rows of the event plan's shape (value, vkey, has_id, counts) for `props_split`, per (value, visit) that
    passes the filters: its events carrying the property with that value and, under "", its other events
    (the visit's totals less its carrying events), in one aggregation."""
    from beacon.query.sql import PAGEVIEW, VISIT_METRICS, column  # sql.py imports this module

    if props_copied(b):
        return copied_rows(b)
    if not set(b.q.metrics) & VISIT_METRICS:  # no row per visit needed: one aggregation per visitor
        return visitor_rows(b)
    dim = b.q.dimensions[0]
    value = b.event_expr(dim)
    carrying = (  # from their copy when there is one (FINAL: an event copied twice is read once)
        f"SELECT {VKEY} AS vkey, toUnixTimestamp64Milli(received_at) AS t_ms, {value} AS val, toInt64({PAGEVIEW}) AS pv "
        f"{scan(b, f'{value} != {chr(39) * 2}', f'{b.props} FINAL' if b.props else '')}"
    )
    rows = joined(
        b, carrying, "e.val AS val, e.vkey AS vkey, v.v_start AS v_start, v.has_id AS has_id, e.pv AS pv, v.v_pv AS v_pv, v.v_dur AS v_dur"
    )
    # each carrying event: +1 under its value, -1 under ""; each visit: its events and pageviews under ""
    counted = (
        "SELECT x.1 AS k_val, vkey, v_start, has_id, x.2 AS k_ev, x.3 AS k_pv, v_pv, v_dur "
        f"FROM ({rows}) ARRAY JOIN [(val, toInt64(1), pv), ('', toInt64(-1), -pv)] AS x "
        "UNION ALL SELECT '' AS k_val, vkey, v_start, has_id, toInt64(v_ev), toInt64(v_pv), v_pv, v_dur "
        f"FROM ({visits(b)})"
    )
    return (
        f"SELECT k_val AS {column(dim)}, vkey, max(has_id) AS has_id, sum(k_ev) AS m_events, sum(k_pv) AS m_pageviews, "
        f"max(v_pv) AS v_pageviews, max(v_dur) AS v_duration FROM ({counted}) GROUP BY k_val, vkey, v_start HAVING m_events > 0"
    )


def copied_rows(b: Builder) -> str:
    """Rows of the event plan's shape (value, vkey, has_id, counts) for `props_copied`, one per (value, visitor).

    The events carrying the property that pass the page and name filters come from the copy, each
    +1 under its value and -1 under ""; the same query without the breakdown, from the rollup, gives
    each visitor's passing events (its segments' counts unfiltered; its matching pages' counts with
    page or name filters, `Builder.paged_rows`) under "". With visit filters too, the carrying events
    keep only those whose visit passes (`joined`), as the rollup's rows do. A visitor's "" is the sum
    of its visits' other events, each >= 0, so per (value, visitor) is enough for visitors, events
    and pageviews."""
    from beacon.query.sql import KEY_VARS, PAGE, PAGEVIEW, Builder, column  # sql.py imports this module

    dim = b.q.dimensions[0]
    value = b.event_expr(dim)
    event_filters = [f for f in b.q.filters if dimensions_of(f) <= set(KEY_VARS)]
    visit_filters = [f for f in b.q.filters if f not in event_filters]
    cond = " AND ".join([f"{value} != ''", *(b.condition(f, b.event_expr) for f in event_filters)])
    page = PAGE if "event:page" in b.filter_dims else "''"  # the URLs are read only when asked
    carrying = (
        f"SELECT {VKEY} AS vkey, toUnixTimestamp64Milli(received_at) AS t_ms, toUInt8(visitor_id != '') AS has_id, "
        f"{value} AS val, toInt64({PAGEVIEW}) AS pv, {page} AS page {scan(b, cond, f'{b.props} FINAL')}"
    )
    if visit_filters:
        carrying = joined(b, carrying, "e.vkey AS vkey, e.has_id AS has_id, e.val AS val, e.pv AS pv", visit_filters)
    # the same query without the breakdown, from the rollup, sharing the parameters
    rest = Builder(dataclasses.replace(b.q, dimensions=(), order_by=()), b.scope, b.table, b.gap_ms // 60_000)
    rest.p, rest.rollup = b.p, b.rollup
    # the values: the carrying events per (value, visitor); "": per visitor (a number key, not a string and a
    # number: ~0.1 CPU s less over 30 days), its events less its carrying ones
    values = (
        f"SELECT val AS {column(dim)}, vkey, max(has_id) AS has_id, toInt64(count()) AS m_events, toInt64(sum(pv)) AS m_pageviews, "
        f"0 AS v_pageviews, 0 AS v_duration FROM ({carrying}) GROUP BY val, vkey"
    )
    others = (
        f"SELECT vkey, has_id, toInt64(-1) AS k_ev, -pv AS k_pv FROM ({carrying}) "
        f"UNION ALL SELECT vkey, has_id, toInt64(m_events), toInt64(m_pageviews) FROM ({rest.per_visit()})"
    )
    return (
        f"{values} UNION ALL SELECT '' AS {column(dim)}, vkey, max(has_id) AS has_id, sum(k_ev) AS m_events, "
        f"sum(k_pv) AS m_pageviews, 0 AS v_pageviews, 0 AS v_duration FROM ({others}) GROUP BY vkey HAVING m_events > 0"
    )


def visitor_rows(b: Builder) -> str:
    """`props_rows` without visit metrics, in one aggregation per visitor instead of a join: rows (value, vkey,
    has_id, counts) where a visitor's rows under one value may repeat (visitors are distinct keys, the rest sums).

    Each visitor's passing visits and carrying events, in time order (a visit before an event of the same
    millisecond): an event is in a passing visit when the last passing visit starting at or before it has not
    ended before it, the `joined` rule; its value gets +1 and "" gets the visits' totals less those events.
    The passing visits are read once, where the join read them twice (docs/benchmarks.md)."""
    from beacon.query.sql import PAGEVIEW, column  # sql.py imports this module

    dim = b.q.dimensions[0]
    value = b.event_expr(dim)
    carrying = (
        f"SELECT toUInt8(1) AS k, {VKEY} AS vkey, toUInt8(visitor_id != '') AS has_id, toUnixTimestamp64Milli(received_at) AS t, "
        f"toInt64(0) AS v_end, toInt64(0) AS v_ev, toInt64({PAGEVIEW}) AS pv, {value} AS val "
        f"{scan(b, f'{value} != {chr(39) * 2}', f'{b.props} FINAL' if b.props else '')}"
    )
    passing = f"SELECT toUInt8(0), vkey, has_id, v_start, v_end, toInt64(v_ev), toInt64(v_pv), '' FROM ({visits(b)})"
    per_visitor = (
        "SELECT vkey, max(has_id) AS has_id, sumIf(v_ev, k = 0) AS tot_ev, sumIf(pv, k = 0) AS tot_pv, "
        "arraySort(groupArray((t, k, v_end, pv, val))) AS s, "
        "arrayFill(x -> x != 0, arrayMap(x -> x.3, s)) AS ends, "
        "arrayMap((x, e) -> x.2 = 1 AND x.1 <= e, s, ends) AS ok, "
        "arrayFilter((x, o) -> o, s, ok) AS hits "
        f"FROM ({carrying} UNION ALL {passing}) GROUP BY vkey HAVING tot_ev > 0"
    )
    return (
        f"SELECT r.1 AS {column(dim)}, vkey, has_id, r.2 AS m_events, r.3 AS m_pageviews, 0 AS v_pageviews, 0 AS v_duration "
        "FROM (SELECT vkey, has_id, arrayPushBack(arrayMap(x -> (x.5, toInt64(1), x.4), hits), "
        f"('', tot_ev - length(hits), tot_pv - arraySum(x -> x.4, hits))) AS rs FROM ({per_visitor})) "
        "ARRAY JOIN rs AS r WHERE r.2 > 0"
    )
