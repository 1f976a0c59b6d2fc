"""The same pixel query again and again (beacon/routes.py remembers how a query checked out):
every hit is its own event, and every refusal and dropped parameter is counted every time."""

from __future__ import annotations

import re

KEY = "metrics-key-for-tests"
QUERY = "/p.gif?u=https%3A%2F%2Fshop.test%2Fitem%2F7&r=https%3A%2F%2Fsearch.test%2F&p.sku=X-7"


def counter(client, name: str, labels: str = "") -> float:
    text = client.get("/metrics", headers={"authorization": f"Bearer {KEY}"}).text
    m = re.search(rf"^{name}{re.escape(labels)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_a_repeated_query_from_two_visitors_is_two_events_with_their_own_ids(make_client, flush, rows):
    client = make_client(metrics_key=KEY)
    for _ in range(2):
        client.cookies.clear()
        assert client.get(QUERY).status_code == 200
    assert client.get(QUERY).status_code == 200  # the second visitor again, with its cookie
    assert flush() == 3
    got = rows()
    assert {r["url"] for r in got} == {"https://shop.test/item/7"} and {r["props"]["sku"] for r in got} == {"X-7"}
    assert len({r["event_id"] for r in got}) == 3 and len({r["visitor_id"] for r in got}) == 2


def test_the_same_query_with_another_referer_takes_that_page(make_client, flush, rows):
    client = make_client(metrics_key=KEY)
    for page in ("https://shop.test/a", "https://shop.test/b", "https://shop.test/a"):
        client.get("/p.gif?e=pageview", headers={"referer": page})
    flush()
    assert sorted(r["url"] for r in rows()) == ["https://shop.test/a", "https://shop.test/a", "https://shop.test/b"]


def test_a_refused_query_is_counted_on_every_hit(make_client, flush):
    client = make_client(metrics_key=KEY)
    labels = '{reason="invalid"}'
    before = counter(client, "beacon_events_rejected_total", labels)
    for _ in range(3):
        res = client.get("/p.gif?e=bad%20name")
        assert res.status_code == 200 and res.headers["content-type"] == "image/gif"
    assert counter(client, "beacon_events_rejected_total", labels) - before == 3
    assert flush() == 0


def test_a_dropped_parameter_is_counted_on_every_hit(make_client, flush):
    client = make_client(metrics_key=KEY)
    before = counter(client, "beacon_fields_dropped_total")
    for _ in range(3):
        client.get("/p.gif?p.a=%ff&p.b=ok")
    assert counter(client, "beacon_fields_dropped_total") - before == 3
    assert flush() == 3
