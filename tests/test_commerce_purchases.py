"""The copy of the purchase events (beacon/query/purchases.py) gives the answers the events give.

Each body is answered twice on the scripted day of tests/test_commerce_query.py: from the
copy (the fast path) and with the copy switched off (every purchase read from the events);
the two must be equal, for the mall and a partner, also after `forget`, a TRUNCATE of the
events, a purchase copied twice, a migrate that rebuilds the copy, and the retention.
"""

from __future__ import annotations

import datetime as dt
import random

import orjson
import pytest

from beacon import query
from beacon.query import purchases, rollup, sql

from . import test_query_rollup as rollup_data
from .test_commerce_query import DAY, NOW, O1, day, ev  # noqa: F401 - the fixture of the scripted day

SHOP = ["conversions", "total_revenue"]
BODIES = [
    {"metrics": SHOP},  # the dashboard's commerce cards
    {"metrics": ["conversions", "total_revenue", "average_revenue"]},
    {"metrics": SHOP, "filters": [["is", "event:page", ["/p"]]]},
    {"metrics": SHOP, "filters": [["is", "visit:entry_page", ["/p"]]]},  # visits of the purchasers only
    {"metrics": SHOP, "filters": [["is_not", "visit:country", ["FR"]], ["is", "event:page", ["/p"]]]},
    {"metrics": SHOP, "filters": [["is", "event:goal", ["add_to_cart"]]]},
    {"metrics": ["visitors", "pageviews", "conversions", "conversion_rate", "total_revenue", "customers"]},
    {"metrics": ["visitors", "conversions", "total_revenue"], "dimensions": ["event:page"]},
    {"metrics": ["conversions", "total_revenue"], "dimensions": ["event:product"]},
    {"metrics": ["conversions"], "dimensions": ["time:day"], "include": {"bots": True}},
    {"metrics": SHOP, "include": {"bots": True}},
]


def both(store, scope, body, monkeypatch):
    """(answer from the copy, answer from the events)."""
    body = {"date_range": [DAY, DAY], **body}
    fast = query.run(store, scope, body, now=NOW)["results"]
    with monkeypatch.context() as m:
        m.setattr(purchases, "ready", lambda store: "")
        slow = query.run(store, scope, body, now=NOW)["results"]
    return fast, slow


def insert(store, *events) -> None:
    store.insert_lines(b"".join(orjson.dumps(e) + b"\n" for e in events), f"purchases-test-{events[0]['event_id']}")


def copied(store, where: str = "1") -> int:
    return store.query(f"SELECT count() FROM {purchases.table(store)} FINAL WHERE {where}")[0][0]


@pytest.mark.parametrize("scope", ["mall", "a"])
@pytest.mark.parametrize("body", BODIES)
def test_the_copy_gives_the_events_answers(day, body, scope, monkeypatch):  # noqa: F811
    if "customers" in body["metrics"] and scope != "mall":
        return  # the mall's metric only
    fast, slow = both(day, scope, body, monkeypatch)
    assert fast == slow


def test_the_commerce_cards_read_the_copy_not_the_events(day):  # noqa: F811
    q = query.parse({"metrics": SHOP, "date_range": [DAY, DAY]}, NOW)
    b = sql.Builder(q, "mall", day.full_table, 30)
    b.purchases = purchases.ready(day)
    built, _ = b.build(10, 0, False)
    assert f"FROM {day.full_table}_purchases FINAL WHERE" in built
    assert f"FROM {day.full_table} " not in built  # neither the cards' purchases nor the orders' first ones
    [row] = query.run(day, "mall", {"metrics": SHOP, "date_range": [DAY, DAY]}, now=NOW)["results"]
    assert row["metrics"] == [4, {"EUR": "59.95", "JPY": "1500", "USD": "10.00"}]
    assert copied(day) == copied(day, "event = 'purchase'") == 8  # the day's purchases, bot and partner included


