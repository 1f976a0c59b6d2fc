"""A typed Query -> one ClickHouse SELECT; every value the client sent is a bound parameter.

Visits are computed at query time with window functions, per (scope, visitor) in
received_at order: an event starts a new visit when it comes more than the visit
timeout after the visitor's previous event, or when it carries a campaign
(utm_source, utm_medium, utm_campaign) other than the last campaign the visitor came
with. The visit's attributes (visit:*) are its first event's values; entry and exit
page are its first and last pageview's path; a bounce is a visit of one pageview.

Two plans give the same numbers. When every dimension and filter is about the visit,
the visits are grouped (a hash aggregation, cheap); when one is about single events
(event:*, time:*), each event gets its visit's attributes by a window over the visit,
the filter is applied to events, and a visit counts when one of its events matches.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

from beacon.query.model import (
    PROP_PREFIX,
    Combination,
    Condition,
    Filter,
    Negation,
    Query,
    is_event_level,
)

ORDER = "(received_at, event_id)"

# visit:<name> -> the column of the visit's first event it takes
FIRST_EVENT_COLUMNS = {
    "visit:source": "source", "visit:channel": "channel", "visit:referrer": "referrer",
    "visit:utm_source": "utm_source", "visit:utm_medium": "utm_medium", "visit:utm_campaign": "utm_campaign",
    "visit:utm_term": "utm_term", "visit:utm_content": "utm_content",
    "visit:browser": "browser", "visit:browser_version": "browser_version", "visit:os": "os",
    "visit:os_version": "os_version", "visit:device": "device",
    "visit:country": "country", "visit:region": "region", "visit:city": "city",
}
PAGE = "path(url)"
PAGEVIEW = "event = 'pageview'"


def visit_aggregate(dim: str) -> str:
    """The aggregate over one visit's events that gives visit dimension `dim`."""
    if dim == "visit:entry_page":
        return f"argMinIf({PAGE}, {ORDER}, {PAGEVIEW})"
    if dim == "visit:exit_page":
        return f"argMaxIf({PAGE}, {ORDER}, {PAGEVIEW})"
    return f"argMin(toString({FIRST_EVENT_COLUMNS[dim]}), {ORDER})"


