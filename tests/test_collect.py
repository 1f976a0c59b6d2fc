from __future__ import annotations

import orjson

ORIGIN = "https://shop.test"


def test_a_post_batch_becomes_its_rows(client, flush, rows):
    events = [
        {"e": "pageview", "u": "https://shop.test/a"},
        {"e": "add_to_cart", "u": "https://shop.test/a", "p": {"sku": "X-1", "qty": 2, "gift": True}},
        {"e": "pageview", "u": "https://shop.test/b", "r": "https://shop.test/a"},
    ]
    res = client.post("/e", content=orjson.dumps(events), headers={"content-type": "text/plain;charset=UTF-8"})
    assert res.status_code == 204
    visitor = res.cookies["bcn"].split(".")[0]
    res2 = client.post("/e", json={"e": "search", "p": {"q": "boots"}})
    assert res2.status_code == 204
    assert flush() == 4
    got = rows()
    assert len(got) == 4 and len({r["event_id"] for r in got}) == 4
    by_event = {r["event"]: r for r in got}
    assert by_event["add_to_cart"]["props"] == {"sku": "X-1", "qty": "2", "gift": "true"}
    assert by_event["add_to_cart"]["visitor_id"] == visitor
    assert by_event["search"]["props"] == {"q": "boots"}
    assert {r["transport"] for r in got} == {"beacon"}


def test_cors_echoes_an_allowed_origin_with_credentials_never_a_star(make_client, flush):
    client = make_client(site_origins=ORIGIN)
    res = client.post("/e", json={"e": "pageview"}, headers={"origin": ORIGIN})
    assert res.status_code == 204
    assert res.headers["access-control-allow-origin"] == ORIGIN
    assert res.headers["access-control-allow-credentials"] == "true"
    pre = client.options(
        "/e", headers={"origin": ORIGIN, "access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in pre.headers["access-control-allow-methods"]
    evil = client.post("/e", json={"e": "pageview"}, headers={"origin": "https://evil.test"})
    assert evil.status_code == 403 and "origin" in evil.json()["error"]
    assert "access-control-allow-origin" not in evil.headers
    evil_pre = client.options("/e", headers={"origin": "https://evil.test", "access-control-request-method": "POST"})
    assert evil_pre.status_code == 403
    assert "access-control-allow-origin" not in evil_pre.headers
    assert flush() == 1


LOCAL_PAGES = ("http://127.0.0.1:8000", "http://localhost:5500", "https://localhost", "http://[::1]:8000")
NOT_LOCAL = (
    "http://localhost.evil.test",
    "http://127.0.0.1.evil.test:80",
    "https://evil.test",
    "http://user@localhost:80",
    "null",
    "http://[::1",
    "http://localhost:x",
    "http://[zz]:80",
)


def test_with_loopback_origins_pages_on_this_machine_may_post_events(make_client, flush):
    client = make_client(loopback_origins=True)  # what `beacon up` sets while BEACON_SITE_ORIGINS is empty
    for origin in LOCAL_PAGES:
        pre = client.options("/e", headers={"origin": origin, "access-control-request-method": "POST"})
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == origin, origin
        res = client.post("/e", json={"e": "pageview", "u": f"{origin}/"}, headers={"origin": origin})
        assert res.status_code == 204 and res.headers["access-control-allow-origin"] == origin, origin
    for origin in NOT_LOCAL:
        res = client.post("/e", json={"e": "pageview"}, headers={"origin": origin})
        assert res.status_code == 403 and "access-control-allow-origin" not in res.headers, origin
    assert flush() == len(LOCAL_PAGES)


def test_without_loopback_origins_site_origins_stay_exact(make_client, flush):
    for client in (make_client(), make_client(site_origins=ORIGIN)):  # `beacon serve`'s default, and a configured list
        for origin in LOCAL_PAGES:
            res = client.post("/e", json={"e": "pageview"}, headers={"origin": origin})
            assert res.status_code == 403, origin
    assert flush() == 0


def test_bad_posts_get_a_4xx_with_a_reason_and_store_nothing(make_client, flush):
    client = make_client(max_body_bytes="1024", max_batch_events="5")
    cases = [
        (client.post("/e", content=b"x" * 2048, headers={"content-type": "text/plain"}), 413, "larger than 1024"),
        (client.post("/e", content=b'{"e": "pageview",', headers={"content-type": "text/plain"}), 400, "malformed JSON"),
        (client.post("/e", content=b"\xff\xfe{}", headers={"content-type": "text/plain"}), 400, "malformed JSON"),
        (client.post("/e", json=[{"e": "a"}] * 6), 413, "too many events: 6 > 5"),
        (client.post("/e", json=[]), 400, "no events"),
        (client.post("/e", json=[{"e": "ok"}, "nope"]), 400, "event 1: must be an object"),
        (client.post("/e", json={"e": "bad name!"}), 400, "event name"),
        (client.post("/e", json={"e": "a", "p": ["x"]}), 400, "properties"),
        (client.post("/e", json={"e": "a", "p": {"k": {"nested": 1}}}), 400, "property 'k'"),
        (client.post("/e", json={"e": "a", "u": 5}), 400, "u must be a string"),
        (client.post("/e", content=b"e=a", headers={"content-type": "application/x-www-form-urlencoded"}), 415, "content type"),
        (client.get("/e"), 405, "use POST"),
        (client.put("/e", json={}), 405, "use POST"),
    ]
    for res, status, reason in cases:
        assert res.status_code == status, (res.status_code, res.text)
        assert reason in res.json()["error"]
    assert flush() == 0


def test_a_body_streamed_past_the_limit_is_refused(make_client, flush):
    client = make_client(max_body_bytes="1000")

    def chunks():
        for _ in range(20):
            yield b"[" + b" " * 100

    res = client.post("/e", content=chunks(), headers={"content-type": "text/plain"})
    assert res.status_code == 413
    assert flush() == 0


def test_long_fields_are_cut_and_control_characters_removed(make_client, flush, rows):
    client = make_client(max_url_length="50", max_prop_value_length="10")
    client.post("/e", json={"e": "a", "u": "https://shop.test/" + "x" * 100, "r": "ref\x00\x1b[31m\x7f", "p": {"k": "v" * 20}})
    flush()
    [row] = rows()
    assert len(row["url"]) == 50
    assert row["referrer"] == "ref[31m"
    assert row["props"] == {"k": "v" * 10}
