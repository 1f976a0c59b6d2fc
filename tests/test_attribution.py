"""Partner attribution: counts per day for a partner's own clicks, nothing that points at a person."""

from __future__ import annotations

import datetime as dt
import itertools
import logging

import orjson
import pytest

from beacon import customers
from beacon import partners as reg
from beacon.identity import Identity

from .conftest import API_KEY, KEY
from .test_partners import A_KEY, B_KEY, MALL, MALL_ID, A

UTC = dt.timezone.utc
D = dt.datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - dt.timedelta(days=3)
DAY = D.date().isoformat()
NEXT_DAY = (D + dt.timedelta(days=1)).date().isoformat()
_ids = itertools.count(1)

REGISTRY = f"""
[[partner]]
id = "a"
hosts = ["ads.a.test"]
sync_allow = ["https://match.a.test/sync"]
api_key_sha256 = "{reg.hash_key(A_KEY)}"
cookie_name = "a_uid"
attribution = true
click_param = "a_click"
attribution_window_days = 7
attribution_min_count = {{min_count}}

[[partner]]
id = "b"
hosts = ["ads.b.test"]
api_key_sha256 = "{reg.hash_key(B_KEY)}"
cookie_name = "b_uid"
click_param = "b_click"
"""


def ev(who: str, days: float, event: str, url: str = "https://shop.test/", **shop) -> dict:
    return {
        "event_id": f"00000000-0000-7000-8000-{next(_ids):012d}",
        "received_at": f"{(D + dt.timedelta(days=days)).timestamp():.3f}",
        "scope": "mall",
        "visitor_id": f"visitor-{who}",
        "mode": "cookie",
        "event": event,
        "url": url,
        "referrer": "",
        "props": {},
        "ip": "203.0.113.0",
        "user_agent": "UA",
        "is_bot": 0,
        "transport": "pixel",
        **shop,
    }


def order(oid: str) -> dict:
    return {"order_id": oid, "revenue": "99.95", "currency": "EUR"}


A_LAND, B_LAND = "https://shop.test/item/1?a_click=clk-a-1", "https://shop.test/item/1?b_click=clk-b-9"
SCRIPT = [
    ev("V1", 0, "pageview", A_LAND),
    ev("V1", 0.01, "purchase", **order("O-1")),  # a
    ev("V2", 0, "pageview", A_LAND),
    ev("V2", 0.02, "pageview", B_LAND),
    ev("V2", 0.03, "purchase", **order("O-2")),  # b: the last touch
    ev("V3", -10, "pageview", A_LAND),
    ev("V3", 0, "purchase", **order("O-3")),  # outside 7 days
    ev("V4", 0, "purchase", **order("O-4")),  # no touch
    ev("V5", -2, "pageview", A_LAND),
    ev("V5", 0, "pageview"),
    ev("V5", 0.1, "purchase", **order("O-5")),
    ev("V5", 0.2, "purchase", **order("O-5")),  # a, once
]


@pytest.fixture
def make(make_client, tmp_path, store, r):
    store.insert_lines(b"".join(orjson.dumps(e) + b"\n" for e in SCRIPT), f"attribution-{next(_ids)}")

    def client(min_count: int = 1):
        path = tmp_path / "partners.toml"
        path.write_text(REGISTRY.replace("{min_count}", str(min_count)))
        return make_client(partners_file=str(path), mall_hosts="shop.test")

    return client


def conversions(c, key=A_KEY, pid="a", **params):
    return c.get(
        f"{MALL}/api/v1/partners/{pid}/conversions",
        params={"from": DAY, "to": NEXT_DAY, **params},
        headers={"authorization": f"Bearer {key}"},
    )


def test_last_touch_within_the_window_counts_each_order_once(make):
    res = conversions(make())
    assert res.status_code == 200
    body = res.json()
    assert body["days"] == [{"date": DAY, "conversions": 2}] and body["total"] == 2
    for secret in ("visitor-", "O-1", "O-5", "99.95", "clk-a-1", "shop.test/item"):
        assert secret not in res.text


