"""A typed Query -> one ClickHouse SELECT; every value the client sent is a bound parameter.

Visits are computed at query time, per (scope, visitor) in received_at order: an
event starts a new visit when it comes more than the visit timeout after the
visitor's previous event, or when it carries a campaign (utm_source, utm_medium,
utm_campaign) other than the last campaign the visitor came with. The visit's
attributes (visit:*) are its first event's values; entry and exit page are its first
and last pageview's path; a bounce is a visit of one pageview.

Three plans give the same numbers. When every dimension and filter is about the
visit, one row per visit is aggregated; when one is about single events (event:*,
time:*), each event carries its visit's values, the filter is applied to events, and a
visit counts when one of its events matches; when the query needs no visit at all
(only visitors, pageviews and events, no visit:* dimension or filter), the events are
aggregated directly and no visit is computed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from beacon.query import asof, commerce
from beacon.query.model import (
    COMMERCE_DIMENSIONS,
    PROP_PREFIX,
    Combination,
    Condition,
    Filter,
    Negation,
    Query,
    dimensions_of,
    is_event_level,
)

if TYPE_CHECKING:  # rollup.py builds on this module: a real cycle, for one annotation
    from beacon.query.rollup import Plan

# A dimension -> the SQL expression of its value (on an event row, or a visit row's column).
Expr = Callable[[str], str]

# visit:<name> -> the column of the visit's first event it takes
FIRST_EVENT_COLUMNS = {
    "visit:source": "source",
    "visit:channel": "channel",
    "visit:referrer": "referrer",
    "visit:utm_source": "utm_source",
    "visit:utm_medium": "utm_medium",
    "visit:utm_campaign": "utm_campaign",
    "visit:utm_term": "utm_term",
    "visit:utm_content": "utm_content",
    "visit:browser": "browser",
    "visit:browser_version": "browser_version",
    "visit:os": "os",
    "visit:os_version": "os_version",
    "visit:device": "device",
    "visit:country": "country",
    "visit:region": "region",
    "visit:city": "city",
}
PAGE = "path(url)"
VISIT_METRICS = {"visits", "bounce_rate", "visit_duration", "views_per_visit"}
PAGEVIEW = "event = 'pageview'"
PURCHASE = "event = 'purchase'"
# the 7 base columns of every answer row (`_metric` in beacon/query/__init__.py), and the columns each metric reads
AGGREGATES = (
    # exact distinct visitors by sorting each group's keys: ~40% less CPU than uniqExact's hash sets, whose
    # per-thread sets must be merged (docs/benchmarks.md, "Top pages and the page filter")
    ("visitors", "arrayCount(d -> d != 0, arrayDifference(arraySort(groupArrayIf(vkey, has_id = 1)))) + (countIf(has_id = 1) > 0)"),
    ("visits", "count()"),
    ("pageviews", "sum(m_pageviews)"),
    ("events", "sum(m_events)"),
    ("bounces", "countIf(v_pageviews = 1)"),
    ("duration_ms", "sum(v_duration)"),
    ("visit_pageviews", "sum(v_pageviews)"),
)
# the rollup's arrays of each key (per visit: its pages, names, or (page, name) pairs, with their counts)
KEY_COLUMNS = {
    "event:page": ("pages", "page_pageviews", "page_events"),
    "event:name": ("names", "name_events"),
    "pair": ("pn_pages", "pn_names", "pn_events"),
}
# the lambda variable of each key's value in `Builder.paged_rows` (one page, name or pair of a visit)
KEY_VARS = {"event:page": "x_page", "event:name": "x_name"}
NEEDS = {
    "visitors": ("visitors",),
    "visits": ("visits",),
    "pageviews": ("pageviews",),
    "events": ("events",),
    "bounce_rate": ("visits", "bounces"),
    "visit_duration": ("visits", "duration_ms"),
    "views_per_visit": ("visits", "visit_pageviews"),
}


@dataclasses.dataclass
class Params:
    values: dict[str, object] = dataclasses.field(default_factory=dict)  # str, int, date(time), list: bound by the client

    def bind(self, value: object, type_: str) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"{{{name}:{type_}}}"


def column(dim: str, prefix: str = "d_") -> str:
    """Alias of a dimension's column in the inner queries (`a_` for a visit attribute)."""
    return prefix + "".join(c if c.isalnum() else "_" for c in dim) + f"_{zlib.crc32(dim.encode()):08x}"


