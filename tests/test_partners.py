"""Partner scopes: isolated from the mall cookie and from each other, by construction.

Every request carries the mall cookie and both partner cookies, so each test shows
that only the cookie of the resolved scope is ever read.
"""

from __future__ import annotations

import re

import pytest

from beacon import partners as reg
from beacon.identity import Identity

from .conftest import KEY

A_KEY, B_KEY = "bpk_key-of-partner-a", "bpk_key-of-partner-b"
MALL, A, B = "https://shop.test", "https://ads.a.test", "https://ads.b.test"
MALL_ID = "11111111-1111-4111-8111-111111111111"
A_ID = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
B_ID = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"

REGISTRY = f"""
[[partner]]
id = "a"
name = "Partner A"
hosts = ["ads.a.test"]
origins = ["https://shop.test"]
sync_allow = ["https://match.a.test/sync", "https://a.test/cm/"]
api_key_sha256 = "{reg.hash_key(A_KEY)}"
cookie_name = "a_uid"

[[partner]]
id = "b"
name = "Partner B"
hosts = ["ads.b.test"]
origins = ["https://publisher.b.test"]
sync_allow = ["https://match.b.test/sync"]
api_key_sha256 = "{reg.hash_key(B_KEY)}"
cookie_name = "b_uid"
cookie_partitioned = true
"""


@pytest.fixture
def pclient(make_client, tmp_path):
    path = tmp_path / "partners.toml"
    path.write_text(REGISTRY)
    return make_client(partners_file=str(path), mall_hosts="shop.test", site_origins=MALL)


@pytest.fixture
def cookies(pclient):
    core = pclient.app.core
    sign = {sc_id: Identity(core.resolver.partners[sc_id] if sc_id != "mall" else core.mall, (KEY,)).sign for sc_id in ("mall", "a", "b")}
    return f"bcn={sign['mall'](MALL_ID)}; a_uid={sign['a'](A_ID)}; b_uid={sign['b'](B_ID)}"


def set_cookies(res) -> list[str]:
    return [v for k, v in res.headers.multi_items() if k == "set-cookie"]


def test_the_mall_cookie_sent_to_a_partner_is_ignored(pclient, cookies, flush, rows):
    pclient.cookies.clear()
    res = pclient.get(f"{A}/p.gif?u=https://shop.test/x", headers={"cookie": f"bcn={cookies.split('bcn=')[1].split(';')[0]}"})
    [cookie] = set_cookies(res)
    assert cookie.startswith("a_uid=")
    assert cookie.split("; ")[1:] == ["Max-Age=31536000", "Path=/", "Secure", "HttpOnly", "SameSite=None"]
    new_id = cookie.split("=", 1)[1].split(".")[0]
    res2 = pclient.get(f"{A}/p.gif", headers={"cookie": cookies})
    assert set_cookies(res2) == []  # its own cookie is read; the mall's, though present, is not
    flush()
    got = rows()
    assert [(r["scope"], r["visitor_id"]) for r in got] == [("a", new_id), ("a", A_ID)]
    assert MALL_ID not in str(got)


def test_partner_cookies_sent_to_the_mall_are_ignored(pclient, flush, rows):
    sign_a = Identity(pclient.app.core.resolver.partners["a"], (KEY,)).sign
    res = pclient.get(f"{MALL}/p.gif", headers={"cookie": f"a_uid={sign_a(A_ID)}; b_uid=x"})
    [cookie] = set_cookies(res)
    assert cookie.startswith("bcn=")
    flush()
    [row] = rows()
    assert row["scope"] == "mall" and row["visitor_id"] not in (A_ID, B_ID)


