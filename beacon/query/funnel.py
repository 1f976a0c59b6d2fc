"""Funnels: an ordered list of steps -> visitors reaching each step, and the drop-off.

`POST /api/v2/funnel` body: {"steps": [...], "date_range": ..., "window": "visit" | seconds,
"filters": [...], "include": {"bots": bool}}. A step is an event name ("add_to_cart"), {"event": name} or
{"page": "/path"}. A visitor reaches step k when its events hold steps 1..k in that order
(other events may come between) within one visit ("visit", the default: visits as the
query API computes them) or within `window` seconds of step 1. ClickHouse's
`windowFunnel` does the ordering per visit or per visitor. Default steps: product_view ->
add_to_cart -> begin_checkout -> purchase.

Filters are the query API's (visit:*, event:page, event:name, event:props:*) and select
visits the way they do for every other panel: a visit takes part when one of its events,
carrying its visit's values, matches the filters. The funnel then runs over all the
events of the selected visits (a page filter picks the visits that saw the page; it does
not drop the visit's other steps).

Plans: event steps within a visit read each visit's event sequence in the rollup
(beacon/query/sequences.py); other funnels over whole days read their step events, each
with its visit from the rollup (`_step_events`); the rest compute visits from the events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING

from beacon.event import EVENT_NAME
from beacon.query import asof, rollup, sequences
from beacon.query.model import COMMERCE_DIMENSIONS, PROP_PREFIX, QueryError, parse
from beacon.query.sql import Builder, column

if TYPE_CHECKING:  # annotations only (store.py reads the rollup, beacon.query)
    from beacon.query.model import FunnelAnswer, FunnelStep
    from beacon.query.rollup import Plan
    from beacon.store import Store

DEFAULT_STEPS = ("product_view", "add_to_cart", "begin_checkout", "purchase")
KEYS = ("steps", "date_range", "window", "filters", "include", "site_id")
MAX_STEPS = 10
MAX_WINDOW = 90 * 86400
WHOLE_VISIT_MS = 10 * 365 * 86400 * 1000  # a window no visit outlasts: the visit bounds the funnel


def _steps(raw: object) -> list[tuple[str, str]]:
    if raw is None:
        return [("event", s) for s in DEFAULT_STEPS]
    if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_STEPS:
        raise QueryError(f"steps must be a list of 2..{MAX_STEPS} steps")
    out = []
    for i, step in enumerate(raw):
        if isinstance(step, str):
            step = {"event": step}
        if not isinstance(step, Mapping) or len(step) != 1 or next(iter(step)) not in ("event", "page"):
            raise QueryError(f'steps[{i}] must be an event name, {{"event": name}} or {{"page": "/path"}}')
        kind, value = next(iter(step.items()))
        if not isinstance(value, str) or not value or len(value) > 2048:
            raise QueryError(f"steps[{i}].{kind} must be a non-empty string")
        if kind == "event" and (len(value) > 64 or not EVENT_NAME.fullmatch(value)):
            raise QueryError(f"steps[{i}].event {value[:70]!r} is not an event name")
        if kind == "page" and not value.startswith("/"):
            raise QueryError(f"steps[{i}].page must be a path starting with /")
        out.append((kind, value))
    return out


def _window(raw: object) -> int | None:
    """None for "within a visit", else milliseconds."""
    if raw is None or raw == "visit":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_WINDOW:
        raise QueryError(f'window must be "visit" or seconds 1..{MAX_WINDOW}')
    return raw * 1000


def run(store: Store, scope: str, body: object, *, now: dt.datetime | None = None, visit_timeout: int = 30) -> FunnelAnswer:
    if not isinstance(body, Mapping):
        raise QueryError("the funnel must be a JSON object")
    unknown = [k for k in body if k not in KEYS]
    if unknown:
        raise QueryError(f"unknown key {unknown[0]!r}; a funnel has {', '.join(KEYS[:-1])}")
    steps = _steps(body.get("steps"))
    window = _window(body.get("window"))
    asked = {"metrics": ["visitors"], "date_range": body.get("date_range"), "filters": body.get("filters", [])}
    q = parse({**asked, "include": body.get("include", {})}, now)
    b = Builder(q, scope, store.full_table, visit_timeout)
    shop = [d for d in b.filter_dims if d in COMMERCE_DIMENSIONS]
    if shop:
        raise QueryError(f"funnels take no {shop[0]} filter; filter on the visit, the page, the event name or a property")
    kind, value = steps[0]  # a visitor without step 1 in the range reaches no step: its visits are not computed
    b.only_with = f"{'event' if kind == 'event' else 'path(url)'} = {b.p.bind(value, 'String')}"
    if rollup.usable(q, b) and sequences.usable(b, steps, window):  # each visit's events from the rollup: no event read
        b.rollup = rollup.prepare(store, scope, q, visit_timeout)
        per = sequences.levels(b, steps, WHOLE_VISIT_MS)
    else:
        per = _from_events(store, scope, b, steps, window, visit_timeout)
    levels = {
        lv: c
        for lv, c in store.query(f"SELECT level, count() FROM ({per}) GROUP BY level", b.p.values)
        if isinstance(lv, int) and isinstance(c, int)
    }
    reached = [sum(c for lv, c in levels.items() if lv >= k) for k in range(1, len(steps) + 1)]
    out: list[FunnelStep] = []
    for k, ((kind, value), n) in enumerate(zip(steps, reached)):
        prev = reached[k - 1] if k else n
        out.append(
            {
                "step": {kind: value},
                "visitors": n,
                "dropoff": prev - n,
                "conversion_rate": round(100 * n / reached[0], 2) if reached[0] else 0.0,
                "step_conversion_rate": round(100 * n / prev, 2) if prev else 0.0,
            }
        )
    return {
        "steps": out,
        "meta": {"scope": scope, "window": "visit" if window is None else window // 1000, "visit_timeout_minutes": visit_timeout},
        "query": {
            "steps": [{kind: value} for kind, value in steps],
            "date_range": q.echo()["date_range"],
            "window": body.get("window", "visit"),
            "filters": q.echo()["filters"],
            "include": {"bots": q.include_bots},
        },
    }


def _from_events(store: Store, scope: str, b: Builder, steps: list[tuple[str, str]], window: int | None, visit_timeout: int) -> str:
    """(vkey, level) from the step events, each with its visit from the rollup, or from every event with its visit."""
    q = b.q
    per_visit = True  # `hit` is each event's; else each visit's (only the passing visits' events)
    if window is not None and not q.filters:  # every event of the visitor: no visit needed
        events, per_visit = _step_events(b, steps, None), False
    elif rollup.usable(q, b) and (b.paged or not b.event_plan):  # each step event's visit from the visits rollup
        b.rollup = rollup.prepare(store, scope, q, visit_timeout)
        events, per_visit = _step_events(b, steps, b.rollup), False
    else:
        events = _events(b)
    conds = ", ".join(f"{kind} = {b.p.bind(value, 'String')}" for kind, value in steps)
    if window is None:  # per visit: the visits with a matching event
        return (
            f"SELECT vkey, max(level) AS level FROM (SELECT vkey, visit_no, windowFunnel({WHOLE_VISIT_MS})"
            f"(toUInt64(ms), {conds}) AS level FROM ({events}) GROUP BY vkey, visit_no HAVING max(hit) = 1) GROUP BY vkey"
        )
    if q.filters and per_visit:  # per visitor, over the events of its selected visits
        hits = f"SELECT *, max(hit) OVER (PARTITION BY vkey, visit_no) AS visit_hit FROM ({events})"
        events = f"SELECT * FROM ({hits}) WHERE visit_hit = 1"
    return f"SELECT vkey, windowFunnel({int(window)})(toUInt64(ms), {conds}) AS level FROM ({events}) GROUP BY vkey"


def _step_events(b: Builder, steps: list[tuple[str, str]], plan: Plan | None) -> str:
    """The step events of identified visitors (`windowFunnel` skips the others; a visitor without step 1 reaches
    level 0), each with its visit from the rollup (`plan`; only the visits that pass the filters,
    beacon/query/asof.py) or, without a plan (a window in seconds, no filter), with none: vkey, visit_no, ms,
    event, page, hit = 1. Not restricted to the visitors with step 1: that costs a scan and a set lookup
    per event, more than it saves when most visitors who do a later step did the first."""
    any_step = " OR ".join(f"{'event' if kind == 'event' else 'path(url)'} = {b.p.bind(value, 'String')}" for kind, value in steps)
    where = asof.scan(b, f"visitor_id != '' AND ({any_step})")
    page = "path(url)" if any(kind == "page" for kind, _ in steps) else "''"  # the URLs are read only for a page step
    left = f"SELECT {asof.VKEY} AS vkey, toUnixTimestamp64Milli(received_at) AS t_ms, event, {page} AS page {where}"
    if plan is None:
        return f"SELECT vkey, 0 AS visit_no, t_ms AS ms, event, page, toUInt8(1) AS hit FROM ({left})"
    b.visit_dims = sorted(d for d in b.filter_dims if d.startswith("visit:"))
    for d in b.visit_dims:
        b.cols[d] = column(d, "a_") + "_1"
    return asof.joined(b, left, "e.vkey AS vkey, v.v_start AS visit_no, e.t_ms AS ms, e.event AS event, e.page AS page, toUInt8(1) AS hit")


def _events(b: Builder) -> str:
    """Each event of an identified visitor with its visit number, time, name, page and `hit`
    (1 when the event, carrying its visit's values, matches the filters)."""
    b.visit_dims = sorted(d for d in b.filter_dims if d.startswith("visit:"))
    for d in b.visit_dims:
        b.cols[d] = column(d, "a_")
    event_cols = ["event", "page"] + (["props"] if any(d.startswith(PROP_PREFIX) for d in b.filter_dims) else [])
    visitors, arrays = b.visitors(event_cols)  # each visitor's events in time order, with visit numbers
    attrs = [a for a in arrays if a.startswith("a_")]
    # each visit's values repeated for each of its events (as the query API's event plan does)
    spread = "".join(f", arrayFlatten(arrayMap((v, r) -> arrayResize([v], r.2, v), {a}, ranges)) AS {a}_1" for a in attrs)
    for d in b.visit_dims:
        b.cols[d] += "_1"
    joined = "".join(f", s_{c} AS {c}" for c in event_cols[2:]) + "".join(f", {a}_1" for a in attrs)
    return (
        f"SELECT vkey, visit_no, ms, event, page, toUInt8({b.where(b.event_expr)}) AS hit "
        f"FROM (SELECT *{spread} FROM ({visitors})) "
        f"ARRAY JOIN vno AS visit_no, ms AS ms, s_event AS event, s_page AS page{joined} WHERE has_id = 1"
    )