@dataclasses.dataclass
class Params:
    values: dict[str, Any] = dataclasses.field(default_factory=dict)

    def bind(self, value: Any, type_: str) -> str:
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
        self.filter_dims = sorted({d for f in q.filters for d in _dims(f)})
        self.event_plan = any(is_event_level(d) for d in (*q.dimensions, *self.filter_dims))
        self.cols: dict[str, str] = {}

    # -- expressions ----------------------------------------------------------

    def event_expr(self, dim: str) -> str:
        """A dimension's value on one event row (visit:* read from the attached visit column)."""
        if dim == "event:page":
            return PAGE
        if dim == "event:name":
            return "toString(event)"
        if dim.startswith(PROP_PREFIX):
            return f"props[{self.p.bind(dim[len(PROP_PREFIX):], 'String')}]"
        if dim == "time:hour":
            return "formatDateTime(toStartOfHour(received_at), '%Y-%m-%d %H:00:00')"
        if dim == "time:day":
            return "toString(toDate(received_at))"
        return self.cols[dim]

    def condition(self, f: Filter, expr: Any) -> str:
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

    def where(self, expr: Any) -> str:
        if not self.q.filters:
            return "1"
        return " AND ".join(self.condition(f, expr) for f in self.q.filters)

    # -- the query -------------------------------------------------------------

    def events(self) -> str:
        """The scope's events in range, each with its visit number (vkey, visit_no)."""
        bots = "" if self.q.include_bots else " AND is_bot = 0"
        scope = self.p.bind(self.scope, "String")
        start = self.p.bind(self.q.start.replace(tzinfo=None), "DateTime64(3, 'UTC')")
        end = self.p.bind(self.q.end.replace(tzinfo=None), "DateTime64(3, 'UTC')")
        gap = self.p.bind(self.gap_ms, "Int64")
        need = {"received_at", "event_id", "event", "url", "visitor_id", "utm_source", "utm_medium", "utm_campaign",
                "props"}
        need |= {FIRST_EVENT_COLUMNS[d] for d in (*self.q.dimensions, *self.filter_dims) if d in FIRST_EVENT_COLUMNS}
        cols = ", ".join(sorted(need))
        marked = (
            f"SELECT {cols}, vkey, ms, "
            f"(ms - lagInFrame(ms, 1, toInt64(0)) OVER w) > {gap} "
            "OR (camp != '' AND camp != ifNull(last_value(nullIf(camp, '')) OVER wprev, camp)) AS new_visit "
            "FROM (SELECT *, if(visitor_id = '', toString(event_id), visitor_id) AS vkey, "
            "toUnixTimestamp64Milli(received_at) AS ms, "
            "if(utm_source = '' AND utm_medium = '' AND utm_campaign = '', '', "
            "concat(utm_source, '\\0', utm_medium, '\\0', utm_campaign)) AS camp "
            f"FROM {self.table} WHERE scope = {scope} AND received_at >= {start} AND received_at < {end}{bots}) "
            "WINDOW w AS (PARTITION BY vkey ORDER BY ms, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), "
            "wprev AS (PARTITION BY vkey ORDER BY ms, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
        )
        return (f"SELECT *, sum(new_visit) OVER (PARTITION BY vkey ORDER BY ms, event_id "
                f"ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS visit_no FROM ({marked})")

    def per_visit(self) -> str:
        """One row per (dimension values, visit) with the visit's and the matching events' counts."""
        visit_dims = sorted({d for d in (*self.q.dimensions, *self.filter_dims) if d.startswith("visit:")})
        for d in visit_dims:
            self.cols[d] = column(d, "a_")
        events = self.events()
        dims = [f"{self.event_expr(d)} AS {column(d)}" for d in self.q.dimensions]
        group = ", ".join([column(d) for d in self.q.dimensions] + ["vkey", "visit_no"])
        if not self.event_plan:
            attrs = "".join(f", {visit_aggregate(d)} AS {self.cols[d]}" for d in visit_dims)
            visits = (f"SELECT vkey, visit_no, any(visitor_id) AS visitor_id, count() AS v_events, "
                      f"countIf({PAGEVIEW}) AS v_pageviews, max(ms) - min(ms) AS v_duration{attrs} "
                      f"FROM ({events}) GROUP BY vkey, visit_no")
            dim_cols = "".join(f"{self.cols[d]} AS {column(d)}, " for d in self.q.dimensions)
            return (f"SELECT {dim_cols}*, v_events AS m_events, v_pageviews AS m_pageviews FROM ({visits}) "
                    f"WHERE {self.where(lambda d: self.cols[d])}")
        attrs = "".join(f", {visit_aggregate(d)} OVER v AS {self.cols[d]}" for d in visit_dims)
        attached = (f"SELECT *, countIf({PAGEVIEW}) OVER v AS v_pageviews, max(ms) OVER v - min(ms) OVER v AS v_duration"
                    f"{attrs} FROM ({events}) WINDOW v AS (PARTITION BY vkey, visit_no)")
        select_dims = ", ".join(dims) + ", " if dims else ""
        return (f"SELECT {select_dims}vkey, visit_no, any(visitor_id) AS visitor_id, count() AS m_events, "
                f"countIf({PAGEVIEW}) AS m_pageviews, any(v_pageviews) AS v_pageviews, any(v_duration) AS v_duration "
                f"FROM ({attached}) WHERE {self.where(self.event_expr)} GROUP BY {group}")

    def build(self, limit: int, offset: int, total_rows: bool) -> tuple[str, dict[str, Any]]:
        """Columns: the dimensions, then visitors, visits, pageviews, events, bounces,
        duration_ms (sum), visit_pageviews (sum), and total_rows when asked."""
        inner = self.per_visit()
        dims = [column(d) for d in self.q.dimensions]
        order_terms = []
        for name, direction in self.q.order_by:
            order_terms.append(f"{column(name) if name in self.q.dimensions else 'o_' + name} {direction.upper()}")
        order_terms += [f"{c} ASC" for c in dims if not any(t.startswith(c + " ") for t in order_terms)]
        select = ", ".join(dims + [
            "uniqExactIf(visitor_id, visitor_id != '') AS visitors", "count() AS visits",
            "sum(m_pageviews) AS pageviews", "sum(m_events) AS events", "countIf(v_pageviews = 1) AS bounces",
            "sum(v_duration) AS duration_ms", "sum(v_pageviews) AS visit_pageviews",
        ])
        ordering = {
            "o_visitors": "visitors", "o_visits": "visits", "o_pageviews": "pageviews", "o_events": "events",
            "o_bounce_rate": "if(visits = 0, 0, bounces / visits)",
            "o_visit_duration": "if(visits = 0, 0, duration_ms / visits)",
            "o_views_per_visit": "if(visits = 0, 0, visit_pageviews / visits)",
        }
        select += "".join(f", {expr} AS {alias}" for alias, expr in ordering.items())
        if total_rows:
            select += ", count() OVER () AS total_rows"
        group = f" GROUP BY {', '.join(dims)}" if dims else ""
        lim = self.p.bind(limit, "UInt64")
        off = self.p.bind(offset, "UInt64")
        sql = (f"SELECT {select} FROM ({inner}){group} ORDER BY {', '.join(order_terms)} "
               f"LIMIT {lim} OFFSET {off}")
        return sql, self.p.values


def _dims(f: Filter) -> set[str]:
    if isinstance(f, Condition):
        return {f.dimension}
    if isinstance(f, Combination):
        return set().union(*(_dims(p) for p in f.parts))
    return _dims(f.part)
