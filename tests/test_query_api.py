"""POST /api/v2/query over HTTP: the key decides the scope, bad requests get 400, exports stream."""

from __future__ import annotations

import csv
import io

import orjson
import pytest

from .conftest import API_KEY
from .test_partners import A_KEY, B_KEY, REGISTRY
from .test_query import DAY, insert, scripted

MALL = "https://shop.test"
URL = f"{MALL}/api/v2/query"
AUTH = {"authorization": f"Bearer {API_KEY}"}
A_AUTH = {"authorization": f"Bearer {A_KEY}"}
B_AUTH = {"authorization": f"Bearer {B_KEY}"}
TOTALS = {"metrics": ["visitors", "visits", "pageviews"], "date_range": [DAY, DAY]}


@pytest.fixture
def api(make_client, tmp_path, store):
    path = tmp_path / "partners.toml"
    path.write_text(REGISTRY)
    client = make_client(partners_file=str(path), mall_hosts="shop.test", site_origins=MALL)
    insert(store, scripted())
    return client


def results(res) -> list[tuple[list[str], list]]:
    assert res.status_code == 200, res.text
    return [(r["dimensions"], r["metrics"]) for r in res.json()["results"]]


def test_the_mall_key_reads_the_mall(api):
    res = api.post(URL, json={**TOTALS, "dimensions": ["visit:device"]}, headers=AUTH)
    assert results(res) == [(["desktop"], [2, 3, 5]), (["mobile"], [2, 4, 7])]  # visitors tie: by dimension
    body = res.json()
    assert body["meta"]["scope"] == "mall"
    assert body["query"]["dimensions"] == ["visit:device"] and body["query"]["metrics"] == TOTALS["metrics"]
    assert res.headers["content-type"] == "application/json"


def test_a_partner_key_reads_only_its_own_scope(api):
    assert results(api.post(URL, json=TOTALS, headers=A_AUTH)) == [([], [1, 2, 3])]
    assert results(api.post(URL, json=TOTALS, headers=B_AUTH)) == [([], [0, 0, 0])]
    # nothing in the body can widen the scope: mall rows stay out of reach
    pages = results(api.post(URL, json={**TOTALS, "dimensions": ["event:page"], "include": {"bots": True}}, headers=A_AUTH))
    assert sorted(p for (p,), _ in pages) == ["/ad", "/ad2"]
    assert results(api.post(URL, json={**TOTALS, "site_id": "mall"}, headers=A_AUTH)) == [([], [1, 2, 3])]
    assert results(api.post(URL, json={**TOTALS, "filters": [["is", "visit:country", ["DE"]]]}, headers=A_AUTH)) == [([], [0, 0, 0])]
    res = api.post(URL, json={**TOTALS, "scope": "mall"}, headers=A_AUTH)
    assert res.status_code == 400 and "unknown key 'scope'" in res.json()["error"]


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {API_KEY}"}, {"authorization": f"Bearer {A_KEY}x"}]
)
def test_no_key_no_answer(api, headers):
    res = api.post(URL, json=TOTALS, headers=headers)
    assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer"


def test_only_post(api):
    assert api.get(URL, headers=AUTH).status_code == 405


@pytest.mark.parametrize(
    "content, headers, names",
    [
        (b'{"metrics": ["visitors"], "date_range": "day"', {}, "malformed JSON"),
        (b"", {}, "malformed JSON"),
        (b"\xff\xfe", {}, "malformed JSON"),
        (b'{"metrics": ["visitors"], "date_range": "day"}', {"content-type": "text/plain"}, "content type must be application/json"),
        (b'{"metrics": ["visitors"], "date_range": "day"}', {"content-type": ""}, "content type"),
        (b'{"metrics": ["visitors"], "date_range": "day", "site_id": "' + b"x" * 70000 + b'"}', {}, "body larger than 65536"),
        (b'{"metrics": ["bananas"], "date_range": "day"}', {}, "unknown metric 'bananas'"),
        (b'{"metrics": ["visitors"], "date_range": "day", "dimensions": ["visit:shoe"]}', {}, "unknown dimension 'visit:shoe'"),
        (b'{"metrics": ["visitors"], "date_range": "day", "filters": [["is", "visit:source"]]}', {}, "filter 'is'"),
        (b'{"metrics": ["visitors"], "date_range": "yesterday"}', {}, "date_range 'yesterday'"),
        (b'{"metrics": ["visitors"], "date_range": ["2026-01-01", "soon"]}', {}, "'soon'"),
        (b'{"metrics": ["visitors"], "date_range": "day", "pagination": {"limit": 100000}}', {}, "pagination.limit"),
        (b"[1, 2]", {}, "JSON object"),
        (b'"visitors"', {}, "JSON object"),
        (b'{"metrics": [{"a": 1}], "date_range": "day"}', {}, "unknown metric"),
        (b'{"metrics": ["visitors"], "date_range": "day", "order_by": "visitors"}', {}, "order_by"),
    ],
)
def test_bad_requests_get_400_naming_the_bad_part(api, content, headers, names):
    res = api.post(URL, content=content, headers={"content-type": "application/json", **AUTH, **headers})
    assert res.status_code == 400, res.text
    assert names in res.json()["error"]


