"""Fast unit tests of the request path over the in-memory sink (tests/memory.py).

What reaches Redis and ClickHouse is tested against the real engines elsewhere
(test_pixel, test_collect, test_faults...); these cover the logic above the buffer.
"""

from __future__ import annotations

import time

from beacon.clock import ManualClock
from beacon.routes import GIF

from .memory import unit_client

UA = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"}


def test_a_pixel_hands_one_encoded_line_to_the_buffer():
    client, buffer = unit_client()
    res = client.get("/p.gif?e=view&u=https%3A%2F%2Fshop.test%2Fx", headers=UA)
    assert res.status_code == 200 and res.content == GIF
    [event] = buffer.events()
    assert event["event"] == "view" and event["url"] == "https://shop.test/x" and event["transport"] == "pixel"
    assert event["visitor_id"] == res.cookies["bcn"].split(".")[0]


def test_received_at_comes_from_the_injected_clock():
    start = float(int(time.time()) - 86400)  # event ids are monotonic per process: only received_at is checked
    clock = ManualClock(start)
    client, buffer = unit_client(clock)
    client.get("/p.gif", headers=UA)
    clock.advance(60)
    client.get("/p.gif", headers=UA)
    first, second = buffer.events()
    assert (float(first["received_at"]), float(second["received_at"])) == (start, start + 60)
    assert first["event_id"] != second["event_id"]


def test_a_cookie_older_than_the_refresh_age_is_reissued_with_the_same_id():
    clock = ManualClock(1_750_000_000.0)
    client, _ = unit_client(clock, cookie_refresh_age=3600)
    cookie = client.get("/p.gif", headers=UA).cookies["bcn"]
    client.cookies.clear()
    clock.advance(60)
    assert "set-cookie" not in client.get("/p.gif", headers={**UA, "cookie": f"bcn={cookie}"}).headers
    clock.advance(7200)
    again = client.get("/p.gif", headers={**UA, "cookie": f"bcn={cookie}"})
    assert again.cookies["bcn"].split(".")[0] == cookie.split(".")[0] and again.cookies["bcn"] != cookie


def test_a_cookie_past_its_max_age_gets_a_new_id():
    clock = ManualClock(1_750_000_000.0)
    client, _ = unit_client(clock, cookie_max_age=3600)
    cookie = client.get("/p.gif", headers=UA).cookies["bcn"]
    client.cookies.clear()
    clock.advance(3601)
    fresh = client.get("/p.gif", headers={**UA, "cookie": f"bcn={cookie}"}).cookies["bcn"]
    assert fresh.split(".")[0] != cookie.split(".")[0]


def test_too_many_events_is_413_with_its_reason():
    client, buffer = unit_client(max_batch_events=2)
    res = client.post("/e", content=b'[{"e":"a"},{"e":"b"},{"e":"c"}]', headers={"content-type": "text/plain"})
    assert res.status_code == 413 and res.json() == {"error": "too many events: 3 > 2"}
    assert buffer.lines == []


def test_an_invalid_event_in_a_batch_is_400_naming_it_and_nothing_is_kept():
    client, buffer = unit_client()
    res = client.post("/e", content=b'[{"e":"ok"},{"e":"not ok"}]', headers={"content-type": "text/plain"})
    assert res.status_code == 400 and res.json()["error"].startswith("event 1: event name")
    assert buffer.lines == []


def test_a_buffer_that_cannot_make_events_durable_gets_no_2xx_on_post():
    client, buffer = unit_client()
    buffer.failing = True
    res = client.post("/e", content=b'{"e":"a"}', headers={"content-type": "text/plain"})
    assert res.status_code == 503 and "not stored" in res.json()["error"]