def test_a_cookie_forged_across_scopes_gets_a_new_id(pclient, flush, rows):
    core = pclient.app.core
    a_signed = Identity(core.resolver.partners["a"], (KEY,)).sign(A_ID)
    mall_signed = Identity(core.mall, (KEY,)).sign(MALL_ID)
    pclient.get(f"{B}/p.gif?e=a_to_b", headers={"cookie": f"b_uid={a_signed}"})
    pclient.get(f"{MALL}/p.gif?e=a_to_mall", headers={"cookie": f"bcn={a_signed}"})
    pclient.get(f"{A}/p.gif?e=mall_to_a", headers={"cookie": f"a_uid={mall_signed}"})
    flush()
    got = {r["event"]: r for r in rows()}
    assert got["a_to_b"]["scope"] == "b" and got["a_to_b"]["visitor_id"] != A_ID
    assert got["a_to_mall"]["scope"] == "mall" and got["a_to_mall"]["visitor_id"] != A_ID
    assert got["mall_to_a"]["scope"] == "a" and got["mall_to_a"]["visitor_id"] != MALL_ID


def test_the_scope_cannot_be_chosen_by_the_client(pclient, cookies, flush, rows):
    pclient.get(f"{A}/p.gif?scope=mall&p.scope=b", headers={"cookie": cookies})
    pclient.post(f"{A}/e", json={"e": "x", "scope": "mall", "visitor_id": MALL_ID}, headers={"cookie": cookies})
    flush()
    assert {(r["scope"], r["visitor_id"]) for r in rows()} == {("a", A_ID)}


def test_an_unknown_host_gets_404_and_no_cookie(pclient):
    for url in ("https://evil.test/p.gif", "https://ads.a.test.evil.test/p.gif", f"{MALL}/partners/zz/p.gif"):
        res = pclient.get(url)
        assert res.status_code == 404 and set_cookies(res) == []


def test_the_path_fallback_serves_a_partner_with_a_path_scoped_cookie(pclient, cookies, flush, rows):
    res = pclient.get(f"{MALL}/partners/b/p.gif")
    [cookie] = set_cookies(res)
    assert cookie.startswith("b_uid=")
    assert cookie.split("; ")[1:] == ["Max-Age=31536000", "Path=/partners/b/", "Secure", "HttpOnly", "SameSite=None", "Partitioned"]
    pclient.get(f"{MALL}/partners/b/p.gif?e=again", headers={"cookie": cookies})
    flush()
    assert [(r["scope"], r["visitor_id"]) for r in rows()][1] == ("b", B_ID)
    assert {r["scope"] for r in rows()} == {"b"}


def test_partner_pages_reach_only_partner_routes(pclient):
    assert pclient.get(f"{A}/api/v1/stats", headers={"authorization": "Bearer mall-api-key-for-tests"}).status_code == 404
    assert pclient.get(f"{A}/metrics").status_code == 404


HOSTILE = [
    "https://evil.test/sync?u={uid}",
    "https://match.a.test.evil.test/sync",
    "https://evil.test/match.a.test/sync",
    "https://evil.test/?https://match.a.test/sync",
    "//evil.test/sync",
    "///evil.test",
    "javascript:alert(1)//https://match.a.test/sync",
    "JavaScript:alert(document.cookie)",
    "data:text/html,<script>alert(1)</script>",
    "https://match.a.test\\@evil.test/sync",
    "https:\\\\evil.test/sync",
    "https://match.a.test/sync\r\nSet-Cookie: x=1",
    "https://match.a.test/sync%0d%0aLocation:%20https://evil.test",
    "https://match.a.test@evil.test/sync",
    "https://user:pw@match.a.test/sync",
    "https://match.a.test:443@evil.test/sync",
    "http://match.a.test/sync",
    "https://match.a.test/sync-evil",
    "https://match.a.test/other",
    "https://match.b.test/sync?uid={uid}",
    "https://match.a.te%73t/sync",
    "https://mátch.a.test/sync",
    " https://match.a.test/sync",
    "",
]


@pytest.mark.parametrize("to", HOSTILE)
def test_sync_refuses_every_hostile_target(pclient, cookies, to):
    from urllib.parse import quote

    res = pclient.get(f"{A}/sync?to={quote(to, safe='')}", headers={"cookie": cookies}, follow_redirects=False)
    assert res.status_code == 400, to
    assert "location" not in res.headers
    assert res.json()["error"]


