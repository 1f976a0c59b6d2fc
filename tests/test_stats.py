from __future__ import annotations

import datetime as dt

from .conftest import API_KEY

AUTH = {"authorization": f"Bearer {API_KEY}"}


def test_stats_need_the_mall_key(client):
    assert client.get("/api/v1/stats").status_code == 401
    assert client.get("/api/v1/stats", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/v1/stats", headers={"authorization": f"Basic {API_KEY}"}).status_code == 401
    assert client.get("/api/v1/stats", headers={"authorization": f"Bearer {API_KEY}x"}).status_code == 401
    assert client.get("/api/v1/stats", headers=AUTH).status_code == 200


def test_an_empty_api_key_setting_opens_nothing(make_client):
    c = make_client(mall_api_key="")
    assert c.get("/api/v1/stats", headers={"authorization": "Bearer "}).status_code == 401


def test_stats_count_events_pageviews_visitors_pages_and_referrers(client, flush):
    for _ in range(3):  # three visitors, each a new cookie
        client.cookies.clear()
        client.get("/p.gif", params={"u": "https://shop.test/", "r": "https://search.test/"})
    client.cookies.clear()
    cookie = client.get("/p.gif", params={"u": "https://shop.test/shoes"}).headers["set-cookie"].split(";")[0]
    for _ in range(4):
        client.get("/p.gif", params={"u": "https://shop.test/shoes"}, headers={"cookie": cookie})
    client.get("/p.gif", params={"e": "add_to_cart", "u": "https://shop.test/shoes"}, headers={"cookie": cookie})
    assert flush() == 9
    body = client.get("/api/v1/stats", params={"interval": "day"}, headers=AUTH).json()
    assert body["totals"] == {"events": 9, "pageviews": 8, "visitors": 4}
    assert body["interval"] == "day"
    assert sum(p["events"] for p in body["series"]) == 9
    assert body["top_pages"] == [{"url": "https://shop.test/shoes", "pageviews": 5}, {"url": "https://shop.test/", "pageviews": 3}]
    assert body["top_referrers"] == [{"referrer": "https://search.test/", "events": 3}]


def test_stats_respect_the_time_range(client, flush):
    client.get("/p.gif")
    flush()
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).date().isoformat()
    body = client.get("/api/v1/stats", params={"from": future, "to": future + "T23:00:00"}, headers=AUTH).json()
    assert body["totals"]["events"] == 0
    hourly = client.get("/api/v1/stats", headers=AUTH).json()
    assert hourly["totals"]["events"] == 1 and len(hourly["series"]) == 1


def test_bad_ranges_get_400_with_a_reason(client):
    for params, reason in [
        ({"interval": "week"}, "interval"),
        ({"from": "yesterday"}, "ISO 8601"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, "before"),
    ]:
        res = client.get("/api/v1/stats", params=params, headers=AUTH)
        assert res.status_code == 400 and reason in res.json()["error"]


def test_health_readiness_and_metrics(make_client, flush):
    client = make_client(metrics_key="metrics-key-for-tests")
    assert client.get("/healthz").text == "ok"
    client.get("/p.gif")
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["stream"]["entries"] == 1
    flush()
    text = client.get("/metrics", headers={"authorization": "Bearer metrics-key-for-tests"}).text
    assert 'beacon_requests_total{route="pixel",status="200"}' in text
    assert "beacon_events_accepted_total" in text
    assert "beacon_buffer_batch_events_bucket" in text
    assert "beacon_flush_rows_total" in text
    assert "beacon_stream_entries 0.0" in text


def test_metrics_count_every_pixel_and_accepted_event(make_client):
    client = make_client(metrics_key="metrics-key-for-tests")

    def scraped() -> tuple[float, float]:
        text = client.get("/metrics", headers={"authorization": "Bearer metrics-key-for-tests"}).text
        values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line and not line.startswith("#")}
        return (
            values.get('beacon_requests_total{route="pixel",status="200"}', 0.0),
            values.get('beacon_events_accepted_total{scope="mall"}', 0.0),
        )

    pixels, accepted = scraped()
    for _ in range(7):
        assert client.get("/p.gif").status_code == 200
    assert client.post("/e", content=b'[{"e":"a"},{"e":"b"},{"e":"c"}]').status_code == 204
    assert scraped() == (pixels + 7, accepted + 10)
