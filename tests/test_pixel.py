from __future__ import annotations

import datetime as dt
import uuid

from beacon.routes import GIF

from .conftest import KEY


def test_pixel_answers_the_43_byte_gif_with_its_headers(client):
    res = client.get("/p.gif")
    assert res.status_code == 200
    assert res.content == GIF and len(GIF) == 43
    assert res.content[:6] == b"GIF89a"
    assert res.headers["content-type"] == "image/gif"
    assert res.headers["cache-control"] == "no-store"
    assert res.headers["cross-origin-resource-policy"] == "cross-origin"


def test_a_pixel_hit_becomes_one_row_with_every_field_right(client, flush, rows):
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    res = client.get(
        "/p.gif",
        params={"e": "pageview", "u": "https://shop.test/shoes?id=7", "r": "https://search.test/", "p.campaign": "winter", "p.slot": "top"},
        headers={"user-agent": "Mozilla/5.0 (X11) Firefox/140.0"},
    )
    visitor = res.cookies["bcn"].split(".")[0]
    assert flush() == 1
    [row] = rows()
    assert row["event_id"].version == 7
    assert before - dt.timedelta(seconds=1) <= row["received_at"] <= dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert row["scope"] == "mall"
    assert row["visitor_id"] == visitor and uuid.UUID(visitor).version == 4
    assert row["mode"] == "cookie"
    assert row["event"] == "pageview"
    assert row["url"] == "https://shop.test/shoes?id=7"
    assert row["referrer"] == "https://search.test/"
    assert row["props"] == {"campaign": "winter", "slot": "top"}
    assert row["ip"] == "203.0.113.0"
    assert row["user_agent"] == "Mozilla/5.0 (X11) Firefox/140.0"
    assert row["transport"] == "pixel"


def test_page_url_falls_back_to_the_referer_header(client, flush, rows):
    client.get("/p.gif", headers={"referer": "https://shop.test/cart"})
    flush()
    assert [r["url"] for r in rows()] == ["https://shop.test/cart"]


def test_counts_are_exact_over_many_hits(client, flush, rows, store):
    for i in range(200):
        client.get("/p.gif", params={"e": "view_item", "p.n": str(i)})
    assert flush() == 200
    assert store.query(f"SELECT count(), uniqExact(event_id), uniqExact(props['n']) FROM {store.full_table}") == [(200, 200, 200)]


def test_head_answers_headers_and_records_nothing(client, flush, rows):
    res = client.head("/p.gif")
    assert res.status_code == 200 and res.headers["content-type"] == "image/gif"
    assert flush() == 0


def test_wrong_method_on_the_pixel_is_405(client, flush):
    res = client.post("/p.gif", content=b"x")
    assert res.status_code == 405
    assert res.headers["allow"] == "GET, HEAD"
    assert "GET" in res.json()["error"]
    assert flush() == 0


def test_ip_is_truncated_and_forwarded_for_trusted_only_from_proxies(make_client, flush, rows):
    untrusted = make_client()
    untrusted.get("/p.gif?e=a", headers={"x-forwarded-for": "198.51.100.23"})
    trusted = make_client(trusted_proxies="203.0.113.0/24")
    trusted.get("/p.gif?e=b", headers={"x-forwarded-for": "198.51.100.23, 203.0.113.5"})
    trusted.get("/p.gif?e=c", headers={"x-forwarded-for": "2001:db8:abcd:12:1::9"})
    flush()
    got = {r["event"]: r["ip"] for r in rows()}
    assert got == {"a": "203.0.113.0", "b": "198.51.100.0", "c": "2001:db8:abcd::"}


def test_secret_keys_are_required():
    import pytest

    from beacon import config
    from beacon.app import create_app

    with pytest.raises(config.ConfigError, match="BEACON_SECRET_KEYS"):
        create_app(config.load({"redis_url": "redis://127.0.0.1:1"}, environ={}))
    assert KEY  # the fixtures sign with a real key


def test_event_ids_are_uuid7_and_increase_within_a_millisecond():
    import time

    from beacon.event import uuid7

    t = round(time.time() + 86400, 3)  # later than any id this process made so far
    ids = [uuid7(t) for _ in range(5000)]
    assert len(set(ids)) == 5000
    assert ids == sorted(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[:10])
    assert uuid.UUID(ids[0]).int >> 80 == int(t * 1000)
    assert uuid7(t - 10) > ids[-1]  # a clock step back never reorders ids


def test_the_readme_lists_every_setting():
    from pathlib import Path

    from beacon.config import OPTIONS

    readme = Path(__file__).parent.parent.joinpath("README.md").read_text()
    missing = [o.env for o in OPTIONS if f"`{o.env}`" not in readme or f"`{o.flag}`" not in readme]
    assert missing == []
