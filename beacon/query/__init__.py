"""Query API v2: a Plausible-shaped query over one scope's events, answered from ClickHouse.

`run` answers one query as JSON; `export` streams all of its rows as CSV or NDJSON.
Both raise QueryError (answered 400) before touching ClickHouse when the body is bad.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

import orjson

from beacon.columns import int_of
from beacon.query import commerce, copies, purchases, rollup
from beacon.query.model import COMMERCE_METRICS, MAX_LIMIT, PROP_PREFIX, Answer, Meta, Metric, Query, QueryError, Result, parse
from beacon.query.sql import Builder

if TYPE_CHECKING:  # annotations only: store.py reads the rollup (beacon.query.rollup)
    from beacon.store import Store

__all__ = ["QueryError", "run", "export", "parse", "EXPORT_TYPES", "Answer"]

EXPORT_TYPES = {"text/csv": "csv", "application/x-ndjson": "ndjson"}
EXPORT_PAGE = 10_000
DEFAULT_VISIT_TIMEOUT = 30


def _half_up(value: Fraction, places: int = 0) -> Fraction:
    scale = 10**places
    return Fraction(int(value * scale + Fraction(1, 2)), scale) if value >= 0 else -_half_up(-value, places)


def _metric(
    name: str, visitors: int, visits: int, pageviews: int, events: int, bounces: int, duration_ms: int, visit_pageviews: int
) -> int | float:
    if name == "visitors":
        return int(visitors)
    if name == "visits":
        return int(visits)
    if name == "pageviews":
        return int(pageviews)
    if name == "events":
        return int(events)
    if not visits:
        return 0
    if name == "bounce_rate":  # percent of visits with exactly one pageview
        return int(_half_up(Fraction(100 * bounces, visits)))
    if name == "visit_duration":  # mean seconds from a visit's first to its last event
        return int(_half_up(Fraction(duration_ms, 1000 * visits)))
    if name == "views_per_visit":
        return float(_half_up(Fraction(visit_pageviews, visits), 2))
    raise AssertionError(name)


def _rows(
    store: Store, scope: str, q: Query, visit_timeout: int, limit: int, offset: int, total_rows: bool, rollup_age: float = 0.0
) -> tuple[list[Result], int | None]:
    commerce.check(q, scope)
    denominator: dict[tuple[str, ...], int] = {}
    if "conversion_rate" in q.metrics:  # visitors of each row without the goal: a query of its own
        without_goal, _ = _rows(store, scope, commerce.without_goal(q), visit_timeout, MAX_LIMIT, 0, False, rollup_age)
        denominator = commerce.denominators(without_goal)
    b = Builder(q, scope, store.full_table, visit_timeout)
    if b.commerce:  # orders' first purchases (and the cards' purchases) from the copy of the purchase events
        b.purchases = purchases.ready(store)
    elif any(d.startswith(PROP_PREFIX) for d in q.dimensions) and not rollup_age:
        # the properties breakdown reads the events carrying them from their copy, and the others' counts from the
        # rollup: only from an exact rollup (a lagging one beside a current copy would match no moment)
        b.props = copies.PROPS.ready(store)
    if rollup.usable(q, b):
        b.rollup = rollup.prepare(store, scope, q, visit_timeout, rollup_age)
    sql, params = b.build(limit, offset, total_rows)
    n = len(q.dimensions)
    shop = bool(denominator) or any(m in COMMERCE_METRICS for m in q.metrics)
    results: list[Result] = []
    total: int | None = 0
    for row in store.query(sql, params):
        counts = [int_of(v) for v in row[n : n + 7]]
        base: list[Metric] = [_metric(m, *counts) for m in q.metrics if m not in COMMERCE_METRICS]
        results.append(
            {"dimensions": [str(v) for v in row[:n]], "metrics": commerce.values(q, row, n, base, denominator) if shop else base}
        )
        if total_rows:
            total = int_of(row[-1])
    if total_rows and not results and offset:  # past the last page: count the groups on their own
        _, total = _rows(store, scope, q, visit_timeout, 1, 0, True, rollup_age)
    return results, (total if total_rows else None)


def run(
    store: Store,
    scope: str,
    body: object,
    *,
    now: dt.datetime | None = None,
    visit_timeout: int = DEFAULT_VISIT_TIMEOUT,
    rollup_age: float = 0.0,
) -> Answer:
    """Answer `body` (untrusted JSON, checked by `parse`) over `scope`: {"results": [{"dimensions", "metrics"}], "meta", "query"}.

    `rollup_age`: seconds a day's visits rollup may lag its events (the flusher refreshes it; README, "Freshness")."""
    q = parse(body, now)
    results, total = _rows(store, scope, q, visit_timeout, q.limit, q.offset, q.total_rows, rollup_age)
    meta: Meta = {"scope": scope, "visit_timeout_minutes": visit_timeout}
    if total is not None:
        meta["total_rows"] = total
    return {"results": results, "meta": meta, "query": q.echo()}


def export(
    store: Store,
    scope: str,
    body: object,
    fmt: str,
    *,
    now: dt.datetime | None = None,
    visit_timeout: int = DEFAULT_VISIT_TIMEOUT,
    rollup_age: float = 0.0,
) -> Iterator[bytes]:
    """The query's rows as CSV (a header row first) or NDJSON objects, page by page.

    The body is checked here, before the first chunk, so a bad query still raises
    QueryError; the first chunk holds the first page, so a caller that takes it before
    answering can still answer an error. Without a pagination object every row is exported.
    """
    if fmt not in ("csv", "ndjson"):
        raise QueryError(f"export format must be csv or ndjson, not {fmt!r}")
    q = parse(body, now)
    commerce.check(q, scope)
    names = [*q.dimensions, *q.metrics]
    paged = isinstance(body, Mapping) and "pagination" in body  # (parse has checked it is an object)
    end = q.offset + q.limit if paged else None

    def chunks() -> Iterator[bytes]:
        head = _csv_line(names) if fmt == "csv" else b""  # sent with the first page
        offset = q.offset
        while end is None or offset < end:
            size = EXPORT_PAGE if end is None else min(EXPORT_PAGE, end - offset)
            rows, _ = _rows(store, scope, q, visit_timeout, size, offset, False, rollup_age)
            if fmt == "csv":
                yield head + b"".join(_csv_line([*r["dimensions"], *r["metrics"]]) for r in rows)
            else:
                yield b"".join(orjson.dumps(dict(zip(names, [*r["dimensions"], *r["metrics"]]))) + b"\n" for r in rows)
            head = b""
            if len(rows) < size:
                return
            offset += size

    return chunks()


def _csv_line(values: Sequence[str | Metric]) -> bytes:
    out = io.StringIO()
    # a revenue cell ({currency: amount}) as JSON, not Python's repr of a dict
    csv.writer(out, lineterminator="\r\n").writerow(orjson.dumps(v).decode() if isinstance(v, dict) else v for v in values)
    return out.getvalue().encode()