@pytest.mark.parametrize("scope", ["mall", "a"])
def test_forget_reaches_the_copy_and_a_later_purchase_of_the_order_counts(day, scope, monkeypatch):  # noqa: F811
    # V7 buys O-1 again after V1 (not counted); once V1 is forgotten, V7's purchase is the order's first
    insert(day, ev("V7", 30, "purchase", **O1), ev("P2", 30, "purchase", scope="a", order_id="P-1", revenue="5.00", currency="EUR"))
    purchases.ready(day)
    forgotten = "visitor-V1" if scope == "mall" else "visitor-P"
    before, _ = both(day, scope, {"metrics": SHOP}, monkeypatch)
    assert copied(day, f"visitor_id = '{forgotten}'") > 0
    assert day.forget(scope, forgotten) > 0
    assert copied(day, f"visitor_id = '{forgotten}'") == 0
    for body in BODIES[:5]:
        fast, slow = both(day, scope, body, monkeypatch)
        assert fast == slow
    after, _ = both(day, scope, {"metrics": SHOP}, monkeypatch)
    assert after == before  # the same order counted once, now V7's (or P2's) purchase of it
    assert copied(day, "visitor_id IN ('visitor-V7', 'visitor-P2')") == 2


def test_a_truncated_events_table_is_copied_again(day, monkeypatch):  # noqa: F811
    day.command(f"TRUNCATE TABLE {day.full_table}")
    insert(day, ev("V8", 1, "purchase", order_id="O-1", revenue="7.00", currency="EUR"))
    fast, slow = both(day, "mall", {"metrics": SHOP}, monkeypatch)
    assert fast == slow == [{"dimensions": [], "metrics": [1, {"EUR": "7.00"}]}]
    assert copied(day) == 1


def test_a_purchase_copied_twice_counts_once(day, monkeypatch):  # noqa: F811
    purchases.ready(day)
    cols = ", ".join(purchases.COLUMNS)
    day.command(f"INSERT INTO {purchases.table(day)} ({cols}) SELECT {cols} FROM {day.full_table} WHERE event = 'purchase'")
    for body in BODIES:
        fast, slow = both(day, "mall", body, monkeypatch)
        assert fast == slow


def test_migrate_builds_the_copy_of_existing_events(day, monkeypatch):  # noqa: F811
    for name in (f"{purchases.table(day)}_mv", purchases.table(day), purchases.parts_table(day)):
        day.command(f"DROP TABLE IF EXISTS {name}")
    day.migrate()
    assert copied(day) == day.query(f"SELECT count() FROM {day.full_table} WHERE event = 'purchase'")[0][0] == 8
    insert(day, ev("V9", 40, "purchase", order_id="O-5", revenue="1.00", currency="EUR"))  # and the view copies new ones
    assert copied(day, "order_id = 'O-5'") == 1
    for body in BODIES[:3]:
        fast, slow = both(day, "mall", body, monkeypatch)
        assert fast == slow


def test_retention_reaches_the_copy(day, monkeypatch):  # noqa: F811
    # O-OLD bought past the retention (395 days) and again today: once both tables have merged, today's purchase counts
    old = ev("V10", 0, "purchase", order_id="O-OLD", revenue="3.00", currency="EUR")
    old["received_at"] = f"{(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=400)).timestamp():.3f}"
    insert(day, old, ev("V10", 20, "purchase", order_id="O-OLD", revenue="3.00", currency="EUR"))
    purchases.ready(day)
    for table in (day.full_table, purchases.table(day)):
        day.command(f"OPTIMIZE TABLE {table} FINAL")
    assert copied(day, "order_id = 'O-OLD'") == 1
    fast, slow = both(day, "mall", {"metrics": SHOP}, monkeypatch)
    assert fast == slow
    assert fast[0]["metrics"][1]["EUR"] == "62.95"  # 59.95 + today's O-OLD
    try:  # the copy's TTL follows the configured retention
        day.retention_days = 30
        purchases.migrate(day)
        assert "toIntervalDay(30)" in day.query(f"SHOW CREATE TABLE {purchases.table(day)}")[0][0]
    finally:
        day.retention_days = 395
        purchases.migrate(day)
    assert "toIntervalDay(395)" in day.query(f"SHOW CREATE TABLE {purchases.table(day)}")[0][0]