def test_days_under_the_minimum_are_left_out_and_cannot_be_recovered(make):
    c = make(min_count=3)
    body = conversions(c).json()
    assert body["days"] == [] and body["total"] == 0
    # a narrower range is widened to whole days: no hour-by-hour differencing
    narrow = conversions(c, **{"from": f"{DAY}T12:00:00", "to": f"{DAY}T12:30:00"}).json()
    assert narrow["from"].startswith(DAY) and narrow["days"] == []


def test_attribution_is_off_unless_the_registry_grants_it(make):
    c = make()
    res = conversions(c, key=B_KEY, pid="b")
    assert res.status_code == 403 and "not enabled" in res.json()["error"]
    assert conversions(c, key=A_KEY, pid="b").status_code == 403  # and never another partner's
    assert conversions(c, key="wrong").status_code == 401


def test_an_invalid_attribution_setting_stops_start_up(make_client, tmp_path):
    path = tmp_path / "partners.toml"
    path.write_text('[[partner]]\nid = "x"\nhosts = ["ads.x.test"]\nattribution = true\n')
    with pytest.raises(reg.RegistryError, match="needs a click_param"):
        make_client(partners_file=str(path))


def test_no_partner_path_carries_an_account_or_the_mall_visitor_id(make, store, flush, caplog):
    """Identify a mall visitor, then walk every partner-reachable path and every log line."""
    c = make()
    store.command(f"TRUNCATE TABLE {customers.table(store)}")
    core = c.app.core
    mall_cookie = Identity(core.mall, (KEY,)).sign(MALL_ID)
    account = "account-secret-4711"
    answers = []
    with caplog.at_level(logging.DEBUG):
        assert (
            c.post(
                f"{MALL}/api/v1/identify", json={"cookie": mall_cookie, "account": account}, headers={"authorization": f"Bearer {API_KEY}"}
            ).status_code
            == 200
        )
        both = {"cookie": f"bcn={mall_cookie}"}
        c.get(f"{MALL}/p.gif?e=pageview&u=https://shop.test/x", headers=both)
        for path in ("/p.gif?e=impression", "/me", "/sync?to=https://match.a.test/sync?uid={uid}", "/optout", "/beacon.js"):
            res = c.get(f"{A}{path}", headers=both, follow_redirects=False)
            answers += [res.text, str(res.headers)]
        res = c.post(f"{A}/e", json={"e": "purchase", "order_id": "P-1", "revenue": "1", "currency": "EUR"}, headers=both)
        answers.append(str(res.headers))
        flush()
        auth = {"authorization": f"Bearer {A_KEY}", **both}
        for path in (
            "/api/v1/partners/a/events",
            "/api/v1/partners/a/stats",
            "/api/v1/partners/a/conversions",
            "/api/v1/partners/a/events?format=ndjson",
            "/api/v1/customers",
            "/api/v1/customers/events?account=" + account,
        ):
            answers.append(c.get(f"{MALL}{path}", headers=auth).text)
        for body in (
            {"metrics": ["visitors", "customers"], "date_range": "7d"},
            {"metrics": ["visitors", "total_revenue"], "date_range": "7d", "dimensions": ["event:goal"]},
        ):
            answers.append(c.post(f"{MALL}/api/v2/query", json=body, headers=auth).text)
            answers.append(c.post(f"{MALL}/api/v2/query", json=body, headers={**auth, "accept": "text/csv"}).text)
        answers.append(c.post(f"{MALL}/api/v2/funnel", json={"date_range": "7d"}, headers=auth).text)
        partner_rows = store.query(f"SELECT * FROM {store.full_table} WHERE scope = 'a'")
    text = "\n".join(answers) + str(partner_rows)
    assert account not in text and MALL_ID not in text
    beacon_logs = "\n".join(r.getMessage() for r in caplog.records if r.name != "httpx")  # not the test client's
    assert account not in beacon_logs and MALL_ID not in beacon_logs
    assert partner_rows  # the partner's own rows were written, without them
