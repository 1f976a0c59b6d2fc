"""Hostile pixel requests: the GIF always answers, nothing garbled is stored."""

from __future__ import annotations

from beacon.routes import GIF


def gif(res) -> bool:
    return res.status_code == 200 and res.content == GIF


def test_a_16_kib_query_string_answers_the_gif_and_stores_nothing(client, flush):
    res = client.get("/p.gif?e=pageview&u=" + "a" * 16384)
    assert gif(res)
    assert flush() == 0


def test_invalid_percent_encoding_and_utf8_drop_only_the_bad_parameters(client, flush, rows):
    res = client.get("/p.gif?e=pageview&u=https%3A%2F%2Fshop.test%2Fok&r=%ff%fe%c3&p.bad=%e2%82&p.good=%C3%A9t%C3%A9")
    assert gif(res)
    res2 = client.get("/p.gif?e=pageview&u=%zz%4")
    assert gif(res2)
    flush()
    first, second = rows()
    assert first["url"] == "https://shop.test/ok"
    assert first["referrer"] == ""
    assert first["props"] == {"good": "été"}
    assert second["url"] == "%zz%4"  # not an escape: kept as the literal text it is


def test_unknown_parameters_are_ignored(client, flush, rows):
    res = client.get("/p.gif?e=pageview&scope=partner-a&visitor_id=x&ip=1.2.3.4&zz=1")
    assert gif(res)
    flush()
    [row] = rows()
    assert row["scope"] == "mall" and row["ip"] == "203.0.113.0" and row["visitor_id"] != "x"


def test_control_characters_are_removed_from_text_fields(client, flush, rows):
    res = client.get("/p.gif?e=pageview&u=https://shop.test/%00a%0d%0ab%1b&p.k=v%07", headers={"user-agent": "UA\x7f1"})
    assert gif(res)
    flush()
    [row] = rows()
    assert row["url"] == "https://shop.test/ab"
    assert row["props"] == {"k": "v"}
    assert row["user_agent"] == "UA1"


def test_an_invalid_event_name_still_answers_the_gif_but_records_nothing(client, flush):
    for bad in ("bad%20name", "x" * 65, "%3Cscript%3E", ""):
        assert gif(client.get(f"/p.gif?e={bad}"))
    assert flush() == 0


def test_too_many_or_bad_properties_drop_the_event(make_client, flush):
    client = make_client(max_props="2")
    assert gif(client.get("/p.gif?p.a=1&p.b=2&p.c=3"))
    assert gif(client.get("/p.gif?p.bad%20key=1"))
    assert flush() == 1  # the first is cut at max_props parameters; the bad key drops the second


def test_unknown_paths_answer_404_not_500(client):
    assert client.get("/nope").status_code == 404
    assert client.get("/P.GIF").status_code == 404
