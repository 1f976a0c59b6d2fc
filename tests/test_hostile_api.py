"""Hostile requests to the JSON side, in-process: 4xx with a reason, never a 500.

Each case here was answered 500 (or a redirect out of the allowlist, or a readable
/metrics) before issue 9; the wire-level cases are in test_http_limits.py.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from .conftest import API_KEY
from .test_partners import A_ID, A_KEY, B_KEY, MALL, MALL_ID, A, B, cookies, pclient  # noqa: F401 - fixtures

AUTH = {"authorization": f"Bearer {API_KEY}"}
BAD_CURSOR = "1_------------------------------------"


@pytest.mark.parametrize(
    "query",
    [
        "to=0001-01-01",
        "to=9999-12-31T23:59:59-01:00",
        "from=0001-01-01T00:00:00%2B01:00&to=0001-01-02",
        "from=9999-12-31&to=9999-12-31T23:59:59.999999",
        "from=1969-12-31&to=1970-01-02",
        "to=2200-01-02",
        "from=-0001-01-01",
        "to=99999-01-01",
    ],
)
def test_extreme_dates_answer_400_with_a_reason(pclient, query):  # noqa: F811
    mall = pclient.get(f"{MALL}/api/v1/stats?{query}", headers=AUTH)
    assert mall.status_code == 400 and mall.json()["error"], query
    partner = pclient.get(f"{MALL}/api/v1/partners/a/stats?{query}", headers={"authorization": f"Bearer {A_KEY}"})
    assert partner.status_code == 400 and partner.json()["error"], query


def test_dates_at_the_edges_of_the_range_still_answer(pclient):  # noqa: F811
    res = pclient.get(f"{MALL}/api/v1/stats?from=1970-01-01&to=1970-01-02", headers=AUTH)
    assert res.status_code == 200 and res.json()["totals"]["events"] == 0


@pytest.mark.parametrize(
    "cursor",
    [
        BAD_CURSOR,
        "1_zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
        "9999999999999999_aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa",
        "١٢_aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa",  # non-ASCII digits
        "1_aaaaaaaaaaaa4aaa8aaaaaaaaaaaaaaaa-----",
        "1_" + "a" * 5000,
    ],
)
def test_a_forged_cursor_answers_400_on_me_and_on_partner_events(pclient, cookies, cursor):  # noqa: F811
    me = pclient.get(f"{MALL}/me", params={"before": cursor}, headers={"cookie": cookies})
    assert me.status_code == 400 and "cursor" in me.json()["error"]
    events = pclient.get(f"{MALL}/api/v1/partners/a/events", params={"before": cursor}, headers={"authorization": f"Bearer {A_KEY}"})
    assert events.status_code == 400 and "cursor" in events.json()["error"]
    partner_me = pclient.get(f"{A}/me", params={"before": cursor}, headers={"cookie": cookies})
    assert partner_me.status_code == 400


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "1e3", "x", "9" * 5000, ""])
def test_a_bad_limit_answers_400_or_the_default(pclient, cookies, limit):  # noqa: F811
    res = pclient.get(f"{MALL}/me", params={"limit": limit}, headers={"cookie": cookies})
    assert res.status_code == (200 if limit == "" else 400)


@pytest.mark.parametrize(
    "to",
    [
        "https://match.a.test/sync/../../evil",
        "https://match.a.test/sync/%2e%2e/%2e%2e/evil",
        "https://match.a.test/sync/%2E%2e/evil",
        "https://match.a.test/sync/.%2E/evil",
        "https://match.a.test/sync/x/../../evil",
        "https://match.a.test/sync/%2f..%2f..%2fevil",
        "https://match.a.test/sync/..%2fevil",
        "https://match.a.test/sync/..%5Cevil",
        "https://match.a.test/sync/%252e%252e/%252e%252e/evil",
        "https://match.a.test/sync/..%252fevil",
        "https://match.a.test/sync//evil.test/x",
        "https://match.a.test/sync/%5c%5cevil.test",
        "https://match.a.test//evil/sync",
        "https://match.a.test:8443/sync",
        "https://match.a.test:443@evil.test/sync",
        "https://@match.a.test/sync",
        "https://:@match.a.test/sync",
        "HTTPS://EVIL.test/sync",
        "https://match.a.test./sync",
        "https://match.a.test/sync/..",
    ],
)
def test_sync_refuses_targets_a_browser_resolves_outside_the_prefix(pclient, cookies, to):  # noqa: F811
    res = pclient.get(f"{A}/sync?to={quote(to, safe='')}", headers={"cookie": cookies}, follow_redirects=False)
    assert res.status_code == 400 and "location" not in res.headers, to
    assert res.json()["error"]


@pytest.mark.parametrize(
    "to, location",
    [
        ("HTTPS://Match.A.test:443/sync/x?u={uid}", f"https://match.a.test/sync/x?u={A_ID}"),
        ("https://match.a.test/sync/./x/{uid}", f"https://match.a.test/sync/x/{A_ID}"),
        ("https://match.a.test/sync/a/../b", "https://match.a.test/sync/b"),
        ("https://match.a.test/sync/%2e/x", "https://match.a.test/sync/x"),
    ],
)
def test_sync_sends_the_url_as_a_browser_resolves_it(pclient, cookies, to, location):  # noqa: F811
    res = pclient.get(f"{A}/sync?to={quote(to, safe='')}", headers={"cookie": cookies}, follow_redirects=False)
    assert res.status_code == 302 and res.headers["location"] == location


def test_health_answers_on_any_host_even_with_mall_hosts_set(pclient):  # noqa: F811
    for host in ("http://10.0.0.7", "http://127.0.0.1:8080", "http://[::1]", A, B):
        assert pclient.get(f"{host}/healthz").text == "ok", host
        assert pclient.get(f"{host}/readyz").status_code == 200, host
    assert pclient.get("http://10.0.0.7/p.gif").status_code == 404  # still no scope for an unknown host


def test_metrics_are_closed_without_their_own_key(pclient, make_client):  # noqa: F811
    assert pclient.get(f"{MALL}/metrics").status_code == 403
    assert pclient.get(f"{MALL}/metrics", headers=AUTH).status_code == 403
    keyed = make_client(metrics_key="m-key", mall_hosts="shop.test")
    for headers in ({}, AUTH, {"authorization": f"Bearer {A_KEY}"}, {"authorization": "Bearer m-key2"}):
        res = keyed.get(f"{MALL}/metrics", headers=headers)
        assert res.status_code == 401 and "beacon_" not in res.text
    res = keyed.get(f"{MALL}/metrics", headers={"authorization": "Bearer m-key"})
    assert res.status_code == 200 and "beacon_requests_total" in res.text


def test_the_partner_api_answers_on_the_partners_own_host(pclient, cookies, flush):  # noqa: F811
    pclient.get(f"{A}/p.gif?e=a1", headers={"cookie": cookies})
    pclient.get(f"{B}/p.gif?e=b1", headers={"cookie": cookies})
    flush()
    auth_a = {"authorization": f"Bearer {A_KEY}"}
    own = pclient.get(f"{A}/api/v1/partners/a/events", headers=auth_a)
    assert own.status_code == 200 and [e["event"] for e in own.json()["events"]] == ["a1"]
    assert MALL_ID not in own.text
    assert pclient.get(f"{A}/api/v1/partners/a/stats", headers=auth_a).json()["totals"]["events"] == 1
    # another partner's host, another partner's key, or no key: never the data
    assert pclient.get(f"{B}/api/v1/partners/a/events", headers=auth_a).status_code == 403
    assert pclient.get(f"{A}/api/v1/partners/b/events", headers=auth_a).status_code == 403
    assert pclient.get(f"{A}/api/v1/partners/b/events", headers={"authorization": f"Bearer {B_KEY}"}).status_code == 403
    assert pclient.get(f"{A}/api/v1/partners/a/events").status_code == 401
    # the mall's own API and metrics stay off partner hosts
    assert pclient.get(f"{A}/api/v1/stats", headers=AUTH).status_code == 404
    assert pclient.get(f"{A}/metrics").status_code == 404
