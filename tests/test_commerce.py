"""Commerce events on ingest: typed fields, exact amounts, refusals with a reason."""

from __future__ import annotations

from decimal import Decimal

import pytest

from beacon import metrics

CART = {
    "e": "add_to_cart",
    "u": "https://shop.test/item/1",
    "items": [{"sku": "X-1", "name": "Boot", "category": "shoes", "quantity": 2, "price": "19.95"}],
    "currency": "EUR",
    "revenue": "39.90",
}
ORDER = {
    "e": "purchase",
    "u": "https://shop.test/thanks",
    "order_id": "A-1001",
    "revenue": 59.9,
    "currency": "EUR",
    "coupon": "SUMMER",
    "items": [{"sku": "X-1", "quantity": 2, "price": "19.95"}, {"sku": "Y-2", "price": 20}],
}


def shop_rows(store, where="1"):
    return store.query(
        f"SELECT event, order_id, revenue, currency, coupon, items FROM {store.full_table} "
        f"WHERE {where} ORDER BY received_at, toUInt128(event_id)"
    )


def test_commerce_events_are_stored_with_exact_amounts(client, flush, store):
    res = client.post("/e", json=[CART, ORDER, {"e": "pageview", "u": "https://shop.test/", "revenue": "x"}])
    assert res.status_code == 204, res.text
    assert flush() == 3
    cart, order, page = shop_rows(store)
    assert cart == (
        "add_to_cart",
        "",
        Decimal("39.90"),
        "EUR",
        "",
        [{"sku": "X-1", "name": "Boot", "category": "shoes", "quantity": 2, "price": Decimal("19.95")}],
    )
    assert order[:5] == ("purchase", "A-1001", Decimal("59.90"), "EUR", "SUMMER")
    assert [(i["sku"], i["quantity"], i["price"]) for i in order[5]] == [("X-1", 2, Decimal("19.95")), ("Y-2", 1, Decimal("20"))]
    assert page == ("pageview", "", Decimal(0), "", "", [])  # fields of other events are not read
    # 0.1 + 0.2 stays 0.3: amounts are decimals end to end
    client.post("/e", json=[{"e": "purchase", "order_id": f"o{i}", "revenue": v, "currency": "USD"} for i, v in enumerate([0.1, "0.2"])])
    flush()
    assert store.query(f"SELECT toString(sum(revenue)) FROM {store.full_table} WHERE currency = 'USD'") == [("0.3",)]


@pytest.mark.parametrize(
    "event, reason",
    [
        ({"e": "purchase", "revenue": "10", "currency": "EUR"}, "order_id is required"),
        ({"e": "purchase", "order_id": "A", "currency": "EUR"}, "revenue is required"),
        ({"e": "purchase", "order_id": "A", "revenue": "10"}, "currency is required"),
        ({"e": "purchase", "order_id": "A", "revenue": "10", "currency": "EURO"}, "not an ISO 4217 currency"),
        ({"e": "purchase", "order_id": "A", "revenue": "10", "currency": "eur"}, "not an ISO 4217 currency"),
        ({"e": "purchase", "order_id": "A", "revenue": "10", "currency": "XAU"}, "not an ISO 4217 currency"),
        ({"e": "purchase", "order_id": "A", "revenue": "10.001", "currency": "EUR"}, "more decimals than EUR"),
        ({"e": "purchase", "order_id": "A", "revenue": "10.5", "currency": "JPY"}, "more decimals than JPY"),
        ({"e": "purchase", "order_id": "A", "revenue": "-1", "currency": "EUR"}, "non-negative decimal"),
        ({"e": "purchase", "order_id": "A", "revenue": 1e20, "currency": "EUR"}, "non-negative decimal"),
        ({"e": "purchase", "order_id": "A", "revenue": True, "currency": "EUR"}, "decimal string"),
        ({"e": "refund", "order_id": "A", "currency": "EUR"}, "revenue is required"),
        ({"e": "add_to_cart", "items": {"sku": "X"}}, "items must be a list"),
        ({"e": "add_to_cart", "items": [{"name": "no sku"}]}, "items[0].sku is required"),
        ({"e": "add_to_cart", "items": [{"sku": "X", "quantity": 0}]}, "items[0].quantity"),
        ({"e": "add_to_cart", "items": [{"sku": "X", "quantity": 1.5}]}, "items[0].quantity"),
        ({"e": "add_to_cart", "items": [{"sku": "X", "price": "1"}]}, "currency is required"),
        ({"e": "add_to_cart", "items": [{"sku": "X", "colour": "red"}]}, "unknown fields ['colour']"),
        ({"e": "add_to_cart", "items": [{"sku": "X"}] * 51}, "too many items"),
        ({"e": "begin_checkout", "order_id": "x" * 129}, "order_id longer than 128"),
    ],
)
def test_invalid_commerce_events_get_400_naming_the_field_and_store_nothing(client, flush, event, reason):
    res = client.post("/e", json=[{"e": "pageview"}, event])
    assert res.status_code == 400
    assert res.json()["error"].startswith("event 1: ") and reason in res.json()["error"], res.json()
    assert flush() == 0


def test_the_pixel_form_carries_an_order_and_its_items(client, flush, store):
    qs = (
        "e=purchase&u=https%3A%2F%2Fshop.test%2Fthanks&order_id=A-7&revenue=1200&currency=JPY&coupon=WELCOME"
        "&i.0.sku=X-1&i.0.name=Tea%20cup&i.0.category=kitchen&i.0.quantity=3&i.0.price=400"
    )
    res = client.get(f"/p.gif?{qs}")
    assert res.status_code == 200 and res.headers["content-type"] == "image/gif"
    flush()
    [row] = shop_rows(store)
    assert row == (
        "purchase",
        "A-7",
        Decimal(1200),
        "JPY",
        "WELCOME",
        [{"sku": "X-1", "name": "Tea cup", "category": "kitchen", "quantity": 3, "price": Decimal(400)}],
    )


@pytest.mark.parametrize(
    "qs",
    [
        "e=purchase&revenue=10&currency=EUR",  # no order_id
        "e=purchase&order_id=A&revenue=10.123&currency=EUR",  # too precise
        "e=add_to_cart&i.0.name=x",  # item without sku
        "e=refund&order_id=A&revenue=1&currency=EUR&i.0.colour=red",  # unknown item field
    ],
)
def test_an_invalid_commerce_pixel_still_gets_the_gif_and_is_dropped_and_counted(client, flush, qs):
    before = metrics.EVENTS_REJECTED.labels("invalid_commerce")._value.get()
    res = client.get(f"/p.gif?{qs}")
    assert res.status_code == 200 and res.headers["content-type"] == "image/gif" and len(res.content) == 43
    assert flush() == 0
    assert metrics.EVENTS_REJECTED.labels("invalid_commerce")._value.get() == before + 1


def test_commerce_parameters_on_other_pixel_events_are_ignored(client, flush, store):
    client.get("/p.gif?e=pageview&order_id=A&revenue=zzz&i.0.sku=1")
    flush()
    assert shop_rows(store) == [("pageview", "", Decimal(0), "", "", [])]