def test_sync_redirects_to_the_allowlist_with_only_the_partners_own_id(pclient, cookies):
    from urllib.parse import quote

    res = pclient.get(
        f"{A}/sync?to={quote('https://match.a.test/sync?uid={uid}&m=%7Buid%7D', safe='')}",
        headers={"cookie": cookies},
        follow_redirects=False,
    )
    assert res.status_code == 302
    assert res.headers["location"] == f"https://match.a.test/sync?uid={A_ID}&m={A_ID}"
    assert MALL_ID not in str(res.headers) and B_ID not in str(res.headers)
    prefix = pclient.get(f"{A}/sync?to={quote('https://a.test/cm/x?u={uid}', safe='')}", follow_redirects=False)
    assert prefix.status_code == 302 and prefix.headers["location"].startswith("https://a.test/cm/x?u=")
    assert prefix.headers["set-cookie"].startswith("a_uid=")
    assert pclient.get(f"{MALL}/sync?to=https://match.a.test/sync", follow_redirects=False).status_code == 404


def test_partner_keys_read_only_their_own_scope(pclient, cookies, flush):
    pclient.get(f"{A}/p.gif?e=a1", headers={"cookie": cookies})
    pclient.get(f"{B}/p.gif?e=b1", headers={"cookie": cookies})
    pclient.get(f"{MALL}/p.gif?e=m1", headers={"cookie": cookies})
    flush()
    auth_a = {"authorization": f"Bearer {A_KEY}"}
    for path in [
        "/api/v1/partners/b/stats",
        "/api/v1/partners/b/events",
        "/api/v1/partners/b/stats/",
        "/api/v1/partners/B/events",
        "/api/v1/partners/%62/events",
        "/api/v1/partners/%2562/events",
        "/api/v1/partners/a/%2e%2e/b/events",
        "/api/v1/partners/a%2f..%2fb/events",
        "/api/v1/partners/A/events",
        "/api/v1/partners/mall/events",
        "/api/v1/partners/b/events?scope=a",
    ]:
        res = pclient.get(MALL + path, headers=auth_a)
        assert res.status_code == 403, path
        assert "b1" not in res.text
    for headers, status in [
        ({}, 401),
        ({"authorization": "Bearer wrong"}, 401),
        ({"authorization": f"Bearer {A_KEY}x"}, 401),
        ({"authorization": "Bearer mall-api-key-for-tests"}, 401),
    ]:
        assert pclient.get(f"{MALL}/api/v1/partners/a/events", headers=headers).status_code == status
    own = pclient.get(f"{MALL}/api/v1/partners/a/events?scope=b", headers=auth_a)
    assert own.status_code == 200
    events = own.json()["events"]
    assert [e["event"] for e in events] == ["a1"]
    assert events[0]["visitor_id"] == A_ID
    assert MALL_ID not in own.text and B_ID not in own.text
    stats = pclient.get(f"{MALL}/api/v1/partners/a/stats", headers=auth_a).json()
    assert stats["totals"] == {"events": 1, "pageviews": 0, "visitors": 1}


def test_partner_events_page_newest_first_as_json_or_ndjson(pclient, cookies, flush):
    for i in range(7):
        pclient.get(f"{A}/p.gif?e=n{i}", headers={"cookie": cookies})
    pclient.get(f"{B}/p.gif?e=other", headers={"cookie": cookies})
    flush()
    auth = {"authorization": f"Bearer {A_KEY}"}
    seen, cursor = [], None
    while True:
        res = pclient.get(
            f"{MALL}/api/v1/partners/a/events", params={"limit": 3, **({"before": cursor} if cursor else {})}, headers=auth
        ).json()
        seen += [e["event"] for e in res["events"]]
        cursor = res["next"]
        if not cursor:
            break
    assert seen == [f"n{i}" for i in reversed(range(7))]
    nd = pclient.get(f"{MALL}/api/v1/partners/a/events?format=ndjson", headers=auth)
    assert nd.headers["content-type"].startswith("application/x-ndjson")
    assert len(nd.text.strip().splitlines()) == 7
    assert pclient.get(f"{MALL}/api/v1/partners/a/events?before=junk", headers=auth).status_code == 400