# -- purchases with visit filters: each purchase's visit from the visits rollup ---------------------------------


def shopping() -> list[dict]:
    """tests/test_query_rollup.py's three days (visits across midnight, campaigns mid-visit, bots, cookieless
    events, a partner) with purchases: some events become purchases, some orders bought again later."""
    rows = rollup_data.scripted()
    rnd = random.Random(7)
    for i, row in enumerate(rows):
        # in a visit glued across midnight: before it (the visit's first segment) and after it
        glued = row["visitor_id"] in ("cross", "camp") and row["url"].endswith(("/b", "/d", "/e"))
        if glued or rnd.random() < 0.3:
            order = f"O-{rnd.randrange(40)}" if not glued else f"G-{i}"
            row.update(event="purchase", order_id=order, revenue=f"{rnd.randrange(1, 90)}.{rnd.randrange(100):02d}", currency="EUR")
    return rows


@pytest.fixture(scope="module")
def shop(store):
    """Once for the tests below (the module's last: the scripted-day tests truncate the events)."""
    store.command(f"TRUNCATE TABLE {store.full_table}")
    insert(store, *shopping())
    yield store
    store.command(f"TRUNCATE TABLE {store.full_table}")


VISIT_FILTERS = [
    [["is", "visit:source", ["Google"]]],
    [["is_not", "visit:source", ["Google"]]],
    [["is", "visit:utm_campaign", ["autumn", "spring"]]],
    [["is", "visit:entry_page", ["/a"]]],
    [["is", "visit:exit_page", ["/d", "/b"]]],
    [["is", "visit:country", ["DE"]], ["is_not", "visit:device", ["mobile"]]],
    [["or", [["is", "visit:device", ["mobile"]], ["contains", "visit:source", ["oo"]]]]],
]


@pytest.mark.parametrize(
    "filters, days, scope",
    [(f, "range", "mall") for f in VISIT_FILTERS]
    + [(f, "range", "partner") for f in VISIT_FILTERS[:2]]
    + [(f, d, "mall") for f in VISIT_FILTERS[:2] for d in ("first", "last")],
)
def test_purchases_take_their_visit_from_the_rollup(shop, filters, days, scope, monkeypatch):
    first, last = rollup_data.RANGE
    date_range = {"range": [first, last], "first": [first, first], "last": [last, last]}[days]
    for metrics, bots in ((["conversions", "total_revenue", "average_revenue"], False), (SHOP, True)):
        body = {"metrics": metrics, "date_range": date_range, "filters": filters, "include": {"bots": bots}}
        fast = query.run(shop, scope, body, now=rollup_data.NOW)["results"]
        with monkeypatch.context() as m:
            m.setattr(purchases, "ready", lambda store: "")
            slow = query.run(shop, scope, body, now=rollup_data.NOW)["results"]
        assert fast == slow


def test_a_visit_filtered_purchase_query_reads_no_event(shop):
    first, last = rollup_data.RANGE
    body = {"metrics": SHOP, "date_range": [first, last], "filters": VISIT_FILTERS[0]}
    q = query.parse(body, rollup_data.NOW)
    b = sql.Builder(q, "mall", shop.full_table, 30)
    b.purchases = purchases.ready(shop)
    b.rollup = rollup.prepare(shop, "mall", q, 30)
    assert b.rollup.irregular  # the visits across midnight are glued from their segments
    built, _ = b.build(10, 0, False)
    assert "ASOF JOIN" in built and f"FROM {shop.full_table} " not in built
    [row] = query.run(shop, "mall", body, now=rollup_data.NOW)["results"]
    assert row["metrics"][0] > 0
