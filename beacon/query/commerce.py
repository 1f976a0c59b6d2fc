"""Issue 12's part of the query: conversions, revenue per currency, customers, goal and product.

Definitions (README, Commerce):
- a goal is an event name other than `pageview`; `conversions` counts the goal events of a
  row: the goals an `event:goal` filter or dimension picks, else `purchase`;
- a purchase counts once per (scope, order_id): only the first `purchase` event recorded
  for an order counts, over the scope's whole history, so a reloaded thank-you page (the
  same day or later) never counts twice. This is decided at query time (see `counted`), so
  the flusher keeps inserting lines as they are and a forgotten visitor's orders go with
  the rows;
- `total_revenue` and `average_revenue` are per currency, never summed across currencies:
  each is an object {currency: exact decimal string}; average = total / counted orders;
  with `event:product` the revenue of a row is its items' price x quantity;
- `conversion_rate` = visitors with a conversion in the row / visitors of the same row
  without the goal filters and the goal dimension, in percent (two decimals);
- `customers` = distinct accounts (beacon/customers.py) among the row's visitors; the
  mall's metric only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from beacon.columns import Row, int_of
from beacon.commerce import MINOR_UNITS
from beacon.query.model import (
    COMMERCE_DIMENSIONS,
    COMMERCE_METRICS,
    UNSORTABLE,
    Combination,
    Condition,
    Filter,
    Metric,
    Query,
    QueryError,
    Result,
)

GOAL = "event:goal"
PRODUCT = "event:product"
ITEM = "arrayJoin(items)"
# Extra columns every per-visit row and the final row carry when the query needs them.
TOP_COLUMNS = ("conversions", "converted", "revenue", "orders", "customers")


def needed(q: Query, filter_dims: list[str]) -> bool:
    return any(m in COMMERCE_METRICS for m in q.metrics) or any(d in COMMERCE_DIMENSIONS for d in (*q.dimensions, *filter_dims))


def _nested_goal(f: Filter, top: bool) -> bool:
    if isinstance(f, Condition):
        return f.dimension == GOAL and not top
    parts = f.parts if isinstance(f, Combination) else (f.part,)
    return any(_nested_goal(p, False) for p in parts)


def check(q: Query, scope: str) -> None:
    if "customers" in q.metrics and scope != "mall":
        raise QueryError("metric customers is the mall's only")
    for name, _ in q.order_by:
        if name in UNSORTABLE:
            raise QueryError(f"order_by {name} is not supported (revenue is per currency); order by conversions")
    if any(_nested_goal(f, True) for f in q.filters):
        raise QueryError("event:goal filters must be at the top level of filters, not inside and/or/not")


def dimension(dim: str) -> str:
    if dim == GOAL:  # pageviews are no goal: their rows leave the goal's groups
        return "arrayJoin(if(event = 'pageview', [], [toString(event)]))"
    return f"tupleElement({ITEM}, 'sku')"


def columns(customers: bool) -> set[str]:
    return {"order_id", "revenue", "currency", "items", "counted"} | ({"account"} if customers else set())


def inner(table: str, links: str, scope_param: str, customers: bool, purchases: str = "") -> str:
    """Computed columns of each event row: `counted` (0 for a repeated purchase of an order), `account`.

    `purchases`: the copy of the purchase events (query/purchases.py), which finds each order's
    first purchase without reading every event of the scope."""
    out = (
        ", if(event = 'purchase', (order_id, event_id) IN (SELECT order_id, argMin(event_id, (received_at, event_id)) "
        f"FROM {purchases or table} WHERE scope = {scope_param} AND event = 'purchase' GROUP BY order_id), 1) AS counted"
    )
    if customers:  # one scalar subquery (evaluated once): the scope's (visitor ids, latest account of each)
        links_of = (
            f"(SELECT (groupArray(visitor_id), groupArray(account)) FROM (SELECT visitor_id, "
            f"argMax(account, linked_at) AS account FROM {links} WHERE scope = {scope_param} GROUP BY visitor_id))"
        )
        out += f", transform(visitor_id, tupleElement({links_of}, 1), tupleElement({links_of}, 2), '') AS account"
    return out


def aggregates(q: Query, filter_dims: list[str], customers: bool) -> str:
    """Per visit (and dimension values): goal events counted, converted or not, revenue and orders per currency."""
    goal = "event != 'pageview'" if GOAL in (*q.dimensions, *filter_dims) else "event = 'purchase'"
    product = PRODUCT in (*q.dimensions, *filter_dims)
    value = f"tupleElement({ITEM}, 'price') * tupleElement({ITEM}, 'quantity')" if product else "revenue"
    purchase = "event = 'purchase' AND counted = 1"
    out = (
        f", countIf({goal} AND counted = 1) AS m_conversions, max({goal}) AS m_converted, "
        f"sumMapIf(map(toString(currency), {value}), {purchase}) AS m_revenue, "
        f"sumMapIf(map(toString(currency), toUInt64(1)), {purchase}) AS m_orders"
    )
    return out + (", any(account) AS m_account" if customers else ", '' AS m_account")


def top() -> str:
    return (
        ", sum(m_conversions) AS conversions, uniqExactIf(vkey, m_converted = 1 AND has_id = 1) "
        "AS converted, sumMap(m_revenue) AS revenue, sumMap(m_orders) AS orders, "
        "uniqExactIf(m_account, m_account != '') AS customers"
    )


def amounts(value: object) -> dict[str, Decimal | int]:
    """A Map(String, Decimal) or Map(String, UInt64) column: amount or count per currency."""
    if not isinstance(value, dict):
        raise TypeError(f"expected a Map column, got {type(value).__name__}: {value!r:.80}")
    out: dict[str, Decimal | int] = {}
    for currency, amount in value.items():
        if not isinstance(currency, str) or not isinstance(amount, Decimal | int):
            raise TypeError(f"expected currency -> number, got {currency!r:.20}: {amount!r:.40}")
        out[currency] = amount
    return out


def _money(value: Decimal | int, currency: str) -> str:
    places = MINOR_UNITS.get(currency, 2)
    return str(Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def metric(name: str, extra: Row, denominator: int | None) -> Metric:
    conversions, converted, revenue, orders, customers = extra
    if name == "conversions":
        return int_of(conversions)
    if name == "customers":
        return int_of(customers)
    if name == "conversion_rate":
        if not denominator:
            return 0.0
        rate = Fraction(100 * int_of(converted), denominator)
        return round(float(rate), 2)
    if name == "total_revenue":
        return {c: _money(amounts(revenue).get(c, 0), c) for c in sorted(amounts(orders))}
    if name == "average_revenue":
        return {c: _money(Decimal(amounts(revenue).get(c, 0)) / n, c) for c, n in sorted(amounts(orders).items()) if n}
    raise AssertionError(name)


def without_goal(q: Query) -> Query:
    """The query whose visitors are the conversion rate's denominator."""
    filters: tuple[Filter, ...] = tuple(f for f in q.filters if not (isinstance(f, Condition) and f.dimension == GOAL))
    dims = tuple(d for d in q.dimensions if d != GOAL)
    return dataclasses.replace(
        q, metrics=("visitors",), dimensions=dims, filters=filters, order_by=((dims[0], "asc"),) if dims else (("visitors", "desc"),)
    )


def denominators(rows: list[Result]) -> dict[tuple[str, ...], int]:
    """Visitors per dimension values (without the goal) from the rows of `without_goal(q)`."""
    return {tuple(r["dimensions"]): int_of(r["metrics"][0]) for r in rows}


def values(q: Query, row: Row, n: int, base: Sequence[Metric], denominator: dict[tuple[str, ...], int]) -> list[Metric]:
    """The row's metrics in the query's order: issue 11's from `base` (in order), issue 12's from columns n+7..n+11."""
    extra = row[n + 7 : n + 12]
    keep = tuple(str(v) for d, v in zip(q.dimensions, row[:n]) if d != GOAL)
    rest = iter(base)
    return [metric(m, extra, denominator.get(keep)) if m in COMMERCE_METRICS else next(rest) for m in q.metrics]
