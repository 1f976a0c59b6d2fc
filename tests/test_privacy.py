"""Each statement of the README's Privacy section, tested."""

from __future__ import annotations

import logging

import pytest

from beacon.clock import ManualClock

from .conftest import API_KEY
from .test_partners import A_ID, MALL, MALL_ID, REGISTRY, A, set_cookies  # noqa: F401

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.fixture
def make_pclient(make_client, tmp_path):
    path = tmp_path / "partners.toml"
    path.write_text(REGISTRY)

    def make(**kw):
        return make_client(partners_file=str(path), mall_hosts="shop.test", **kw)

    return make


def test_ip_is_stored_truncated_and_no_pii_column_exists(client, flush, rows, store):
    client.get("/p.gif", headers={"user-agent": CHROME})
    flush()
    assert rows()[0]["ip"] == "203.0.113.0"
    cols = {c for (c,) in store.query(f"SELECT name FROM system.columns WHERE database = '{store.database}' AND table = '{store.table}'")}
    assert not cols & {"email", "name", "phone", "cookie", "raw_ip", "address"}


def test_mall_under_gpc_is_cookieless_and_ids_change_with_the_day(make_client, flush, rows, r):
    clock = ManualClock()
    client = make_client(clock=clock)
    h = {"sec-gpc": "1", "user-agent": CHROME}
    first = client.get("/p.gif?e=a", headers=h)
    second = client.get("/p.gif?e=b", headers=h)
    assert set_cookies(first) == [] and set_cookies(second) == []
    flush()
    a, b = rows()
    assert a["mode"] == b["mode"] == "cookieless"
    assert a["visitor_id"] == b["visitor_id"]  # the same visitor within the day
    assert len(a["visitor_id"]) == 36
    [salt_key] = r.keys("beacon:salt:*")
    assert 0 < r.ttl(salt_key) <= 86400  # the salt is discarded with its day
    clock.advance(86400)  # the next day: a fresh salt
    client.get("/p.gif?e=c", headers=h)
    flush()
    assert rows()[2]["visitor_id"] != a["visitor_id"]


def test_mall_consent_mode_drop_records_nothing(make_client, flush):
    c = make_client(mall_consent_mode="drop")
    res = c.get("/p.gif", headers={"sec-gpc": "1"})
    assert res.status_code == 200 and set_cookies(res) == []
    assert flush() == 0


def test_dnt_is_honoured_only_when_configured(make_client, flush, rows):
    off = make_client()
    assert set_cookies(off.get("/p.gif", headers={"dnt": "1"}))
    on = make_client(respect_dnt="true")
    assert set_cookies(on.get("/p.gif", headers={"dnt": "1"})) == []
    flush()
    assert [r["mode"] for r in rows()] == ["cookie", "cookieless"]


def test_partner_anonymous_mode_counts_without_any_id(make_pclient, flush, rows):
    c = make_pclient(partner_consent_mode="anonymous")
    res = c.get(f"{A}/p.gif?e=imp", headers={"sec-gpc": "1", "user-agent": CHROME})
    assert set_cookies(res) == []
    flush()
    [row] = rows()
    assert (row["scope"], row["mode"], row["visitor_id"], row["ip"], row["user_agent"]) == ("a", "anonymous", "", "", "")


def test_optout_sets_the_scope_optout_cookie_deletes_the_id_and_stops_recording(make_pclient, flush, rows):
    c = make_pclient()
    page = c.get(f"{A}/optout")
    assert page.status_code == 200 and "opted out" in page.text and "Partner A" in page.text
    cookies = set_cookies(page)
    assert any(v.startswith("a_uid_optout=1;") and "Secure" in v and "SameSite=None" in v for v in cookies)
    assert any(v.startswith("a_uid=;") and "Max-Age=0" in v for v in cookies)
    res = c.get(f"{A}/p.gif", headers={"cookie": "a_uid_optout=1"})
    assert set_cookies(res) == []
    mall = c.get(f"{MALL}/optout")
    assert any(v.startswith("bcn_optout=1;") for v in set_cookies(mall))
    assert set_cookies(c.get(f"{MALL}/p.gif", headers={"cookie": "bcn_optout=1"})) == []  # cookieless
    back = c.get(f"{A}/optin")
    assert any(v.startswith("a_uid_optout=;") and "Max-Age=0" in v for v in set_cookies(back))
    assert set_cookies(c.get(f"{A}/p.gif"))[0].startswith("a_uid=")
    flush()
    assert [(r["scope"], r["mode"]) for r in rows()] == [("mall", "cookieless"), ("a", "cookie")]


