"""A funnel within a visit from the visits rollup's event sequences: no event read, no join.

Why: the funnel of event steps per visit used to read every step event of the range and give
each its visit from the rollup (an ASOF JOIN, beacon/query/asof.py): over 30 days of 10M events,
1.3M step events against 1.4M visits, ~1.6 CPU s. Each rollup row (a visit, or a day's segment
of one) also holds its events but pageviews in time order (`seq_names`, and `seq_ms`: ms after
the row's `start_ms`), so each visit's funnel level is `windowFunnel` applied to its own arrays
(`arrayReduce`), and only the visits holding step 1 are read (docs/benchmarks.md, "The funnel
from the rollup's sequences").

Exactness: windowFunnel sorts its events by (time, step index) before it walks them
(AggregateFunctionWindowFunnel in ClickHouse), so the order the events come in changes no
level, and the window (the whole visit) makes the time base irrelevant. Visits are the
query's: rollup rows for the regular visitors, glued visits (their segments' sequences
concatenated, at absolute ms) for the irregular ones (`Builder.glued`). Filters select visits
as for every funnel: visit:* on the visit's values, event:page / event:name through the
visit's pages, names or (page, name) pairs, each carrying the visit's values (a visit takes
part when one of its events matches; then all its steps count).

Not here (funnel.py's other plans): a page step or a `pageview` step (the sequences hold no
pageviews), a window in seconds, property filters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from beacon.query.model import PROP_PREFIX
from beacon.query.sql import FIRST_EVENT_COLUMNS, column

if TYPE_CHECKING:  # annotations only
    from beacon.query.sql import Builder

# the lambda variable of one element of a visit's pages (names, or (page, name) pairs), per key
_ELEMENT = {
    "event:page": {"event:page": "x_el"},
    "event:name": {"event:name": "x_el"},
    "pair": {"event:page": "x_el.1", "event:name": "x_el.2"},
}


def usable(b: Builder, steps: list[tuple[str, str]], window_ms: int | None) -> bool:
    """Event steps (none of them `pageview`) within a visit, and only filters the rollup's rows can check."""
    events_only = all(kind == "event" and value != "pageview" for kind, value in steps)
    props = any(d.startswith(PROP_PREFIX) for d in b.filter_dims)
    return window_ms is None and events_only and not props and (b.paged or not b.event_plan)


def levels(b: Builder, steps: list[tuple[str, str]], whole_visit_ms: int) -> str:
    """(vkey, level): each identified visitor's highest step reached within one of its visits that pass the filters,
    for those with step 1 in such a visit."""
    b.visit_dims = sorted(d for d in b.filter_dims if d.startswith("visit:"))
    for d in b.visit_dims:
        b.cols[d] = column(d, "a_") + "_1"
    b.sequences = True
    first = b.p.bind(steps[0][1], "String")
    irregular = b.p.bind(list(b.plan.irregular), "Array(UInt64)")
    source = {d: f"`{c}`" for d, c in FIRST_EVENT_COLUMNS.items()} | {"visit:entry_page": "entry_page", "visit:exit_page": "exit_page"}
    attrs = "".join(f", {source[d]} AS {b.cols[d]}" for d in b.visit_dims)
    pages = {"event:page": "pages", "event:name": "names", "pair": "arrayZip(pn_pages, pn_names)"}
    paged = f", {pages[b.key]} AS pg_pages" if b.paged else ""
    rows = (
        f"SELECT vkey{attrs}{paged}, seq_names AS sq_names, seq_ms AS sq_ms FROM {b.plan.table} PREWHERE {b.rolled_where()} "
        f"WHERE has_id = 1 AND has(seq_names, {first}) AND vkey NOT IN (SELECT arrayJoin({irregular}))"
    )
    if b.plan.irregular:
        keep = "".join(f", {b.cols[d]}" for d in b.visit_dims) + (", pg_pages" if b.paged else "")
        glued = b.glued(irregular, starts=True, totals=True)
        rows += f" UNION ALL SELECT vkey{keep}, sq_names, sq_ms FROM ({glued}) WHERE has_id = 1 AND has(sq_names, {first})"
    if b.paged:  # one of the visit's pages (names, pairs), with the visit's values, matches
        element = _ELEMENT[b.key]
        cond = f"arrayExists(x_el -> {b.where(lambda d: element.get(d) or b.cols[d])}, pg_pages)"
    else:
        cond = b.where(lambda d: b.cols[d])
    conds = ", ".join(f"arrayMap(n -> n = {b.p.bind(value, 'String')}, sq_names)" for _, value in steps)
    funnel = f"arrayReduce('windowFunnel({int(whole_visit_ms)})', sq_ms, {conds})"
    return f"SELECT vkey, max({funnel}) AS level FROM ({rows}) WHERE {cond} GROUP BY vkey"
