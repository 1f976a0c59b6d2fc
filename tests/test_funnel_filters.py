"""Funnels take the dashboard's filters: visit filters and page filters, checked against a hand-counted script.

The scripted day (D, minutes after 10:00 UTC), mall scope, visit timeout 30 minutes; the
visit's source is on its first event, the country on every event of the visitor:
  F1 (DE)  0 pageview /a [Google], 1 product_view /a, 2 add_to_cart /a, 3 begin_checkout /c, 4 purchase /c
  F2 (FR)  0 pageview /b [Bing], 1 product_view /b, 2 add_to_cart /b
  F3 (FR)  0 pageview /b [Google], 1 product_view /b | 40 pageview /a (a second visit, no source),
           41 add_to_cart /a, 42 begin_checkout /a
  F4 (DE)  0 product_view /a [Bing]
  a bot (Google, DE) and partner "a"'s visitor P (Google, DE) run the whole funnel; neither counts for the mall.
Per visit, the levels (steps reached in order) are F1 4, F2 2, F3 1 and 0, F4 1; within an hour F3 reaches 3.
"""

from __future__ import annotations

import datetime as dt
import itertools

import orjson
import pytest

from beacon.query import QueryError, funnel

from .conftest import API_KEY, with_partners
from .test_partners import A_KEY, MALL, REGISTRY

UTC = dt.timezone.utc
D = dt.datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
NOW = D.replace(hour=23)
DAY = D.date().isoformat()
_ids = itertools.count(1)
COUNTRY = {"F1": "DE", "F2": "FR", "F3": "FR", "F4": "DE", "bot": "DE", "P": "DE"}


def ev(who: str, minute: float, event: str, page: str, source: str = "", scope: str = "mall") -> dict:
    return {
        "event_id": f"00000000-0000-7000-8000-{next(_ids):012d}",
        "received_at": f"{(D + dt.timedelta(minutes=minute)).timestamp():.3f}",
        "scope": scope,
        "visitor_id": f"visitor-{who}",
        "mode": "cookie",
        "event": event,
        "url": f"https://shop.test{page}",
        "referrer": "",
        "props": {},
        "ip": "203.0.113.0",
        "user_agent": "UA",
        "is_bot": int(who == "bot"),
        "transport": "beacon",
        "source": source,
        "country": COUNTRY[who],
    }


def whole(who: str, scope: str = "mall") -> list[dict]:
    steps = ("pageview", "product_view", "add_to_cart", "begin_checkout", "purchase")
    return [ev(who, i, e, "/a", "Google" if i == 0 else "", scope) for i, e in enumerate(steps)]


SCRIPT = [
    ev("F1", 0, "pageview", "/a", "Google"),
    ev("F1", 1, "product_view", "/a"),
    ev("F1", 2, "add_to_cart", "/a"),
    ev("F1", 3, "begin_checkout", "/c"),
    ev("F1", 4, "purchase", "/c"),
    ev("F2", 0, "pageview", "/b", "Bing"),
    ev("F2", 1, "product_view", "/b"),
    ev("F2", 2, "add_to_cart", "/b"),
    ev("F3", 0, "pageview", "/b", "Google"),
    ev("F3", 1, "product_view", "/b"),
    ev("F3", 40, "pageview", "/a"),
    ev("F3", 41, "add_to_cart", "/a"),
    ev("F3", 42, "begin_checkout", "/a"),
    ev("F4", 0, "product_view", "/a", "Bing"),
    *whole("bot"),
    *whole("P", "a"),
]


@pytest.fixture
def day(store, r):
    store.insert_lines(b"".join(orjson.dumps(e) + b"\n" for e in SCRIPT), "funnel-filters-" + str(next(_ids)))
    return store


def reached(store, scope="mall", **body):
    answer = funnel.run(store, scope, {"date_range": [DAY, DAY], **body}, now=NOW)
    return [s["visitors"] for s in answer["steps"]]


GOOGLE = ["is", "visit:source", ["Google"]]
DE_OR_B = ["or", [["is", "visit:country", ["DE"]], ["is", "event:page", ["/b"]]]]


