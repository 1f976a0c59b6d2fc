"""Conversions and revenue without visits (beacon/query/sql.py `events_shop`) equal the event plan's answers.

The same scripted day as tests/test_commerce_query.py; each body is answered by the fast
path and, with the commerce metrics treated as visit metrics, by the plan that computes
visits, and the two answers must be equal (the mall and a partner).
"""

from __future__ import annotations

import pytest

from beacon import query
from beacon.query import sql
from beacon.query.model import COMMERCE_METRICS

from .test_commerce_query import DAY, NOW, day  # noqa: F401 - the fixture of the scripted day

SHOP = ["conversions", "total_revenue"]
BODIES = [
    {"metrics": SHOP},  # the dashboard's commerce cards: purchases only
    {"metrics": ["conversions", "total_revenue", "average_revenue"]},
    {"metrics": SHOP, "filters": [["is", "event:page", ["/p"]]]},
    {"metrics": SHOP, "filters": [["is", "event:goal", ["add_to_cart"]]]},
    {"metrics": ["visitors", "pageviews", "events", "conversions", "conversion_rate", "total_revenue", "customers"]},
    {"metrics": ["visitors", "conversions", "total_revenue"], "dimensions": ["event:page"]},
    {"metrics": ["visitors", "conversions", "conversion_rate"], "dimensions": ["event:goal"]},
    {"metrics": ["conversions", "total_revenue"], "dimensions": ["event:product"]},
    {"metrics": ["conversions"], "dimensions": ["time:day"], "include": {"bots": True}},
]


@pytest.mark.parametrize("scope", ["mall", "a"])
@pytest.mark.parametrize("body", BODIES)
def test_commerce_without_visits_equals_the_visit_plan(day, body, scope, monkeypatch):  # noqa: F811
    if "customers" in body["metrics"] and scope != "mall":
        return  # the mall's metric only (refused for a partner, tested elsewhere)
    body = {"date_range": [DAY, DAY], **body}
    fast = query.run(day, scope, body, now=NOW)["results"]
    with monkeypatch.context() as m:
        m.setattr(sql, "VISIT_METRICS", sql.VISIT_METRICS | set(COMMERCE_METRICS))
        planned = query.run(day, scope, body, now=NOW)["results"]
    assert fast == planned
    assert planned or scope != "mall"  # the partner has no product rows


def test_the_commerce_cards_read_only_purchases(day):  # noqa: F811
    q = query.parse({"metrics": SHOP, "date_range": [DAY, DAY]}, NOW)
    built, _ = sql.Builder(q, "mall", day.full_table, 30).build(10, 0, False)
    assert "event = 'purchase'" in built and "arrayCumSum" not in built  # no visit is computed
    [row] = query.run(day, "mall", {"metrics": SHOP, "date_range": [DAY, DAY]}, now=NOW)["results"]
    assert row["metrics"] == [4, {"EUR": "59.95", "JPY": "1500", "USD": "10.00"}]


@pytest.mark.parametrize("scope", ["mall", "a"])
@pytest.mark.parametrize(
    "filters, conversions",
    [
        ([["is", "visit:entry_page", ["/p"]]], {"mall": 1, "a": 0}),  # only V1's visit starts with a pageview and buys
        ([["is_not", "visit:country", ["FR"]], ["is", "event:page", ["/p"]]], {"mall": 4, "a": 1}),
        ([["is", "visit:exit_page", ["/nowhere"]]], {"mall": 0, "a": 0}),
    ],
)
def test_commerce_with_visit_filters_computes_only_the_purchasers_visits(day, filters, conversions, scope, monkeypatch):  # noqa: F811
    body = {"metrics": ["conversions", "total_revenue", "average_revenue"], "date_range": [DAY, DAY], "filters": filters}
    q = query.parse(body, NOW)
    built, _ = sql.Builder(q, scope, day.full_table, 30).build(10, 0, False)
    assert "AND (event = 'purchase'))" in built  # the visitors with a purchase
    restricted = query.run(day, scope, body, now=NOW)["results"]
    with monkeypatch.context() as m:
        m.setattr(sql.Builder, "purchases_only", lambda self: False)
        everyone = query.run(day, scope, body, now=NOW)["results"]
    assert restricted == everyone
    assert restricted[0]["metrics"][0] == conversions[scope]
