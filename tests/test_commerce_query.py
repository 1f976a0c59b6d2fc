"""Conversions, revenue, customers and funnels on the real chDB engine, with exact numbers.

The scripted day (D, minutes after 10:00 UTC), mall scope, visit timeout 30 minutes:
  V1  0 pageview, 1 product_view X-1, 2 add_to_cart X-1, 3 begin_checkout, 4 purchase O-1 EUR 39.90
      (2 x X-1 at 19.95), 5 purchase O-1 again (the thank-you page reloaded)
  V2  0 pageview, 1 product_view X-1, 2 add_to_cart X-1                                 (drops)
  V3  0 product_view Y-2, 1 add_to_cart Y-2, 2 begin_checkout, 3 purchase O-2 USD 10.00;
      600 purchase O-2 again, in a later visit
  V4  0 pageview
  V5  0 product_view X-1 | 50 add_to_cart X-1, 51 begin_checkout, 52 purchase O-3 EUR 20.05 (a second visit)
  V6  0 purchase O-4 JPY 1500
  a bot: purchase O-9 EUR 100 (excluded); partner "a": its own purchase P-1 EUR 5.00.
Visitors 6; counted orders O-1..O-4; EUR 59.95 over 2 orders (average 29.975 -> 29.98), USD 10.00, JPY 1500.
Accounts: V1 and V3 are one customer's two devices, V5 another customer.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import orjson
import pytest

from beacon import customers, query
from beacon.query import QueryError, funnel

from .conftest import API_KEY, with_partners
from .test_partners import A_KEY, MALL, REGISTRY

UTC = dt.timezone.utc
D = dt.datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
NOW = D.replace(hour=23)
DAY = D.date().isoformat()
_ids = itertools.count(1)


def ev(who: str, minute: float, event: str, scope: str = "mall", **shop) -> dict:
    return {
        "event_id": f"00000000-0000-7000-8000-{next(_ids):012d}",
        "received_at": f"{(D + dt.timedelta(minutes=minute)).timestamp():.3f}",
        "scope": scope,
        "visitor_id": f"visitor-{who}",
        "mode": "cookie",
        "event": event,
        "url": "https://shop.test/p",
        "referrer": "",
        "props": {},
        "ip": "203.0.113.0",
        "user_agent": "UA",
        "is_bot": int(who == "bot"),
        "transport": "beacon",
        **shop,
    }


def item(sku: str, quantity: int, price: str) -> dict:
    return {"sku": sku, "name": "", "category": "", "quantity": quantity, "price": price}


O1 = {"order_id": "O-1", "revenue": "39.90", "currency": "EUR", "items": [item("X-1", 2, "19.95")]}
O2 = {"order_id": "O-2", "revenue": "10.00", "currency": "USD", "items": [item("Y-2", 1, "10.00")]}
O3 = {"order_id": "O-3", "revenue": "20.05", "currency": "EUR", "items": [item("X-1", 1, "20.05")]}
X1, Y2 = {"items": [item("X-1", 1, "0")]}, {"items": [item("Y-2", 1, "0")]}
SCRIPT = [
    ev("V1", 0, "pageview"),
    ev("V1", 1, "product_view", **X1),
    ev("V1", 2, "add_to_cart", **X1),
    ev("V1", 3, "begin_checkout"),
    ev("V1", 4, "purchase", **O1),
    ev("V1", 5, "purchase", **O1),
    ev("V2", 0, "pageview"),
    ev("V2", 1, "product_view", **X1),
    ev("V2", 2, "add_to_cart", **X1),
    ev("V3", 0, "product_view", **Y2),
    ev("V3", 1, "add_to_cart", **Y2),
    ev("V3", 2, "begin_checkout"),
    ev("V3", 3, "purchase", **O2),
    ev("V3", 600, "purchase", **O2),
    ev("V4", 0, "pageview"),
    ev("V5", 0, "product_view", **X1),
    ev("V5", 50, "add_to_cart", **X1),
    ev("V5", 51, "begin_checkout"),
    ev("V5", 52, "purchase", **O3),
    ev("V6", 0, "purchase", order_id="O-4", revenue="1500", currency="JPY"),
    ev("bot", 0, "purchase", order_id="O-9", revenue="100", currency="EUR"),
    ev("P", 0, "purchase", scope="a", order_id="P-1", revenue="5.00", currency="EUR"),
]


@pytest.fixture
def day(store, r):
    store.command(f"TRUNCATE TABLE {customers.table(store)}")
    store.insert_lines(b"".join(orjson.dumps(e) + b"\n" for e in SCRIPT), "commerce-script-" + str(next(_ids)))
    for visitor, account in [("V1", "acc-1"), ("V3", "acc-1"), ("V5", "acc-2")]:
        customers.link(store, "mall", f"visitor-{visitor}", account)
    return store


def ask(store, scope="mall", **body):
    body.setdefault("date_range", [DAY, DAY])
    return query.run(store, scope, body, now=NOW)["results"]


def test_revenue_is_exact_per_currency_and_each_order_counts_once(day):
    [row] = ask(day, metrics=["visitors", "conversions", "conversion_rate", "total_revenue", "average_revenue", "customers"])
    assert row["metrics"] == [
        6,
        4,
        66.67,
        {"EUR": "59.95", "JPY": "1500", "USD": "10.00"},
        {"EUR": "29.98", "JPY": "1500", "USD": "10.00"},
        2,
    ]


def test_commerce_metrics_alone_and_first_need_no_order_by(day):
    # the first metric sorts by default; revenue (per currency) and rates are skipped for that
    assert ask(day, metrics=["conversions", "total_revenue"])[0]["metrics"] == [4, {"EUR": "59.95", "JPY": "1500", "USD": "10.00"}]
    assert ask(day, metrics=["total_revenue"])[0]["metrics"] == [{"EUR": "59.95", "JPY": "1500", "USD": "10.00"}]
    assert ask(day, metrics=["conversion_rate", "customers"])[0]["metrics"] == [66.67, 2]
    rows = ask(day, metrics=["conversions"], dimensions=["event:goal"], order_by=[["conversions", "desc"]])
    assert [r["metrics"][0] for r in rows] == sorted((r["metrics"][0] for r in rows), reverse=True)


def test_goals_as_a_dimension(day):
    rows = ask(day, metrics=["visitors", "conversions", "conversion_rate"], dimensions=["event:goal"], order_by=[["event:goal", "asc"]])
    assert [(r["dimensions"][0], *r["metrics"]) for r in rows] == [
        ("add_to_cart", 4, 4, 66.67),
        ("begin_checkout", 3, 3, 50.0),
        ("product_view", 4, 4, 66.67),
        ("purchase", 4, 4, 66.67),
    ]


def test_a_goal_filter_picks_the_conversions(day):
    [row] = ask(day, metrics=["visitors", "conversions", "conversion_rate"], filters=[["is", "event:goal", ["begin_checkout"]]])
    assert row["metrics"] == [3, 3, 50.0]


def test_products_as_a_dimension_with_their_item_revenue(day):
    rows = ask(day, metrics=["visitors", "conversions", "total_revenue"], dimensions=["event:product"])
    got = {r["dimensions"][0]: r["metrics"] for r in rows}
    assert got == {"X-1": [3, 2, {"EUR": "59.95"}], "Y-2": [1, 1, {"USD": "10.00"}]}


def test_revenue_per_day_and_currency_never_summed(day):
    [row] = ask(day, metrics=["total_revenue"], dimensions=["time:day"])
    assert row == {"dimensions": [DAY], "metrics": [{"EUR": "59.95", "JPY": "1500", "USD": "10.00"}]}
    assert all(isinstance(v, str) and Decimal(v) for v in row["metrics"][0].values())


def test_the_default_funnel_within_a_visit_and_within_a_window(day):
    visit = funnel.run(day, "mall", {"date_range": [DAY, DAY]}, now=NOW)
    assert [(s["step"]["event"], s["visitors"], s["dropoff"]) for s in visit["steps"]] == [
        ("product_view", 4, 0),
        ("add_to_cart", 3, 1),
        ("begin_checkout", 2, 1),
        ("purchase", 2, 0),
    ]
    assert [s["conversion_rate"] for s in visit["steps"]] == [100.0, 75.0, 50.0, 50.0]
    hour = funnel.run(day, "mall", {"date_range": [DAY, DAY], "window": 3600}, now=NOW)
    assert [s["visitors"] for s in hour["steps"]] == [4, 4, 3, 3]  # V5's second visit joins within the hour
    custom = funnel.run(day, "mall", {"date_range": [DAY, DAY], "steps": [{"page": "/p"}, "purchase"]}, now=NOW)
    assert [s["visitors"] for s in custom["steps"]] == [6, 4]


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"steps": ["a"]}, "2..10 steps"),
        ({"steps": ["a", {"page": "no-slash"}]}, "steps[1].page"),
        ({"steps": ["a", "b c"]}, "not an event name"),
        ({"window": 0}, "window must be"),
        ({"windows": 1}, "unknown key"),
    ],
)
def test_bad_funnels_name_the_bad_part(day, body, reason):
    with pytest.raises(QueryError, match=reason.replace(".", r"\.").replace("[", r"\[")):
        funnel.run(day, "mall", {"date_range": [DAY, DAY], **body}, now=NOW)


def test_query_refusals(day):
    with pytest.raises(QueryError, match="customers is the mall's only"):
        ask(day, "a", metrics=["customers"])
    with pytest.raises(QueryError, match="order_by total_revenue"):
        ask(day, metrics=["total_revenue"], order_by=[["total_revenue", "desc"]])
    with pytest.raises(QueryError, match="top level"):
        ask(day, metrics=["conversions"], filters=[["not", ["is", "event:goal", ["purchase"]]]])


@pytest.fixture
def pclient(make_client, tmp_path):
    return with_partners(make_client, tmp_path, REGISTRY)


def test_a_partner_key_reads_only_its_own_revenue_and_no_account_or_mall_id(day, pclient):
    auth = {"authorization": f"Bearer {A_KEY}"}
    body = {"metrics": ["visitors", "conversions", "total_revenue"], "date_range": [DAY, DAY]}
    own = pclient.post(f"{MALL}/api/v2/query", json=body, headers=auth)
    assert own.status_code == 200 and own.json()["results"][0]["metrics"] == [1, 1, {"EUR": "5.00"}]
    mall = pclient.post(f"{MALL}/api/v2/query", json=body, headers={"authorization": f"Bearer {API_KEY}"})
    assert mall.json()["results"][0]["metrics"] == [6, 4, {"EUR": "59.95", "JPY": "1500", "USD": "10.00"}]
    answers = [own.text]
    for extra in ({"metrics": ["customers"]}, {"dimensions": ["event:goal"]}, {"dimensions": ["event:product"]}):
        res = pclient.post(f"{MALL}/api/v2/query", json={**body, **extra}, headers=auth)
        assert res.status_code in (200, 400)
        answers.append(res.text)
    for accept in ("text/csv", "application/x-ndjson"):
        answers.append(
            pclient.post(f"{MALL}/api/v2/query", json={**body, "dimensions": ["event:goal"]}, headers={**auth, "accept": accept}).text
        )
    answers.append(pclient.post(f"{MALL}/api/v2/funnel", json={"date_range": [DAY, DAY]}, headers=auth).text)
    answers.append(pclient.get(f"{MALL}/api/v1/partners/a/events", headers=auth).text)
    answers.append(pclient.get(f"{MALL}/api/v1/partners/a/stats", headers=auth).text)
    text = "\n".join(answers)
    for secret in ("acc-1", "acc-2", "visitor-V1", "visitor-V3", "59.95", "39.90", "USD", "JPY", "O-1"):
        assert secret not in text, secret
    funnel_answer = pclient.post(f"{MALL}/api/v2/funnel", json={"date_range": [DAY, DAY]}, headers=auth).json()
    assert [s["visitors"] for s in funnel_answer["steps"]] == [0, 0, 0, 0]


def test_the_funnel_route_answers_json_and_400_with_a_reason(day, pclient):
    auth = {"authorization": f"Bearer {API_KEY}"}
    res = pclient.post(f"{MALL}/api/v2/funnel", json={"date_range": [DAY, DAY]}, headers=auth)
    assert res.status_code == 200 and [s["visitors"] for s in res.json()["steps"]][0] == 4
    bad = pclient.post(f"{MALL}/api/v2/funnel", json={"date_range": [DAY, DAY], "steps": "x"}, headers=auth)
    assert bad.status_code == 400 and "steps" in bad.json()["error"]
    assert pclient.post(f"{MALL}/api/v2/funnel", json={}, headers={}).status_code == 401
