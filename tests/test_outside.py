"""Found from outside: cases a user, an advertiser, an attacker or an operator tried
against a running Beacon, each kept here once fixed (real engines)."""

from __future__ import annotations

import pytest

from beacon import query

from .conftest import API_KEY
from .test_commerce_query import DAY, NOW, ask, day  # noqa: F401 - `day` is a fixture

# -- Query API v2: ordering by issue 12's metrics -----------------------------------------


def test_ordering_by_conversions_or_customers_answers(day):  # noqa: F811
    """The README's advice for revenue ("order by conversions") used to be a 503."""
    rows = ask(day, metrics=["visitors", "conversions"], dimensions=["event:goal"],
               order_by=[["conversions", "desc"], ["event:goal", "asc"]])
    assert [(r["dimensions"][0], r["metrics"][1]) for r in rows] == [
        ("add_to_cart", 4), ("product_view", 4), ("purchase", 4), ("begin_checkout", 3)]
    [row] = ask(day, metrics=["visitors", "customers"], order_by=[["customers", "desc"]])
    assert row["metrics"] == [6, 2]


@pytest.mark.parametrize("metrics, expected", [
    (["conversions"], [4]),
    (["customers", "visitors"], [2, 6]),
    (["total_revenue"], [{"EUR": "59.95", "JPY": "1500", "USD": "10.00"}]),
    (["conversion_rate", "visitors"], [66.67, 6]),
])
def test_the_default_order_works_whatever_metric_comes_first(day, metrics, expected):  # noqa: F811
    """Without order_by the first metric orders the rows; one that cannot be ordered by
    (revenue per currency, a rate) is skipped instead of refusing a query nobody ordered."""
    [row] = ask(day, metrics=metrics)
    assert row["metrics"] == expected


def test_an_empty_order_by_is_no_order(day):  # noqa: F811
    [row] = ask(day, metrics=["visitors"], order_by=[])
    assert row["metrics"] == [6]
    rows = ask(day, metrics=["visitors"], dimensions=["event:goal"], order_by=[])
    assert [r["dimensions"][0] for r in rows] == ["add_to_cart", "begin_checkout", "product_view", "purchase"]


def test_a_csv_export_writes_revenue_cells_as_json(day):  # noqa: F811
    body = {"metrics": ["conversions", "total_revenue"], "date_range": [DAY, DAY]}
    text = b"".join(query.export(day, "mall", body, "csv", now=NOW)).decode()
    assert text == 'conversions,total_revenue\r\n4,"{""EUR"":""59.95"",""JPY"":""1500"",""USD"":""10.00""}"\r\n'


def test_ordering_by_conversions_over_http_is_not_a_503(day, client):  # noqa: F811
    res = client.post("/api/v2/query", headers={"authorization": f"Bearer {API_KEY}"},
                      json={"metrics": ["conversions"], "date_range": [DAY, DAY],
                            "order_by": [["conversions", "desc"]]})
    assert res.status_code == 200, res.text