def test_a_rotated_out_key_gets_401(make_client, tmp_path):
    path = tmp_path / "partners.toml"
    path.write_text(REGISTRY)
    from beacon.cli import main

    assert main(["partners", "rotate-key", "--id", "a", "--partners-file", str(path)]) == 0
    client = make_client(partners_file=str(path), mall_hosts="shop.test")
    assert client.get(f"{MALL}/api/v1/partners/a/stats", headers={"authorization": f"Bearer {A_KEY}"}).status_code == 401


def test_cors_echoes_only_the_partners_own_origins(pclient):
    ok = pclient.post(f"{A}/e", json={"e": "x"}, headers={"origin": MALL})
    assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == MALL
    other = pclient.post(f"{B}/e", json={"e": "x"}, headers={"origin": MALL})
    assert other.status_code == 403 and "access-control-allow-origin" not in other.headers
    b_ok = pclient.options(f"{B}/e", headers={"origin": "https://publisher.b.test", "access-control-request-method": "POST"})
    assert b_ok.headers["access-control-allow-origin"] == "https://publisher.b.test"
    mall = pclient.post(f"{MALL}/e", json={"e": "x"}, headers={"origin": "https://publisher.b.test"})
    assert mall.status_code == 403


def test_gpc_or_opt_out_means_no_partner_cookie_and_no_partner_event(pclient, cookies, flush, rows):
    res = pclient.get(f"{A}/p.gif", headers={"sec-gpc": "1"})
    assert res.status_code == 200 and set_cookies(res) == []
    res = pclient.post(f"{A}/e", json={"e": "x"}, headers={"sec-gpc": "1"})
    assert res.status_code == 204 and set_cookies(res) == []
    res = pclient.get(f"{A}/p.gif", headers={"cookie": cookies + "; a_uid_optout=1"})
    assert set_cookies(res) == []
    sync = pclient.get(f"{A}/sync?to=https://match.a.test/sync", headers={"sec-gpc": "1"}, follow_redirects=False)
    assert sync.status_code == 204 and "location" not in sync.headers
    pclient.get(f"{MALL}/p.gif?e=mall", headers={"sec-gpc": "1", "cookie": cookies})
    flush()
    assert [r["scope"] for r in rows()] == ["mall"]


@pytest.mark.parametrize(
    "text,message",
    [
        ('[[partner]]\nid = "a"\nhosts = ["x.test"]\n\n[[partner]]\nid = "Bad Id"\n', "line 5 (partner #2): id 'Bad Id'"),
        ('[[partner]]\nid = "a"\nhosts = ["x.test"]\nhosts2 = 1\n', "line 1 (partner #1): unknown keys ['hosts2']"),
        ('[[partner]]\nid = "a"\nhosts = ["x.test"]\nname = \n', "at line 4"),
        ('[[partner]]\nid = "a"\nhosts = ["shop.test"]\n', "already belongs to 'mall'"),
        ('[[partner]]\nid = "a"\nhosts = ["x.test"]\ncookie_name = "bcn"\n', "cookie_name 'bcn' already used by 'mall'"),
        ('[[partner]]\nid = "a"\nhosts = ["x.test"]\nsync_allow = ["javascript:x"]\n', "sync_allow entry"),
        ('[[partner]]\nid = "mall"\nhosts = ["x.test"]\n', "not 'mall'"),
        ("partner = 1\n", "partner must be [[partner]] tables, not a int"),
        ("partner = [1]\n", "(partner #1): a partner is a [[partner]] table, not a int"),
    ],
)
def test_an_invalid_registry_fails_at_start_up_naming_the_line(make_client, tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(reg.RegistryError, match=re.escape(message)):
        make_client(partners_file=str(path), mall_hosts="shop.test")