def test_a_visitor_sees_and_forgets_its_own_data(make_pclient, flush, rows, caplog):
    c = make_pclient()
    cookie = set_cookies(c.get(f"{MALL}/p.gif?e=one", headers={"user-agent": CHROME}))[0].split(";")[0]
    c.get(f"{MALL}/p.gif?e=two", headers={"cookie": cookie})
    c.cookies.clear()
    c.get(f"{MALL}/p.gif?e=someone_else")
    c.get(f"{A}/p.gif?e=partner", headers={"cookie": cookie})
    flush()
    c.cookies.clear()
    mine = c.get(f"{MALL}/me", headers={"cookie": cookie}).json()
    vid = cookie.split("=", 1)[1].split(".")[0]
    assert mine["visitor_id"] == vid
    assert [e["event"] for e in mine["events"]] == ["two", "one"]
    paged = c.get(f"{MALL}/me?limit=1", headers={"cookie": cookie}).json()
    assert len(paged["events"]) == 1 and paged["next"]
    assert c.get(f"{MALL}/me").json()["events"] == []  # no cookie, nothing shown
    assert c.get(f"{MALL}/me/forget").status_code == 405
    with caplog.at_level(logging.INFO, logger="beacon.audit"):
        res = c.post(f"{MALL}/me/forget", headers={"cookie": cookie})
    assert res.json() == {"forgotten": 2}
    assert any(v.startswith("bcn=;") and "Max-Age=0" in v for v in set_cookies(res))
    assert "forget scope=mall" in caplog.text and vid not in caplog.text
    assert sorted(r["event"] for r in rows()) == ["partner", "someone_else"]


def test_operators_forget_a_visitor_from_the_cli(client, flush, rows, store, make_settings, caplog):
    from beacon.privacy import forget_visitor

    cookie = set_cookies(client.get("/p.gif"))[0].split(";")[0]
    client.get("/p.gif", headers={"cookie": cookie})
    flush()
    vid = cookie.split("=", 1)[1].split(".")[0]
    with caplog.at_level(logging.INFO, logger="beacon.audit"):
        assert forget_visitor(store, "k", "mall", vid, "operator") == 2
    assert rows() == [] and vid not in caplog.text


def test_bots_are_flagged_excluded_from_reports_or_dropped(make_client, flush, rows):
    c = make_client()
    c.get("/p.gif", headers={"user-agent": BOT})
    c.get("/p.gif", headers={"user-agent": CHROME})
    flush()
    assert sorted(r["is_bot"] for r in rows()) == [0, 1]
    auth = {"authorization": f"Bearer {API_KEY}"}
    stats = c.get("/api/v1/stats", headers=auth).json()
    assert stats["totals"]["events"] == 1 and stats["bot_events"] == 1
    assert c.get("/api/v1/stats?include_bots=1", headers=auth).json()["totals"]["events"] == 2
    dropping = make_client(drop_bots="true")
    dropping.get("/p.gif", headers={"user-agent": BOT})
    assert flush() == 0


def test_migrate_applies_a_changed_retention(store):
    from beacon.store import Store

    changed = Store(store.dsn, store.database, store.table, 30, store.dedup_window)
    changed._client, changed._lock = store._client, store._lock  # one chDB engine per process
    changed.migrate()
    ddl = store.query(f"SHOW CREATE TABLE {store.full_table}")[0][0]
    assert "toIntervalDay(30)" in ddl
    store.migrate()
    assert "toIntervalDay(395)" in store.query(f"SHOW CREATE TABLE {store.full_table}")[0][0]


def test_beacon_js_is_small_cached_and_validated_by_etag(client):
    res = client.get("/beacon.js")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/javascript")
    assert "max-age=604800" in res.headers["cache-control"]
    again = client.get("/beacon.js", headers={"if-none-match": res.headers["etag"]})
    assert again.status_code == 304
    assert len(res.content) < 2048