def test_a_large_body_is_refused_while_it_streams(api):
    def chunks():
        yield b'{"metrics": ["visitors"], "date_range": "day", "site_id": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    res = api.post(URL, content=chunks(), headers={"content-type": "application/json", **AUTH})
    assert res.status_code == 400 and "body larger than" in res.json()["error"]


def test_odd_bodies_never_give_a_500(api):
    odd = [
        None,
        0,
        "",
        [],
        {},
        {"metrics": None},
        {"metrics": [None]},
        {"metrics": ["visitors"], "date_range": 7},
        {"metrics": ["visitors"], "date_range": [None, None]},
        {"metrics": ["visitors"], "date_range": ["", ""]},
        {"metrics": ["visitors"], "date_range": ["2026-01-01T00:00:00+25:00", "2026-01-02"]},
        {"metrics": ["visitors"], "date_range": ["0001-01-01", "9999-12-31"]},
        {"metrics": ["visitors"], "date_range": "day", "filters": [[]]},
        {"metrics": ["visitors"], "date_range": "day", "filters": [["not"]]},
        {"metrics": ["visitors"], "date_range": "day", "filters": [["or", [["is", "event:page", []]]]]},
        {"metrics": ["visitors"], "date_range": "day", "filters": [["is", "event:page", ["/"], {"case_sensitive": 1}]]},
        {"metrics": ["visitors"], "date_range": "day", "pagination": {"limit": True}},
        {"metrics": ["visitors"], "date_range": "day", "pagination": []},
        {"metrics": ["visitors"], "date_range": "day", "dimensions": ["event:props:" + "p" * 65]},
        {"metrics": ["visitors"], "date_range": "day", "dimensions": [["event:page"]]},
        {"metrics": ["visitors"] * 2, "date_range": "day"},
        {"metrics": ["visitors"], "date_range": "day", "dimensions": ["time:day", "time:hour"]},
    ]
    for body in odd:
        res = api.post(URL, content=orjson.dumps(body), headers={"content-type": "application/json", **AUTH})
        assert res.status_code == 400, (body, res.text)
        assert res.json()["error"]


def test_values_that_look_like_sql_are_only_values(api):
    body = {
        **TOTALS,
        "filters": [["is", "event:page", ["/' OR 1=1 --"]], ["contains", "visit:source", ["\\'"]]],
        "dimensions": ["event:props:a.b-c:d_e"],
    }
    assert results(api.post(URL, json=body, headers=AUTH)) == []


def test_csv_export_streams_every_row_with_a_header(api):
    body = {
        "metrics": ["visitors", "pageviews", "bounce_rate"],
        "date_range": [DAY, DAY],
        "dimensions": ["event:page"],
        "order_by": [["pageviews", "desc"], ["event:page", "asc"]],
    }
    res = api.post(URL, json=body, headers={**AUTH, "accept": "text/csv"})
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(res.text))) == [
        ["event:page", "visitors", "pageviews", "bounce_rate"],
        ["/", "3", "4", "25"],
        ["/shoes", "3", "4", "25"],
        ["/hats", "2", "2", "50"],
        ["/cart", "1", "1", "0"],
        ["/sale", "1", "1", "0"],
    ]
    paged = api.post(URL, json={**body, "pagination": {"limit": 2, "offset": 1}}, headers={**AUTH, "accept": "text/csv"})
    assert [line.split(",")[0] for line in paged.text.splitlines()] == ["event:page", "/shoes", "/hats"]