@pytest.mark.parametrize(
    "filters, per_visit, within_an_hour",
    [
        ([], [4, 2, 1, 1], [4, 3, 2, 1]),
        ([GOOGLE], [2, 1, 1, 1], [2, 1, 1, 1]),  # F1's visit and F3's first
        ([["is", "event:page", ["/a"]]], [2, 1, 1, 1], [2, 1, 1, 1]),  # F1, F3's second visit (no product_view), F4
        ([["is", "event:page", ["/b"]]], [2, 1, 0, 0], [2, 1, 0, 0]),  # F2, F3's first visit
        ([["is", "visit:country", ["FR"]], ["contains", "event:page", ["/a"]]], [0, 0, 0, 0], [0, 0, 0, 0]),
        ([DE_OR_B], [4, 2, 1, 1], [4, 2, 1, 1]),  # every visit but F3's second: F3 no longer reaches 3 in the hour
        ([["is", "event:name", ["purchase"]]], [1, 1, 1, 1], [1, 1, 1, 1]),
        ([["not", ["is", "visit:source", ["Google"]]]], [2, 1, 0, 0], [2, 1, 0, 0]),  # F2, F3's second visit, F4
    ],
)
def test_filters_select_visits_as_they_do_for_every_panel(day, filters, per_visit, within_an_hour):
    assert reached(day, filters=filters) == per_visit
    assert reached(day, filters=filters, window=3600) == within_an_hour


def test_a_partner_funnel_filters_only_its_own_scope(day):
    assert reached(day, "a", filters=[GOOGLE]) == [1, 1, 1, 1]
    assert reached(day, "a", filters=[["is", "event:page", ["/b"]]]) == [0, 0, 0, 0]


def test_the_filters_are_echoed_and_bad_ones_named(day):
    answer = funnel.run(day, "mall", {"date_range": [DAY, DAY], "filters": [GOOGLE]}, now=NOW)
    assert answer["query"]["filters"] == [GOOGLE]
    with pytest.raises(QueryError, match="unknown filter dimension"):
        reached(day, filters=[["is", "visit:nope", ["x"]]])
    with pytest.raises(QueryError, match="no event:goal filter"):
        reached(day, filters=[["is", "event:goal", ["purchase"]]])


@pytest.fixture
def pclient(make_client, tmp_path):
    return with_partners(make_client, tmp_path, REGISTRY)


def test_the_funnel_route_takes_filters(day, pclient):
    body = {"date_range": [DAY, DAY], "filters": [["is", "event:page", ["/b"]]]}
    res = pclient.post(f"{MALL}/api/v2/funnel", json=body, headers={"authorization": f"Bearer {API_KEY}"})
    assert res.status_code == 200 and [s["visitors"] for s in res.json()["steps"]] == [2, 1, 0, 0]
    res = pclient.post(f"{MALL}/api/v2/funnel", json={**body, "filters": [GOOGLE]}, headers={"authorization": f"Bearer {A_KEY}"})
    assert res.status_code == 200 and [s["visitors"] for s in res.json()["steps"]] == [1, 1, 1, 1]
    bad = pclient.post(f"{MALL}/api/v2/funnel", json={**body, "filters": "x"}, headers={"authorization": f"Bearer {API_KEY}"})
    assert bad.status_code == 400 and "filters" in bad.json()["error"]


def test_the_dashboard_funnel_panel_follows_the_page_filters(day, pclient):
    res = pclient.post(f"{MALL}/dashboard/login", data={"key": API_KEY}, headers={"origin": MALL}, follow_redirects=False)
    assert res.status_code == 303
    panel = pclient.get(f"{MALL}/dashboard/api/panel/funnel", params={"period": "custom", "from": DAY, "to": DAY, "f": "event:page=/b"})
    data = panel.json()
    assert [row[1] for row in data["rows"]] == [2, 1, 0, 0]
    assert not data.get("note")
    unfiltered = pclient.get(f"{MALL}/dashboard/api/panel/funnel", params={"period": "custom", "from": DAY, "to": DAY}).json()
    assert [row[1] for row in unfiltered["rows"]] == [4, 2, 1, 1]