class Builder:
    def __init__(self, q: Query, scope: str, table: str, visit_timeout_minutes: int) -> None:
        self.q = q
        self.scope = scope
        self.table = table
        self.gap_ms = visit_timeout_minutes * 60_000
        self.p = Params()
        self.filter_dims = sorted({d for f in q.filters for d in dimensions_of(f)})
        self.event_plan = any(is_event_level(d) for d in (*q.dimensions, *self.filter_dims))
        self.commerce = commerce.needed(q, self.filter_dims)  # issue 12: beacon/query/commerce.py
        self.customers = "customers" in q.metrics
        self.event_plan = self.event_plan or self.commerce  # conversions and revenue are read per event
        # only visit:* and event:page and/or event:name: the visits rollup answers from each visit's pages, names, or
        # (page, name) pairs (`key`: event:page, event:name or "pair")
        event_dims = {d for d in (*q.dimensions, *self.filter_dims) if is_event_level(d)}
        keys = event_dims & set(KEY_VARS)
        self.key = "pair" if len(keys) == 2 else "event:name" if keys == {"event:name"} else "event:page"
        self.paged = self.event_plan and not self.commerce and event_dims <= set(KEY_VARS)
        # time:day without visit metrics: each day's pieces of the visits (segments; a glued visit's, with its values)
        self.daily = self.event_plan and not self.commerce and "time:day" in q.dimensions and not set(q.metrics) & VISIT_METRICS
        self.daily = self.daily and event_dims - {"time:day"} <= set(KEY_VARS) and bool(q.filters)  # unfiltered: `events_only`
        self.paged = self.paged or self.daily
        self.cols: dict[str, str] = {}
        self.visit_dims: list[str] = []
        self.rollup: Plan | None = None  # when the visits rollup answers (beacon/query/rollup.py)
        self.segments = False  # cut visits at the range's first campaign too (the rollup's segments)
        self.only_with = ""  # an event condition: compute visits only for visitors with such an event in the range
        self.purchases = ""  # the copy of the purchase events, when current (beacon/query/purchases.py)
        self.sequences = False  # glued visits carry their event sequences too (beacon/query/sequences.py)
        self.props = ""  # the copy of the events carrying properties, when current (beacon/query/copies.py)
        # the rollup's build: one row per visitor and day of these (scope, day) pairs (`r_scope`, `r_day`)
        self.by_day: list[tuple[str, dt.date]] = []

    @property
    def plan(self) -> Plan:
        """The rollup's plan, in the methods that read the rollup (they run only when it is set)."""
        if self.rollup is None:
            raise AssertionError("no rollup plan")
        return self.rollup

    # -- expressions ----------------------------------------------------------

    def event_expr(self, dim: str) -> str:
        """A dimension's value on one event row (visit:* read from the attached visit column)."""
        if dim == "event:page":
            return "page"
        if dim == "event:name":
            return "toString(event)"
        if dim.startswith(PROP_PREFIX):
            return f"props[{self.p.bind(dim[len(PROP_PREFIX) :], 'String')}]"
        if dim == "time:hour":
            return "formatDateTime(toStartOfHour(received_at), '%Y-%m-%d %H:00:00')"
        if dim == "time:day":
            return "toString(toDate(received_at))"
        if dim in COMMERCE_DIMENSIONS:
            return commerce.dimension(dim)
        return self.cols[dim]

    def condition(self, f: Filter, expr: Expr) -> str:
        if isinstance(f, Combination):
            return "(" + f" {f.op.upper()} ".join(self.condition(p, expr) for p in f.parts) + ")"
        if isinstance(f, Negation):
            return f"(NOT {self.condition(f.part, expr)})"
        value = expr(f.dimension)
        values = list(f.values)
        if f.op in ("is", "is_not"):
            if f.case_sensitive:
                test = f"has({self.p.bind(values, 'Array(String)')}, {value})"
            else:
                test = f"has({self.p.bind([v.lower() for v in values], 'Array(String)')}, lowerUTF8({value}))"
        else:
            fn = "position" if f.case_sensitive else "positionCaseInsensitiveUTF8"
            test = f"arrayExists(x -> {fn}({value}, x) > 0, {self.p.bind(values, 'Array(String)')})"
        return f"(NOT {test})" if f.op.endswith("_not") else test

    def where(self, expr: Expr) -> str:
        if not self.q.filters:
            return "1"
        return " AND ".join(self.condition(f, expr) for f in self.q.filters)

    # -- the query -------------------------------------------------------------

    def visitors(self, event_cols: list[str]) -> tuple[str, list[str]]:
        """One row per visitor (vkey, a 64-bit hash of the id): its events in time order, split into visits.

        Array functions over each visitor's events rather than window functions over all
        of them: one hash aggregation and many small sorts instead of a global sort. The
        sort key is an integer (received_at in ms, a hash of event_id for ties, pageview
        or not); every other array is put in that order by it. No lambda captures an
        array (ClickHouse would copy it once per element). Per visit: `v_pageviews`,
        `v_events`, `v_duration` (ms) and one array per visit attribute; per event, in
        time order: `s_<col>` and `vno` (the visit number). Returns the SQL and the names
        of the per-visit arrays.
        """
        bots = "" if self.q.include_bots else " AND is_bot = 0"
        scope = self.p.bind(self.scope, "String")
        start = self.p.bind(self.q.start.replace(tzinfo=None), "DateTime64(3, 'UTC')")
        end = self.p.bind(self.q.end.replace(tzinfo=None), "DateTime64(3, 'UTC')")
        gap = self.p.bind(self.gap_ms, "Int64")
        first_cols = {FIRST_EVENT_COLUMNS[d] for d in self.visit_dims if d in FIRST_EVENT_COLUMNS}
        pages = any(d in ("visit:entry_page", "visit:exit_page") for d in self.visit_dims)
        cols = sorted(set(event_cols) | ({"page"} if pages else set()))
        sources = {"page": PAGE}
        arrays = "".join(f", arraySort((x, k) -> k, groupArray({sources.get(c, c)}), keys) AS s_{c}" for c in cols)
        if first_cols:  # the first events' values: picked in arrival order, then put in visit order
            arrays += (
                ", arraySort((s, p) -> p, starts, arraySort((i, k) -> k, arrayEnumerate(keys), keys)) AS starts_orig"
                ", arrayFilter((k, s) -> s = 1, keys, starts_orig) AS start_keys"
            )
            arrays += "".join(
                f", arraySort((x, k) -> k, arrayFilter((x, s) -> s = 1, groupArray(toString({c})), starts_orig), start_keys) AS f_{c}"
                for c in sorted(first_cols)
            )
        per_visit = ["v_pageviews", "v_events", "v_duration"]
        # segments (the rollup): visits also cut at the first campaign of the range (beacon/query/rollup.py)
        starts, cut = (
            (
                "plain_starts",
                "indexOf(arrayMap(c -> c != 0, camp), 1) AS fcp, "
                "if(fcp > 0 AND arrayElement(plain_starts, fcp) = 0, fcp, 0) AS cut_pos, "
                "arrayMap((s, i) -> toUInt8(s = 1 OR i = cut_pos), plain_starts, positions) AS starts, ",
            )
            if self.segments
            else ("starts", "")
        )
        visit_attrs = ""
        for d in self.visit_dims:
            if d in ("visit:entry_page", "visit:exit_page"):
                fn = "argMinIf" if d == "visit:entry_page" else "argMaxIf"
                expr = f"arrayReduceInRanges('{fn}', ranges, s_page, positions, is_pv)"
            else:
                expr = f"f_{FIRST_EVENT_COLUMNS[d]}"
            visit_attrs += f", {expr} AS {self.cols[d]}"
            per_visit.append(self.cols[d])
        restrict = self.restrict(scope, start, end, bots)
        day, by_day, in_scope = "", "", f"scope = {scope}"
        if self.by_day:
            scopes = self.p.bind([s for s, _ in self.by_day], "Array(String)")
            days = self.p.bind([d for _, d in self.by_day], "Array(Date)")
            day = "toString(scope) AS r_scope, toDate(received_at) AS r_day, "
            in_scope = f"has({scopes}, scope)"
            by_day = (
                f" AND (toString(scope), toDate(received_at)) IN (SELECT x.1, x.2 FROM (SELECT arrayJoin(arrayZip({scopes}, {days})) AS x))"
            )
        return (
            f"SELECT vkey, {day}max(visitor_id != '') AS has_id, "
            "groupArray((toUnixTimestamp64Milli(received_at) * 1024 + cityHash64(event_id) % 1024) * 2 "
            f"+ ({PAGEVIEW})) AS keys, "
            "arraySort((c, k) -> k, groupArray(if(utm_source = '' AND utm_medium = '' AND utm_campaign = '', 0, "
            f"cityHash64(utm_source, utm_medium, utm_campaign))), keys) AS camp{arrays}, "
            "arraySort(keys) AS sorted, "
            "arrayMap(k -> intDiv(k, 2048), sorted) AS ms, "
            "arrayMap(k -> toUInt8(k % 2), sorted) AS is_pv, "
            "arrayEnumerate(sorted) AS positions, "
            "arrayFill(x -> x != 0, camp) AS carried, "
            f"arrayMap((t, tp, c, pc) -> toUInt8((t - tp > {gap}) OR (c != 0 AND pc != 0 AND c != pc)), ms, "
            f"arrayPushFront(arrayPopBack(ms), 0), camp, arrayPushFront(arrayPopBack(carried), 0)) AS {starts}, "
            f"{cut}"
            "arrayCumSum(starts) AS vno, "
            "arrayFilter((i, s) -> s = 1, positions, starts) AS first_i, "
            "arrayMap((a, b) -> (a, toUInt32(b - a)), first_i, arrayPushBack(arrayPopFront(first_i), length(keys) + 1)) "
            "AS ranges, "
            "arrayReduceInRanges('sum', ranges, is_pv) AS v_pageviews, "
            "arrayMap(r -> r.2, ranges) AS v_events, "
            "arrayMap((a, b) -> a - b, arrayReduceInRanges('max', ranges, ms), arrayReduceInRanges('min', ranges, ms)) "
            f"AS v_duration{visit_attrs} "
            f"FROM (SELECT *, if(visitor_id = '', cityHash64(event_id), cityHash64(visitor_id)) AS vkey{self.shop(scope)} "
            f"FROM {self.table} WHERE {in_scope} AND received_at >= {start} AND received_at < {end}{bots}{restrict}{by_day}) "
            f"GROUP BY {'r_scope, vkey, r_day' if self.by_day else 'vkey'}"
        ), per_visit

    def restrict(self, scope: str, start: str, end: str, bots: str) -> str:
        """With `only_with`: only the visitors with a matching event in the range (all their events, so their
        visits are whole); used where no other visitor can change the answer (purchases, a funnel's first step)."""
        if not self.only_with:
            return ""
        source = self.purchases if self.purchases and self.only_with == PURCHASE else self.table
        return (
            " AND if(visitor_id = '', cityHash64(event_id), cityHash64(visitor_id)) IN (SELECT if(visitor_id = '', "
            f"cityHash64(event_id), cityHash64(visitor_id)) FROM {source} WHERE scope = {scope} AND received_at >= {start} "
            f"AND received_at < {end}{bots} AND ({self.only_with}))"
        )

    def shop(self, scope: str) -> str:
        """Issue 12's computed columns of each event (`counted`, `account`), when the query needs them."""
        if not self.commerce:
            return ""
        return commerce.inner(self.table, self.table + "_accounts", scope, self.customers, self.purchases)

    def events_only(self) -> str:
        """One row per matching event, for queries that need no visit (no visit metric or dimension)."""
        if self.rollup is not None:  # no filter, no dimension but time:day: the day's segments hold its events
            dims = "".join(f"toString(day) AS {column(d)}, " for d in self.q.dimensions)
            return (
                f"SELECT {dims}vkey, has_id, events AS m_events, pageviews AS m_pageviews, 0 AS v_pageviews, "
                f"0 AS v_duration FROM {self.rollup.table} WHERE {self.rolled_where()}"
            )
        bots = "" if self.q.include_bots else " AND is_bot = 0"
        scope = self.p.bind(self.scope, "String")
        start = self.p.bind(self.q.start.replace(tzinfo=None), "DateTime64(3, 'UTC')")
        end = self.p.bind(self.q.end.replace(tzinfo=None), "DateTime64(3, 'UTC')")
        rows = (
            "SELECT *, if(visitor_id = '', cityHash64(event_id), cityHash64(visitor_id)) AS vkey, "
            f"toUInt8(visitor_id != '') AS has_id, 1 AS m_events, toUInt8({PAGEVIEW}) AS m_pageviews, "
            f"0 AS v_pageviews, 0 AS v_duration, {PAGE} AS page "
            f"FROM {self.table} WHERE scope = {scope} AND received_at >= {start} AND received_at < {end}{bots}"
        )
        dims = "".join(f"{self.event_expr(d)} AS {column(d)}, " for d in self.q.dimensions)
        return (
            f"SELECT {dims}vkey, has_id, m_events, m_pageviews, v_pageviews, v_duration FROM ({rows}) WHERE {self.where(self.event_expr)}"
        )

    def purchases_only(self) -> bool:
        """Only conversions and revenue of purchases, no dimension: rows without a purchase add nothing."""
        only = set(self.q.metrics) <= {"conversions", "total_revenue", "average_revenue"}
        return only and not self.q.dimensions and "event:goal" not in self.filter_dims

    def events_shop(self) -> str:
        """Commerce without visits (no visit metric, dimension or filter): one row per (dimensions, visitor).

        Conversions, revenue and orders are sums over events and `converted` a distinct count of
        visitors, so they need no visit; only `visits` would, and it is not asked here. Without a
        dimension, a query of conversions and revenue alone reads only the purchases."""
        bots = "" if self.q.include_bots else " AND is_bot = 0"
        scope = self.p.bind(self.scope, "String")
        start = self.p.bind(self.q.start.replace(tzinfo=None), "DateTime64(3, 'UTC')")
        end = self.p.bind(self.q.end.replace(tzinfo=None), "DateTime64(3, 'UTC')")
        purchases = f" AND {PURCHASE}" if self.purchases_only() else ""
        # only purchases: their copy (FINAL: a purchase copied twice is read once), not the events
        source = f"{self.purchases} FINAL" if purchases and self.purchases else self.table
        rows = (
            f"SELECT *, if(visitor_id = '', cityHash64(event_id), cityHash64(visitor_id)) AS vkey, "
            f"toUInt8(visitor_id != '') AS has_id, {PAGE} AS page{self.shop(scope)} "
            f"FROM {source} WHERE scope = {scope} AND received_at >= {start} AND received_at < {end}{bots}{purchases}"
        )
        dims = [f"{self.event_expr(d)} AS {column(d)}" for d in self.q.dimensions]
        shop = commerce.aggregates(self.q, self.filter_dims, self.customers)
        group = ", ".join([column(d) for d in self.q.dimensions] + ["vkey"])
        return (
            f"SELECT {''.join(d + ', ' for d in dims)}vkey, any(has_id) AS has_id, count() AS m_events, "
            f"countIf({PAGEVIEW}) AS m_pageviews, 0 AS v_pageviews, 0 AS v_duration{shop} "
            f"FROM ({rows}) WHERE {self.where(self.event_expr)} GROUP BY {group}"
        )

    def shop_rolled(self) -> bool:
        """Conversions and revenue of purchases with only visit:* filters: each purchase (from the copy) takes
        its visit from the rollup, so no visit is computed from events (`purchase_visits`)."""
        visit_only = bool(self.filter_dims) and all(d.startswith("visit:") for d in self.filter_dims)
        return bool(self.purchases) and self.commerce and not self.customers and self.purchases_only() and visit_only

    def per_visit(self) -> str:
        """One row per (dimension values, visit) with the visit's and the matching events' counts."""
        self.visit_dims = sorted({d for d in (*self.q.dimensions, *self.filter_dims) if d.startswith("visit:")})
        if self.rollup is not None and self.shop_rolled():
            return self.purchase_visits()
        if self.rollup is not None and asof.props_split(self):  # the carrying events, each with its visit from the rollup
            for d in self.visit_dims:
                self.cols[d] = column(d, "a_") + "_1"
            return asof.props_rows(self)
        if self.rollup is not None and asof.event_split(self):  # the events passing the event filters, with their visits
            for d in self.visit_dims:
                self.cols[d] = column(d, "a_") + "_1"
            return asof.event_rows(self)
        if self.rollup is not None and self.paged:  # event:page from each visit's pages in the rollup
            for d in self.visit_dims:
                self.cols[d] = column(d, "a_") + "_1"
            # without a visit metric, dimension or filter, how segments glue into visits changes no answer (pageviews and
            # events are sums, visitors distinct keys, `visits` is not computed): every segment is read as it is
            whole = not self.visit_dims and not set(self.q.metrics) & VISIT_METRICS
            glue = [] if whole else list(self.rollup.irregular)
            irregular = self.p.bind(glue, "Array(UInt64)")
            rolled = self.rolled(irregular)
            return f"{rolled} UNION ALL {self.glued(irregular)}" if glue else rolled
        if not self.visit_dims and not set(self.q.metrics) & VISIT_METRICS:
            return self.events_shop() if self.commerce else self.events_only()
        for d in self.visit_dims:
            self.cols[d] = column(d, "a_")
        if not self.event_plan:
            if self.rollup is not None:
                for d in self.visit_dims:
                    self.cols[d] += "_1"
                irregular = self.p.bind(list(self.rollup.irregular), "Array(UInt64)")
                if not self.rollup.irregular:
                    return self.rolled(irregular)
                return f"{self.rolled(irregular)} UNION ALL {self.glued(irregular)}"
            visitors, arrays = self.visitors([])
            joined = ", ".join(f"{a} AS {a}_1" for a in arrays)
            for d in self.visit_dims:
                self.cols[d] += "_1"
            dim_cols = "".join(f"{self.cols[d]} AS {column(d)}, " for d in self.q.dimensions)
            visits = (
                f"SELECT {dim_cols}vkey, has_id, v_events_1 AS m_events, v_pageviews_1 AS m_pageviews, "
                f"v_pageviews_1 AS v_pageviews, v_duration_1 AS v_duration "
                f"FROM ({visitors}) ARRAY JOIN {joined} WHERE {self.where(lambda d: self.cols[d])}"
            )
            return visits

        event_cols = ["event", "page"]
        if any(d.startswith(PROP_PREFIX) for d in (*self.q.dimensions, *self.filter_dims)):
            event_cols.append("props")
        if any(d.startswith("time:") for d in self.q.dimensions):
            event_cols.append("received_at")
        if self.commerce:
            event_cols += sorted(commerce.columns(self.customers))
        shop = commerce.aggregates(self.q, self.filter_dims, self.customers) if self.commerce else ""
        if self.commerce and self.purchases_only():  # no other visitor has a conversion or revenue to count
            self.only_with = PURCHASE
        visitors, arrays = self.visitors(event_cols)
        # each visit's values repeated for each of its events, so one ARRAY JOIN gives every event its visit
        spread = ", ".join(
            f"arrayFlatten(arrayMap((v, r) -> arrayResize([v], r.2, v), {a}, ranges)) AS {a}_1" for a in arrays if a != "v_events"
        )
        for d in self.visit_dims:
            self.cols[d] += "_1"
        joined = ", ".join([f"s_{c} AS {c}" for c in event_cols] + [f"{a}_1" for a in arrays if a != "v_events"])
        dims = [f"{self.event_expr(d)} AS {column(d)}" for d in self.q.dimensions]
        select_dims = ", ".join(dims) + ", " if dims else ""
        group = ", ".join([column(d) for d in self.q.dimensions] + ["vkey", "visit_no"])
        rows = f"SELECT vkey, has_id, vno, ranges, {', '.join(f's_{c}' for c in event_cols)}, {spread} FROM ({visitors})"
        return (
            f"SELECT {select_dims}vkey, visit_no, any(has_id) AS has_id, count() AS m_events, "
            f"countIf({PAGEVIEW}) AS m_pageviews, any(v_pageviews_1) AS v_pageviews, any(v_duration_1) AS v_duration{shop} "
            f"FROM ({rows}) ARRAY JOIN vno AS visit_no, {joined} WHERE {self.where(self.event_expr)} GROUP BY {group}"
        )

    def purchase_visits(self) -> str:
        """Per (visitor, visit) with a purchase: the commerce columns of its purchases, shaped like the event plan's rows.

        A purchase's visit is the visitor's last visit starting at or before it (ASOF JOIN): a
        segment of the rollup for a regular visitor, a glued visit for an irregular one (a
        visitor's visits are disjoint in time and every event of the range is in one). Only the
        visits of visitors with a purchase in the range are read."""
        for d in self.visit_dims:
            self.cols[d] = column(d, "a_") + "_1"
        bots = "" if self.q.include_bots else " AND is_bot = 0"
        scope = self.p.bind(self.scope, "String")
        start = self.p.bind(self.q.start.replace(tzinfo=None), "DateTime64(3, 'UTC')")
        end = self.p.bind(self.q.end.replace(tzinfo=None), "DateTime64(3, 'UTC')")
        vkey = "if(visitor_id = '', cityHash64(event_id), cityHash64(visitor_id))"
        bought = (
            f"SELECT {vkey} FROM {self.purchases} WHERE scope = {scope} AND received_at >= {start} AND received_at < {end}{bots} "
            f"AND {PURCHASE}"
        )
        irregular = self.p.bind(list(self.plan.irregular), "Array(UInt64)")
        source = {d: f"`{c}`" for d, c in FIRST_EVENT_COLUMNS.items()} | {"visit:entry_page": "entry_page", "visit:exit_page": "exit_page"}
        attrs = "".join(f", {source[d]} AS {self.cols[d]}" for d in self.visit_dims)
        visits = (
            f"SELECT vkey, start_ms AS v_start{attrs} FROM {self.plan.table} WHERE {self.rolled_where()} "
            f"AND vkey NOT IN (SELECT arrayJoin({irregular})) AND vkey IN ({bought})"
        )
        if self.plan.irregular:
            visits += f" UNION ALL {self.glued(irregular, starts=True)}"
        rows = (
            f"SELECT *, {vkey} AS vkey, toUInt8(visitor_id != '') AS has_id, toUnixTimestamp64Milli(received_at) AS t_ms"
            f"{self.shop(scope)} FROM {self.purchases} FINAL WHERE scope = {scope} AND received_at >= {start} "
            f"AND received_at < {end}{bots} AND {PURCHASE}"
        )
        shop = commerce.aggregates(self.q, self.filter_dims, self.customers)
        return (
            f"SELECT p.vkey AS vkey, v.v_start AS visit_no, any(p.has_id) AS has_id, count() AS m_events, "
            f"toUInt64(0) AS m_pageviews, 0 AS v_pageviews, 0 AS v_duration{shop} "
            f"FROM ({rows}) AS p ASOF JOIN ({visits}) AS v ON p.vkey = v.vkey AND p.t_ms >= v.v_start "
            f"WHERE {self.where(lambda d: 'v.' + self.cols[d])} GROUP BY p.vkey, v.v_start"
        )

    def rolled_where(self) -> str:
        """The rows of the range's days, each day's of the computation its mark chose. As a (day, sig) set, the
        primary key (scope, timeout, bots, day, sig, vkey) skips the granules of a day's other computations (the
        one kept beside the newest, an earlier release's): an expression of day picking the sig read them all."""
        r = self.plan
        first = self.p.bind(r.first, "Date")
        sigs = self.p.bind(list(r.sigs), "Array(UInt64)")
        return (
            f"scope = {self.p.bind(self.scope, 'String')} AND timeout = {self.p.bind(self.gap_ms // 60_000, 'UInt16')} "
            f"AND bots = {int(self.q.include_bots)} AND day >= {first} "
            f"AND day < {self.p.bind(r.first + dt.timedelta(days=len(r.sigs)), 'Date')} "
            f"AND (day, sig) IN (SELECT arrayJoin(arrayZip(arrayMap(i -> toDate({first} + i - 1), arrayEnumerate({sigs})), {sigs})))"
        )

    def rolled(self, irregular: str) -> str:
        """One row per visit from the rollup, every visitor but the irregular ones, shaped like the visit plan's rows."""
        source = {d: f"`{c}`" for d, c in FIRST_EVENT_COLUMNS.items()} | {"visit:entry_page": "entry_page", "visit:exit_page": "exit_page"}
        attrs = "".join(f"{source[d]} AS {self.cols[d]}, " for d in self.visit_dims)
        pages = f"day AS pg_day, {self.keyed(lambda c: c)}, " if self.paged else ""
        rows = (
            f"SELECT {attrs}{pages}vkey, has_id, events AS m_events, pageviews AS m_pageviews, pageviews AS v_pageviews, "
            f"duration_ms AS v_duration FROM {self.plan.table} WHERE {self.rolled_where()} "
            f"AND vkey NOT IN (SELECT arrayJoin({irregular}))"
        )
        if self.paged:
            return self.paged_rows(rows, lambda d: self.cols[d])
        dim_cols = "".join(f"{self.cols[d]} AS {column(d)}, " for d in self.q.dimensions)
        return (
            f"SELECT {dim_cols}vkey, has_id, m_events, m_pageviews, v_pageviews, v_duration FROM ({rows}) "
            f"WHERE {self.where(lambda d: self.cols[d])}"
        )

    def glued(self, irregular: str, starts: bool = False, totals: bool = False) -> str:
        """The irregular visitors' visits: their rollup segments in time order, glued where the range joins them.

        A segment starts a visit unless it is the first of its day (after the range's first day)
        and comes within the timeout of the visitor's previous segment without a campaign change,
        or it was cut at the day's first campaign and the campaign carried from earlier days of
        the range is none or the same (the rules of the query-time plan, applied to segments).
        """
        source = {d: f"`{c}`" for d, c in FIRST_EVENT_COLUMNS.items()} | {"visit:entry_page": "entry_page", "visit:exit_page": "exit_page"}
        names = [
            "start_ms",
            "duration_ms",
            "pageviews",
            "events",
            "first_camp",
            "last_camp",
            "link",
            "cut",
            "day",
            "entry_page",
            "exit_page",
        ] + [source[d] for d in self.visit_dims if d in FIRST_EVENT_COLUMNS]
        names += list(KEY_COLUMNS[self.key]) if self.paged else []
        names += ["seq_names", "seq_ms"] if self.sequences else []
        uniq = list(dict.fromkeys(names))
        alias = {n: "g_" + n.strip("`") for n in uniq}
        # each visitor's segments in time order: one array of tuples, sorted once, then each column's array. Never one
        # groupArray per column: over a sparse column (a part of an earlier release) chDB put its non-default values
        # first when one visitor was gathered, so `link` landed on the wrong segment (beacon/columns.py)
        gathered = f"arraySort(x -> x.1, groupArray(({', '.join(uniq)}))) AS g_rows"
        sorted_arrays = ", ".join(f"g_rows.{i} AS {alias[n]}" for i, n in enumerate(uniq, 1))
        first = self.p.bind(self.plan.first, "Date")
        gap = self.p.bind(self.gap_ms, "Int64")
        per_visit = []
        for d in self.visit_dims:
            if d == "visit:entry_page":
                expr = "arrayReduceInRanges('argMinIf', ranges, g_entry_page, positions, arrayMap(p -> p > 0, g_pageviews))"
            elif d == "visit:exit_page":
                expr = "arrayReduceInRanges('argMaxIf', ranges, g_exit_page, positions, arrayMap(p -> p > 0, g_pageviews))"
            else:
                expr = f"arrayReduceInRanges('argMin', ranges, {alias[source[d]]}, positions)"
            per_visit.append((expr, self.cols[d]))
        per_visit += [
            ("arrayReduceInRanges('sum', ranges, g_pageviews)", "v_pv"),
            ("arrayReduceInRanges('sum', ranges, g_events)", "v_ev"),
            (
                "arrayMap((a, b) -> a - b, arrayReduceInRanges('max', ranges, ends), arrayReduceInRanges('min', ranges, g_start_ms))",
                "v_dur",
            ),
        ]
        if starts:  # each visit's start (the purchases' ASOF JOIN)
            per_visit.append(("arrayReduceInRanges('min', ranges, g_start_ms)", "v_st"))
        if self.sequences:  # a glued visit's events: its segments' sequences in turn, at their times (ms)
            times = "arrayMap((t, s) -> arrayMap(x -> toUInt64(s + x), t), g_seq_ms, g_start_ms)"
            per_visit += [("arrayReduceInRanges('groupArrayArray', ranges, g_seq_names)", "v_sqn")]
            per_visit += [(f"arrayReduceInRanges('groupArrayArray', ranges, {times})", "v_sqt")]
        if self.paged:  # a glued visit's pages: its segments' pages, pageviews and events summed
            maps = ", ".join("g_" + c for c in KEY_COLUMNS[self.key])
            if self.key == "pair":  # summed by (page, name)
                maps = "arrayMap((a, b) -> arrayZip(a, b), g_pn_pages, g_pn_names), g_pn_events"
            per_visit.append((f"arrayReduceInRanges('sumMap', ranges, {maps})", "v_pagemap"))
        # one subquery per step: ClickHouse's analyzer expands an alias into every expression that uses it, so the
        # whole chain in one SELECT (ranges from first_i from starts from pe, ...) took ~60 ms to plan, as long as
        # the panel's own work (docs/benchmarks.md, "Planning the glued visits")
        grouped = (
            f"SELECT vkey, has_id, {sorted_arrays} FROM (SELECT vkey, any(has_id) AS has_id, {gathered} "
            f"FROM {self.plan.table} WHERE {self.rolled_where()} AND vkey IN (SELECT arrayJoin({irregular})) GROUP BY vkey)"
        )
        edges = (
            "SELECT *, arrayEnumerate(g_start_ms) AS positions, arrayMap((s, d) -> s + d, g_start_ms, g_duration_ms) AS ends, "
            "arrayPushFront(arrayPopBack(arrayFill(x -> x != 0, g_last_camp)), 0) AS pc, "
            f"arrayPushFront(arrayPopBack(ends), 0) AS pe FROM ({grouped})"
        )
        starts_ = (
            "SELECT *, arrayMap((i, h, c, k, s, p, q, dy) -> toUInt8(i = 1 OR NOT ("
            f"(h = 1 AND dy > {first} AND s - p <= {gap} AND NOT (c != 0 AND q != 0 AND c != q)) "
            "OR (k = 1 AND NOT (q != 0 AND q != c)))), "
            f"positions, g_link, g_first_camp, g_cut, g_start_ms, pe, pc, g_day) AS starts FROM ({edges})"
        )
        firsts = f"SELECT *, arrayFilter((i, s) -> s = 1, positions, starts) AS first_i FROM ({starts_})"
        ranges = (
            "SELECT *, arrayMap((a, b) -> (a, toUInt32(b - a)), first_i, arrayPushBack(arrayPopFront(first_i), "
            f"length(starts) + 1)) AS ranges FROM ({firsts})"
        )
        visits = "SELECT *, " + ", ".join(f"{e} AS {a}" for e, a in per_visit) + f" FROM ({ranges})"
        joined = ", ".join(f"{a} AS {a}_j" for _, a in per_visit)
        rename = {self.cols[d]: f"{self.cols[d]}_j" for d in self.visit_dims}
        if starts:
            attrs = "".join(f", {self.cols[d]}_j AS {self.cols[d]}" for d in self.visit_dims)
            if totals:  # and its counts (and pages, when paged): beacon/query/asof.py
                attrs += ", has_id, v_pv_j AS v_pv, v_ev_j AS v_ev, v_dur_j AS v_dur"
                attrs += ", v_pagemap_j.1 AS pg_pages" if self.paged else ""
                attrs += ", v_sqn_j AS sq_names, v_sqt_j AS sq_ms" if self.sequences else ""
            return f"SELECT vkey, v_st_j AS v_start{attrs} FROM ({visits}) ARRAY JOIN {joined}"
        if self.daily:  # one row per segment (one day's piece of a visit) with its visit's values
            spread = "".join(
                f", arrayFlatten(arrayMap((v, r) -> arrayResize([v], r.2, v), {self.cols[d]}, ranges)) AS {self.cols[d]}_s"
                for d in self.visit_dims
            )
            segments = "".join(f"{self.cols[d]}_s AS {rename[self.cols[d]]}, " for d in self.visit_dims)
            attrs = "".join(f"{rename[self.cols[d]]}, " for d in self.visit_dims)
            rows = (
                f"SELECT {attrs}vkey, has_id, 0 AS v_pageviews, 0 AS v_duration, pg_day, "
                f"{self.keyed(lambda c: 'g_' + c)} "
                f"FROM (SELECT *{spread} FROM ({visits})) ARRAY JOIN {segments}g_day AS pg_day, "
                + ", ".join("g_" + c for c in KEY_COLUMNS[self.key])
            )
            return self.paged_rows(rows, lambda d: rename[self.cols[d]])
        if self.paged:
            attrs = "".join(f"{rename[self.cols[d]]}, " for d in self.visit_dims)
            rows = (
                f"SELECT {attrs}vkey, has_id, v_ev_j AS m_events, v_pv_j AS m_pageviews, v_pv_j AS v_pageviews, v_dur_j AS v_duration, "
                f"{self.keyed(self.glued_map)} "
                f"FROM ({visits}) ARRAY JOIN {joined}"
            )
            return self.paged_rows(rows, lambda d: rename[self.cols[d]])
        where = self.where(lambda d: rename[self.cols[d]])
        dim_cols = "".join(f"{rename[self.cols[d]]} AS {column(d)}, " for d in self.q.dimensions)
        return (
            f"SELECT {dim_cols}vkey, has_id, v_ev_j AS m_events, v_pv_j AS m_pageviews, v_pv_j AS v_pageviews, "
            f"v_dur_j AS v_duration FROM ({visits}) ARRAY JOIN {joined} WHERE {where}"
        )

    def keyed(self, col: Callable[[str], str]) -> str:
        """`pg_pages`, `pg_pvs`, `pg_evs` of a visit: its pages, or (for event:name) its event names, with their
        pageviews and events (an event name's pageviews are its events when it is `pageview`); for a pair,
        `pg_pages` and `pg_names` hold each (page, name) of the visit. `col` names a rollup column's array."""
        if self.key == "event:page":
            return f"{col('pages')} AS pg_pages, {col('page_pageviews')} AS pg_pvs, {col('page_events')} AS pg_evs"
        names, evs = (col("pn_names"), col("pn_events")) if self.key == "pair" else (col("names"), col("name_events"))
        pvs_of_names = f"arrayMap((k, n) -> if(k = 'pageview', n, toUInt32(0)), {names}, {evs})"
        pages = f"{col('pn_pages')} AS pg_pages, {names} AS pg_names" if self.key == "pair" else f"{names} AS pg_pages"
        return f"{pages}, {pvs_of_names} AS pg_pvs, {evs} AS pg_evs"

    def glued_map(self, name: str) -> str:
        """A rollup column's array for a glued visit, from its summed map `v_pagemap_j` (keys, then sums)."""
        if self.key == "pair":
            return {"pn_pages": "arrayMap(t -> t.1, v_pagemap_j.1)", "pn_names": "arrayMap(t -> t.2, v_pagemap_j.1)"}.get(
                name, "v_pagemap_j.2"
            )
        return f"v_pagemap_j.{KEY_COLUMNS[self.key].index(name) + 1}"

    def paged_rows(self, rows: str, attr: Callable[[str], str]) -> str:
        """Rows of the event plan's shape from visits with their day and pages (`pg_day`, `pg_pages`, ...).

        An event's filter depends only on its page (name, or both) and its visit, so the events of
        one page of a visit all match or all fail: with event:page as a dimension, one row per
        (page, visit) that matches; without, one row per visit with a matching page, counting its
        matching pages' pageviews and events (as the event plan counts the matching events). For a
        pair with only one of its keys as a dimension, one row per distinct value of that key
        among the visit's matching pairs, with their sums (as the event plan groups them)."""

        keys = list(KEY_VARS) if self.key == "pair" else [self.key]
        var = {k: KEY_VARS[k] for k in keys}

        def expr(d: str) -> str:
            return var[d] if d in var else "toString(pg_day)" if d == "time:day" else attr(d)

        # filters on the page (or name) are checked per page; the others once per visit, before any page
        on_key = [f for f in self.q.filters if dimensions_of(f) & set(keys)]
        per_row = " AND ".join(self.condition(f, expr) for f in self.q.filters if f not in on_key) or "1"
        per_page = " AND ".join(self.condition(f, expr) for f in on_key) or "1"
        arrays = {"event:page": "pg_pages", "event:name": "pg_names" if self.key == "pair" else "pg_pages"}
        args, lists = ", ".join(var[k] for k in keys), ", ".join(arrays[k] for k in keys)
        dims = "".join(f"{expr(d)} AS {column(d)}, " for d in self.q.dimensions)
        as_dims = [k for k in keys if k in self.q.dimensions]
        if as_dims == keys:  # one row per matching page (name, pair) of a visit
            joined = ", ".join(f"{arrays[k]} AS {var[k]}" for k in keys)
            return (
                f"SELECT {dims}vkey, has_id, x_ev AS m_events, x_pv AS m_pageviews, v_pageviews, v_duration FROM ({rows}) "
                f"ARRAY JOIN {joined}, pg_pvs AS x_pv, pg_evs AS x_ev WHERE {per_row} AND {per_page}"
            )
        one = on_key[0] if len(on_key) == 1 else None
        clicked = isinstance(one, Condition) and one.dimension == self.key and one.op == "is" and one.case_sensitive
        if self.key != "pair" and not as_dims and isinstance(one, Condition) and clicked and len(one.values) == 1:
            # one page (or name) clicked: each visit's own entry for it, found once (a visit's pages and names are
            # distinct), where the general mask costs a lambda per page and two sums (docs/benchmarks.md)
            value = self.p.bind(one.values[0], "String")
            at = f"indexOf(pg_pages, {value})"
            return (
                f"SELECT {dims}vkey, has_id, pg_evs[{at}] AS m_events, pg_pvs[{at}] AS m_pageviews, v_pageviews, v_duration "
                f"FROM ({rows}) WHERE {per_row} AND has(pg_pages, {value})"
            )
        matching = f"SELECT *, arrayMap(({args}) -> toUInt8({per_page}), {lists}) AS pg_ok FROM ({rows}) WHERE {per_row}"
        if as_dims:  # a pair with one of its keys as the dimension: one row per value of the visit's matching pairs
            key, other = as_dims[0], arrays[as_dims[0]]
            summed = "arraySum((x, ok, n) -> if(ok = 1 AND x = {v}, n, 0), {a}, pg_ok, {n})"
            return (
                f"SELECT {dims}vkey, has_id, {summed.format(v=var[key], a=other, n='pg_evs')} AS m_events, "
                f"{summed.format(v=var[key], a=other, n='pg_pvs')} AS m_pageviews, v_pageviews, v_duration "
                f"FROM ({matching}) ARRAY JOIN arrayDistinct(arrayFilter((x, ok) -> ok = 1, {other}, pg_ok)) AS {var[key]}"
            )
        return (
            f"SELECT {dims}vkey, has_id, arraySum((ok, n) -> ok * n, pg_ok, pg_evs) AS m_events, "
            f"arraySum((ok, n) -> ok * n, pg_ok, pg_pvs) AS m_pageviews, v_pageviews, v_duration "
            f"FROM ({matching}) WHERE has(pg_ok, 1)"
        )

    def needed(self) -> set[str]:
        """The columns of `AGGREGATES` the query's metrics read; the others are 0, so ClickHouse neither reads
        nor computes what feeds them (e.g. a page filter's matching pageviews for a panel of visitors)."""
        return {c for m in self.q.metrics for c in NEEDS.get(m, ())}

    def build(self, limit: int, offset: int, total_rows: bool) -> tuple[str, dict[str, object]]:
        """Columns: the dimensions, then visitors, visits, pageviews, events, bounces,
        duration_ms (sum), visit_pageviews (sum), and total_rows when asked."""
        inner = self.per_visit()
        dims = [column(d) for d in self.q.dimensions]
        order_terms = []
        for name, direction in self.q.order_by:
            order_terms.append(f"{column(name) if name in self.q.dimensions else 'o_' + name} {direction.upper()}")
        order_terms += [f"{c} ASC" for c in dims if not any(t.startswith(c + " ") for t in order_terms)]
        select = ", ".join(dims + [f"{expr} AS {name}" if name in self.needed() else f"0 AS {name}" for name, expr in AGGREGATES])
        select += commerce.top() if self.commerce else ""  # columns 7..11 after the dimensions
        ordering = {
            "o_visitors": "visitors",
            "o_visits": "visits",
            "o_pageviews": "pageviews",
            "o_events": "events",
            "o_bounce_rate": "if(visits = 0, 0, bounces / visits)",
            "o_visit_duration": "if(visits = 0, 0, duration_ms / visits)",
            "o_views_per_visit": "if(visits = 0, 0, visit_pageviews / visits)",
        }
        if self.commerce:
            ordering |= {"o_conversions": "conversions", "o_customers": "customers"}
        select += "".join(f", {expr} AS {alias}" for alias, expr in ordering.items())
        if total_rows:
            select += ", count() OVER () AS total_rows"
        group = f" GROUP BY {', '.join(dims)}" if dims else ""
        lim = self.p.bind(limit, "UInt64")
        off = self.p.bind(offset, "UInt64")
        order = f" ORDER BY {', '.join(order_terms)}" if order_terms else ""
        sql = f"SELECT {select} FROM ({inner}){group}{order} LIMIT {lim} OFFSET {off}"
        return sql, self.p.values