def test_an_export_larger_than_a_page_comes_whole_and_in_order(api, monkeypatch):
    from beacon import query

    monkeypatch.setattr(query, "EXPORT_PAGE", 2)
    body = {"metrics": ["pageviews"], "date_range": [DAY, DAY], "dimensions": ["event:page"], "order_by": [["event:page", "asc"]]}
    res = api.post(URL, json=body, headers={**AUTH, "accept": "text/csv"})
    assert res.text.splitlines() == ["event:page,pageviews", "/,4", "/cart,1", "/hats,2", "/sale,1", "/shoes,4"]
    nd = api.post(URL, json={**body, "pagination": {"limit": 3, "offset": 1}}, headers={**AUTH, "accept": "application/x-ndjson"})
    assert [orjson.loads(line)["event:page"] for line in nd.text.splitlines()] == ["/cart", "/hats", "/sale"]


def test_ndjson_export_for_the_mall_and_for_a_partner(api):
    body = {"metrics": ["visitors", "visits"], "date_range": [DAY, DAY], "dimensions": ["visit:country"]}
    res = api.post(URL, json=body, headers={**AUTH, "accept": "application/x-ndjson"})
    assert res.headers["content-type"] == "application/x-ndjson"
    assert [orjson.loads(line) for line in res.text.splitlines()] == [
        {"visit:country": "DE", "visitors": 2, "visits": 3},
        {"visit:country": "", "visitors": 1, "visits": 1},
        {"visit:country": "FR", "visitors": 1, "visits": 3},
    ]
    mine = api.post(URL, json=body, headers={**A_AUTH, "accept": "application/x-ndjson"})
    assert [orjson.loads(line) for line in mine.text.splitlines()] == [
        {"visit:country": "US", "visitors": 1, "visits": 1},
        {"visit:country": "", "visitors": 0, "visits": 1},
    ]
    theirs = api.post(URL, json=body, headers={**B_AUTH, "accept": "application/x-ndjson"})
    assert theirs.status_code == 200 and theirs.text == ""


def test_an_export_of_a_bad_query_is_a_400_not_a_broken_stream(api):
    res = api.post(URL, json={"metrics": ["nope"], "date_range": "day"}, headers={**AUTH, "accept": "text/csv"})
    assert res.status_code == 400 and "unknown metric" in res.json()["error"]


def test_pixel_hits_answer_realtime_with_visits_also_when_cookieless(api, flush):
    api.get("/p.gif", params={"u": "https://shop.test/"})
    api.cookies.clear()
    gpc = {"sec-gpc": "1", "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0"}
    api.get("/p.gif", params={"u": "https://shop.test/a"}, headers=gpc)
    api.get("/p.gif", params={"u": "https://shop.test/b"}, headers=gpc)
    assert not api.cookies
    assert flush() == 3
    body = {"metrics": ["visitors", "visits", "pageviews", "bounce_rate"], "date_range": "realtime"}
    assert results(api.post(URL, json=body, headers=AUTH)) == [([], [2, 2, 3, 50])]
    cookieless = {**body, "dimensions": ["visit:entry_page", "visit:exit_page"], "filters": [["is_not", "visit:entry_page", ["/"]]]}
    assert results(api.post(URL, json=cookieless, headers=AUTH)) == [(["/a", "/b"], [1, 1, 2, 0])]


def test_v1_stats_still_answer(api):
    assert api.get("/api/v1/stats", headers=AUTH).status_code == 200


def test_clickhouse_trouble_is_a_503_with_one_log_line(make_settings, store, r, caplog):
    import copy

    from starlette.testclient import TestClient

    from beacon.app import create_app

    broken = copy.copy(store)
    broken.full_table = "beacon_test.no_such_table"
    with TestClient(create_app(make_settings(), broken), base_url=MALL) as client:
        res = client.post(URL, json=TOTALS, headers=AUTH)
        assert res.status_code == 503 and "try again" in res.json()["error"]
        exported = client.post(URL, json=TOTALS, headers={**AUTH, "accept": "text/csv"})
    assert exported.status_code == 503 and "try again" in exported.json()["error"]
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "beacon.api"]
    assert len(lines) == 2 and all("\n" not in line and "no_such_table" in line for line in lines)
